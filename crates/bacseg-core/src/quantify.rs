//! BAC burden: the measurements a clinician can use from a BAC mask (calcified area, vessel
//! length along a skeleton, number of calcified segments, the SCU-Net probability measures)
//! and a severity grade from configurable length thresholds, per image, per breast and per
//! exam. The grade is NOT clinically validated; its thresholds are documented defaults.

use serde::{Deserialize, Serialize};

use crate::mammogram::{Laterality, PixelSpacing, View};
use crate::postprocess::DEFAULT_THRESHOLD;
use crate::preprocess::component_count;
use crate::raster::{Mask, ProbMap};

/// Printed and serialised beside every grade.
pub const GRADE_DISCLAIMER: &str = "not clinically validated";

/// A quantification input that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantifyError {
    #[error(
        "grade thresholds must be finite and satisfy 0 <= mild <= moderate <= severe (mm), got {mild}, {moderate}, {severe}"
    )]
    Thresholds {
        mild: f64,
        moderate: f64,
        severe: f64,
    },
    #[error("{what} is {got}, but the BAC mask is {expected}")]
    SizeMismatch {
        what: &'static str,
        got: crate::raster::Size,
        expected: crate::raster::Size,
    },
    #[error("image {0}: laterality unknown, cannot group by breast")]
    UnknownLaterality(String),
}

/// Severity of the calcification burden, from the centreline length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    None,
    Mild,
    Moderate,
    Severe,
}

impl Grade {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Mild => "mild",
            Self::Moderate => "moderate",
            Self::Severe => "severe",
        }
    }
}

/// Length thresholds (mm of calcified vessel centreline) of the severity grade. A mask with
/// no BAC is `none`; otherwise the grade is the highest whose threshold the length reaches.
///
/// The defaults (any BAC is mild, moderate from 20 mm, severe from 60 mm) are a starting
/// point chosen to spread typical screening cases over the grades; they are NOT clinically
/// validated and must be calibrated against reader scores before any clinical use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grading {
    pub mild_from_mm: f64,
    pub moderate_from_mm: f64,
    pub severe_from_mm: f64,
}

impl Default for Grading {
    fn default() -> Self {
        Self {
            mild_from_mm: 0.0,
            moderate_from_mm: 20.0,
            severe_from_mm: 60.0,
        }
    }
}

impl Grading {
    pub fn validate(&self) -> Result<(), QuantifyError> {
        let (a, b, c) = (
            self.mild_from_mm,
            self.moderate_from_mm,
            self.severe_from_mm,
        );
        if !(a.is_finite() && b.is_finite() && c.is_finite() && 0.0 <= a && a <= b && b <= c) {
            return Err(QuantifyError::Thresholds {
                mild: a,
                moderate: b,
                severe: c,
            });
        }
        Ok(())
    }

    /// The grade of a burden with `area_px` calcified pixels and this length; `None` when
    /// there is BAC but its length in mm is unknown (no pixel spacing).
    pub fn grade(&self, area_px: usize, length_mm: Option<f64>) -> Option<Grade> {
        if area_px == 0 {
            return Some(Grade::None);
        }
        let l = length_mm?;
        Some(if l >= self.severe_from_mm {
            Grade::Severe
        } else if l >= self.moderate_from_mm {
            Grade::Moderate
        } else if l >= self.mild_from_mm {
            Grade::Mild
        } else {
            Grade::None
        })
    }
}

/// The thresholds a grade was computed with, serialised beside it with the disclaimer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradeBasis {
    #[serde(flatten)]
    pub thresholds: Grading,
    pub clinically_validated: bool,
}

impl From<Grading> for GradeBasis {
    fn from(thresholds: Grading) -> Self {
        Self {
            thresholds,
            clinically_validated: false,
        }
    }
}

/// The SCU-Net measures, computed on the probability map rather than the mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbBurden {
    /// Sum of all probabilities (a "soft" calcified area in pixels).
    pub sum: f64,
    /// Threshold used for `area_px`.
    pub threshold: f32,
    /// Pixels whose probability is strictly above `threshold`.
    pub area_px: usize,
    pub area_mm2: Option<f64>,
}

/// Everything measured on one image's BAC mask. Fields in mm are `null` without a pixel
/// spacing; fields about the breast are `null` without a breast mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacBurden {
    /// Calcified pixels.
    pub area_px: usize,
    pub area_mm2: Option<f64>,
    /// Breast pixels, when a breast mask was given.
    pub breast_area_px: Option<usize>,
    /// Calcified area as a percentage of the breast area.
    pub area_pct_of_breast: Option<f64>,
    /// Centreline length in pixel steps (a diagonal step counts sqrt 2), see [`centreline_length`].
    pub length_px: f64,
    pub length_mm: Option<f64>,
    /// Mean calcified width = area / length.
    pub mean_width_px: Option<f64>,
    pub mean_width_mm: Option<f64>,
    /// Calcified segments: 8-connected components of the mask.
    pub segments: usize,
    /// The SCU-Net measures, when a probability map was given.
    pub prob: Option<ProbBurden>,
    /// `null` when there is BAC but no pixel spacing to express its length in mm.
    pub grade: Option<Grade>,
    pub grading: GradeBasis,
    pub spacing: Option<PixelSpacing>,
}

/// Measure a BAC mask. `prob` (same size) adds the SCU-Net measures with the default
/// threshold (see [`measure_prob`] for another), `spacing` the physical units, `breast` (same
/// size) the percentage of breast area. Sizes that differ from the mask's are ignored rather
/// than failing, so that a caller that checked nothing still gets the mask measures; use
/// [`check_sizes`] first to turn them into errors.
pub fn measure(
    mask: &Mask,
    prob: Option<&ProbMap>,
    spacing: Option<PixelSpacing>,
    breast: Option<&Mask>,
    grading: &Grading,
) -> BacBurden {
    let area_px = mask.count();
    let pixel_mm2 = spacing.map(|s| s.pixel_area_mm2());
    let area_mm2 = pixel_mm2.map(|a| a * area_px as f64);
    let breast = breast.filter(|b| b.size() == mask.size());
    let breast_area_px = breast.map(|b| b.count());
    let area_pct_of_breast = breast_area_px
        .filter(|&b| b > 0)
        .map(|b| 100.0 * area_px as f64 / b as f64);
    // The shape measures on the mask's bounding box: the same values (they look at mask pixels
    // and their neighbours only), with memory for the calcified region rather than the image.
    let shape = match bounding_box(mask) {
        Some((x, y, w, h)) => mask.crop(x, y, w, h, false),
        None => Mask::filled(1, 1, false),
    };
    let shape = &shape;
    let skeleton = skeletonize(shape);
    let length_px = centreline_length(shape, &skeleton, 1.0, 1.0);
    let length_mm = spacing.map(|s| centreline_length(shape, &skeleton, s.row_mm, s.col_mm));
    let width = |area: Option<f64>, len: Option<f64>| match (area, len) {
        (Some(a), Some(l)) if l > 0.0 => Some(a / l),
        _ => None,
    };
    drop(skeleton);
    let segments = component_count(shape);
    let prob = prob
        .filter(|p| p.size() == mask.size())
        .map(|p| measure_prob(p, DEFAULT_THRESHOLD, spacing));
    BacBurden {
        area_px,
        area_mm2,
        breast_area_px,
        area_pct_of_breast,
        length_px,
        length_mm,
        mean_width_px: width(Some(area_px as f64), Some(length_px)),
        mean_width_mm: width(area_mm2, length_mm),
        segments,
        prob,
        grade: grading.grade(area_px, length_mm),
        grading: (*grading).into(),
        spacing,
    }
}

/// The smallest rectangle (x, y, width, height) holding every set pixel of `mask`, if any.
pub fn bounding_box(mask: &Mask) -> Option<(usize, usize, usize, usize)> {
    let rows: Vec<usize> = (0..mask.height())
        .filter(|&y| mask.row(y).contains(&true))
        .collect();
    let (&y0, &y1) = (rows.first()?, rows.last()?);
    let (mut x0, mut x1) = (usize::MAX, 0);
    for &y in &rows {
        let row = mask.row(y);
        if let (Some(a), Some(b)) = (row.iter().position(|&v| v), row.iter().rposition(|&v| v)) {
            x0 = x0.min(a);
            x1 = x1.max(b);
        }
    }
    Some((x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

impl BacBurden {
    /// The same burden with its share of `breast` (ignored when the sizes differ, as in
    /// [`measure`]): what `measure` with that breast mask returns, without measuring the BAC
    /// mask again.
    pub fn with_breast(mut self, breast: &Mask, mask_size: crate::Size) -> Self {
        if breast.size() == mask_size {
            let b = breast.count();
            self.breast_area_px = Some(b);
            self.area_pct_of_breast = (b > 0).then(|| 100.0 * self.area_px as f64 / b as f64);
        }
        self
    }
}

/// Errors for a probability map or breast mask whose size differs from the BAC mask's.
pub fn check_sizes(
    mask: &Mask,
    prob: Option<&ProbMap>,
    breast: Option<&Mask>,
) -> Result<(), QuantifyError> {
    let expected = mask.size();
    if let Some(p) = prob.filter(|p| p.size() != expected) {
        return Err(QuantifyError::SizeMismatch {
            what: "the probability map",
            got: p.size(),
            expected,
        });
    }
    if let Some(b) = breast.filter(|b| b.size() != expected) {
        return Err(QuantifyError::SizeMismatch {
            what: "the breast mask",
            got: b.size(),
            expected,
        });
    }
    Ok(())
}

/// The SCU-Net measures: the sum of probabilities, and the area strictly above `threshold`.
pub fn measure_prob(prob: &ProbMap, threshold: f32, spacing: Option<PixelSpacing>) -> ProbBurden {
    let sum = prob.data().iter().map(|&p| f64::from(p)).sum();
    let area_px = prob.data().iter().filter(|&&p| p > threshold).count();
    ProbBurden {
        sum,
        threshold,
        area_px,
        area_mm2: spacing.map(|s| s.pixel_area_mm2() * area_px as f64),
    }
}

/// Offsets of the 8 neighbours in ring order N, NE, E, SE, S, SW, W, NW (Zhang-Suen's P2..P9).
const RING: [(isize, isize); 8] = [
    (0, -1),
    (1, -1),
    (1, 0),
    (1, 1),
    (0, 1),
    (-1, 1),
    (-1, 0),
    (-1, -1),
];

/// A binary image with a one-pixel background border, so neighbour reads need no bounds checks.
struct Padded {
    w: usize,
    data: Vec<bool>,
}

impl Padded {
    fn new(mask: &Mask) -> Self {
        let w = mask.width() + 2;
        let mut data = vec![false; w * (mask.height() + 2)];
        for y in 0..mask.height() {
            data[(y + 1) * w + 1..(y + 1) * w + 1 + mask.width()].copy_from_slice(mask.row(y));
        }
        Self { w, data }
    }

    /// Neighbour bits of padded index `i`, bit k = RING[k].
    #[inline]
    fn ring(&self, i: usize) -> u8 {
        let mut bits = 0u8;
        for (k, &(dx, dy)) in RING.iter().enumerate() {
            let j = (i as isize + dy * self.w as isize + dx) as usize;
            bits |= u8::from(self.data[j]) << k;
        }
        bits
    }
}

/// Number of 8-connected groups formed by the set neighbours of a pixel (adjacency between
/// ring positions, the centre excluded). One group means removing the pixel keeps its
/// neighbours connected.
fn ring_groups(bits: u8) -> u32 {
    let mut seen = 0u8;
    let mut groups = 0;
    for start in 0..8 {
        if bits & (1 << start) == 0 || seen & (1 << start) != 0 {
            continue;
        }
        groups += 1;
        let mut stack = vec![start];
        seen |= 1 << start;
        while let Some(a) = stack.pop() {
            let (ax, ay) = RING[a];
            for (b, &(bx, by)) in RING.iter().enumerate() {
                let adjacent = (ax - bx).abs() <= 1 && (ay - by).abs() <= 1;
                if adjacent && bits & (1 << b) != 0 && seen & (1 << b) == 0 {
                    seen |= 1 << b;
                    stack.push(b);
                }
            }
        }
    }
    groups
}

/// Whether a foreground pixel whose 8 neighbours are `ring` goes in sub-iteration `step` (0 or
/// 1) of Zhang-Suen thinning.
fn zhang_suen_removable(ring: u8, step: usize) -> bool {
    let bit = |k: usize| ring & (1 << k) != 0;
    let b = ring.count_ones();
    // A: 0 -> 1 transitions around the ring P2, P3, ..., P9, P2.
    let a = (0..8).filter(|&k| !bit(k) && bit((k + 1) % 8)).count();
    let (n, e, s, wst) = (bit(0), bit(2), bit(4), bit(6));
    // Step 1: P2.P4.P6 = 0 and P4.P6.P8 = 0; step 2: P2.P4.P8 = 0 and P2.P6.P8 = 0.
    let cond = if step == 0 {
        !(e && s && (n || wst))
    } else {
        !(n && wst && (e || s))
    };
    (2..=6).contains(&b) && a == 1 && cond
}

/// One-pixel-wide, 8-connected centreline of `mask`: Zhang-Suen thinning (1984), then the
/// removal of staircase corners it leaves, which would otherwise make a diagonal vessel
/// measure as a staircase (2 per step instead of sqrt 2).
pub fn skeletonize(mask: &Mask) -> Mask {
    let mut img = Padded::new(mask);
    let w = img.w;
    // Only border pixels (with a background neighbour) can be removed, and a pixel's fate in a
    // sub-iteration depends only on its 8 neighbours and the sub-iteration's parity. So the
    // candidates are the border pixels, a pixel leaves them once it has survived both parities
    // with its neighbourhood unchanged, and it comes back when a neighbour is removed. Same
    // result as checking every foreground pixel each time, in time proportional to the mask's
    // area rather than area x thickness (a large false-positive blob, or a labyrinth whose
    // skeleton is most of its area, would otherwise be rechecked on every pass).
    let len = img.data.len();
    let mut candidate = vec![false; len];
    // Sub-iterations a candidate has survived since its neighbourhood last changed.
    let mut survived = vec![0u8; len];
    let mut cand: Vec<usize> = (0..len)
        .filter(|&i| img.data[i] && img.ring(i) != 0xFF)
        .collect();
    for &i in &cand {
        candidate[i] = true;
    }
    let neighbours = [
        1isize,
        -1,
        w as isize,
        -(w as isize),
        w as isize + 1,
        w as isize - 1,
        -(w as isize) + 1,
        -(w as isize) - 1,
    ];
    let mut remove = Vec::new();
    loop {
        let mut changed = false;
        for step in 0..2 {
            remove.clear();
            for &i in &cand {
                if zhang_suen_removable(img.ring(i), step) {
                    remove.push(i);
                } else {
                    survived[i] = survived[i].saturating_add(1);
                }
            }
            for &i in &remove {
                img.data[i] = false;
            }
            changed |= !remove.is_empty();
            for &i in &remove {
                for d in neighbours {
                    let j = (i as isize + d) as usize;
                    if img.data[j] {
                        survived[j] = 0;
                        if !candidate[j] {
                            candidate[j] = true;
                            cand.push(j);
                        }
                    }
                }
            }
            cand.retain(|&i| {
                let keep = img.data[i] && survived[i] < 2;
                if !keep {
                    candidate[i] = false;
                }
                keep
            });
        }
        if !changed {
            break;
        }
    }
    let alive: Vec<usize> = (0..len).filter(|&i| img.data[i]).collect();
    // Staircase corners: a pixel with at least two neighbours that all stay connected without
    // it is redundant. Sequential in raster order, so of two mutually redundant pixels only
    // one goes and connectivity is kept.
    for &i in &alive {
        let p = img.ring(i);
        if p.count_ones() >= 2 && ring_groups(p) == 1 {
            img.data[i] = false;
        }
    }
    let (mw, mh) = (mask.width(), mask.height());
    Mask::from_fn(mw, mh, |x, y| img.data[(y + 1) * w + x + 1])
}

/// Points between which [`centreline_length`] measures chords along a traced path.
const CHORD_STEP: usize = 6;

/// Length of the calcified centreline given its `skeleton` (from [`skeletonize`]), with pixel
/// steps of `row_mm` vertically and `col_mm` horizontally (1, 1 for pixels).
///
/// The skeleton is traced into paths between ends and junctions (pixels linked to 8-neighbours;
/// a diagonal link is dropped when an orthogonal two-step path joins the same pixels, so a
/// corner is not counted twice). Each path is measured by chords between every
/// [`CHORD_STEP`]-th pixel: counting each step (1, or sqrt 2 diagonally) would overestimate a
/// vessel running at 22.5 degrees by 8%, because a digital line there is a staircase of
/// orthogonal and diagonal steps; chords follow the true direction. Thinning also stops short
/// of a segment's ends by about half its width, so each skeleton end is extended by its
/// distance to the background minus half a pixel, and an isolated skeleton pixel (a punctate
/// calcification) both ways: the length is the full extent of each segment along its
/// centreline.
pub fn centreline_length(mask: &Mask, skeleton: &Mask, row_mm: f64, col_mm: f64) -> f64 {
    let (w, h) = (skeleton.width(), skeleton.height());
    let on = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && *skeleton.get(x as usize, y as usize)
    };
    let links = |i: usize| -> Vec<usize> {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        RING.iter()
            .filter(|&&(dx, dy)| {
                on(x + dx, y + dy) && (dx == 0 || dy == 0 || (!on(x + dx, y) && !on(x, y + dy)))
            })
            .map(|&(dx, dy)| (y + dy) as usize * w + (x + dx) as usize)
            .collect()
    };
    let dist = |a: usize, b: usize| {
        let dx = (a % w) as f64 - (b % w) as f64;
        let dy = (a / w) as f64 - (b / w) as f64;
        ((dx * col_mm).powi(2) + (dy * row_mm).powi(2)).sqrt()
    };
    let chords = |path: &[usize]| -> f64 {
        let mut total = 0.0;
        let mut prev = path[0];
        for k in (CHORD_STEP..path.len()).step_by(CHORD_STEP) {
            total += dist(prev, path[k]);
            prev = path[k];
        }
        total + dist(prev, path[path.len() - 1])
    };
    // Physical extension uses the geometric mean spacing: exact for square pixels, and the
    // ends are a small part of the length otherwise.
    let mean_mm = (row_mm * col_mm).sqrt();
    let pixels: Vec<usize> = (0..w * h).filter(|&i| skeleton.data()[i]).collect();
    let mut visited = vec![false; w * h];
    let mut length = 0.0;
    // Paths leaving ends and junctions.
    for &start in &pixels {
        let out = links(start);
        if out.len() == 2 {
            continue;
        }
        match out.as_slice() {
            [] => {
                let reach = (distance_to_background(mask, start % w, start / w) - 0.5).max(0.0);
                length += 2.0 * reach * mean_mm;
            }
            &[first] => {
                // Direction of the path's last few pixels, continued out to the boundary.
                let (mut prev, mut cur) = (start, first);
                for _ in 1..CHORD_STEP {
                    match links(cur).as_slice() {
                        &[a, b] => (prev, cur) = (cur, if a == prev { b } else { a }),
                        _ => break,
                    }
                }
                let dir = (
                    (start % w) as f64 - (cur % w) as f64,
                    (start / w) as f64 - (cur / w) as f64,
                );
                let reach = reach_along(mask, start % w, start / w, dir);
                length += ((reach * dir.0 * col_mm).powi(2) + (reach * dir.1 * row_mm).powi(2))
                    .sqrt()
                    / (dir.0 * dir.0 + dir.1 * dir.1).sqrt();
            }
            _ => {}
        }
        for &first in &out {
            // A path is traced from both of its end nodes; keep one.
            if visited[first] || (links(first).len() != 2 && first < start) {
                continue;
            }
            let mut path = vec![start, first];
            let (mut prev, mut cur) = (start, first);
            loop {
                let next = links(cur);
                if next.len() != 2 {
                    break;
                }
                visited[cur] = true;
                let n = if next[0] == prev { next[1] } else { next[0] };
                path.push(n);
                (prev, cur) = (cur, n);
                if visited[cur] {
                    break;
                }
            }
            length += chords(&path);
        }
    }
    // Closed loops have no end or junction to start from.
    for &start in &pixels {
        let first = links(start);
        if visited[start] || first.len() != 2 {
            continue;
        }
        let mut path = vec![start];
        visited[start] = true;
        let (mut prev, mut cur) = (start, first[0]);
        while !visited[cur] {
            visited[cur] = true;
            path.push(cur);
            let next = links(cur);
            if next.len() != 2 {
                break;
            }
            let n = if next[0] == prev { next[1] } else { next[0] };
            (prev, cur) = (cur, n);
        }
        path.push(start);
        length += chords(&path);
    }
    length
}

/// Distance in pixels from the centre of pixel `(x, y)` along `dir` to where that ray leaves
/// `mask` (the image border counts as outside), sampled every tenth of a pixel.
fn reach_along(mask: &Mask, x: usize, y: usize, dir: (f64, f64)) -> f64 {
    let norm = (dir.0 * dir.0 + dir.1 * dir.1).sqrt();
    if norm == 0.0 {
        return 0.0;
    }
    let (ux, uy) = (dir.0 / norm, dir.1 / norm);
    let (w, h) = (mask.width() as f64, mask.height() as f64);
    let inside = |t: f64| {
        let (px, py) = ((x as f64 + t * ux).round(), (y as f64 + t * uy).round());
        px >= 0.0 && py >= 0.0 && px < w && py < h && *mask.get(px as usize, py as usize)
    };
    // March in tenths of a pixel (fine enough not to jump over a corner pixel), then bisect
    // the last step so the result does not carry the step's granularity.
    let limit = w + h;
    let mut t = 0.0;
    while t < limit && inside(t + 0.1) {
        t += 0.1;
    }
    let (mut lo, mut hi) = (t, t + 0.1);
    for _ in 0..20 {
        let mid = 0.5 * (lo + hi);
        if inside(mid) { lo = mid } else { hi = mid }
    }
    hi
}

/// Euclidean distance in pixels from `(x, y)` to the nearest pixel centre outside `mask` (the
/// image border counts as outside). Searched in growing square rings; only called at skeleton
/// ends, so brute force is cheap.
fn distance_to_background(mask: &Mask, x: usize, y: usize) -> f64 {
    let (w, h) = (mask.width() as isize, mask.height() as isize);
    let (x, y) = (x as isize, y as isize);
    let outside = |px: isize, py: isize| {
        px < 0 || py < 0 || px >= w || py >= h || !*mask.get(px as usize, py as usize)
    };
    let mut best = f64::INFINITY;
    let mut r: isize = 1;
    // Once the ring's nearest possible point (distance r) is beyond the best, stop.
    while (r as f64) < best {
        for d in -r..=r {
            for (px, py) in [
                (x + d, y - r),
                (x + d, y + r),
                (x - r, y + d),
                (x + r, y + d),
            ] {
                if outside(px, py) {
                    let (dx, dy) = ((px - x) as f64, (py - y) as f64);
                    best = best.min((dx * dx + dy * dy).sqrt());
                }
            }
        }
        r += 1;
    }
    best
}

/// One image's burden with the facts needed to group it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewBurden {
    /// The image's name (file stem).
    pub image: String,
    pub laterality: Option<Laterality>,
    pub view: Option<View>,
    pub burden: BacBurden,
}

/// Burden of a breast (its views) or of an exam (its breasts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupBurden {
    /// `L`, `R` or `exam`.
    pub group: String,
    pub images: Vec<String>,
    pub area_px: usize,
    pub area_mm2: Option<f64>,
    pub length_px: f64,
    pub length_mm: Option<f64>,
    pub segments: usize,
    pub grade: Option<Grade>,
}

/// Per-breast burden: for each laterality, the maximum of each measure over its views. The
/// CC and MLO views image the same vessels, so summing them would count each vessel twice;
/// the view that shows the most calcification is the best estimate. The grade is recomputed
/// from that length. Fails when an image's laterality is unknown.
pub fn per_breast(
    views: &[ViewBurden],
    grading: &Grading,
) -> Result<Vec<GroupBurden>, QuantifyError> {
    let mut out: Vec<GroupBurden> = Vec::new();
    for v in views {
        let lat = v
            .laterality
            .ok_or_else(|| QuantifyError::UnknownLaterality(v.image.clone()))?;
        let b = &v.burden;
        match out.iter_mut().find(|g| g.group == lat.as_str()) {
            Some(g) => {
                g.images.push(v.image.clone());
                g.area_px = g.area_px.max(b.area_px);
                g.area_mm2 = max_opt(g.area_mm2, b.area_mm2);
                g.length_px = g.length_px.max(b.length_px);
                g.length_mm = max_opt(g.length_mm, b.length_mm);
                g.segments = g.segments.max(b.segments);
            }
            None => out.push(GroupBurden {
                group: lat.as_str().into(),
                images: vec![v.image.clone()],
                area_px: b.area_px,
                area_mm2: b.area_mm2,
                length_px: b.length_px,
                length_mm: b.length_mm,
                segments: b.segments,
                grade: None,
            }),
        }
    }
    for g in &mut out {
        g.grade = grading.grade(g.area_px, g.length_mm);
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

/// Per-exam burden: the breasts' burdens (from [`per_breast`]) summed, since the two breasts
/// hold different vessels; the grade is the worse breast's, because the thresholds are per
/// breast and reading practice reports the most affected side.
pub fn per_exam(views: &[ViewBurden], grading: &Grading) -> Result<GroupBurden, QuantifyError> {
    let breasts = per_breast(views, grading)?;
    let sum_opt = |f: fn(&GroupBurden) -> Option<f64>| breasts.iter().map(f).sum::<Option<f64>>();
    Ok(GroupBurden {
        group: "exam".into(),
        images: breasts
            .iter()
            .flat_map(|b| b.images.iter().cloned())
            .collect(),
        area_px: breasts.iter().map(|b| b.area_px).sum(),
        area_mm2: sum_opt(|b| b.area_mm2),
        length_px: breasts.iter().map(|b| b.length_px).sum(),
        length_mm: sum_opt(|b| b.length_mm),
        segments: breasts.iter().map(|b| b.segments).sum(),
        // Unknown (None) when any breast's grade is unknown: the worst could be hidden there.
        grade: breasts
            .iter()
            .map(|b| b.grade)
            .collect::<Option<Vec<_>>>()
            .map(|g| g.into_iter().max().unwrap_or(Grade::None)),
    })
}

/// The larger of two optional measures; unknown if either is unknown.
fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.max(b?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mammogram::SpacingSource;
    use crate::preprocess::label_components;
    use crate::raster::Raster;

    fn spacing(mm: f64) -> PixelSpacing {
        PixelSpacing {
            row_mm: mm,
            col_mm: mm,
            source: SpacingSource::User,
        }
    }

    /// A straight band of length `len` and width `width` (pixels) centred in the image at
    /// `angle_deg`: a pixel is inside when its centre is inside the rotated rectangle.
    fn band(size: usize, len: f64, width: f64, angle_deg: f64) -> Mask {
        let (s, c) = angle_deg.to_radians().sin_cos();
        // Off the pixel grid, so that no pixel centre lies exactly on the band's edge.
        let mid = size as f64 / 2.0 + 0.3;
        Raster::from_fn(size, size, |x, y| {
            let (dx, dy) = (x as f64 + 0.5 - mid, y as f64 + 0.5 - mid);
            let along = dx * c + dy * s;
            let across = -dx * s + dy * c;
            along.abs() <= len / 2.0 && across.abs() <= width / 2.0
        })
    }

    fn rel_err(measured: f64, truth: f64) -> f64 {
        (measured - truth).abs() / truth
    }

    #[test]
    fn line_length_and_width_within_two_percent() {
        let sp = spacing(0.07);
        for angle in [0.0, 17.0, 30.0, 60.0, 73.0, 90.0, 112.5, 150.0] {
            for (len, width) in [(200.0, 5.0), (300.0, 9.0), (150.0, 3.0)] {
                let m = band(400, len, width, angle);
                let b = measure(&m, None, Some(sp), None, &Grading::default());
                let l_mm = b.length_mm.unwrap();
                assert!(
                    rel_err(l_mm, len * 0.07) < 0.02,
                    "angle {angle} len {len} width {width}: measured {l_mm} mm, truth {} mm",
                    len * 0.07
                );
                let w_mm = b.mean_width_mm.unwrap();
                assert!(
                    rel_err(w_mm, width * 0.07) < 0.02,
                    "angle {angle} len {len} width {width}: width {w_mm} mm, truth {} mm",
                    width * 0.07
                );
                assert_eq!(b.segments, 1);
            }
        }
    }

    #[test]
    fn disc_area_within_one_percent() {
        let r = 40.0;
        let m = Raster::from_fn(120, 120, |x, y| {
            let (dx, dy) = (x as f64 + 0.5 - 60.0, y as f64 + 0.5 - 60.0);
            dx * dx + dy * dy <= r * r
        });
        let b = measure(&m, None, Some(spacing(0.1)), None, &Grading::default());
        let truth = std::f64::consts::PI * (r * 0.1) * (r * 0.1);
        assert!(
            rel_err(b.area_mm2.unwrap(), truth) < 0.01,
            "{} vs {truth}",
            b.area_mm2.unwrap()
        );
        assert_eq!(b.area_px, m.count());
        assert_eq!(b.segments, 1);
    }

    #[test]
    fn anisotropic_spacing_scales_each_axis() {
        let m = band(300, 200.0, 5.0, 0.0);
        let aniso = PixelSpacing {
            row_mm: 0.1,
            col_mm: 0.05,
            source: SpacingSource::User,
        };
        let b = measure(&m, None, Some(aniso), None, &Grading::default());
        // Horizontal band: length runs along columns (0.05 mm), width along rows.
        assert!(
            rel_err(b.length_mm.unwrap(), 200.0 * 0.05) < 0.02,
            "{:?}",
            b.length_mm
        );
        assert!((b.area_mm2.unwrap() - m.count() as f64 * 0.005).abs() < 1e-9);
    }

    #[test]
    fn segments_breast_percentage_and_prob_measures() {
        let m = Raster::from_fn(20, 10, |x, y| {
            (y == 2 && (2..8).contains(&x)) || (y == 7 && (10..18).contains(&x))
        });
        let breast = Raster::from_fn(20, 10, |x, _| x < 16);
        let prob = m.map(|&b| if b { 0.75f32 } else { 0.25 });
        let b = measure(&m, Some(&prob), None, Some(&breast), &Grading::default());
        assert_eq!(b.area_px, 14);
        assert_eq!(b.segments, 2);
        assert_eq!(b.breast_area_px, Some(160));
        assert!((b.area_pct_of_breast.unwrap() - 100.0 * 14.0 / 160.0).abs() < 1e-12);
        let p = b.prob.unwrap();
        assert!((p.sum - (14.0 * 0.75 + 186.0 * 0.25)).abs() < 1e-9);
        assert_eq!(p.area_px, 14);
        // One-pixel-wide lines of 6 and 8 pixels span 6 and 8 pixels.
        assert!((b.length_px - 14.0).abs() < 1e-3, "{}", b.length_px);
        assert_eq!(b.area_mm2, None);
        assert_eq!(b.grade, None, "BAC without spacing cannot be graded in mm");
        // Adding the breast afterwards gives what measuring with it gives.
        let later = measure(&m, Some(&prob), None, None, &Grading::default());
        assert_ne!(later, b);
        assert_eq!(later.with_breast(&breast, m.size()), b);
        let other = Raster::from_fn(8, 8, |_, _| true);
        let unchanged = measure(&m, None, None, None, &Grading::default());
        assert_eq!(unchanged.clone().with_breast(&other, m.size()), unchanged);
    }

    #[test]
    fn empty_mask_is_grade_none() {
        let m = Raster::filled(10, 10, false);
        let b = measure(&m, None, None, None, &Grading::default());
        assert_eq!((b.area_px, b.segments, b.length_px), (0, 0, 0.0));
        assert_eq!(b.grade, Some(Grade::None));
        assert_eq!(b.mean_width_px, None);
    }

    #[test]
    fn grade_thresholds() {
        let g = Grading {
            mild_from_mm: 1.0,
            moderate_from_mm: 10.0,
            severe_from_mm: 30.0,
        };
        assert!(g.validate().is_ok());
        assert_eq!(g.grade(5, Some(0.5)), Some(Grade::None));
        assert_eq!(g.grade(5, Some(1.0)), Some(Grade::Mild));
        assert_eq!(g.grade(5, Some(10.0)), Some(Grade::Moderate));
        assert_eq!(g.grade(5, Some(45.0)), Some(Grade::Severe));
        assert_eq!(g.grade(0, None), Some(Grade::None));
        assert!(
            Grading {
                mild_from_mm: 5.0,
                moderate_from_mm: 4.0,
                severe_from_mm: 30.0
            }
            .validate()
            .is_err()
        );
        let json = serde_json::to_value(GradeBasis::from(g)).unwrap();
        assert_eq!(json["clinically_validated"], false);
        assert_eq!(json["severe_from_mm"], 30.0);
    }

    /// Zhang-Suen checking every foreground pixel on every sub-iteration (same per-pixel rule),
    /// then the same staircase pass: what [`skeletonize`]'s candidate bookkeeping must equal.
    fn full_scan_skeleton(mask: &Mask) -> Mask {
        let mut img = Padded::new(mask);
        let w = img.w;
        loop {
            let mut changed = false;
            for step in 0..2 {
                let remove: Vec<usize> = (0..img.data.len())
                    .filter(|&i| img.data[i])
                    .filter(|&i| zhang_suen_removable(img.ring(i), step))
                    .collect();
                changed |= !remove.is_empty();
                for i in remove {
                    img.data[i] = false;
                }
            }
            if !changed {
                break;
            }
        }
        let alive: Vec<usize> = (0..img.data.len()).filter(|&i| img.data[i]).collect();
        for i in alive {
            let p = img.ring(i);
            if p.count_ones() >= 2 && ring_groups(p) == 1 {
                img.data[i] = false;
            }
        }
        Mask::from_fn(mask.width(), mask.height(), |x, y| {
            img.data[(y + 1) * w + x + 1]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        #[test]
        fn skeleton_equals_the_full_scan(
            w in 1usize..60,
            h in 1usize..60,
            density in 0.05f64..0.95,
            blobs in 0usize..4,
            seed in 0u64..10_000,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut m = Mask::from_fn(w, h, |_, _| rng.random_bool(density));
            // Solid discs: thick regions that take many passes to thin.
            for _ in 0..blobs {
                let (cx, cy) = (rng.random_range(0..w) as f64, rng.random_range(0..h) as f64);
                let r = rng.random_range(2.0..15.0);
                for y in 0..h {
                    for x in 0..w {
                        if (x as f64 - cx).hypot(y as f64 - cy) <= r {
                            *m.get_mut(x, y) = true;
                        }
                    }
                }
            }
            proptest::prop_assert_eq!(skeletonize(&m), full_scan_skeleton(&m));
        }
    }

    #[test]
    fn skeleton_is_thin_and_connected() {
        let m = band(200, 150.0, 11.0, 30.0);
        let s = skeletonize(&m);
        assert_eq!(label_components(&s).1.len(), 1);
        // No 2x2 block survives.
        for y in 0..199 {
            for x in 0..199 {
                assert!(
                    !(*s.get(x, y) && *s.get(x + 1, y) && *s.get(x, y + 1) && *s.get(x + 1, y + 1))
                );
            }
        }
    }

    #[test]
    fn breast_and_exam_aggregation() {
        let sp = Some(spacing(0.1));
        let g = Grading::default();
        let view = |name: &str, lat, len: usize| {
            let m = Raster::from_fn(400, 20, |x, y| y == 10 && x < len);
            ViewBurden {
                image: name.into(),
                laterality: lat,
                view: None,
                burden: measure(&m, None, sp, None, &g),
            }
        };
        let views = vec![
            view("lcc", Some(Laterality::Left), 100),
            view("lmlo", Some(Laterality::Left), 300),
            view("rcc", Some(Laterality::Right), 0),
        ];
        let breasts = per_breast(&views, &g).unwrap();
        assert_eq!(breasts.len(), 2);
        let left = &breasts[0];
        assert_eq!((left.group.as_str(), left.area_px), ("L", 300));
        assert!((left.length_mm.unwrap() - 30.0).abs() < 1e-9);
        assert_eq!(left.grade, Some(Grade::Moderate));
        assert_eq!(breasts[1].grade, Some(Grade::None));
        let exam = per_exam(&views, &g).unwrap();
        assert_eq!(exam.area_px, 300);
        assert_eq!(exam.grade, Some(Grade::Moderate));
        assert_eq!(exam.images.len(), 3);
        let mut unknown = views.clone();
        unknown[2].laterality = None;
        assert!(matches!(
            per_breast(&unknown, &g),
            Err(QuantifyError::UnknownLaterality(_))
        ));
    }
}
