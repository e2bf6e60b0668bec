//! Preprocessing shared by training and inference: median denoising, breast (foreground)
//! mask, and intensity normalisation to [0, 1] from robust percentiles inside the breast.
//! Each step is a pure function; [`Preprocess`] records exactly what was done.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::mammogram::Mammogram;
use crate::raster::{Mask, Raster};

/// How a mammogram is prepared for the network. Serialised into every training run so
/// that inference repeats exactly what the model saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// Median filter radius in pixels (2 = 5x5 window); 0 disables denoising.
    pub median_radius: usize,
    /// Percentile (0-100) of in-breast grey values mapped to 0.
    pub low_percentile: f32,
    /// Percentile (0-100) of in-breast grey values mapped to 1. Kept high so that the
    /// brightest structures (calcium) are not clipped together.
    pub high_percentile: f32,
    pub breast_mask: BreastMaskConfig,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            median_radius: 2,
            low_percentile: 1.0,
            high_percentile: 99.9,
            breast_mask: BreastMaskConfig::default(),
        }
    }
}

/// A preprocessing configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    #[error("percentiles must satisfy 0 <= low < high <= 100, got low {low} and high {high}")]
    Percentiles { low: f32, high: f32 },
    #[error("median radius {0} is too large (at most 15)")]
    MedianRadius(usize),
    #[error("breast-mask working size must be at least 32 pixels, got {0}")]
    WorkSize(usize),
    #[error("breast-mask threshold fraction must be in (0, 1], got {0}")]
    ThresholdFraction(f32),
}

impl Preprocess {
    /// Check every field; call before any work so that later code never sees a bad config.
    #[allow(
        clippy::nonminimal_bool,
        clippy::neg_cmp_op_on_partial_ord,
        reason = "negated comparisons also reject NaN"
    )]
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let (low, high) = (self.low_percentile, self.high_percentile);
        if !(0.0..100.0).contains(&low) || !(high > low && high <= 100.0) {
            return Err(PreprocessError::Percentiles { low, high });
        }
        if self.median_radius > 15 {
            return Err(PreprocessError::MedianRadius(self.median_radius));
        }
        let b = &self.breast_mask;
        if b.work_size < 32 {
            return Err(PreprocessError::WorkSize(b.work_size));
        }
        if !(b.threshold_fraction > 0.0 && b.threshold_fraction <= 1.0) {
            return Err(PreprocessError::ThresholdFraction(b.threshold_fraction));
        }
        Ok(())
    }
}

/// Breast segmentation settings. The mask is found on a downsampled, smoothed copy (fast,
/// and insensitive to noise and thin structures), then brought back to full resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreastMaskConfig {
    /// When false the whole image counts as breast.
    pub enabled: bool,
    /// Longest side of the working copy, pixels.
    pub work_size: usize,
    /// Threshold = background + fraction x (Otsu threshold - background). Otsu alone
    /// separates background from dense tissue and cuts off the faint fatty rim near the
    /// skin; a fraction of the way up from the background level keeps it.
    pub threshold_fraction: f32,
}

impl Default for BreastMaskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            work_size: 512,
            threshold_fraction: 0.35,
        }
    }
}

/// The result of [`preprocess`].
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Denoised grey values mapped to [0, 1] (clamped).
    pub image: Raster<f32>,
    /// Breast (foreground) mask at full resolution.
    pub breast: Mask,
    /// Grey values (after denoising) mapped to 0 and 1.
    pub window: (f32, f32),
    /// Wall time of each step, seconds.
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub median_s: f64,
    pub breast_mask_s: f64,
    pub normalise_s: f64,
}

/// Run the whole preprocessing chain: median, breast mask, normalisation.
/// `cfg` must have passed [`Preprocess::validate`].
pub fn preprocess(m: &Mammogram, cfg: &Preprocess) -> Preprocessed {
    let t0 = std::time::Instant::now();
    let denoised = median_filter(&m.pixels, cfg.median_radius);
    let median_s = t0.elapsed().as_secs_f64();
    let mut out = normalised(denoised, cfg);
    out.timings.median_s = median_s;
    out
}

/// [`preprocess`] taking the image's pixels, for the lowest peak memory on large images: they
/// are freed as soon as denoising no longer needs them (normalised in place without it), and
/// the result is the only full-size copy left: 5 bytes per pixel (the image in f32, the breast
/// mask), at most 7 while it runs.
pub fn preprocess_pixels(pixels: Raster<f32>, cfg: &Preprocess) -> Preprocessed {
    let t0 = std::time::Instant::now();
    let denoised = median_filter_owned(pixels, cfg.median_radius);
    let median_s = t0.elapsed().as_secs_f64();
    let mut out = normalised(denoised, cfg);
    out.timings.median_s = median_s;
    out
}

/// The chain after denoising, on an already denoised image: breast mask and normalisation
/// (`cfg.median_radius` is not used).
pub fn preprocess_denoised(denoised: &Raster<f32>, cfg: &Preprocess) -> Preprocessed {
    normalised(denoised.clone(), cfg)
}

/// Breast mask and normalisation of a denoised image, normalised in place.
fn normalised(mut image: Raster<f32>, cfg: &Preprocess) -> Preprocessed {
    let t1 = std::time::Instant::now();
    let breast = if cfg.breast_mask.enabled {
        breast_mask(&image, &cfg.breast_mask)
    } else {
        Mask::filled(image.width(), image.height(), true)
    };
    let t2 = std::time::Instant::now();
    let window = percentile_window(&image, &breast, cfg.low_percentile, cfg.high_percentile);
    normalise_in_place(&mut image, window);
    let t3 = std::time::Instant::now();
    Preprocessed {
        image,
        breast,
        window,
        timings: Timings {
            median_s: 0.0,
            breast_mask_s: (t2 - t1).as_secs_f64(),
            normalise_s: (t3 - t2).as_secs_f64(),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Median filter

/// Integer levels of an image: values mapped to 0..=65535. Exact for integer data whose
/// range spans at most 65536 values (every 8-16 bit mammogram); otherwise quantised to
/// 65536 levels between the minimum and the maximum.
struct Levels {
    data: Vec<u16>,
    offset: f32,
    step: f32,
}

impl Levels {
    fn new(img: &Raster<f32>) -> Self {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut integral = true;
        for &v in img.data() {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
                integral &= v.fract() == 0.0;
            }
        }
        if !lo.is_finite() {
            lo = 0.0;
            hi = 0.0;
        }
        let step = if integral && hi - lo <= 65535.0 {
            1.0
        } else {
            ((hi - lo) / 65535.0).max(f32::MIN_POSITIVE)
        };
        let data = img
            .data()
            .par_iter()
            .map(|&v| {
                let v = if v.is_finite() { v } else { lo };
                ((v - lo) / step).round().clamp(0.0, 65535.0) as u16
            })
            .collect();
        Self {
            data,
            offset: lo,
            step,
        }
    }

    fn value(&self, level: u16) -> f32 {
        self.offset + f32::from(level) * self.step
    }
}

/// Two-tier histogram over 16-bit levels (256 coarse bins of 256 fine bins) that tracks the
/// running median incrementally (Huang's sliding-window median): each window move costs a
/// few histogram updates plus a short walk from the previous median, skipping empty coarse
/// bins.
struct MedianHistogram {
    /// A fixed-size array indexed by a `u16`: no bounds checks in the hot loop.
    fine: Box<[u16; 65536]>,
    coarse: [u32; 256],
    /// Current median candidate and the number of samples strictly below it.
    median: u16,
    below: u32,
}

impl MedianHistogram {
    fn new() -> Self {
        Self {
            fine: Box::new([0; 65536]),
            coarse: [0; 256],
            median: 0,
            below: 0,
        }
    }

    /// Replace one sample by another (a no-op when equal, as in flat background).
    #[inline]
    fn replace(&mut self, old: u16, new: u16) {
        if old != new {
            self.remove(old);
            self.add(new);
        }
    }

    #[inline]
    fn add(&mut self, v: u16) {
        self.fine[v as usize] += 1;
        self.coarse[(v >> 8) as usize] += 1;
        if v < self.median {
            self.below += 1;
        }
    }

    #[inline]
    fn remove(&mut self, v: u16) {
        self.fine[v as usize] -= 1;
        self.coarse[(v >> 8) as usize] -= 1;
        if v < self.median {
            self.below -= 1;
        }
    }

    /// Largest non-empty level below `m` (the caller knows one exists).
    fn prev_nonempty(&self, m: u16) -> u16 {
        let mut v = m as usize;
        loop {
            v -= 1;
            if v & 0xff == 0xff && self.coarse[v >> 8] == 0 {
                // Whole coarse bin empty: jump below it.
                let mut c = v >> 8;
                while self.coarse[c] == 0 {
                    c -= 1;
                }
                v = (c << 8) | 0xff;
            }
            if self.fine[v] > 0 {
                return v as u16;
            }
        }
    }

    /// Smallest non-empty level above `m` (the caller knows one exists).
    fn next_nonempty(&self, m: u16) -> u16 {
        let mut v = m as usize;
        loop {
            v += 1;
            if v & 0xff == 0 && self.coarse[v >> 8] == 0 {
                let mut c = v >> 8;
                while self.coarse[c] == 0 {
                    c += 1;
                }
                v = c << 8;
            }
            if self.fine[v] > 0 {
                return v as u16;
            }
        }
    }

    /// Move the median so that `below <= rank < below + count(median)`.
    #[inline]
    fn settle(&mut self, rank: u32) -> u16 {
        while self.below > rank {
            self.median = self.prev_nonempty(self.median);
            self.below -= u32::from(self.fine[self.median as usize]);
        }
        while self.below + u32::from(self.fine[self.median as usize]) <= rank {
            self.below += u32::from(self.fine[self.median as usize]);
            self.median = self.next_nonempty(self.median);
        }
        self.median
    }
}

/// Median of the `(2r+1) x (2r+1)` window around every pixel, edges replicated (as
/// OpenCV's `medianBlur`). Works on 16-bit data in O(r) per pixel; rows are split into
/// bands processed in parallel.
pub fn median_filter(img: &Raster<f32>, radius: usize) -> Raster<f32> {
    let (w, h) = (img.width(), img.height());
    if radius == 0 || w == 0 || h == 0 {
        return img.clone();
    }
    median_of_levels(Levels::new(img), w, h, radius)
}

/// [`median_filter`] taking the image: it is freed once its 16-bit levels are made, so the
/// filter needs at most 6 bytes per pixel instead of 10 beside the input.
pub fn median_filter_owned(img: Raster<f32>, radius: usize) -> Raster<f32> {
    let (w, h) = (img.width(), img.height());
    if radius == 0 || w == 0 || h == 0 {
        return img;
    }
    let levels = Levels::new(&img);
    drop(img);
    median_of_levels(levels, w, h, radius)
}

fn median_of_levels(levels: Levels, w: usize, h: usize, radius: usize) -> Raster<f32> {
    let Levels {
        data: levels_data,
        offset,
        step,
    } = levels;
    let src = &levels_data;
    let r = radius as isize;
    let rank = ((2 * radius + 1) * (2 * radius + 1) / 2) as u32;
    let clampx = |x: isize| x.clamp(0, w as isize - 1) as usize;
    let clampy = |y: isize| y.clamp(0, h as isize - 1) as usize;
    let band = 64.max(h.div_ceil(rayon::current_num_threads() * 4));
    let mut out = vec![0u16; w * h];
    out.par_chunks_mut(band * w)
        .enumerate()
        .for_each(|(b, chunk)| {
            let y0 = b * band;
            let rows = chunk.len() / w;
            let mut hist = MedianHistogram::new();
            // Window for (x = 0, y = y0).
            for dy in -r..=r {
                let row = clampy(y0 as isize + dy) * w;
                for dx in -r..=r {
                    hist.add(src[row + clampx(dx)]);
                }
            }
            // Snake scan: left-to-right on even rows, right-to-left on odd rows, so the window
            // only ever moves by one pixel.
            for i in 0..rows {
                let y = (y0 + i) as isize;
                let ltr = i % 2 == 0;
                let line = &mut chunk[i * w..(i + 1) * w];
                for step in 0..w {
                    let x = if ltr { step } else { w - 1 - step } as isize;
                    if step > 0 {
                        let (leaving, entering) = if ltr {
                            (x - r - 1, x + r)
                        } else {
                            (x + r + 1, x - r)
                        };
                        let (xl, xe) = (clampx(leaving), clampx(entering));
                        for dy in -r..=r {
                            let row = clampy(y + dy) * w;
                            hist.replace(src[row + xl], src[row + xe]);
                        }
                    }
                    line[x as usize] = hist.settle(rank);
                }
                if i + 1 < rows {
                    // Move the window down one row at the current x.
                    let x = if ltr { w as isize - 1 } else { 0 };
                    let (top, bottom) = (clampy(y - r) * w, clampy(y + r + 1) * w);
                    for dx in -r..=r {
                        let xx = clampx(x + dx);
                        hist.replace(src[top + xx], src[bottom + xx]);
                    }
                }
            }
        });
    drop(levels_data);
    let levels = Levels {
        data: Vec::new(),
        offset,
        step,
    };
    let data = out.into_par_iter().map(|l| levels.value(l)).collect();
    Raster::from_vec(w, h, data).unwrap_or_else(|_| unreachable!("output has w*h samples"))
}

// ---------------------------------------------------------------------------------------
// Breast mask

/// Otsu's threshold of `values` over `bins` levels between their min and max.
#[allow(
    clippy::neg_cmp_op_on_partial_ord,
    reason = "also true when the values are NaN"
)]
pub fn otsu_threshold(values: &[f32], bins: usize) -> f32 {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !(hi > lo) {
        return lo;
    }
    let scale = (bins - 1) as f32 / (hi - lo);
    let mut hist = vec![0u64; bins];
    for &v in values {
        hist[((v - lo) * scale) as usize] += 1;
    }
    let total = values.len() as f64;
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_i) = (0.0, 0.0, -1.0, 0);
    for (i, &c) in hist.iter().enumerate() {
        w0 += c as f64;
        sum0 += i as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_i = i;
        }
    }
    lo + (best_i as f32 + 0.5) / scale
}

/// Box-average downsampling by an integer factor (partial blocks at the edges averaged
/// over what they hold).
fn downsample(img: &Raster<f32>, f: usize) -> Raster<f32> {
    let (w, h) = (img.width().div_ceil(f), img.height().div_ceil(f));
    let rows: Vec<Vec<f32>> = (0..h)
        .into_par_iter()
        .map(|by| {
            let mut sums = vec![0f64; w];
            let mut counts = vec![0u32; w];
            for y in by * f..((by + 1) * f).min(img.height()) {
                for (x, &v) in img.row(y).iter().enumerate() {
                    sums[x / f] += f64::from(v);
                    counts[x / f] += 1;
                }
            }
            sums.iter()
                .zip(&counts)
                .map(|(&s, &c)| (s / f64::from(c.max(1))) as f32)
                .collect()
        })
        .collect();
    Raster::from_vec(w, h, rows.concat()).unwrap_or_else(|_| unreachable!("w*h samples"))
}

/// 3x3 box blur with replicated edges.
fn box_blur3(img: &Raster<f32>) -> Raster<f32> {
    let (w, h) = (img.width() as isize, img.height() as isize);
    Raster::from_fn(img.width(), img.height(), |x, y| {
        let mut s = 0.0;
        for dy in -1..=1 {
            for dx in -1..=1 {
                let xx = (x as isize + dx).clamp(0, w - 1) as usize;
                let yy = (y as isize + dy).clamp(0, h - 1) as usize;
                s += img.get(xx, yy);
            }
        }
        s / 9.0
    })
}

/// Label 8-connected components of `mask`; returns the labels (0 = outside) and the size of
/// each component (index = label - 1).
pub fn label_components(mask: &Mask) -> (Raster<u32>, Vec<usize>) {
    let (w, h) = (mask.width(), mask.height());
    let mut labels = Raster::filled(w, h, 0u32);
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask.data()[start] || labels.data()[start] != 0 {
            continue;
        }
        let label = sizes.len() as u32 + 1;
        let mut size = 0;
        labels.data_mut()[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask.data()[j] && labels.data()[j] == 0 {
                        labels.data_mut()[j] = label;
                        stack.push(j);
                    }
                }
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

/// Visit the 8-connected components of `mask` one after another without a label image (one
/// byte per pixel marks what was visited): `f` gets each component's size and its first `keep`
/// pixel indices (row-major `y * width + x`; all of them when it has at most `keep`).
pub fn for_each_component(mask: &Mask, keep: usize, f: impl FnMut(usize, &[usize])) {
    let data = mask.data();
    walk_components(mask.width(), mask.height(), |i| data[i], keep, f);
}

/// [`for_each_component`] over the pixels of a `w x h` image for which `is_set` holds; `f` may
/// change pixels of the component it is given (they are never looked at again).
pub(crate) fn walk_components(
    w: usize,
    h: usize,
    is_set: impl Fn(usize) -> bool,
    keep: usize,
    mut f: impl FnMut(usize, &[usize]),
) {
    // Scanline filling: a component is taken a horizontal run at a time, and the stack holds
    // one seed per run still to take in the rows above and below, so it stays about as long as
    // the component's outline rather than its area.
    let mut visited = vec![false; w * h];
    let (mut stack, mut pixels): (Vec<(usize, usize)>, Vec<usize>) = (Vec::new(), Vec::new());
    for start in 0..w * h {
        if visited[start] || !is_set(start) {
            continue;
        }
        pixels.clear();
        let mut size = 0;
        stack.push((start % w, start / w));
        while let Some((x, y)) = stack.pop() {
            let row = y * w;
            if visited[row + x] {
                continue;
            }
            let open = |x: usize| !visited[row + x] && is_set(row + x);
            let (mut x0, mut x1) = (x, x);
            while x0 > 0 && open(x0 - 1) {
                x0 -= 1;
            }
            while x1 + 1 < w && open(x1 + 1) {
                x1 += 1;
            }
            visited[row + x0..=row + x1].fill(true);
            let room = keep.saturating_sub(pixels.len()).min(x1 - x0 + 1);
            pixels.extend(row + x0..row + x0 + room);
            size += x1 - x0 + 1;
            // Eight-connectivity: the runs above and below touching [x0 - 1, x1 + 1].
            let (lo, hi) = (x0.saturating_sub(1), (x1 + 1).min(w - 1));
            for ny in [y.wrapping_sub(1), y + 1] {
                if ny >= h {
                    continue;
                }
                let nrow = ny * w;
                let mut in_run = false;
                for nx in lo..=hi {
                    let set = !visited[nrow + nx] && is_set(nrow + nx);
                    if set && !in_run {
                        stack.push((nx, ny));
                    }
                    in_run = set;
                }
            }
        }
        f(size, &pixels);
    }
}

/// The number of 8-connected components of `mask`.
pub fn component_count(mask: &Mask) -> usize {
    let mut n = 0;
    for_each_component(mask, 0, |_, _| n += 1);
    n
}

/// Keep only the largest 8-connected component.
pub fn largest_component(mask: &Mask) -> Mask {
    let (labels, sizes) = label_components(mask);
    let Some(best) = sizes
        .iter()
        .enumerate()
        .max_by_key(|&(_, s)| *s)
        .map(|(i, _)| i as u32 + 1)
    else {
        return mask.clone();
    };
    labels.map(|&l| l == best)
}

/// Fill holes: background pixels not 4-connected to the image border become foreground.
pub fn fill_holes(mask: &Mask) -> Mask {
    let (w, h) = (mask.width(), mask.height());
    let mut outside = vec![false; w * h];
    let mut stack: Vec<usize> = Vec::new();
    let seed = |i: usize, stack: &mut Vec<usize>, outside: &mut Vec<bool>| {
        if !mask.data()[i] && !outside[i] {
            outside[i] = true;
            stack.push(i);
        }
    };
    for x in 0..w {
        seed(x, &mut stack, &mut outside);
        seed((h - 1) * w + x, &mut stack, &mut outside);
    }
    for y in 0..h {
        seed(y * w, &mut stack, &mut outside);
        seed(y * w + w - 1, &mut stack, &mut outside);
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        if x > 0 {
            seed(i - 1, &mut stack, &mut outside);
        }
        if x + 1 < w {
            seed(i + 1, &mut stack, &mut outside);
        }
        if y > 0 {
            seed(i - w, &mut stack, &mut outside);
        }
        if y + 1 < h {
            seed(i + w, &mut stack, &mut outside);
        }
    }
    Raster::from_vec(w, h, outside.into_iter().map(|o| !o).collect())
        .unwrap_or_else(|_| unreachable!("w*h"))
}

/// Breast (foreground) mask: downsample to `work_size`, smooth, threshold between the
/// background level and Otsu's threshold, keep the largest component (burned-in labels and
/// markers are separate components), fill holes, and upsample with bilinear interpolation
/// of the low-resolution mask (smooth edges rather than blocks).
pub fn breast_mask(img: &Raster<f32>, cfg: &BreastMaskConfig) -> Mask {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Mask::filled(w, h, false);
    }
    let f = w.max(h).div_ceil(cfg.work_size.max(1)).max(1);
    let small = box_blur3(&box_blur3(&downsample(img, f)));
    let otsu = otsu_threshold(small.data(), 256);
    // Background level: the 5th percentile of the working copy (the darkest air).
    let mut sorted = small.data().to_vec();
    let k = sorted.len() / 20;
    let background = *sorted.select_nth_unstable_by(k, f32::total_cmp).1;
    let t = background + cfg.threshold_fraction * (otsu - background);
    let coarse = fill_holes(&largest_component(&small.map(|&v| v > t)));
    if coarse.count() == 0 {
        return Mask::filled(w, h, false);
    }
    let (sw, sh) = (coarse.width(), coarse.height());
    let fmask = coarse.map(|&b| if b { 1.0f32 } else { 0.0 });
    let inv = 1.0 / f as f32;
    let mut out = vec![false; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let sy = ((y as f32 + 0.5) * inv - 0.5).clamp(0.0, (sh - 1) as f32);
        let (y0, ty) = (sy.floor() as usize, sy.fract());
        let y1 = (y0 + 1).min(sh - 1);
        for (x, v) in row.iter_mut().enumerate() {
            let sx = ((x as f32 + 0.5) * inv - 0.5).clamp(0.0, (sw - 1) as f32);
            let (x0, tx) = (sx.floor() as usize, sx.fract());
            let x1 = (x0 + 1).min(sw - 1);
            let top = fmask.get(x0, y0) * (1.0 - tx) + fmask.get(x1, y0) * tx;
            let bot = fmask.get(x0, y1) * (1.0 - tx) + fmask.get(x1, y1) * tx;
            *v = top * (1.0 - ty) + bot * ty >= 0.5;
        }
    });
    Raster::from_vec(w, h, out).unwrap_or_else(|_| unreachable!("w*h"))
}

// ---------------------------------------------------------------------------------------
// Normalisation

/// Grey values at the `low` and `high` percentiles (0-100) of the pixels inside `mask`
/// (the whole image when the mask is empty). Exact for integer data up to 16 bits, else to
/// 1/65536 of the range.
pub fn percentile_window(img: &Raster<f32>, mask: &Mask, low: f32, high: f32) -> (f32, f32) {
    let levels = Levels::new(img);
    let use_all = mask.count() == 0;
    let mut hist = vec![0u64; 65536];
    for (l, &m) in levels.data.iter().zip(mask.data()) {
        if m || use_all {
            hist[*l as usize] += 1;
        }
    }
    let total: u64 = hist.iter().sum();
    let at = |p: f32| -> u16 {
        let target = ((f64::from(p) / 100.0) * (total.saturating_sub(1)) as f64).round() as u64;
        let mut acc = 0;
        for (i, &c) in hist.iter().enumerate() {
            acc += c;
            if acc > target {
                return i as u16;
            }
        }
        65535
    };
    let (lo, hi) = (levels.value(at(low)), levels.value(at(high)));
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + levels.step.max(1.0))
    }
}

/// Map `window.0 -> 0` and `window.1 -> 1`, clamped to [0, 1].
pub fn normalise(img: &Raster<f32>, window: (f32, f32)) -> Raster<f32> {
    let mut out = img.clone();
    normalise_in_place(&mut out, window);
    out
}

/// [`normalise`] in place.
pub fn normalise_in_place(img: &mut Raster<f32>, window: (f32, f32)) {
    let (lo, hi) = window;
    let scale = 1.0 / (hi - lo).max(f32::MIN_POSITIVE);
    img.data_mut()
        .par_iter_mut()
        .for_each(|v| *v = ((*v - lo) * scale).clamp(0.0, 1.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference median by sorting each window (edges replicated).
    fn naive_median(img: &Raster<f32>, r: usize) -> Raster<f32> {
        let (w, h) = (img.width() as isize, img.height() as isize);
        let r = r as isize;
        Raster::from_fn(img.width(), img.height(), |x, y| {
            let mut v = Vec::new();
            for dy in -r..=r {
                for dx in -r..=r {
                    let xx = (x as isize + dx).clamp(0, w - 1) as usize;
                    let yy = (y as isize + dy).clamp(0, h - 1) as usize;
                    v.push(*img.get(xx, yy));
                }
            }
            v.sort_by(f32::total_cmp);
            v[v.len() / 2]
        })
    }

    proptest! {
        #[test]
        fn median_matches_sorting(w in 1usize..40, h in 1usize..90, r in 1usize..4, seed in 0u64..1000, range in prop::sample::select(vec![3u32, 255, 4095, 65535])) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let img = Raster::from_fn(w, h, |_, _| rng.random_range(0..=range) as f32);
            prop_assert_eq!(median_filter(&img, r), naive_median(&img, r));
        }
    }

    #[test]
    fn median_removes_impulse_noise_and_keeps_edges() {
        let mut img = Raster::from_fn(20, 20, |x, _| if x < 10 { 100.0 } else { 3000.0 });
        *img.get_mut(5, 5) = 65535.0;
        let m = median_filter(&img, 2);
        assert_eq!(*m.get(5, 5), 100.0);
        assert_eq!(*m.get(9, 7), 100.0);
        assert_eq!(*m.get(10, 7), 3000.0);
    }

    #[test]
    fn median_of_non_integer_data_is_close() {
        let img = Raster::from_fn(16, 16, |x, y| (x as f32 * 0.37 + y as f32 * 0.11).sin());
        let m = median_filter(&img, 1);
        let n = naive_median(&img, 1);
        for (a, b) in m.data().iter().zip(n.data()) {
            assert!((a - b).abs() < 2.0 / 65535.0 * 2.0, "{a} vs {b}");
        }
    }

    #[test]
    fn otsu_splits_two_populations() {
        let mut v = vec![10.0f32; 500];
        v.extend(vec![200.0f32; 300]);
        let t = otsu_threshold(&v, 256);
        assert!(t > 10.0 && t < 200.0, "{t}");
    }

    /// A synthetic "breast": a bright half-disc against the left edge, a bright label
    /// square far from it, dark background, and a dark hole inside the breast.
    fn phantom(w: usize, h: usize) -> Raster<f32> {
        Raster::from_fn(w, h, |x, y| {
            let (cx, cy) = (0.0, h as f32 / 2.0);
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            let in_label = x > w * 8 / 10 && x < w * 9 / 10 && y < h / 10;
            let in_hole = (x as f32 - w as f32 * 0.25).abs() < 3.0 && (y as f32 - cy).abs() < 3.0;
            if in_label {
                4000.0
            } else if d < w as f32 * 0.6 && !in_hole {
                // Fatty rim near the skin is faint, the interior denser.
                300.0 + 1500.0 * (1.0 - d / (w as f32 * 0.6))
            } else {
                20.0
            }
        })
    }

    #[test]
    fn breast_mask_keeps_breast_drops_label_fills_holes() {
        let img = phantom(300, 400);
        let m = breast_mask(&img, &BreastMaskConfig::default());
        assert!(*m.get(5, 200), "breast interior");
        assert!(*m.get(170, 200), "faint rim near the skin line");
        assert!(*m.get(75, 200), "hole inside the breast is filled");
        assert!(!*m.get(255, 20), "label excluded");
        assert!(!*m.get(290, 390), "background excluded");
        // Area close to the true half-disc area (pi r^2 / 2, r = 180).
        let truth = std::f32::consts::PI * 180.0 * 180.0 / 2.0;
        let got = m.count() as f32;
        assert!((got - truth).abs() / truth < 0.05, "area {got} vs {truth}");
    }

    proptest! {
        /// The scanline walk finds the components the labelling finds, with their sizes.
        #[test]
        fn component_walk_matches_labelling(w in 1usize..40, h in 1usize..40, seed in 0u64..5000, density in 1u64..9) {
            let mask = Raster::from_fn(w, h, |x, y| {
                (x as u64 * 7919 + y as u64 * 104729 + seed).wrapping_mul(2654435761) % 10 < density
            });
            let (labels, sizes) = label_components(&mask);
            let mut walked = Vec::new();
            for_each_component(&mask, usize::MAX, |size, pixels| {
                walked.push(size);
                assert_eq!(pixels.len(), size);
                let label = labels.data()[pixels[0]];
                assert!(pixels.iter().all(|&i| labels.data()[i] == label));
            });
            let mut expect = sizes.clone();
            expect.sort_unstable();
            walked.sort_unstable();
            prop_assert_eq!(walked, expect);
            prop_assert_eq!(component_count(&mask), sizes.len());
        }
    }

    #[test]
    fn fill_holes_and_largest_component() {
        let m = Raster::from_vec(
            5,
            5,
            vec![
                true, true, true, false, false, true, false, true, false, true, true, true, true,
                false, false, false, false, false, false, false, false, false, false, false, false,
            ],
        )
        .unwrap();
        let l = largest_component(&m);
        assert_eq!(l.count(), 8);
        assert!(!*l.get(4, 1));
        let f = fill_holes(&l);
        assert_eq!(f.count(), 9);
    }

    #[test]
    fn normalisation_uses_in_breast_percentiles() {
        let img = Raster::from_fn(100, 1, |x, _| x as f32);
        let mask = Raster::from_fn(100, 1, |x, _| x >= 50);
        let (lo, hi) = percentile_window(&img, &mask, 0.0, 100.0);
        assert_eq!((lo, hi), (50.0, 99.0));
        let n = normalise(&img, (lo, hi));
        assert_eq!(*n.get(10, 0), 0.0);
        assert_eq!(*n.get(99, 0), 1.0);
        assert!((n.get(75, 0) - 25.0 / 49.0).abs() < 1e-6);
    }

    #[test]
    fn validate_rejects_bad_configs() {
        assert!(Preprocess::default().validate().is_ok());
        let bad = Preprocess {
            low_percentile: 50.0,
            high_percentile: 40.0,
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(PreprocessError::Percentiles { .. })
        ));
    }
}
