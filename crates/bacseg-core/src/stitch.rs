//! Putting per-patch predictions back together into one probability map for the whole image.
//! Patches stream in, in any order, and are folded into one whole-image buffer at once, so memory
//! is O(image) however many patches there are: 4 bytes per pixel for the Gaussian, mean and
//! maximum blends (the weight sums of the averages are recomputed row by row from the patches'
//! positions when the map is finished, not kept per pixel), 8 for crop. Pixels no patch covered
//! (tiles skipped outside the breast) come out as probability 0.

use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::patch::{Patch, PatchGrid};
use crate::raster::{ProbMap, Raster, Size};

/// How overlapping patches are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlendMode {
    /// Weighted average with a Gaussian importance map centred on each patch, sigma = size/8
    /// (nnU-Net): a network sees least context at a patch's border and is least reliable there.
    Gaussian,
    /// Uniform average (MONAI's default).
    Mean,
    /// Element-wise maximum (SCU-Net's published inference).
    Max,
    /// Each pixel from the covering patch whose centre is nearest (the reference method's
    /// "concatenate"). Ties between equally near patches take the larger value, so that the
    /// result does not depend on the order patches arrive in.
    Crop,
}

impl BlendMode {
    pub const ALL: [BlendMode; 4] = [Self::Gaussian, Self::Mean, Self::Max, Self::Crop];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Gaussian => "gaussian",
            Self::Mean => "mean",
            Self::Max => "max",
            Self::Crop => "crop",
        }
    }
}

impl std::fmt::Display for BlendMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BlendMode {
    type Err = StitchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| StitchError::UnknownMode(s.into()))
    }
}

/// A patch or setting the blender cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StitchError {
    #[error("unknown blend mode {0:?} (expected gaussian, mean, max or crop)")]
    UnknownMode(String),
    #[error("patch size must be between 1 and 32768 pixels, got {0}")]
    PatchSize(usize),
    #[error("image must be at least 1x1, got {0}")]
    EmptyImage(Size),
    #[error("patch data has {got} values, a {size}x{size} patch needs {}", size * size)]
    PatchData { got: usize, size: usize },
    #[error(
        "patch at ({x}, {y}) with valid region {w}x{h} does not fit a {size} patch inside the {image} image"
    )]
    PatchOutside {
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        size: usize,
        image: Size,
    },
}

/// Accumulates patch predictions into a whole-image map.
#[derive(Debug, Clone)]
pub struct Blender {
    mode: BlendMode,
    size: usize,
    image: Size,
    /// Gaussian/mean: weighted sum. Max: running maximum. Crop: value of the nearest patch.
    value: Vec<f32>,
    /// Gaussian/mean: the valid region of each patch added (x, y, width, height), in the order
    /// added, from which [`finish`](Self::finish) recomputes the sum of weights per pixel.
    added: Vec<[usize; 4]>,
    /// Crop only: squared distance in half-pixels to the nearest patch centre so far
    /// (`u32::MAX` while uncovered); empty otherwise.
    nearest: Vec<u32>,
    /// Gaussian importance along one axis; the 2-D map is the outer product.
    weight_1d: Vec<f32>,
}

impl Blender {
    /// A blender for an `image` cut into `patch_size` square patches.
    pub fn new(image: Size, patch_size: usize, mode: BlendMode) -> Result<Self, StitchError> {
        // Crop compares squared distances in half-pixels as u32: (2 * 32768)^2 * 2 fits.
        if patch_size == 0 || patch_size > 32768 {
            return Err(StitchError::PatchSize(patch_size));
        }
        if image.width == 0 || image.height == 0 {
            return Err(StitchError::EmptyImage(image));
        }
        let n = image.area();
        let (value, nearest) = match mode {
            BlendMode::Gaussian | BlendMode::Mean => (vec![0.0; n], Vec::new()),
            BlendMode::Max => (vec![f32::NEG_INFINITY; n], Vec::new()),
            BlendMode::Crop => (vec![0.0; n], vec![u32::MAX; n]),
        };
        let weight_1d = match mode {
            BlendMode::Gaussian => {
                let sigma = patch_size as f64 / 8.0;
                let centre = (patch_size as f64 - 1.0) / 2.0;
                (0..patch_size)
                    .map(|i| {
                        let d = i as f64 - centre;
                        (-d * d / (2.0 * sigma * sigma)).exp() as f32
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Self {
            mode,
            size: patch_size,
            image,
            value,
            added: Vec::new(),
            nearest,
            weight_1d,
        })
    }

    /// A blender matching `grid`'s image and patch size.
    pub fn for_grid(grid: &PatchGrid, mode: BlendMode) -> Result<Self, StitchError> {
        Self::new(grid.image_size(), grid.patch_size(), mode)
    }

    pub fn mode(&self) -> BlendMode {
        self.mode
    }

    /// Fold in one patch's prediction: `probs` is the full `size x size` output, row-major;
    /// only its valid region (the part inside the image) is used.
    pub fn add(&mut self, patch: &Patch, probs: &[f32]) -> Result<(), StitchError> {
        let size = self.size;
        if probs.len() != size * size {
            return Err(StitchError::PatchData {
                got: probs.len(),
                size,
            });
        }
        let (w, h) = (patch.valid_width, patch.valid_height);
        if w > size || h > size || patch.x + w > self.image.width || patch.y + h > self.image.height
        {
            return Err(StitchError::PatchOutside {
                x: patch.x,
                y: patch.y,
                w,
                h,
                size,
                image: self.image,
            });
        }
        let width = self.image.width;
        let rows = patch.y * width..(patch.y + h) * width;
        let x0 = patch.x;
        // Each image row takes one patch row; rows are disjoint, so they go in parallel.
        match self.mode {
            BlendMode::Gaussian | BlendMode::Mean => {
                let gaussian = self.mode == BlendMode::Gaussian;
                let wts = &self.weight_1d;
                self.added.push([x0, patch.y, w, h]);
                self.value[rows]
                    .par_chunks_mut(width)
                    .enumerate()
                    .for_each(|(r, val)| {
                        let src = &probs[r * size..r * size + w];
                        let val = &mut val[x0..x0 + w];
                        if gaussian {
                            let wy = wts[r];
                            for ((v, &p), &wx) in val.iter_mut().zip(src).zip(&wts[..w]) {
                                *v += wy * wx * p;
                            }
                        } else {
                            for (v, &p) in val.iter_mut().zip(src) {
                                *v += p;
                            }
                        }
                    });
            }
            BlendMode::Max => {
                self.value[rows]
                    .par_chunks_mut(width)
                    .enumerate()
                    .for_each(|(r, val)| {
                        for (v, &p) in val[x0..x0 + w]
                            .iter_mut()
                            .zip(&probs[r * size..r * size + w])
                        {
                            *v = v.max(p);
                        }
                    });
            }
            BlendMode::Crop => {
                // Distances in half-pixels from the patch centre, so they are exact integers
                // for odd and even sizes alike.
                let half = |i: usize| (2 * i as i64 - (size as i64 - 1)).pow(2) as u32;
                self.value[rows.clone()]
                    .par_chunks_mut(width)
                    .zip(self.nearest[rows].par_chunks_mut(width))
                    .enumerate()
                    .for_each(|(r, (val, near))| {
                        let dy = half(r);
                        let src = &probs[r * size..r * size + w];
                        for (c, ((v, n), &p)) in val[x0..x0 + w]
                            .iter_mut()
                            .zip(&mut near[x0..x0 + w])
                            .zip(src)
                            .enumerate()
                        {
                            let d = dy + half(c);
                            if d < *n || (d == *n && p > *v) {
                                *n = d;
                                *v = p;
                            }
                        }
                    });
            }
        }
        Ok(())
    }

    /// The blended map; uncovered pixels are 0.
    pub fn finish(self) -> ProbMap {
        let Size { width, height } = self.image;
        let mut value = self.value;
        // In place: a second full-size buffer would cost as much as the blending itself.
        match self.mode {
            BlendMode::Gaussian | BlendMode::Mean => {
                // The sum of weights of one row, from the patches that cover it, added in the
                // order the patches came (the same sums a per-pixel buffer would have held).
                let gaussian = self.mode == BlendMode::Gaussian;
                let (wts, added) = (&self.weight_1d, &self.added);
                value.par_chunks_mut(width).enumerate().for_each_init(
                    || vec![0f32; width],
                    |wsum, (y, row)| {
                        wsum.fill(0.0);
                        for &[x0, y0, w, h] in added {
                            if y < y0 || y >= y0 + h {
                                continue;
                            }
                            let sum = &mut wsum[x0..x0 + w];
                            if gaussian {
                                let wy = wts[y - y0];
                                for (s, &wx) in sum.iter_mut().zip(&wts[..w]) {
                                    *s += wy * wx;
                                }
                            } else {
                                sum.iter_mut().for_each(|s| *s += 1.0);
                            }
                        }
                        for (v, &s) in row.iter_mut().zip(wsum.iter()) {
                            *v = if s > 0.0 { *v / s } else { 0.0 };
                        }
                    },
                );
            }
            BlendMode::Max => value.par_iter_mut().for_each(|v| {
                if *v == f32::NEG_INFINITY {
                    *v = 0.0;
                }
            }),
            BlendMode::Crop => {}
        }
        // The buffers were allocated as width x height and never resized, so this cannot fail;
        // the fallback only avoids a panic path.
        Raster::from_vec(width, height, value)
            .unwrap_or_else(|_| Raster::filled(width, height, 0.0))
    }
}

/// Blend `patches` (each a grid patch and its `size x size` prediction) into one map.
pub fn stitch<'a>(
    grid: &PatchGrid,
    mode: BlendMode,
    patches: impl IntoIterator<Item = (Patch, &'a [f32])>,
) -> Result<ProbMap, StitchError> {
    let mut b = Blender::for_grid(grid, mode)?;
    for (patch, probs) in patches {
        b.add(&patch, probs)?;
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cut(img: &ProbMap, grid: &PatchGrid) -> Vec<(Patch, Vec<f32>)> {
        grid.patches()
            .iter()
            .map(|p| (*p, grid.extract(img, p, f32::NAN).into_vec()))
            .collect()
    }

    #[test]
    fn gaussian_weights_follow_nnunet() {
        let b = Blender::new(Size::new(10, 10), 64, BlendMode::Gaussian).unwrap();
        let w = &b.weight_1d;
        // Symmetric about the centre, 1/e^(1/2) one sigma (8 px) from it, exp(-8) at the border.
        assert!((w[0] - w[63]).abs() < 1e-7);
        let centre = 31.5f64;
        let one_sigma = (-((39.0f64 - centre).powi(2)) / (2.0 * 64.0)).exp();
        assert!((f64::from(w[39]) - one_sigma).abs() < 1e-6);
        assert!((f64::from(w[0]) - (-(centre * centre) / 128.0).exp()).abs() < 1e-9);
    }

    #[test]
    fn crop_takes_the_nearest_centre() {
        // Two 4-wide patches at x = 0 and x = 3 over a 7-wide image, centres 1.5 and 4.5:
        // pixels 0-2 are nearer the first, 4-6 the second, 3 is equally near both and takes
        // the larger value whatever the order.
        let grid = PatchGrid::new(Size::new(7, 4), 4, 3).unwrap();
        assert_eq!(grid.len(), 2);
        for (values, expect) in [
            ([1.0, 2.0], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]),
            ([3.0, 2.0], [3.0, 3.0, 3.0, 3.0, 2.0, 2.0, 2.0]),
        ] {
            for reverse in [false, true] {
                let mut tiles: Vec<(Patch, f32)> =
                    grid.patches().iter().copied().zip(values).collect();
                if reverse {
                    tiles.reverse();
                }
                let mut b = Blender::for_grid(&grid, BlendMode::Crop).unwrap();
                for (p, v) in tiles {
                    b.add(&p, &[v; 16]).unwrap();
                }
                let out = b.finish();
                assert_eq!(out.row(0), &expect);
                assert_eq!(out.row(0), out.row(3));
            }
        }
    }

    #[test]
    fn max_and_mean_of_overlaps() {
        let grid = PatchGrid::new(Size::new(6, 1), 4, 2).unwrap();
        let vals = [0.2f32, 0.6];
        for (mode, expect) in [
            (BlendMode::Max, [0.2, 0.2, 0.6, 0.6, 0.6, 0.6]),
            (BlendMode::Mean, [0.2, 0.2, 0.4, 0.4, 0.6, 0.6]),
        ] {
            let mut b = Blender::for_grid(&grid, mode).unwrap();
            for (p, v) in grid.patches().iter().zip(vals) {
                b.add(p, &[v; 16]).unwrap();
            }
            let out = b.finish();
            for (o, e) in out.data().iter().zip(expect) {
                assert!((o - e).abs() < 1e-6, "{mode}: {:?}", out.data());
            }
        }
    }

    #[test]
    fn uncovered_is_zero_and_bad_patches_are_refused() {
        let mut b = Blender::new(Size::new(8, 8), 4, BlendMode::Gaussian).unwrap();
        let p = Patch {
            x: 0,
            y: 0,
            valid_width: 4,
            valid_height: 4,
        };
        b.add(&p, &[0.5; 16]).unwrap();
        assert!(matches!(
            b.add(&p, &[0.5; 15]),
            Err(StitchError::PatchData { .. })
        ));
        let outside = Patch {
            x: 6,
            y: 0,
            valid_width: 4,
            valid_height: 4,
        };
        assert!(matches!(
            b.add(&outside, &[0.5; 16]),
            Err(StitchError::PatchOutside { .. })
        ));
        let out = b.finish();
        assert!((out.get(1, 1) - 0.5).abs() < 1e-6);
        assert_eq!(*out.get(7, 7), 0.0);
        assert_eq!("max".parse::<BlendMode>().unwrap(), BlendMode::Max);
        assert!("median".parse::<BlendMode>().is_err());
    }

    proptest! {
        /// Cutting an image into tiles and blending them back returns it, in every mode and in
        /// any patch order; the padding values (NaN here) never leak into the result.
        #[test]
        fn cut_and_blend_round_trips(
            w in 1usize..120, h in 1usize..120, size in 1usize..48, frac in 0.1f64..=1.0,
            seed in any::<u64>(), reverse in any::<bool>(),
        ) {
            let stride = ((size as f64 * frac) as usize).clamp(1, size);
            let grid = PatchGrid::new(Size::new(w, h), size, stride).unwrap();
            let img = Raster::from_fn(w, h, |x, y| {
                let v = (x as u64 * 7919 + y as u64 * 104_729).wrapping_mul(seed | 1) % 1000;
                v as f32 / 1000.0
            });
            let mut tiles = cut(&img, &grid);
            if reverse {
                tiles.reverse();
            }
            for mode in BlendMode::ALL {
                let out = stitch(&grid, mode, tiles.iter().map(|(p, v)| (*p, v.as_slice()))).unwrap();
                for (a, b) in out.data().iter().zip(img.data()) {
                    prop_assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{mode}: {a} vs {b}");
                }
            }
        }

        /// A constant map stays that constant.
        #[test]
        fn constant_stays_constant(w in 1usize..150, h in 1usize..150, size in 2usize..64, c in 0.0f32..=1.0) {
            let grid = PatchGrid::new(Size::new(w, h), size, (size * 3 / 4).max(1)).unwrap();
            for mode in BlendMode::ALL {
                let mut b = Blender::for_grid(&grid, mode).unwrap();
                for p in grid.patches() {
                    b.add(p, &vec![c; size * size]).unwrap();
                }
                let out = b.finish();
                prop_assert!(out.data().iter().all(|&v| (v - c).abs() <= 1e-6), "{mode}");
            }
        }
    }
}
