//! Whole-mammogram inference: in-breast patches of a preprocessed image go through the model in
//! batches and are blended into one probability map as they come, so memory stays O(image)
//! whatever the number of patches.

use std::time::Instant;

use bacseg_core::patch::{PatchError, PatchGrid};
use bacseg_core::raster::{Mask, ProbMap, Raster};
use bacseg_core::stitch::{BlendMode, Blender, StitchError};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::NnError;
use crate::model::SegmentationModel;

/// How a whole image is cut, predicted and put back together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferConfig {
    /// Patch side in pixels.
    pub patch: usize,
    /// Distance between patch origins.
    pub stride: usize,
    /// Patches per forward pass.
    pub batch: usize,
    pub blend: BlendMode,
    /// Average the predictions of the patch and its horizontal and vertical mirror images.
    pub tta: bool,
    /// Patches with less breast than this fraction are not predicted (probability 0).
    pub min_breast_fraction: f64,
}

impl Default for InferConfig {
    fn default() -> Self {
        Self {
            patch: 512,
            stride: 256,
            batch: 4,
            blend: BlendMode::Gaussian,
            tta: false,
            min_breast_fraction: 0.05,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Nn(#[from] NnError),
    #[error("patch grid: {0}")]
    Patch(#[from] PatchError),
    #[error("stitching: {0}")]
    Stitch(#[from] StitchError),
    #[error("{0}")]
    Other(String),
}

/// A probability map and what it cost.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub prob: ProbMap,
    /// Patches predicted (in the breast).
    pub patches: usize,
    /// Patches of the full grid, in the breast or not.
    pub grid_patches: usize,
    /// Seconds spent in forward passes.
    pub forward_s: f64,
    /// Seconds spent cutting patches and blending.
    pub blend_s: f64,
}

fn flip(x: Tensor<4>, h: bool, v: bool) -> Tensor<4> {
    match (h, v) {
        (false, false) => x,
        (true, false) => x.flip([3]),
        (false, true) => x.flip([2]),
        (true, true) => x.flip([2, 3]),
    }
}

/// Sigmoid probabilities of a batch of `n x n` grey patches laid out one after the other in
/// `images` (the grey channel is replicated for networks that take more). With `tta`, the mean
/// over the patch and its horizontal and vertical mirror images.
pub fn patch_probabilities<M: SegmentationModel>(
    model: &M,
    images: Vec<f32>,
    n: usize,
    tta: bool,
) -> Result<Vec<f32>, InferError> {
    let count = images.len() / (n * n).max(1);
    if count == 0 || images.len() != count * n * n {
        return Err(InferError::Other(format!(
            "{} values are not a whole number of {n}x{n} patches",
            images.len()
        )));
    }
    let device = model
        .devices()
        .first()
        .cloned()
        .unwrap_or_else(Device::default);
    let channels = model.in_channels();
    let x = Tensor::<4>::from_data(TensorData::new(images, [count, 1, n, n]), &device);
    let x = if channels > 1 {
        x.repeat_dim(1, channels)
    } else {
        x
    };
    let flips: &[(bool, bool)] = if tta {
        &[(false, false), (true, false), (false, true)]
    } else {
        &[(false, false)]
    };
    let mut sum: Option<Tensor<4>> = None;
    for &(h, v) in flips {
        let p = flip(sigmoid(model.forward(flip(x.clone(), h, v))), h, v);
        sum = Some(match sum {
            Some(s) => s + p,
            None => p,
        });
    }
    sum.map(|s| s.div_scalar(flips.len() as f32))
        .ok_or_else(|| InferError::Other("no forward pass".into()))?
        .into_data()
        .try_to_vec()
        .map_err(|e| InferError::Other(format!("reading predictions: {e:?}")))
}

/// Predict BAC probabilities for `image` (preprocessed, [0, 1]) over the patches of the grid
/// that lie in `breast`. `model` should be in validation mode (see `Module::valid`).
pub fn predict_image<M: SegmentationModel>(
    model: &M,
    image: &Raster<f32>,
    breast: &Mask,
    cfg: &InferConfig,
) -> Result<Prediction, InferError> {
    if cfg.batch == 0 {
        return Err(InferError::Other("batch must be at least 1".into()));
    }
    let n = cfg.patch;
    model.check_input([cfg.batch, model.in_channels(), n, n])?;
    let full = PatchGrid::new(image.size(), n, cfg.stride)?;
    let grid_patches = full.len();
    let grid = full.within_breast(breast, cfg.min_breast_fraction)?;
    let mut blender = Blender::for_grid(&grid, cfg.blend)?;
    let (mut forward_s, mut blend_s) = (0.0, 0.0);
    for chunk in grid.patches().chunks(cfg.batch) {
        let t0 = Instant::now();
        let mut data = Vec::with_capacity(chunk.len() * n * n);
        for p in chunk {
            data.extend_from_slice(grid.extract(image, p, 0.0).data());
        }
        let t1 = Instant::now();
        let probs = patch_probabilities(model, data, n, cfg.tta)?;
        let t2 = Instant::now();
        for (p, values) in chunk.iter().zip(probs.chunks_exact(n * n)) {
            blender.add(p, values)?;
        }
        forward_s += (t2 - t1).as_secs_f64();
        blend_s += (t1 - t0).as_secs_f64() + t2.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let prob = blender.finish();
    blend_s += t.elapsed().as_secs_f64();
    Ok(Prediction {
        prob,
        patches: grid.len(),
        grid_patches,
        forward_s,
        blend_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dt_unet::DtUnetConfig;
    use burn::module::Module;

    #[test]
    fn outside_the_breast_is_zero_and_the_map_matches_a_single_patch_forward() {
        let device = Device::default();
        let model = DtUnetConfig::new()
            .with_widths(vec![2, 4])
            .init(&device)
            .unwrap()
            .valid();
        let (w, h) = (40, 24);
        let image = Raster::from_fn(w, h, |x, y| ((x * 7 + y * 3) % 11) as f32 / 10.0);
        let breast = Raster::from_fn(w, h, |x, _| x < 20);
        let cfg = InferConfig {
            patch: 16,
            stride: 16,
            batch: 2,
            blend: BlendMode::Crop,
            tta: false,
            min_breast_fraction: 0.5,
        };
        let pred = predict_image(&model, &image, &breast, &cfg).unwrap();
        assert_eq!(pred.prob.size(), image.size());
        // Grid columns at x = 0, 16, 24 and rows at 0, 8: the breast (x < 20) covers the
        // first column fully and the second one for 4 of 16 pixels, below the 0.5 minimum.
        assert_eq!((pred.grid_patches, pred.patches), (6, 2));
        assert!(pred.prob.data().iter().all(|p| (0.0..=1.0).contains(p)));
        for y in 0..h {
            for x in 24..w {
                assert_eq!(*pred.prob.get(x, y), 0.0);
            }
        }
        // The top-left tile equals the model's output for that crop.
        let crop = image.crop(0, 0, 16, 16, 0.0);
        let x = Tensor::<4>::from_data(TensorData::new(crop.into_vec(), [1, 1, 16, 16]), &device);
        let direct: Vec<f32> = sigmoid(model.forward(x)).into_data().try_to_vec().unwrap();
        for y in 0..8 {
            for x in 0..16 {
                let got = *pred.prob.get(x, y);
                assert!((got - direct[y * 16 + x]).abs() < 1e-5, "({x},{y})");
            }
        }
        // Mirror averaging keeps probabilities in range and the map the same size.
        let tta =
            predict_image(&model, &image, &breast, &InferConfig { tta: true, ..cfg }).unwrap();
        assert_eq!(tta.prob.size(), image.size());
        assert!(
            predict_image(
                &model,
                &image,
                &breast,
                &InferConfig {
                    batch: 0,
                    ..InferConfig::default()
                }
            )
            .is_err()
        );
    }
}
