//! The training loop: patches from the on-disk cache (loaded and augmented on a background
//! thread while the model trains), soft Dice (or Dice + BCE) with AdamW, an optional warm-up and
//! cosine learning-rate schedule, validation metrics with bacseg-core's metric code every epoch,
//! and a run directory that can be killed at any moment and resumed.
//!
//! Run directory (`RUN/`), every file written atomically (temporary file, then rename):
//! - `config.json`: [`RunConfig`], everything needed to reproduce the run;
//! - `metrics.csv`: one row per finished epoch (see [`EpochRecord`]);
//! - `curves.svg`: loss and validation F1 (mean over patches, pooled) per epoch;
//! - `best.safetensors` + `best.json`: weights (PyTorch names) of the epoch with the best
//!   validation score ([`Selection`]: pooled F1 by default);
//! - `last.json` pointing at `checkpoints/epoch-NNNN/` (model, optimizer and progress state)
//!   of the last finished epoch. The checkpoint directory is complete before it is renamed into
//!   place and before `last.json` points at it, so a kill loses at most the epoch in progress.
//!
//! Randomness: the model is initialised from the device seeded with `seed`; each epoch draws its
//! patches and augmentations from generators seeded with `(seed, epoch)`, so a resumed run sees
//! exactly the batches the uninterrupted run would have seen.

pub mod cpu;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use bacseg_core::augment::{Augment, augment_patch};
use bacseg_core::cache::{CacheError, CacheSpec, PatchCache};
use bacseg_core::dataset::Split;
use bacseg_core::detection::{
    Burden, BurdenUnit, Detection, DetectionRule, ImageBurden, MaskBurden,
};
use bacseg_core::io::write_atomic;
use bacseg_core::metrics::{Aggregate, ConfusionCounts, EmptyPolicy, Metrics, PatchSet};
use bacseg_core::patch::{Patch, PatchSampler, SampleItem};
use bacseg_core::raster::Mask;
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::engine::cpu::Nhwc;
use crate::error::NnError;
use crate::loss::{LossKind, loss};
use crate::model::{OutputActivation, SegmentationModel};
use crate::networks::spec::ModelSpec;
use crate::train::cpu::{AdamW as CpuAdamW, TrainNet, loss_and_grad};
use crate::weights::save_pytorch_safetensors;

/// Learning-rate schedule after the optional linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The base learning rate throughout (the reference method).
    Constant,
    /// Cosine decay from the base rate to 1% of it at the last step.
    Cosine,
}

/// The validation score that picks the best epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// F1 of the validation patch metrics' pooled counts: the Dice overlap of every scored
    /// validation pixel at once, so that patches with a few BAC pixels (or a few false ones)
    /// do not swing it. The default.
    PooledF1,
    /// F1 per validation patch, averaged over the patches where it is defined (the reference
    /// method's patch-level convention; runs made before the choice existed used it).
    MeanF1,
}

impl Selection {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::PooledF1 => "pooled-f1",
            Self::MeanF1 => "mean-f1",
        }
    }

    /// This selection's score of an epoch.
    pub fn score(&self, r: &EpochRecord) -> Option<f64> {
        match self {
            Self::PooledF1 => r.val_pooled.f1,
            Self::MeanF1 => r.val.f1,
        }
    }
}

impl std::str::FromStr for Selection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pooled-f1" => Ok(Self::PooledF1),
            "mean-f1" => Ok(Self::MeanF1),
            _ => Err(format!("unknown selection {s:?}: pooled-f1 or mean-f1")),
        }
    }
}

fn mean_f1() -> Selection {
    Selection::MeanF1
}

fn one() -> usize {
    1
}

/// Hyper-parameters of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Patches per optimiser step.
    pub batch: usize,
    /// Patches drawn per epoch; `None`: as many as the training images have grid patches.
    pub patches_per_epoch: Option<usize>,
    pub lr: f64,
    pub weight_decay: f32,
    pub loss: LossKind,
    /// Smoothing `s` of the soft Dice loss.
    pub dice_smooth: f32,
    pub schedule: Schedule,
    /// Optimiser steps of linear warm-up from 0 to the base rate.
    pub warmup_steps: usize,
    /// Clip the gradient norm of each parameter tensor to this value (burn's convention:
    /// `GradientClipping::Norm` applies per tensor).
    pub grad_clip: Option<f32>,
    /// Probability that a drawn patch is taken among those containing BAC.
    pub positive_fraction: f64,
    pub augment: Augment,
    pub seed: u64,
    /// Probability threshold of the validation masks.
    pub threshold: f32,
    /// Validation patches scored by the metrics (the loss uses every validation patch).
    pub val_patches: PatchSet,
    /// Policy for metrics whose denominator is zero in a patch.
    pub empty_policy: EmptyPolicy,
    /// The validation score that picks the best epoch (a run configured before this setting
    /// existed reads as `mean-f1`, what it used).
    #[serde(default = "mean_f1")]
    pub selection: Selection,
    /// Validate every this many epochs (and the first, the last, and the last one the time
    /// budget leaves room for): validation of a large network on whole validation images can
    /// take a third of an epoch. Only validated epochs can become the best one.
    #[serde(default = "one")]
    pub validate_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 50,
            batch: 4,
            patches_per_epoch: None,
            lr: 1e-3,
            weight_decay: 1e-4,
            loss: LossKind::Dice,
            dice_smooth: 1.0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            grad_clip: None,
            positive_fraction: 0.5,
            augment: Augment::default(),
            seed: 0,
            threshold: 0.5,
            val_patches: PatchSet::Positive,
            empty_policy: EmptyPolicy::Skip,
            selection: Selection::PooledF1,
            validate_every: 1,
        }
    }
}

impl TrainConfig {
    #[allow(
        clippy::nonminimal_bool,
        clippy::neg_cmp_op_on_partial_ord,
        reason = "negated comparisons also reject NaN"
    )]
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 || self.batch == 0 || self.validate_every == 0 {
            return Err("epochs, batch and validate-every must be at least 1".into());
        }
        if self.patches_per_epoch == Some(0) {
            return Err("patches per epoch must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || !(self.weight_decay >= 0.0) {
            return Err(format!(
                "learning rate ({}) must be positive and weight decay ({}) not negative",
                self.lr, self.weight_decay
            ));
        }
        if !(self.dice_smooth > 0.0) {
            return Err("dice smoothing must be positive".into());
        }
        if let Some(c) = self.grad_clip
            && !(c > 0.0)
        {
            return Err("gradient clipping norm must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.positive_fraction) {
            return Err("positive fraction must be in [0, 1]".into());
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err("threshold must be in (0, 1)".into());
        }
        self.augment.validate()
    }

    /// Learning rate of optimiser step `step` (0-based) out of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let min = self.lr * 0.01;
                min + 0.5 * (self.lr - min) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Everything that defines a run; `RUN/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub bacseg_version: String,
    /// The burn backend (device) the run trained on.
    pub backend: String,
    /// Dataset directory (images/ and masks/).
    pub data: PathBuf,
    /// Which images train, validate and are held out.
    pub split: Split,
    /// Preprocessing and patch grid (the same as inference uses).
    pub patches: CacheSpec,
    pub model: ModelSpec,
    pub train: TrainConfig,
}

/// One finished epoch; a row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    /// Validation patch metrics, mean over patches (the reference convention).
    pub val: Metrics,
    /// Validation patch metrics over the pooled counts.
    pub val_pooled: Metrics,
    /// Validation patches scored by the metrics.
    pub val_units: usize,
    /// Image level on the validation images (areas in pixels): BAC found per image from the
    /// union of its in-breast validation patches' predictions, false-positive burden on the
    /// BAC-free ones, burden agreement (see `bacseg_core::detection`). `None` without
    /// validation images.
    #[serde(default)]
    pub val_images: Option<Detection>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub patches: usize,
    /// Training patches per second (loading and augmentation included).
    pub patches_per_s: f64,
    pub seconds: f64,
    /// Seconds the background loader spent reading and augmenting the epoch's patches (it
    /// runs while the model trains).
    #[serde(default)]
    pub loader_s: f64,
    /// Seconds the training steps waited for a batch: loading not hidden behind training.
    #[serde(default)]
    pub load_wait_s: f64,
    /// The engine that trained the epoch (`cpu` or `burn`).
    #[serde(default = "burn_engine")]
    pub engine: String,
}

fn burn_engine() -> String {
    TrainEngine::Burn.name().into()
}

/// The best epoch so far; `RUN/best.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    pub epoch: usize,
    /// The epoch's validation score by the run's [`Selection`].
    pub val_f1: Option<f64>,
    /// Which score `val_f1` is (absent in runs made before the choice existed: mean F1).
    #[serde(default = "mean_f1")]
    pub selection: Selection,
    pub val_loss: Option<f64>,
}

/// Progress saved with each checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    epochs_done: usize,
    steps_done: usize,
    history: Vec<EpochRecord>,
    best: Option<BestRecord>,
    seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastPointer {
    epoch: usize,
    dir: String,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Nn(#[from] NnError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{}: {message}", path.display())]
    Run { path: PathBuf, message: String },
    #[error("invalid training settings: {0}")]
    Config(String),
    /// A failure inside the training machinery (a worker thread stopping), not the user's.
    #[error("{0}")]
    Internal(String),
}

fn run_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Run {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// All configured epochs done.
    Finished,
    /// The time budget would not fit another epoch (or ran out during one).
    TimeBudget,
    /// `stop_after_epochs` reached.
    Requested,
}

/// Which implementation runs the training steps. Both compute the same steps (see
/// [`crate::train::cpu`]) and write the same checkpoints, so a run may change engine when it
/// resumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainEngine {
    /// bacseg's CPU training engine for DT-UNet, UNet and SegNet on burn's CPU backend, burn
    /// otherwise.
    #[default]
    Auto,
    /// bacseg's CPU training engine (DT-UNet, UNet and SegNet only).
    Cpu,
    /// burn's autodiff and optimiser on the model's device.
    Burn,
}

impl TrainEngine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Burn => "burn",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Auto, Self::Cpu, Self::Burn]
            .into_iter()
            .find(|e| e.name() == name)
    }
}

/// Limits for this invocation (not part of the run's definition).
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// The implementation of the training steps.
    pub engine: TrainEngine,
    /// Stop cleanly rather than start an epoch that would end after this many minutes, and
    /// drop an epoch still running when they are spent; the first epoch of a run is always
    /// completed, so that a run has weights however short the budget.
    pub max_minutes: Option<f64>,
    /// Stop after this many finished epochs in total (used to interrupt a run on purpose).
    pub stop_after_epochs: Option<usize>,
}

/// What the caller shows while training runs.
pub trait Observer {
    fn message(&mut self, _text: &str) {}
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _patches: usize) {}
    fn step(&mut self, _patches_done: usize, _loss: f64) {}
    fn validating(&mut self, _done: usize, _total: usize) {}
    fn epoch_end(&mut self, _record: &EpochRecord) {}
}

/// An observer that shows nothing.
#[derive(Debug)]
pub struct Quiet;
impl Observer for Quiet {}

/// Summary of a training invocation.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub stop: Stop,
    pub history: Vec<EpochRecord>,
    pub best: Option<BestRecord>,
}

/// The training and validation data of a run.
#[derive(Debug)]
pub struct TrainData<'a> {
    pub train: &'a PatchCache,
    pub val: Option<&'a PatchCache>,
}

/// Files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn best_weights(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }
    fn last(&self) -> PathBuf {
        self.root.join("last.json")
    }
    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// Read `config.json`.
    pub fn read_config(&self) -> Result<RunConfig, TrainError> {
        let path = self.config();
        let text = std::fs::read_to_string(&path).map_err(|e| run_err(&path, e))?;
        serde_json::from_str(&text).map_err(|e| run_err(&path, format!("not a run config: {e}")))
    }

    pub fn write_config(&self, config: &RunConfig) -> Result<(), TrainError> {
        write_json(&self.config(), config)
    }

    /// Whether the run has a finished epoch to resume from.
    pub fn has_checkpoint(&self) -> bool {
        self.last().is_file()
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(|e| e.to_string())
    })
    .map_err(|e| run_err(path, e))
}

fn epoch_seed(seed: u64, epoch: usize, stream: u64) -> u64 {
    // SplitMix64 of the triple: independent streams per epoch and purpose.
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A batch as flat buffers, `[batch, 1, n, n]`.
struct Batch {
    images: Vec<f32>,
    masks: Vec<f32>,
    len: usize,
}

fn read_batch(
    cache: &PatchCache,
    items: &[SampleItem],
    augment: Option<(&Augment, &mut ChaCha8Rng)>,
) -> Result<Batch, CacheError> {
    let n = cache.spec().patch;
    let mut images = vec![0.0; items.len() * n * n];
    let mut masks = vec![0.0; items.len() * n * n];
    let mut augment = augment;
    for ((item, img), msk) in items
        .iter()
        .zip(images.chunks_mut(n * n))
        .zip(masks.chunks_mut(n * n))
    {
        cache.read_patch(item, img, msk)?;
        if let Some((cfg, rng)) = augment.as_mut() {
            augment_patch(img, msk, n, cfg, *rng);
        }
    }
    Ok(Batch {
        images,
        masks,
        len: items.len(),
    })
}

fn tensors(batch: Batch, n: usize, channels: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let x = Tensor::<4>::from_data(TensorData::new(batch.images, [batch.len, 1, n, n]), device);
    let x = if channels > 1 {
        x.repeat_dim(1, channels)
    } else {
        x
    };
    let y = Tensor::<4>::from_data(TensorData::new(batch.masks, [batch.len, 1, n, n]), device);
    (x, y)
}

/// A batch as channels-last images for the CPU engines (the grey value replicated over
/// `channels`) and its masks.
fn nhwc(batch: Batch, n: usize, channels: usize) -> (Nhwc, Vec<f32>) {
    let Batch { images, masks, len } = batch;
    let data = if channels == 1 {
        images
    } else {
        images
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, channels))
            .collect()
    };
    (Nhwc::new(len, n, n, channels, data), masks)
}

/// Largest batch for which burn's CPU backend (flex 0.22) routes a convolution's weight
/// gradient, computed as a convolution whose input channels are the batch, to its direct
/// small-channel kernel: with the image-sized kernel of a weight gradient that path is several
/// times slower than its im2col + GEMM one.
const SLOW_WEIGHT_GRADIENT_BATCH: usize = 4;

/// Train `model` (built from `config.model`, on any device; it is moved to the autodiff
/// device) and write the run directory. With `resume`, the model and optimiser come from the
/// last checkpoint of `run` and training continues after its last finished epoch.
pub fn train<M: SegmentationModel>(
    model: M,
    config: &RunConfig,
    data: &TrainData,
    run: &RunDir,
    resume: bool,
    control: &Control,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let cfg = &config.train;
    cfg.validate().map_err(TrainError::Config)?;
    let device = model.devices().first().cloned().unwrap_or_default();
    let device = if device.is_autodiff() {
        device
    } else {
        device.autodiff()
    };
    let n = config.patches.patch;
    model.check_input([cfg.batch, model.in_channels(), n, n])?;
    if model.output_activation() != OutputActivation::Sigmoid {
        return Err(TrainError::Config(format!(
            "{} with {:?} outputs cannot be trained: the losses take logits",
            model.name(),
            model.output_activation()
        )));
    }
    let channels = model.in_channels();
    let use_cpu = match control.engine {
        TrainEngine::Burn => false,
        TrainEngine::Auto => TrainNet::trains(&model) && crate::engine::on_flex(&device),
        TrainEngine::Cpu => {
            if !TrainNet::trains(&model) {
                return Err(TrainError::Config(format!(
                    "the CPU training engine trains DT-UNet, UNet and SegNet, not {}; the burn engine trains it",
                    model.name()
                )));
            }
            true
        }
    };
    if !use_cpu && cfg.batch <= SLOW_WEIGHT_GRADIENT_BATCH && crate::engine::on_flex(&device) {
        observer.message(&format!(
            "batches of {} patches train slowly on burn's CPU backend: it computes the weight \
             gradients of convolutions with at most 16 output channels (DT-UNet's first two \
             levels) on a slow direct path when the batch is at most \
             {SLOW_WEIGHT_GRADIENT_BATCH} (see `bacseg train` in docs/cli.md); a batch of 5 or \
             more avoids it",
            cfg.batch
        ));
    }

    let mut optim_config = AdamWConfig::new().with_weight_decay(cfg.weight_decay);
    if let Some(c) = cfg.grad_clip {
        optim_config = optim_config.with_grad_clipping(Some(GradientClippingConfig::Norm(c)));
    }
    let mut optim: ModuleOptimizer = optim_config.init();
    let mut model = model.to_device(&device).train();
    let mut state = State::default();

    std::fs::create_dir_all(run.checkpoints()).map_err(|e| run_err(&run.checkpoints(), e))?;
    let mut optim_bytes = None;
    if resume {
        let (m, o, s, dir) = load_checkpoint(model, optim, run)?;
        (model, optim, state) = (m, o, s);
        if use_cpu {
            let path = dir.join("optim.bpk");
            optim_bytes = Some(std::fs::read(&path).map_err(|e| run_err(&path, e))?);
        }
        observer.message(&format!(
            "resuming after epoch {} ({} optimiser steps)",
            state.epochs_done, state.steps_done
        ));
    } else {
        run.write_config(config)?;
    }
    // The CPU training engine holds the weights and optimiser state while it trains; they go
    // back into `model` before every validation and checkpoint.
    let mut engine = match use_cpu {
        true => {
            let mut net = TrainNet::for_model(&model).expect("checked above")?;
            if let Some(bytes) = optim_bytes {
                net.load_optimizer_record(bytes)?;
            }
            observer.message(&format!(
                "training on bacseg's CPU engine ({}; the burn engine uses burn's autodiff)",
                crate::train::cpu::kernel_set()
            ));
            Some(net)
        }
        false => None,
    };
    let adamw = CpuAdamW::new(cfg.weight_decay, cfg.grad_clip);
    remove_stale_checkpoints(run, state.epochs_done)?;

    let train_items = data.train.items();
    let per_epoch = cfg.patches_per_epoch.unwrap_or(train_items.len()).max(1);
    let steps_per_epoch = per_epoch.div_ceil(cfg.batch);
    let total_steps = steps_per_epoch * cfg.epochs;
    // The validation images' true burdens, measured once for every epoch's image level.
    let val_truth: Vec<Burden> = match data.val {
        Some(val) => (0..val.images().len())
            .map(|i| Ok(burden_px(&val.read_truth(i)?)))
            .collect::<Result<_, TrainError>>()?,
        None => Vec::new(),
    };
    let started = Instant::now();
    let mut slowest_epoch = 0.0f64;
    let mut stop = Stop::Finished;

    while state.epochs_done < cfg.epochs {
        if control
            .stop_after_epochs
            .is_some_and(|s| state.epochs_done >= s)
        {
            stop = Stop::Requested;
            break;
        }
        if let Some(minutes) = control.max_minutes {
            let elapsed = started.elapsed().as_secs_f64();
            if state.epochs_done > 0 && elapsed + slowest_epoch > minutes * 60.0 {
                stop = Stop::TimeBudget;
                break;
            }
        }
        let epoch = state.epochs_done + 1;
        let t0 = Instant::now();
        observer.epoch_start(epoch, cfg.epochs, per_epoch);

        // Batches are read and augmented on a background thread, two batches ahead.
        let mut sampler = PatchSampler::new(
            train_items.clone(),
            cfg.positive_fraction,
            epoch_seed(cfg.seed, epoch, 1),
        )
        .map_err(|e| TrainError::Config(format!("training patches: {e}")))?;
        let mut aug_rng = ChaCha8Rng::seed_from_u64(epoch_seed(cfg.seed, epoch, 2));
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        let mut lr = cfg.lr;
        let mut out_of_time = false;
        let (mut loader_s, mut load_wait_s) = (0.0, 0.0);
        let current = model;
        let net = &mut engine;
        let result: Result<M, TrainError> = std::thread::scope(|scope| {
            let mut model = current;
            let (tx, rx) = mpsc::sync_channel::<Result<Batch, CacheError>>(2);
            let cache = data.train;
            let augment = &cfg.augment;
            let loader = scope.spawn(move || {
                let mut left = per_epoch;
                let mut busy = 0.0;
                while left > 0 {
                    let t = Instant::now();
                    let items = sampler.draw_n(left.min(cfg.batch));
                    left -= items.len();
                    let batch = read_batch(cache, &items, Some((augment, &mut aug_rng)));
                    busy += t.elapsed().as_secs_f64();
                    if tx.send(batch).is_err() {
                        break; // the trainer stopped early
                    }
                }
                busy
            });
            for step in 0..steps_per_epoch {
                let t = Instant::now();
                let batch = rx.recv().map_err(|_| {
                    TrainError::Internal("the patch loader stopped unexpectedly".into())
                })??;
                load_wait_s += t.elapsed().as_secs_f64();
                let len = batch.len;
                lr = cfg.lr_at(state.steps_done + step, total_steps);
                let value = match net.as_mut() {
                    Some(net) => {
                        let (x, masks) = nhwc(batch, n, channels);
                        net.step(x, &masks, cfg.loss, cfg.dice_smooth, lr, &adamw)?
                    }
                    None => {
                        let (x, y) = tensors(batch, n, channels, &device);
                        let l = loss(cfg.loss, model.forward(x), y, cfg.dice_smooth);
                        let value = f64::from(l.clone().into_scalar::<f32>());
                        let grads = GradientsParams::from_grads(l.backward(), &model);
                        model = optim.step(lr, model, grads);
                        value
                    }
                };
                loss_sum += value * len as f64;
                seen += len;
                observer.step(seen, value);
                // Out of time mid-epoch: drop the epoch, unless none has finished yet (the run
                // would have no weights at all), in which case the first one is completed.
                if let Some(minutes) = control.max_minutes
                    && state.epochs_done > 0
                    && started.elapsed().as_secs_f64() > minutes * 60.0
                {
                    out_of_time = true;
                    return Ok(model);
                }
            }
            drop(rx);
            loader_s = loader
                .join()
                .map_err(|_| TrainError::Internal("the patch loader failed".into()))?;
            Ok(model)
        });
        model = result?;
        if let Some(net) = &engine {
            model = net.write_into(model);
        }
        if out_of_time {
            observer.message("time budget spent during an epoch; that epoch is not kept");
            stop = Stop::TimeBudget;
            break;
        }
        let train_seconds = t0.elapsed().as_secs_f64();
        // Whether this epoch is validated: every `validate_every`-th, the first (so that a
        // run always has a best epoch), the last, and the last the time budget leaves room for
        // (judged with this epoch's training time: validation comes on top).
        let last_in_budget = control.max_minutes.is_some_and(|minutes| {
            started.elapsed().as_secs_f64() + slowest_epoch.max(train_seconds) > minutes * 60.0
        });
        let validated = cfg.validate_every <= 1
            || state.best.is_none()
            || epoch % cfg.validate_every == 0
            || epoch == cfg.epochs
            || last_in_budget
            || control.stop_after_epochs.is_some_and(|s| epoch >= s);
        let (val_loss, units, images) = match data.val.filter(|_| validated) {
            // On the CPU, validation runs on the CPU inference engine whichever engine trains
            // (it runs every architecture, 2-5x faster than burn's forward pass).
            Some(val) => validate(
                &model.valid(),
                val,
                &val_truth,
                cfg,
                channels,
                engine.is_some() || crate::engine::on_cpu(&model),
                observer,
            )?,
            None => (None, Vec::new(), Vec::new()),
        };
        let scored = Aggregate::new(&units, cfg.empty_policy);
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            val_loss,
            val: scored.mean,
            val_pooled: scored.pooled,
            val_units: scored.units,
            val_images: (!images.is_empty())
                .then(|| Detection::new(&images, BurdenUnit::Px, &DetectionRule::default())),
            lr,
            patches: seen,
            patches_per_s: seen as f64 / train_seconds.max(1e-9),
            seconds: t0.elapsed().as_secs_f64(),
            loader_s,
            load_wait_s,
            engine: if engine.is_some() { "cpu" } else { "burn" }.into(),
        };
        slowest_epoch = slowest_epoch.max(record.seconds);
        state.epochs_done = epoch;
        state.steps_done += steps_per_epoch;
        state.seconds += record.seconds;
        state.history.push(record.clone());

        let better = validated
            && match &state.best {
                None => true,
                Some(b) => is_better(cfg.selection.score(&record), &record, b),
            };
        if better {
            let path = run.best_weights();
            save_pytorch_safetensors(&model.valid(), &path)?;
            state.best = Some(BestRecord {
                epoch,
                val_f1: cfg.selection.score(&record),
                selection: cfg.selection,
                val_loss: record.val_loss,
            });
            write_json(&run.root.join("best.json"), &state.best)?;
        }
        let optim_state = match &engine {
            Some(net) => OptimState::Bytes(net.optimizer_record()?),
            None => OptimState::Burn(&optim),
        };
        save_checkpoint(&model, optim_state, &state, run)?;
        write_metrics_csv(&run.root.join("metrics.csv"), &state.history)?;
        write_curves_svg(&run.root.join("curves.svg"), &state.history)?;
        observer.epoch_end(&record);
    }
    Ok(Outcome {
        stop,
        history: state.history,
        best: state.best,
    })
}

/// Better by the selection's validation score (`score`, of `r`); where it is undefined for
/// both, by lower validation loss.
fn is_better(score: Option<f64>, r: &EpochRecord, best: &BestRecord) -> bool {
    match (score, best.val_f1) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => match (r.val_loss, best.val_loss) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        },
    }
}

/// Area and centreline length of a mask, in pixels.
fn burden_px(mask: &Mask) -> Burden {
    MaskBurden::measure(mask, None).in_unit(BurdenUnit::Px)
}

/// What [`validate`] measures: the loss, the scored patches' counts, the images' burdens.
type Validation = (Option<f64>, Vec<ConfusionCounts>, Vec<ImageBurden>);

/// Validation loss over every validation patch, the confusion counts of the scored set and
/// each validation image's true and predicted burden in pixels (the predicted mask is the
/// union of its in-breast patches' thresholded predictions), on `model` (in validation mode)
/// through the CPU inference engine when `cpu_engine` and the model is one it runs.
fn validate<M: SegmentationModel>(
    model: &M,
    cache: &PatchCache,
    truth: &[Burden],
    cfg: &TrainConfig,
    channels: usize,
    cpu_engine: bool,
    observer: &mut dyn Observer,
) -> Result<Validation, TrainError> {
    let n = cache.spec().patch;
    // The image whose predicted mask is being assembled (items come image by image).
    let mut open: Option<(usize, Mask)> = None;
    let mut burdens = Vec::new();
    let mut close = |open: Option<(usize, Mask)>| {
        if let Some((image, pred)) = open {
            burdens.push(ImageBurden {
                name: cache.images()[image].stem.clone(),
                truth: truth[image],
                predicted: burden_px(&pred),
            });
        }
    };
    let device = model.devices().first().cloned().unwrap_or_default();
    let mut cpu_net = match cpu_engine {
        true => crate::engine::cpu::Net::for_model(model).transpose()?,
        false => None,
    };
    let items = cache.items();
    let mut units = Vec::new();
    let (mut loss_sum, mut count) = (0.0, 0usize);
    let mut grad = Vec::new();
    for (b, chunk) in items.chunks(cfg.batch).enumerate() {
        observer.validating(b * cfg.batch, items.len());
        let batch = read_batch(cache, chunk, None)?;
        let truth = batch.masks.clone();
        let probs: Vec<f32> = match cpu_net.as_mut() {
            Some(net) => {
                let logits = net.forward(&nhwc(batch, n, channels).0)?;
                let l = loss_and_grad(cfg.loss, &logits, &truth, cfg.dice_smooth, &mut grad);
                loss_sum += l * chunk.len() as f64;
                logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
            }
            None => {
                let (x, y) = tensors(batch, n, channels, &device);
                let logits = model.forward(x);
                let l = loss(cfg.loss, logits.clone(), y, cfg.dice_smooth);
                loss_sum += f64::from(l.into_scalar::<f32>()) * chunk.len() as f64;
                sigmoid(logits)
                    .into_data()
                    .try_to_vec()
                    .map_err(|e| TrainError::Config(format!("reading predictions: {e:?}")))?
            }
        };
        count += chunk.len();
        for (k, item) in chunk.iter().enumerate() {
            let at = k * n * n;
            if open.as_ref().is_none_or(|(i, _)| *i != item.image) {
                close(open.take());
                let img = &cache.images()[item.image];
                open = Some((item.image, Mask::filled(img.width, img.height, false)));
            }
            if let Some((_, whole)) = open.as_mut() {
                let p = item.patch;
                for y in 0..p.valid_height {
                    let row = &probs[at + y * n..at + y * n + p.valid_width];
                    for (x, &v) in row.iter().enumerate() {
                        if v > cfg.threshold {
                            *whole.get_mut(p.x + x, p.y + y) = true;
                        }
                    }
                }
            }
            if cfg.val_patches == PatchSet::Positive && !item.positive {
                continue;
            }
            let pred = Mask::from_fn(n, n, |x, y| probs[at + y * n + x] > cfg.threshold);
            let truth = Mask::from_fn(n, n, |x, y| truth[at + y * n + x] > 0.5);
            let valid = Patch {
                x: 0,
                y: 0,
                ..item.patch
            };
            let c = ConfusionCounts::in_patch(&pred, &truth, &valid);
            units.push(c);
        }
    }
    close(open.take());
    observer.validating(items.len(), items.len());
    Ok(((count > 0).then(|| loss_sum / count as f64), units, burdens))
}

fn checkpoint_name(epoch: usize) -> String {
    format!("epoch-{epoch:04}")
}

/// The optimiser state a checkpoint saves: burn's optimiser, or the CPU engine's state already
/// as burn's record.
enum OptimState<'a> {
    Burn(&'a ModuleOptimizer),
    Bytes(Vec<u8>),
}

fn save_checkpoint<M: Module>(
    model: &M,
    optim: OptimState<'_>,
    state: &State,
    run: &RunDir,
) -> Result<(), TrainError> {
    let name = checkpoint_name(state.epochs_done);
    let partial = run.checkpoints().join(format!("{name}.partial"));
    let done = run.checkpoints().join(&name);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| run_err(&partial, e))?;
    let model_path = partial.join("model.bpk");
    let mut store = BurnpackStore::from_file(&model_path).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| run_err(&model_path, e))?;
    let optim_path = partial.join("optim.bpk");
    match optim {
        OptimState::Burn(optim) => optim
            .to_record()
            .save(&optim_path)
            .map_err(|e| run_err(&optim_path, e))?,
        OptimState::Bytes(bytes) => {
            std::fs::write(&optim_path, bytes).map_err(|e| run_err(&optim_path, e))?
        }
    }
    write_json(&partial.join("state.json"), state)?;
    // Make the files durable before the directory becomes the checkpoint.
    for f in ["model.bpk", "optim.bpk"] {
        let p = partial.join(f);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| run_err(&p, e))?;
    }
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&partial, &done).map_err(|e| run_err(&done, e))?;
    write_json(
        &run.last(),
        &LastPointer {
            epoch: state.epochs_done,
            dir: format!("checkpoints/{name}"),
        },
    )?;
    remove_stale_checkpoints(run, state.epochs_done)
}

/// Remove checkpoint directories other than that of `keep_epoch` (older ones, and any partial
/// or orphaned one left by a kill).
fn remove_stale_checkpoints(run: &RunDir, keep_epoch: usize) -> Result<(), TrainError> {
    let dir = run.checkpoints();
    let keep = checkpoint_name(keep_epoch);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(_) => return Ok(()),
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy() != keep {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

fn load_checkpoint<M: Module>(
    model: M,
    optim: ModuleOptimizer,
    run: &RunDir,
) -> Result<(M, ModuleOptimizer, State, PathBuf), TrainError> {
    let last = run.last();
    let text = std::fs::read_to_string(&last)
        .map_err(|e| run_err(&last, format!("no checkpoint to resume from ({e})")))?;
    let pointer: LastPointer = serde_json::from_str(&text).map_err(|e| run_err(&last, e))?;
    let dir = run.root.join(&pointer.dir);
    let state_path = dir.join("state.json");
    let state: State = std::fs::read_to_string(&state_path)
        .map_err(|e| run_err(&state_path, e))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| run_err(&state_path, e)))?;
    let model_path = dir.join("model.bpk");
    let mut model = model;
    let mut store = BurnpackStore::from_file(&model_path)
        .validate(true)
        .allow_partial(false);
    let result = model
        .load_from(&mut store)
        .map_err(|e| run_err(&model_path, e))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(run_err(
            &model_path,
            "the checkpoint does not fit the configured model",
        ));
    }
    let optim_path = dir.join("optim.bpk");
    let record = OptimizerRecord::load(&optim_path).map_err(|e| run_err(&optim_path, e))?;
    Ok((model, optim.load_record(record), state, dir))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

/// `metrics.csv`: the header names every column.
pub fn write_metrics_csv(path: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    let mut s = String::from(
        "epoch,train_loss,val_loss,val_recall,val_precision,val_accuracy,val_f1,val_jaccard,\
         val_pooled_f1,val_pooled_jaccard,val_patches_scored,lr,patches,patches_per_s,seconds,\
         loader_s,load_wait_s,val_images,val_image_sensitivity,val_image_specificity,val_image_auc,\
         val_fp_px_mean\n",
    );
    for r in history {
        let m = &r.val;
        let d = r.val_images.as_ref();
        s.push_str(&format!(
            "{},{:.6},{},{},{},{},{},{},{},{},{},{:.3e},{},{:.3},{:.1},{:.2},{:.2},{},{},{},{},{}\n",
            r.epoch,
            r.train_loss,
            fmt_opt(r.val_loss),
            fmt_opt(m.recall),
            fmt_opt(m.precision),
            fmt_opt(m.accuracy),
            fmt_opt(m.f1),
            fmt_opt(m.jaccard),
            fmt_opt(r.val_pooled.f1),
            fmt_opt(r.val_pooled.jaccard),
            r.val_units,
            r.lr,
            r.patches,
            r.patches_per_s,
            r.seconds,
            r.loader_s,
            r.load_wait_s,
            d.map_or(String::new(), |d| (d.positives + d.negatives).to_string()),
            fmt_opt(d.and_then(|d| d.sensitivity)),
            fmt_opt(d.and_then(|d| d.specificity)),
            fmt_opt(d.and_then(|d| d.auc)),
            fmt_opt(d.and_then(|d| d.fp_area_mean)),
        ));
    }
    write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(s.as_bytes()).map_err(|e| e.to_string())
    })
    .map_err(|e| run_err(path, e))
}

/// `curves.svg`: training and validation loss (left) and validation F1 (right) per epoch.
pub fn write_curves_svg(path: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    let svg = curves_svg(history);
    write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(svg.as_bytes()).map_err(|e| e.to_string())
    })
    .map_err(|e| run_err(path, e))
}

fn curves_svg(history: &[EpochRecord]) -> String {
    let (pw, ph, m) = (360.0, 240.0, 40.0);
    let epochs = history.len().max(2) as f64;
    let x_of = |e: usize, x0: f64| x0 + m + (e as f64 - 1.0) / (epochs - 1.0) * (pw - 2.0 * m);
    let y_of = |v: f64, max: f64| ph - m + 10.0 - v / max * (ph - 2.0 * m);
    let line = |pts: Vec<(usize, f64)>, x0: f64, max: f64, colour: &str| -> String {
        if pts.is_empty() {
            return String::new();
        }
        let d: Vec<String> = pts
            .iter()
            .map(|&(e, v)| format!("{:.1},{:.1}", x_of(e, x0), y_of(v, max)))
            .collect();
        let dots: String = pts
            .iter()
            .map(|&(e, v)| {
                format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{colour}\"/>",
                    x_of(e, x0),
                    y_of(v, max)
                )
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>{dots}",
            d.join(" ")
        )
    };
    let axes = |x0: f64, title: &str, max: f64| -> String {
        let (l, r, t, b) = (x0 + m, x0 + pw - m, m - 10.0 + 10.0, ph - m + 10.0);
        format!(
            "<rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\
             <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"13\">{title}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\">{max:.2}</text>\
             <text x=\"{}\" y=\"{b}\" text-anchor=\"end\" font-size=\"10\">0</text>\
             <text x=\"{l}\" y=\"{}\" font-size=\"10\">1</text>\
             <text x=\"{r}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\">epoch {}</text>",
            r - l,
            b - t,
            (l + r) / 2.0,
            l - 3.0,
            t + 4.0,
            l - 3.0,
            b + 14.0,
            b + 14.0,
            history.len()
        )
    };
    let loss_max = history
        .iter()
        .flat_map(|r| [Some(r.train_loss), r.val_loss])
        .flatten()
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let train: Vec<(usize, f64)> = history.iter().map(|r| (r.epoch, r.train_loss)).collect();
    let val: Vec<(usize, f64)> = history
        .iter()
        .filter_map(|r| Some((r.epoch, r.val_loss?)))
        .collect();
    let f1: Vec<(usize, f64)> = history
        .iter()
        .filter_map(|r| Some((r.epoch, r.val.f1?)))
        .collect();
    let pooled: Vec<(usize, f64)> = history
        .iter()
        .filter_map(|r| Some((r.epoch, r.val_pooled.f1?)))
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         {a1}{l1}{l2}{a2}{l3}{l4}\
         <text x=\"{lx}\" y=\"{ly}\" font-size=\"11\" fill=\"#1f77b4\">training loss</text>\
         <text x=\"{lx}\" y=\"{ly2}\" font-size=\"11\" fill=\"#ff7f0e\">validation loss</text>\
         <text x=\"{rx}\" y=\"{ly}\" font-size=\"11\" fill=\"#2ca02c\">validation F1 (mean over patches)</text>\
         <text x=\"{rx}\" y=\"{ly2}\" font-size=\"11\" fill=\"#9467bd\">validation F1 (pooled pixels)</text>\
         </svg>\n",
        w = 2.0 * pw,
        h = ph + 40.0,
        a1 = axes(0.0, "loss", loss_max),
        l1 = line(train, 0.0, loss_max, "#1f77b4"),
        l2 = line(val, 0.0, loss_max, "#ff7f0e"),
        a2 = axes(pw, "validation F1", 1.0),
        l3 = line(f1, pw, 1.0, "#2ca02c"),
        l4 = line(pooled, pw, 1.0, "#9467bd"),
        lx = m,
        ly = ph + 22.0,
        ly2 = ph + 36.0,
        rx = pw + m,
    )
}

/// Whether a file is a complete run directory written by this module.
pub fn is_run_dir(path: &Path) -> bool {
    path.join("config.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        let cfg = TrainConfig {
            lr: 1.0,
            warmup_steps: 4,
            schedule: Schedule::Cosine,
            ..TrainConfig::default()
        };
        assert!((cfg.lr_at(0, 104) - 0.25).abs() < 1e-12);
        assert!((cfg.lr_at(3, 104) - 1.0).abs() < 1e-12);
        assert!((cfg.lr_at(4, 104) - 1.0).abs() < 1e-12);
        assert!((cfg.lr_at(54, 104) - 0.505).abs() < 1e-9);
        assert!((cfg.lr_at(104, 104) - 0.01).abs() < 1e-12);
        let constant = TrainConfig::default();
        assert_eq!(constant.lr_at(77, 100), constant.lr);
    }

    #[test]
    fn settings_are_checked() {
        assert!(TrainConfig::default().validate().is_ok());
        for bad in [
            TrainConfig {
                batch: 0,
                ..TrainConfig::default()
            },
            TrainConfig {
                lr: f64::NAN,
                ..TrainConfig::default()
            },
            TrainConfig {
                threshold: 1.0,
                ..TrainConfig::default()
            },
            TrainConfig {
                validate_every: 0,
                ..TrainConfig::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }

    #[test]
    fn epoch_seeds_differ() {
        let a = epoch_seed(7, 1, 1);
        assert_ne!(a, epoch_seed(7, 2, 1));
        assert_ne!(a, epoch_seed(7, 1, 2));
        assert_ne!(a, epoch_seed(8, 1, 1));
        assert_eq!(a, epoch_seed(7, 1, 1));
    }

    #[test]
    fn curves_are_svg() {
        let r = EpochRecord {
            epoch: 1,
            train_loss: 0.9,
            val_loss: Some(0.8),
            val: Metrics {
                f1: Some(0.3),
                ..Metrics::default()
            },
            val_pooled: Metrics::default(),
            val_units: 3,
            lr: 1e-3,
            patches: 8,
            patches_per_s: 2.0,
            seconds: 4.0,
            loader_s: 1.0,
            load_wait_s: 0.1,
            engine: "cpu".into(),
            val_images: None,
        };
        let two = vec![
            r.clone(),
            EpochRecord {
                epoch: 2,
                train_loss: 0.5,
                ..r
            },
        ];
        let svg = curves_svg(&two);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Training and validation loss, validation F1 mean over patches (no pooled F1 here).
        assert_eq!(svg.matches("<polyline").count(), 3);
    }
}
