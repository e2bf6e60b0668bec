//! Where the square patches a network sees lie on an image: a regular grid with a given
//! stride (or overlap), the last row and column snapped to the image edge so every pixel is
//! covered without going outside, images smaller than a patch padded (the padding belongs to
//! no patch's valid region, so it is never predicted into the output nor counted by metrics),
//! tiles outside the breast skippable; and a seeded training sampler over such grids that
//! oversamples patches containing BAC.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::raster::{Mask, Raster, Size};

/// A grid that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    #[error("patch size must be at least 1 pixel")]
    ZeroPatch,
    #[error("stride must be between 1 and the patch size ({patch}), got {stride}")]
    Stride { stride: usize, patch: usize },
    #[error("overlap must be in [0, 1), got {0}")]
    Overlap(f64),
    #[error("image must be at least 1x1, got {0}")]
    EmptyImage(Size),
    #[error("minimum in-breast fraction must be in [0, 1], got {0}")]
    BreastFraction(f64),
    #[error("the breast mask is {got}, the image is {expected}")]
    BreastSize { got: Size, expected: Size },
    #[error("positive fraction must be in [0, 1], got {0}")]
    PositiveFraction(f64),
    #[error("nothing to sample from: the grid has no patch")]
    NoPatches,
}

/// One tile: its top-left corner in the image and the part of it inside the image. A tile is
/// always `size x size` as the network sees it; only `valid_width x valid_height` from the
/// top-left is image, the rest (when the image is smaller than a patch) is padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Patch {
    pub x: usize,
    pub y: usize,
    pub valid_width: usize,
    pub valid_height: usize,
}

impl Patch {
    /// Pixels of the image this patch covers.
    pub fn valid_area(&self) -> usize {
        self.valid_width * self.valid_height
    }
}

/// Patch positions over one image.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchGrid {
    image: Size,
    size: usize,
    stride: usize,
    patches: Vec<Patch>,
}

/// Tile origins along one axis of length `len`: 0, stride, 2 stride, ... and a last tile
/// snapped to end exactly at the edge (so it may overlap its neighbour more than the others).
fn origins(len: usize, size: usize, stride: usize) -> Vec<usize> {
    if len <= size {
        return vec![0];
    }
    let last = len - size;
    let mut out: Vec<usize> = (0..last).step_by(stride).collect();
    out.push(last);
    out
}

impl PatchGrid {
    /// Every tile of `size x size` at `stride` over an image of `image` pixels, row by row.
    pub fn new(image: Size, size: usize, stride: usize) -> Result<Self, PatchError> {
        if size == 0 {
            return Err(PatchError::ZeroPatch);
        }
        if stride == 0 || stride > size {
            return Err(PatchError::Stride {
                stride,
                patch: size,
            });
        }
        if image.width == 0 || image.height == 0 {
            return Err(PatchError::EmptyImage(image));
        }
        let xs = origins(image.width, size, stride);
        let ys = origins(image.height, size, stride);
        let patches = ys
            .iter()
            .flat_map(|&y| {
                xs.iter().map(move |&x| Patch {
                    x,
                    y,
                    valid_width: size.min(image.width - x),
                    valid_height: size.min(image.height - y),
                })
            })
            .collect();
        Ok(Self {
            image,
            size,
            stride,
            patches,
        })
    }

    /// As [`PatchGrid::new`] with the stride given as an overlap fraction between neighbours
    /// (0.25 of 512 = stride 384), rounded to the nearest pixel and at least 1.
    pub fn with_overlap(image: Size, size: usize, overlap: f64) -> Result<Self, PatchError> {
        if !(0.0..1.0).contains(&overlap) {
            return Err(PatchError::Overlap(overlap));
        }
        let stride = ((size as f64 * (1.0 - overlap)).round() as usize).clamp(1, size.max(1));
        Self::new(image, size, stride)
    }

    /// Keep only tiles whose valid region holds some breast and is at least `min_fraction`
    /// breast (so 0 keeps every tile that touches the breast).
    pub fn within_breast(mut self, breast: &Mask, min_fraction: f64) -> Result<Self, PatchError> {
        if !(0.0..=1.0).contains(&min_fraction) {
            return Err(PatchError::BreastFraction(min_fraction));
        }
        if breast.size() != self.image {
            return Err(PatchError::BreastSize {
                got: breast.size(),
                expected: self.image,
            });
        }
        // Breast pixels per patch, one band of rows at a time (the patches of a grid row
        // share their rows): memory for one row of counts, not a summed-area table of the image.
        let w = breast.width();
        let mut band: Option<(usize, usize)> = None;
        let mut prefix = vec![0u64; w + 1];
        let mut columns = vec![0u64; w];
        self.patches.retain(|p| {
            if band != Some((p.y, p.valid_height)) {
                band = Some((p.y, p.valid_height));
                columns.fill(0);
                for y in p.y..p.y + p.valid_height {
                    for (c, &b) in columns.iter_mut().zip(breast.row(y)) {
                        *c += u64::from(b);
                    }
                }
                for x in 0..w {
                    prefix[x + 1] = prefix[x] + columns[x];
                }
            }
            let inside = prefix[p.x + p.valid_width] - prefix[p.x];
            // Compare counts, not a float ratio, so that 1.0 means exactly "all breast".
            inside > 0 && inside as f64 >= min_fraction * p.valid_area() as f64
        });
        Ok(self)
    }

    pub fn image_size(&self) -> Size {
        self.image
    }

    /// Side of every patch, pixels.
    pub fn patch_size(&self) -> usize {
        self.size
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn patches(&self) -> &[Patch] {
        &self.patches
    }

    pub fn len(&self) -> usize {
        self.patches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    /// The `size x size` window of `raster` under `patch`, padded with `pad` outside the image.
    pub fn extract<T: Clone>(&self, raster: &Raster<T>, patch: &Patch, pad: T) -> Raster<T> {
        raster.crop(patch.x, patch.y, self.size, self.size, pad)
    }
}

/// Summed-area table of a mask: the number of true pixels in any rectangle in O(1).
#[derive(Debug)]
pub struct SummedArea {
    w: usize,
    /// (w + 1) x (h + 1), row 0 and column 0 zero.
    table: Vec<u64>,
}

impl SummedArea {
    pub fn new(mask: &Mask) -> Self {
        let (w, h) = (mask.width(), mask.height());
        let mut table = vec![0u64; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0u64;
            for (x, &b) in mask.row(y).iter().enumerate() {
                row += u64::from(b);
                table[(y + 1) * (w + 1) + x + 1] = table[y * (w + 1) + x + 1] + row;
            }
        }
        Self { w, table }
    }

    /// True pixels in the `w x h` rectangle at `(x, y)`; the rectangle must be inside the mask.
    pub fn sum(&self, x: usize, y: usize, w: usize, h: usize) -> u64 {
        let s = self.w + 1;
        self.table[(y + h) * s + x + w] + self.table[y * s + x]
            - self.table[y * s + x + w]
            - self.table[(y + h) * s + x]
    }
}

/// A patch a sampler can draw: which image (index into the caller's list), where, and
/// whether its valid region contains any true BAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleItem {
    pub image: usize,
    pub patch: Patch,
    pub positive: bool,
}

/// The sample items of one image: every patch of `grid`, marked positive when `truth` has
/// BAC inside its valid region.
pub fn sample_items(
    image: usize,
    grid: &PatchGrid,
    truth: &Mask,
) -> Result<Vec<SampleItem>, PatchError> {
    if truth.size() != grid.image_size() {
        return Err(PatchError::BreastSize {
            got: truth.size(),
            expected: grid.image_size(),
        });
    }
    let counts = SummedArea::new(truth);
    Ok(grid
        .patches()
        .iter()
        .map(|&patch| SampleItem {
            image,
            patch,
            positive: counts.sum(patch.x, patch.y, patch.valid_width, patch.valid_height) > 0,
        })
        .collect())
}

/// Draws training patches with replacement. Each draw, with probability `positive_fraction`,
/// takes a patch containing BAC (uniformly among them); otherwise any patch uniformly, as
/// nnU-Net's foreground oversampling does. BAC covers well under 1% of a mammogram, so
/// without oversampling most batches would hold no positive pixel at all. When there is no
/// positive patch, every draw is uniform. The same seed gives the same sequence.
#[derive(Debug, Clone)]
pub struct PatchSampler {
    items: Vec<SampleItem>,
    positives: Vec<usize>,
    positive_fraction: f64,
    rng: ChaCha8Rng,
}

impl PatchSampler {
    pub fn new(
        items: Vec<SampleItem>,
        positive_fraction: f64,
        seed: u64,
    ) -> Result<Self, PatchError> {
        if !(0.0..=1.0).contains(&positive_fraction) {
            return Err(PatchError::PositiveFraction(positive_fraction));
        }
        if items.is_empty() {
            return Err(PatchError::NoPatches);
        }
        let positives = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.positive)
            .map(|(i, _)| i)
            .collect();
        Ok(Self {
            items,
            positives,
            positive_fraction,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    pub fn items(&self) -> &[SampleItem] {
        &self.items
    }

    /// Number of items that contain BAC.
    pub fn positive_count(&self) -> usize {
        self.positives.len()
    }

    /// The next patch.
    pub fn draw(&mut self) -> SampleItem {
        let from_positives =
            !self.positives.is_empty() && self.rng.random_bool(self.positive_fraction);
        let i = if from_positives {
            self.positives[self.rng.random_range(0..self.positives.len())]
        } else {
            self.rng.random_range(0..self.items.len())
        };
        self.items[i]
    }

    /// The next `n` patches.
    pub fn draw_n(&mut self, n: usize) -> Vec<SampleItem> {
        (0..n).map(|_| self.draw()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn last_tile_snaps_to_the_edge() {
        let g = PatchGrid::new(Size::new(1000, 512), 512, 384).unwrap();
        let xs: Vec<usize> = g.patches().iter().map(|p| p.x).collect();
        assert_eq!(xs, vec![0, 384, 488]);
        assert!(
            g.patches()
                .iter()
                .all(|p| p.y == 0 && p.valid_area() == 512 * 512)
        );
        // The reference geometry: 3328x4096 at 512/480.
        let g = PatchGrid::new(Size::new(3328, 4096), 512, 480).unwrap();
        assert_eq!(g.len(), 7 * 9);
        let g = PatchGrid::with_overlap(Size::new(3328, 4096), 512, 0.25).unwrap();
        assert_eq!(g.stride(), 384);
        assert_eq!(g.len(), 9 * 11);
    }

    #[test]
    fn small_image_is_one_padded_tile() {
        let g = PatchGrid::new(Size::new(300, 700), 512, 256).unwrap();
        let p = g.patches();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].valid_width, p[0].valid_height), (300, 512));
        assert_eq!((p[1].y, p[1].valid_height), (188, 512));
        let img = Raster::filled(300, 700, 1u8);
        let tile = g.extract(&img, &p[0], 0);
        assert_eq!(tile.size(), Size::new(512, 512));
        assert_eq!(
            tile.data().iter().map(|&v| v as usize).sum::<usize>(),
            300 * 512
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        let s = Size::new(100, 100);
        assert_eq!(PatchGrid::new(s, 0, 1), Err(PatchError::ZeroPatch));
        assert!(matches!(
            PatchGrid::new(s, 64, 0),
            Err(PatchError::Stride { .. })
        ));
        assert!(matches!(
            PatchGrid::new(s, 64, 65),
            Err(PatchError::Stride { .. })
        ));
        assert!(matches!(
            PatchGrid::with_overlap(s, 64, 1.0),
            Err(PatchError::Overlap(_))
        ));
        assert!(matches!(
            PatchGrid::new(Size::new(0, 5), 64, 32),
            Err(PatchError::EmptyImage(_))
        ));
    }

    #[test]
    fn tiles_outside_the_breast_are_skipped() {
        // Breast = left 150 columns of a 400x100 image; tiles of 100 at stride 100.
        let breast = Raster::from_fn(400, 100, |x, _| x < 150);
        let g = PatchGrid::new(Size::new(400, 100), 100, 100).unwrap();
        let any = g.clone().within_breast(&breast, 0.0).unwrap();
        assert_eq!(
            any.patches().iter().map(|p| p.x).collect::<Vec<_>>(),
            vec![0, 100]
        );
        let half = g.clone().within_breast(&breast, 0.5).unwrap();
        assert_eq!(
            half.patches().iter().map(|p| p.x).collect::<Vec<_>>(),
            vec![0, 100]
        );
        let most = g.clone().within_breast(&breast, 0.51).unwrap();
        assert_eq!(
            most.patches().iter().map(|p| p.x).collect::<Vec<_>>(),
            vec![0]
        );
        assert!(g.within_breast(&Raster::filled(3, 3, true), 0.5).is_err());
    }

    #[test]
    fn sampler_oversamples_positives_and_is_seeded() {
        let truth = Raster::from_fn(1000, 100, |x, y| x == 50 && y == 50);
        let g = PatchGrid::new(Size::new(1000, 100), 100, 100).unwrap();
        let items = sample_items(0, &g, &truth).unwrap();
        assert_eq!(items.iter().filter(|i| i.positive).count(), 1);
        let mut s = PatchSampler::new(items.clone(), 0.5, 7).unwrap();
        let draws = s.draw_n(10_000);
        let pos = draws.iter().filter(|d| d.positive).count() as f64 / 10_000.0;
        // 0.5 from positives + 0.5 x 1/10 uniformly = 0.55.
        assert!((pos - 0.55).abs() < 0.02, "{pos}");
        let again = PatchSampler::new(items.clone(), 0.5, 7)
            .unwrap()
            .draw_n(10_000);
        assert_eq!(draws, again);
        let other = PatchSampler::new(items.clone(), 0.5, 8)
            .unwrap()
            .draw_n(10_000);
        assert_ne!(draws, other);
        let none = PatchSampler::new(items, 0.0, 7).unwrap().draw_n(10_000);
        let pos0 = none.iter().filter(|d| d.positive).count() as f64 / 10_000.0;
        assert!((pos0 - 0.1).abs() < 0.02, "{pos0}");
    }

    proptest! {
        /// Every image pixel lies in at least one patch's valid region, no valid region leaves
        /// the image, and neighbouring origins are at most one stride apart.
        #[test]
        fn grid_covers_every_pixel(w in 1usize..300, h in 1usize..300, size in 1usize..80, frac in 0.05f64..=1.0) {
            let stride = ((size as f64 * frac) as usize).clamp(1, size);
            let g = PatchGrid::new(Size::new(w, h), size, stride).unwrap();
            let mut covered = Raster::filled(w, h, false);
            for p in g.patches() {
                prop_assert!(p.x + p.valid_width <= w && p.y + p.valid_height <= h);
                prop_assert_eq!(p.valid_width, size.min(w));
                for y in p.y..p.y + p.valid_height {
                    for x in p.x..p.x + p.valid_width {
                        *covered.get_mut(x, y) = true;
                    }
                }
            }
            prop_assert_eq!(covered.count(), w * h);
            let xs = origins(w, size, stride);
            prop_assert!(xs.windows(2).all(|p| p[1] > p[0] && p[1] - p[0] <= stride));
        }

        /// The patches kept within the breast are those whose counted breast pixels reach the
        /// fraction, counted pixel by pixel.
        #[test]
        fn breast_patches_match_a_direct_count(
            w in 1usize..120, h in 1usize..120, size in 1usize..40, seed in 0u64..1000,
            frac in 0.0f64..=1.0,
        ) {
            let breast = Raster::from_fn(w, h, |x, y| {
                (x as u64 * 31 + y as u64 * 17 + seed).wrapping_mul(2654435761) % 7 < 3
                    || x * 3 < w
            });
            let g = PatchGrid::new(Size::new(w, h), size, (size / 2).max(1)).unwrap();
            let expect: Vec<Patch> = g
                .patches()
                .iter()
                .filter(|p| {
                    let inside = (p.y..p.y + p.valid_height)
                        .map(|y| breast.row(y)[p.x..p.x + p.valid_width].iter().filter(|&&b| b).count())
                        .sum::<usize>();
                    inside > 0 && inside as f64 >= frac * p.valid_area() as f64
                })
                .copied()
                .collect();
            let kept = g.within_breast(&breast, frac).unwrap();
            prop_assert_eq!(kept.patches(), &expect[..]);
        }
    }
}
