//! Whole-mammogram inference: in-breast patches of a preprocessed image go through the model in
//! batches and are blended into one probability map as they come, so memory stays O(image)
//! whatever the number of patches.

pub mod cpu;
#[cfg(feature = "ort")]
pub mod ort;

use std::time::Instant;

use bacseg_core::patch::{PatchError, PatchGrid};
use bacseg_core::raster::{Mask, ProbMap, Raster, UnitValue};
use bacseg_core::stitch::{BlendMode, Blender, StitchError};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::NnError;
use crate::model::{OutputActivation, SegmentationModel};
use cpu::Nhwc;

/// Which implementation runs the forward passes of [`predict_image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The CPU engine when the model is on burn's CPU device and the engine runs it (every
    /// architecture; SCU-Net in f32), else burn.
    #[default]
    Auto,
    /// burn, on the model's device (CPU or GPU).
    Burn,
    /// The CPU engine ([`crate::engine::cpu`]): BatchNorm folded, fused epilogues, channels-last.
    Cpu,
    /// ONNX Runtime on the model exported to ONNX (builds with the `ort` feature; the library
    /// is loaded at run time, see [`crate::onnx`] and `ort_engine`).
    Ort,
}

impl Engine {
    pub const NAMES: &'static str = "auto, burn, cpu, ort";

    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Burn => "burn",
            Engine::Cpu => "cpu",
            Engine::Ort => "ort",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Engine::Auto),
            "burn" => Ok(Engine::Burn),
            "cpu" => Ok(Engine::Cpu),
            "ort" => Ok(Engine::Ort),
            _ => Err(format!("unknown engine {s:?} (known: {})", Engine::NAMES)),
        }
    }
}

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
    /// Which implementation runs the forward passes.
    #[serde(default)]
    pub engine: Engine,
    /// Reduced precision, for users who choose it knowingly: the CPU engine's convolutions in
    /// bf16 (weights and activations rounded to bf16, products accumulated in f32) on a CPU
    /// with AVX512_BF16; an error elsewhere (another engine, another CPU). f32 by default.
    /// docs/cli.md (`predict --bf16`) has the measured speed and mask agreement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bf16: bool,
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
            engine: Engine::Auto,
            bf16: false,
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
    /// The engine that ran the forward passes.
    pub engine: Engine,
}

fn flip(x: Tensor<4>, h: bool, v: bool) -> Tensor<4> {
    match (h, v) {
        (false, false) => x,
        (true, false) => x.flip([3]),
        (false, true) => x.flip([2]),
        (true, true) => x.flip([2, 3]),
    }
}

/// How many `n x n` patches `len` values are.
fn patch_count(len: usize, n: usize) -> Result<usize, InferError> {
    let count = len / (n * n).max(1);
    if count == 0 || len != count * n * n {
        return Err(InferError::Other(format!(
            "{len} values are not a whole number of {n}x{n} patches"
        )));
    }
    Ok(count)
}

/// The (horizontal, vertical) mirrorings predicted: the patch itself, and with `tta` its two
/// mirror images.
fn mirror_flips(tta: bool) -> &'static [(bool, bool)] {
    if tta {
        &[(false, false), (true, false), (false, true)]
    } else {
        &[(false, false)]
    }
}

/// Probabilities (the model's [`SegmentationModel::output_activation`] of its output) of a batch
/// of `n x n` grey patches laid out one after the other in `images` (the grey channel is
/// replicated for networks that take more). With `tta`, the mean over the patch and its
/// horizontal and vertical mirror images.
pub fn patch_probabilities<M: SegmentationModel>(
    model: &M,
    images: Vec<f32>,
    n: usize,
    tta: bool,
) -> Result<Vec<f32>, InferError> {
    let count = patch_count(images.len(), n)?;
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
    let flips = mirror_flips(tta);
    let mut sum: Option<Tensor<4>> = None;
    let activation = model.output_activation();
    for &(h, v) in flips {
        let p = flip(activation.apply(model.forward(flip(x.clone(), h, v))), h, v);
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

/// Whether `model` lives on burn's CPU device (where the CPU engine is the faster choice).
pub(crate) fn on_cpu<M: SegmentationModel>(model: &M) -> bool {
    model.devices().first().is_some_and(on_flex)
}

/// Whether `device` is burn's CPU backend (with or without autodiff).
pub(crate) fn on_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        device.clone().without_autodiff() == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// The forward passes of one prediction run: burn's model, the model compiled once for the CPU
/// engine (whose buffers are then reused from patch batch to patch batch), or an ONNX Runtime
/// session on the exported model.
#[derive(Debug)]
pub enum Runner<'m, M> {
    Burn(&'m M),
    Cpu {
        net: Box<cpu::Net>,
        activation: OutputActivation,
    },
    #[cfg(feature = "ort")]
    Ort {
        net: Box<crate::engine::ort::OrtNet>,
        activation: OutputActivation,
    },
}

impl<'m, M: SegmentationModel> Runner<'m, M> {
    /// The runner `engine` asks for; `Engine::Cpu` and `Engine::Ort` fail for an architecture
    /// they do not run, `Engine::Ort` also in a build without the `ort` feature or when ONNX
    /// Runtime cannot be loaded.
    pub fn new(model: &'m M, engine: Engine) -> Result<Self, InferError> {
        let unsupported = |name: &str| {
            InferError::Other(format!(
                "the {name} engine does not run {}; use --engine burn",
                model.name()
            ))
        };
        // Compiled at most once: it reads every weight.
        let net = match engine {
            Engine::Burn => None,
            Engine::Auto if !on_cpu(model) => None,
            Engine::Auto => cpu::Net::for_model(model),
            Engine::Cpu => Some(cpu::Net::for_model(model).ok_or_else(|| unsupported("cpu"))?),
            Engine::Ort => return Self::ort(model, unsupported("ort")),
        };
        let Some(net) = net else {
            return Ok(Runner::Burn(model));
        };
        let net = net?;
        Ok(Runner::Cpu {
            net: Box::new(net),
            activation: model.output_activation(),
        })
    }

    #[cfg(feature = "ort")]
    fn ort(model: &'m M, unsupported: InferError) -> Result<Self, InferError> {
        let onnx = model.onnx().ok_or(unsupported)??;
        let net = crate::engine::ort::OrtNet::new(&onnx, model.in_channels())?;
        Ok(Runner::Ort {
            net: Box::new(net),
            activation: model.output_activation(),
        })
    }

    #[cfg(not(feature = "ort"))]
    fn ort(_model: &'m M, _unsupported: InferError) -> Result<Self, InferError> {
        Err(InferError::Other(
            "this bacseg was built without the ort engine: rebuild with `--features ort` \
             (see docs/cli.md)"
                .into(),
        ))
    }

    /// Run the CPU engine's convolutions in bf16 ([`InferConfig::bf16`]); an error on another
    /// engine or a CPU without AVX512_BF16. Returns the number of convolutions in bf16.
    pub fn set_bf16(&mut self) -> Result<usize, InferError> {
        let Runner::Cpu { net, .. } = self else {
            return Err(InferError::Other(format!(
                "bf16 runs on the cpu engine only, not on {}",
                self.engine().name()
            )));
        };
        if !cpu::bf16::available() {
            return Err(InferError::Other(
                "bf16 needs a CPU with AVX512_BF16 and the CPU engine's AVX-512 kernels; this \
                 one has not (run in f32)"
                    .into(),
            ));
        }
        Ok(net.set_bf16(true))
    }

    /// Engine name for reports.
    pub fn engine(&self) -> Engine {
        match self {
            Runner::Burn(_) => Engine::Burn,
            Runner::Cpu { .. } => Engine::Cpu,
            #[cfg(feature = "ort")]
            Runner::Ort { .. } => Engine::Ort,
        }
    }

    /// Free what the engine keeps between forward passes (the CPU engine's buffers, hundreds
    /// of megabytes for 512x512 patches in batches of 4), so that the rest of an image's
    /// processing does not add to it; the next forward pass makes them again.
    pub fn release_buffers(&mut self) {
        if let Runner::Cpu { net, .. } = self {
            net.release_buffers();
        }
    }

    /// As [`patch_probabilities`], on this runner's engine.
    pub fn probabilities(
        &mut self,
        images: Vec<f32>,
        n: usize,
        tta: bool,
    ) -> Result<Vec<f32>, InferError> {
        match self {
            Runner::Burn(model) => patch_probabilities(*model, images, n, tta),
            Runner::Cpu { net, activation } => {
                let channels = net.in_channels();
                mirrored_probabilities(*activation, &images, n, tta, |grey, count| {
                    // Channels-last: each grey value repeated over the channels.
                    let data = if channels == 1 {
                        grey
                    } else {
                        grey.iter()
                            .flat_map(|&g| std::iter::repeat_n(g, channels))
                            .collect()
                    };
                    Ok(net.forward(&Nhwc::new(count, n, n, channels, data))?)
                })
            }
            #[cfg(feature = "ort")]
            Runner::Ort { net, activation } => {
                let channels = net.in_channels();
                mirrored_probabilities(*activation, &images, n, tta, |grey, count| {
                    // Channels-first: each grey patch repeated as every channel plane.
                    let data = if channels == 1 {
                        grey
                    } else {
                        grey.chunks_exact(n * n)
                            .flat_map(|p| std::iter::repeat_n(p, channels).flatten().copied())
                            .collect()
                    };
                    Ok(net.forward(data, [count, channels, n, n])?)
                })
            }
        }
    }
}

/// `count` stacked `n x n` patches mirrored horizontally and/or vertically.
fn flip_patches(images: &[f32], n: usize, h: bool, v: bool) -> Vec<f32> {
    if !h && !v {
        return images.to_vec();
    }
    let mut out = Vec::with_capacity(images.len());
    for patch in images.chunks_exact(n * n) {
        for y in 0..n {
            let sy = if v { n - 1 - y } else { y };
            let row = &patch[sy * n..][..n];
            if h {
                out.extend(row.iter().rev());
            } else {
                out.extend_from_slice(row);
            }
        }
    }
    out
}

/// Probabilities of `images` (stacked grey `n x n` patches) from an engine's `forward` (grey
/// patches and their count to single-channel outputs), averaged over the mirror images when
/// `tta` is set.
fn mirrored_probabilities(
    activation: OutputActivation,
    images: &[f32],
    n: usize,
    tta: bool,
    mut forward: impl FnMut(Vec<f32>, usize) -> Result<Vec<f32>, InferError>,
) -> Result<Vec<f32>, InferError> {
    let count = patch_count(images.len(), n)?;
    let flips = mirror_flips(tta);
    let mut sum = vec![0.0f32; images.len()];
    for &(h, v) in flips {
        let outputs = forward(flip_patches(images, n, h, v), count)?;
        if outputs.len() != sum.len() {
            return Err(InferError::Other(format!(
                "the engine returned {} values for {count} patches of {n}x{n}",
                outputs.len()
            )));
        }
        for (s, o) in sum.iter_mut().zip(flip_patches(&outputs, n, h, v)) {
            *s += activation.apply_value(o);
        }
    }
    if flips.len() > 1 {
        let k = flips.len() as f32;
        sum.iter_mut().for_each(|s| *s /= k);
    }
    Ok(sum)
}

/// Predict BAC probabilities for `image` (preprocessed, [0, 1]) over the patches of the grid
/// that lie in `breast`. `model` should be in validation mode (see `Module::valid`). The engine
/// (`cfg.engine`) is set up for this one image: for many images make a [`Runner`] once and call
/// [`predict_image_with`].
pub fn predict_image<M: SegmentationModel>(
    model: &M,
    image: &Raster<f32>,
    breast: &Mask,
    cfg: &InferConfig,
) -> Result<Prediction, InferError> {
    let mut runner = Runner::new(model, cfg.engine)?;
    if cfg.bf16 {
        runner.set_bf16()?;
    }
    predict_image_with(model, &mut runner, image, breast, cfg)
}

/// As [`predict_image`], with the forward passes on `runner` (made for `model`; `cfg.engine` is
/// not read). The image may also be held in 16 bits ([`bacseg_core::raster::unit_to_u16`]):
/// half the memory, the values the training cache holds.
pub fn predict_image_with<M: SegmentationModel, T: UnitValue>(
    model: &M,
    runner: &mut Runner<'_, M>,
    image: &Raster<T>,
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
            data.extend(
                grid.extract(image, p, T::default())
                    .data()
                    .iter()
                    .map(|v| v.unit()),
            );
        }
        let t1 = Instant::now();
        let probs = runner.probabilities(data, n, cfg.tta)?;
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
        engine: runner.engine(),
    })
}

/// Tile side of the published SCU-Net inference.
pub const PUBLISHED_SCUNET_TILE: usize = 512;
/// Distance between tile origins of the published SCU-Net inference.
pub const PUBLISHED_SCUNET_STRIDE: usize = 480;

/// Whether the published SCU-Net inference predicts a tile of 8-bit grey values: it skips tiles
/// whose mean is at most 20 or whose (population) standard deviation is at most 10.
pub fn published_scunet_keeps(tile: &[f32]) -> bool {
    let n = tile.len().max(1) as f64;
    let mean = tile.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = tile
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    mean > 20.0 && var.sqrt() > 10.0
}

/// The published SCU-Net inference (Guo et al. 2021, Emory HITI `BAC_segmentation`) on `grey`:
/// 8-bit grey values (0-255, already median-filtered 5x5 by the caller), 512x512 tiles at stride
/// 480 with the last row and column snapped to the image edge, tiles skipped by
/// [`published_scunet_keeps`], the rest predicted in batches of `batch` and merged with the
/// element-wise maximum over a map that starts at 0 (so skipped tiles and negative outputs
/// leave 0). `model` applies the published normalisation and its output activation (`clamp` for
/// the published weights: the merged map is the published map clamped to [0, 1], so the
/// published `> 0.65` threshold selects the same pixels). The forward passes run on burn; see
/// [`predict_published_scunet_with`] for another engine.
pub fn predict_published_scunet<M: SegmentationModel>(
    model: &M,
    grey: &Raster<f32>,
    batch: usize,
) -> Result<Prediction, InferError> {
    predict_published_scunet_with(model, &mut Runner::Burn(model), grey, batch)
}

/// As [`predict_published_scunet`], with the forward passes on `runner` (made for `model`).
pub fn predict_published_scunet_with<M: SegmentationModel>(
    model: &M,
    runner: &mut Runner<'_, M>,
    grey: &Raster<f32>,
    batch: usize,
) -> Result<Prediction, InferError> {
    let n = PUBLISHED_SCUNET_TILE;
    if batch == 0 {
        return Err(InferError::Other("batch must be at least 1".into()));
    }
    if grey.width() < n || grey.height() < n {
        return Err(InferError::Other(format!(
            "the published SCU-Net pipeline needs images of at least {n}x{n} pixels, got {}x{}",
            grey.width(),
            grey.height()
        )));
    }
    model.check_input([batch, model.in_channels(), n, n])?;
    let grid = PatchGrid::new(grey.size(), n, PUBLISHED_SCUNET_STRIDE)?;
    let mut prob: ProbMap = Raster::filled(grey.width(), grey.height(), 0.0);
    let (mut forward_s, mut blend_s) = (0.0, 0.0);
    let mut kept = 0;
    let mut pending: Vec<(usize, usize)> = Vec::with_capacity(batch);
    let mut data: Vec<f32> = Vec::with_capacity(batch * n * n);
    let mut flush = |pending: &mut Vec<(usize, usize)>,
                     data: &mut Vec<f32>,
                     prob: &mut ProbMap|
     -> Result<f64, InferError> {
        if pending.is_empty() {
            return Ok(0.0);
        }
        let t = Instant::now();
        let out = runner.probabilities(std::mem::take(data), n, false)?;
        let spent = t.elapsed().as_secs_f64();
        for (&(x0, y0), tile) in pending.iter().zip(out.chunks_exact(n * n)) {
            for (dy, row) in tile.chunks_exact(n).enumerate() {
                for (dx, &p) in row.iter().enumerate() {
                    let cell = prob.get_mut(x0 + dx, y0 + dy);
                    if p > *cell {
                        *cell = p;
                    }
                }
            }
        }
        pending.clear();
        Ok(spent)
    };
    for p in grid.patches() {
        let t = Instant::now();
        let tile = grid.extract(grey, p, 0.0);
        if !published_scunet_keeps(tile.data()) {
            blend_s += t.elapsed().as_secs_f64();
            continue;
        }
        kept += 1;
        data.extend(tile.data().iter().map(|&v| v / 255.0));
        pending.push((p.x, p.y));
        blend_s += t.elapsed().as_secs_f64();
        if pending.len() == batch {
            forward_s += flush(&mut pending, &mut data, &mut prob)?;
        }
    }
    forward_s += flush(&mut pending, &mut data, &mut prob)?;
    Ok(Prediction {
        prob,
        patches: kept,
        grid_patches: grid.len(),
        forward_s,
        blend_s,
        engine: runner.engine(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::dt_unet::DtUnetConfig;
    use burn::module::Module;

    /// A two-level DT-UNet of width 2, in validation mode.
    fn tiny_model() -> crate::networks::dt_unet::DtUnet {
        DtUnetConfig::new()
            .with_widths(vec![2, 4])
            .init(&Device::default())
            .unwrap()
            .valid()
    }

    #[test]
    fn outside_the_breast_is_zero_and_the_map_matches_a_single_patch_forward() {
        let device = Device::default();
        let model = tiny_model();
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
            engine: Engine::Burn,
            bf16: false,
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
        let direct: Vec<f32> = burn::tensor::activation::sigmoid(model.forward(x))
            .into_data()
            .try_to_vec()
            .unwrap();
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

    /// Largest difference between the whole-image maps of burn and `engine` for `model` on a
    /// small image (overlapping patches, gaussian blending), with or without mirror averaging.
    fn engine_vs_burn<M: SegmentationModel>(model: &M, engine: Engine, tta: bool) -> f32 {
        let (w, h) = (56, 40);
        let image = Raster::from_fn(w, h, |x, y| ((x * 13 + y * 7) % 17) as f32 / 16.0);
        let breast = Raster::from_fn(w, h, |x, y| x + y < 70);
        let cfg = |engine| InferConfig {
            patch: 16,
            stride: 8,
            batch: 3,
            blend: BlendMode::Gaussian,
            tta,
            min_breast_fraction: 0.05,
            engine,
            bf16: false,
        };
        let burn = predict_image(model, &image, &breast, &cfg(Engine::Burn)).unwrap();
        let other = predict_image(model, &image, &breast, &cfg(engine)).unwrap();
        assert_eq!(other.engine, engine);
        assert_eq!(burn.patches, other.patches);
        burn.prob
            .data()
            .iter()
            .zip(other.prob.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    }

    #[test]
    fn cpu_engine_maps_match_burn_with_and_without_mirror_averaging() {
        let model = DtUnetConfig::new()
            .with_widths(vec![3, 6, 12])
            .init(&Device::default())
            .unwrap()
            .valid();
        for tta in [false, true] {
            let diff = engine_vs_burn(&model, Engine::Cpu, tta);
            assert!(diff < 1e-5, "tta {tta}: largest difference {diff}");
        }
        // On burn's CPU device, `auto` picks the CPU engine.
        let runner = Runner::new(&model, Engine::Auto).unwrap();
        assert_eq!(runner.engine(), Engine::Cpu);
        assert_eq!("cpu".parse::<Engine>(), Ok(Engine::Cpu));
        assert!(
            "gpu"
                .parse::<Engine>()
                .unwrap_err()
                .contains("auto, burn, cpu")
        );
    }

    #[cfg(feature = "ort")]
    #[test]
    fn ort_engine_maps_match_burn_for_dt_unet_and_three_channel_unet() {
        let device = Device::default();
        let dt = DtUnetConfig::new()
            .with_widths(vec![3, 6, 12])
            .init(&device)
            .unwrap()
            .valid();
        // ONNX Runtime is the user's library: without one, say so and skip.
        if let Err(e) = Runner::new(&dt, Engine::Ort) {
            eprintln!("skipped: no ONNX Runtime to test the ort engine with ({e})");
            return;
        }
        let unet = crate::UnetConfig::new()
            .with_widths(vec![4, 8])
            .init(&device)
            .unwrap()
            .valid();
        assert_eq!(unet.in_channels(), 3);
        for tta in [false, true] {
            let diff = engine_vs_burn(&dt, Engine::Ort, tta);
            assert!(diff < 1e-5, "dt-unet, tta {tta}: largest difference {diff}");
            let diff = engine_vs_burn(&unet, Engine::Ort, tta);
            assert!(diff < 1e-5, "unet, tta {tta}: largest difference {diff}");
        }
        // Every architecture has an ONNX export (checked against burn in `onnx`), so the ort
        // engine takes the ones the CPU engine refuses.
        let segnet = crate::SegNetConfig::new()
            .with_widths(vec![2, 4])
            .with_convs(vec![1, 1])
            .init(&device)
            .unwrap()
            .valid();
        assert!(Runner::new(&segnet, Engine::Cpu).is_err());
        let runner = Runner::new(&segnet, Engine::Ort).unwrap();
        assert_eq!(runner.engine(), Engine::Ort);
    }

    #[cfg(not(feature = "ort"))]
    #[test]
    fn ort_engine_in_a_build_without_it_is_refused_with_the_remedy() {
        let err = Runner::new(&tiny_model(), Engine::Ort)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features ort"), "{err}");
        assert_eq!("ort".parse::<Engine>(), Ok(Engine::Ort));
    }

    #[test]
    fn flipping_patches_mirrors_each_patch() {
        let images: Vec<f32> = (0..8).map(|v| v as f32).collect(); // two 2x2 patches
        assert_eq!(
            flip_patches(&images, 2, true, false),
            [1., 0., 3., 2., 5., 4., 7., 6.]
        );
        assert_eq!(
            flip_patches(&images, 2, false, true),
            [2., 3., 0., 1., 6., 7., 4., 5.]
        );
        assert_eq!(flip_patches(&images, 2, false, false), images);
    }

    #[test]
    fn published_tile_rule_uses_mean_and_population_std() {
        assert!(!published_scunet_keeps(&[21.0; 16])); // no contrast
        let alternating = |a: f32, b: f32| -> Vec<f32> {
            (0..16).map(|i| if i % 2 == 0 { a } else { b }).collect()
        };
        assert!(!published_scunet_keeps(&alternating(0.0, 40.0))); // mean exactly 20
        assert!(published_scunet_keeps(&alternating(0.0, 42.0))); // mean 21, std 21
        assert!(!published_scunet_keeps(&alternating(100.0, 120.0))); // std exactly 10
        assert!(published_scunet_keeps(&alternating(100.0, 121.0)));
    }

    #[test]
    fn published_pipeline_skips_dark_tiles_and_merges_by_maximum() {
        let model = tiny_model();
        // Columns of tiles at x = 0, 480 and 588 (snapped to the edge); one row.
        let (w, h) = (1100, 512);
        let grey = Raster::from_fn(w, h, |x, y| {
            if x < 560 {
                0.0
            } else {
                ((x * 37 + y * 11) % 97 + 80) as f32
            }
        });
        let pred = predict_published_scunet(&model, &grey, 2).unwrap();
        assert_eq!((pred.grid_patches, pred.patches), (3, 2));
        let tile = |x0: usize| -> Vec<f32> {
            let crop = grey.crop(x0, 0, 512, 512, 0.0);
            let data = crop.data().iter().map(|v| v / 255.0).collect();
            patch_probabilities(&model, data, 512, false).unwrap()
        };
        let (middle, last) = (tile(480), tile(588));
        for y in [0, 100, 511] {
            assert_eq!(*pred.prob.get(10, y), 0.0); // only the skipped dark tile
            assert_eq!(*pred.prob.get(479, y), 0.0);
            assert_eq!(*pred.prob.get(500, y), middle[y * 512 + 20]);
            let both = middle[y * 512 + 220].max(last[y * 512 + 112]);
            assert_eq!(*pred.prob.get(700, y), both);
            assert_eq!(*pred.prob.get(1099, y), last[y * 512 + 511]);
        }
        let small = Raster::filled(500, 600, 100.0);
        assert!(predict_published_scunet(&model, &small, 2).is_err());
    }
}
