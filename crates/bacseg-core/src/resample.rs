//! Resampling of grey rasters (for running a model at the pixel size it was trained at).

use image::imageops::{FilterType, resize as image_resize};
use image::{ImageBuffer, Luma};

use crate::raster::Raster;

/// `img` resampled to `width x height` with a triangle (linear) filter whose support widens
/// with the reduction, so downscaling averages rather than aliases. Sizes of 0 give 1.
pub fn resize(img: &Raster<f32>, width: usize, height: usize) -> Raster<f32> {
    let (width, height) = (width.max(1), height.max(1));
    if (width, height) == (img.width(), img.height()) {
        return img.clone();
    }
    // The image crate clamps float samples to [0, 1]: resample in that range.
    let (lo, hi) = img
        .data()
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let unit: Vec<f32> = img.data().iter().map(|&v| (v - lo) / span).collect();
    let src: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(img.width() as u32, img.height() as u32, unit)
            .unwrap_or_else(|| unreachable!("a raster holds width*height samples"));
    let out = image_resize(&src, width as u32, height as u32, FilterType::Triangle);
    let data = out.into_raw().into_iter().map(|v| lo + v * span).collect();
    Raster::from_vec(width, height, data)
        .unwrap_or_else(|_| unreachable!("resize returns width*height samples"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_constants_and_linear_ramps() {
        let flat = Raster::filled(40, 30, 0.25f32);
        let small = resize(&flat, 13, 11);
        assert_eq!((small.width(), small.height()), (13, 11));
        assert!(small.data().iter().all(|v| (v - 0.25).abs() < 1e-6));
        let ramp = Raster::from_fn(64, 8, |x, _| x as f32);
        let half = resize(&ramp, 32, 4);
        // Each output pixel averages the input pixels it covers: about 2x + 0.5.
        for x in 2..30 {
            assert!(
                (half.get(x, 1) - (2.0 * x as f32 + 0.5)).abs() < 0.3,
                "{x}: {}",
                half.get(x, 1)
            );
        }
        let back = resize(&half, 64, 8);
        assert_eq!(back.width(), 64);
        assert_eq!(resize(&ramp, 64, 8), ramp);
    }
}
