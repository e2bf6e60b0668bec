//! Post-processing of a stitched probability map into a BAC mask: thresholding, then removal
//! of connected components too small to be a calcification (noise specks), with the minimum
//! given as a physical area when the pixel spacing is known.

use serde::{Deserialize, Serialize};

use crate::mammogram::PixelSpacing;
use crate::preprocess::walk_components;
use crate::raster::{Mask, ProbMap};

/// Probability above which a pixel is BAC unless told otherwise.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// A post-processing configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PostprocessError {
    #[error("threshold must be a finite number, got {0}")]
    Threshold(f32),
    #[error("minimum component area must be finite and >= 0 mm^2, got {0}")]
    MinAreaMm2(f64),
}

/// Smallest connected component kept, in mm^2 when the image's pixel spacing is known and in
/// pixels otherwise. Both are stored because one run can mix images with and without spacing
/// (DICOM and PNG), and converting one into the other would need a spacing we do not have.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinComponentArea {
    /// Used when the pixel spacing is known.
    pub mm2: f64,
    /// Used when it is not.
    pub px: usize,
}

impl Default for MinComponentArea {
    /// Keeps everything: dropping detections is a choice the user should make knowingly.
    fn default() -> Self {
        Self { mm2: 0.0, px: 0 }
    }
}

impl MinComponentArea {
    /// The minimum area in whole pixels for an image with this spacing: the smallest pixel
    /// count whose physical area reaches `mm2`.
    pub fn pixels(&self, spacing: Option<PixelSpacing>) -> usize {
        match spacing {
            Some(s) if s.pixel_area_mm2() > 0.0 => {
                // Guard against 0.1/0.01-style rounding pushing an exact multiple up by one.
                let n = self.mm2 / s.pixel_area_mm2();
                (n - 1e-9).ceil().max(0.0) as usize
            }
            _ => self.px,
        }
    }
}

/// Threshold, then drop small components.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Postprocess {
    /// A pixel is BAC when its probability is strictly greater than this (as SCU-Net's
    /// published inference, `> 0.65`).
    pub threshold: f32,
    pub min_area: MinComponentArea,
}

impl Default for Postprocess {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            min_area: MinComponentArea::default(),
        }
    }
}

impl Postprocess {
    /// Check every field, so that later code never sees an unusable configuration.
    pub fn validate(&self) -> Result<(), PostprocessError> {
        if !self.threshold.is_finite() {
            return Err(PostprocessError::Threshold(self.threshold));
        }
        if !(self.min_area.mm2.is_finite() && self.min_area.mm2 >= 0.0) {
            return Err(PostprocessError::MinAreaMm2(self.min_area.mm2));
        }
        Ok(())
    }

    /// The BAC mask of a probability map. `self` must have passed [`Postprocess::validate`].
    pub fn apply(&self, prob: &ProbMap, spacing: Option<PixelSpacing>) -> Mask {
        let mut mask = threshold(prob, self.threshold);
        remove_small_components_in_place(&mut mask, self.min_area.pixels(spacing));
        mask
    }
}

/// Pixels whose probability is strictly greater than `t`.
pub fn threshold(prob: &ProbMap, t: f32) -> Mask {
    prob.map(|&p| p > t)
}

/// Remove 8-connected components with fewer than `min_pixels` pixels. Eight-connectivity
/// because a thin calcified vessel running diagonally touches only at corners.
pub fn remove_small_components(mask: &Mask, min_pixels: usize) -> Mask {
    let mut out = mask.clone();
    remove_small_components_in_place(&mut out, min_pixels);
    out
}

/// [`remove_small_components`] on `mask` itself: one more byte per pixel while it runs, no
/// label image.
pub fn remove_small_components_in_place(mask: &mut Mask, min_pixels: usize) {
    if min_pixels <= 1 {
        return;
    }
    let (w, h) = (mask.width(), mask.height());
    // Cells: the walk reads the mask while a finished small component is cleared.
    let cells = std::cell::Cell::from_mut(mask.data_mut()).as_slice_of_cells();
    walk_components(
        w,
        h,
        |i| cells[i].get(),
        min_pixels,
        |size, pixels| {
            if size < min_pixels {
                pixels.iter().for_each(|&i| cells[i].set(false));
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mammogram::SpacingSource;
    use crate::raster::Raster;

    fn spacing(mm: f64) -> PixelSpacing {
        PixelSpacing {
            row_mm: mm,
            col_mm: mm,
            source: SpacingSource::User,
        }
    }

    #[test]
    fn threshold_is_strict() {
        let p = Raster::from_vec(4, 1, vec![0.2, 0.5, 0.51, 1.0]).unwrap();
        assert_eq!(threshold(&p, 0.5).data(), &[false, false, true, true]);
    }

    #[test]
    fn small_components_go_large_stay() {
        // A 1-pixel speck, a 3-pixel diagonal (one component under 8-connectivity) and a
        // 2x2 block.
        let m = Raster::from_fn(8, 4, |x, y| {
            (x, y) == (0, 0)
                || (x == y + 2 && x <= 4)
                || ((6..8).contains(&x) && (2..4).contains(&y))
        });
        let out = remove_small_components(&m, 3);
        assert!(!out.get(0, 0));
        assert_eq!(out.count(), 3 + 4);
        let out = remove_small_components(&m, 4);
        assert_eq!(out.count(), 4);
        assert_eq!(remove_small_components(&m, 0), m);
    }

    #[test]
    fn min_area_uses_mm2_only_with_spacing() {
        let a = MinComponentArea { mm2: 0.05, px: 7 };
        // 0.1 mm pixels are 0.01 mm^2: 0.05 mm^2 is exactly 5 pixels, not 6.
        assert_eq!(a.pixels(Some(spacing(0.1))), 5);
        // 0.07 mm pixels: 0.05 / 0.0049 = 10.2 -> 11 pixels.
        assert_eq!(a.pixels(Some(spacing(0.07))), 11);
        assert_eq!(a.pixels(None), 7);
    }

    #[test]
    fn apply_thresholds_then_filters() {
        let p = Raster::from_fn(10, 10, |x, y| {
            if x < 3 && y < 3 {
                0.9
            } else if x == 8 && y == 8 {
                0.8
            } else {
                0.1
            }
        });
        let cfg = Postprocess {
            threshold: 0.5,
            min_area: MinComponentArea { mm2: 0.02, px: 2 },
        };
        assert!(cfg.validate().is_ok());
        // 0.1 mm spacing: 0.02 mm^2 = 2 px; the speck at (8, 8) goes, the 3x3 block stays.
        let m = cfg.apply(&p, Some(spacing(0.1)));
        assert_eq!(m.count(), 9);
        assert!(!m.get(8, 8));
        let bad = Postprocess {
            threshold: f32::NAN,
            ..cfg
        };
        assert!(bad.validate().is_err());
    }
}
