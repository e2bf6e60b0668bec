//! `bacseg train`: train a segmentation network on an annotated dataset (images/ + masks/),
//! writing a resumable run directory (see bacseg_nn::train and docs/cli.md#train).

use std::path::{Path, PathBuf};

use anyhow::Result;
use bacseg::train::{
    Control, LossKind, NewRun, Outcome, RunDir, Schedule, Stop, TrainConfig, TrainEngine, Trainer,
};
use bacseg_core::augment::Augment;
use bacseg_core::cache::CacheSpec;
use bacseg_core::metrics::PatchSet;
use bacseg_nn::Architecture;

use crate::cmd::preprocess::PreprocessArgs;
use crate::exit::usage;
use crate::progress::{TrainProgress, opt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset directory: images/ and masks/ matched by file stem (optional splits.json).
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Architecture: dt-unet, unet, segnet, contextnet or scunet (SCU-Net from scratch).
    #[arg(long, default_value = "dt-unet")]
    model: String,
    /// Run directory to create (or to continue with --resume).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last finished epoch; its config.json
    /// defines everything except --epochs and --max-minutes.
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Training epochs [default: 50]; with --resume, continue up to this many.
    #[arg(long)]
    epochs: Option<usize>,
    /// Patch side in pixels (a multiple of the network's input multiple).
    #[arg(long, default_value_t = 512)]
    patch: usize,
    /// Distance between patch origins (default: half a patch, i.e. 50% overlap).
    #[arg(long)]
    stride: Option<usize>,
    /// Patches per optimiser step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Patches drawn per epoch (default: the number of in-breast grid patches of the training
    /// images).
    #[arg(long)]
    patches_per_epoch: Option<usize>,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f32,
    /// Loss: dice or dice+bce.
    #[arg(long, default_value = "dice")]
    loss: String,
    /// Learning-rate schedule after warm-up: constant or cosine.
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Optimiser steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// Clip the gradient norm of each parameter tensor to this value (burn's convention).
    #[arg(long)]
    grad_clip: Option<f32>,
    /// What runs the training steps: auto (bacseg's CPU engine for DT-UNet, UNet and SegNet on
    /// a CPU build, burn otherwise), cpu or burn. A run may resume on another engine.
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Probability that a training patch is drawn among those that contain BAC.
    #[arg(long, default_value_t = 0.5)]
    positive_fraction: f64,
    /// Turn augmentation (flips, 90-degree rotations, brightness, contrast, gamma, noise) off.
    #[arg(long)]
    no_augment: bool,
    /// Fraction of the images used for validation (ignored when a splits file is used).
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Fraction of the images held out for the final test (ignored with a splits file).
    #[arg(long, default_value_t = 0.0)]
    test_fraction: f64,
    /// Splits file ({"train": [...], "val": [...], "test": [...]} of stems); default:
    /// DATA/splits.json when it exists.
    #[arg(long)]
    splits: Option<PathBuf>,
    /// Seed of the split, the initial weights, patch sampling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop cleanly before an epoch that would end after this many minutes (the first epoch is
    /// always completed).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Width of the first level (doubling per level) instead of the reference.
    #[arg(long)]
    width: Option<usize>,
    /// Number of resolution levels instead of the reference.
    #[arg(long)]
    depth: Option<usize>,
    /// Validation patches scored by the metrics: positive (containing BAC) or all.
    #[arg(long, default_value = "positive")]
    val_patches: String,
    /// Validation score that picks the best epoch: pooled-f1 (Dice over every scored
    /// validation pixel) or mean-f1 (F1 per patch, averaged).
    #[arg(long, default_value = "pooled-f1")]
    select: String,
    /// Validate every K epochs (and the first, the last and the last the time budget leaves
    /// room for); only validated epochs can be the best one.
    #[arg(long, default_value_t = 1, value_name = "K")]
    validate_every: usize,
    /// Patches with less than this fraction of breast are not used.
    #[arg(long, default_value_t = 0.05)]
    min_breast_fraction: f64,
    /// Patch cache directory (default: RUN/cache); may be shared between runs.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Replace an existing run in --out.
    #[arg(long)]
    overwrite: bool,
    /// Stop after this many epochs in total, as an interruption would (for testing resume).
    #[arg(long, hide = true)]
    stop_after_epochs: Option<usize>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

fn parse_name<T>(what: &str, value: &str, f: impl Fn(&str) -> Option<T>, known: &str) -> Result<T> {
    f(value).ok_or_else(|| usage(format!("unknown {what} {value:?} (known: {known})")))
}

/// The new run the arguments describe (checked by [`Trainer::create`]).
fn new_run(args: &Args, data: &Path, out: &Path) -> Result<NewRun> {
    let arch = parse_name(
        "model",
        &args.model,
        Architecture::from_name,
        "dt-unet, unet, segnet, contextnet, scunet",
    )?;
    let mut run = NewRun::new(data, out, arch);
    run.model = run
        .model
        .with_overrides(args.width, args.depth)
        .map_err(bacseg::Error::from)?;
    run.train = TrainConfig {
        epochs: args.epochs.unwrap_or(50),
        batch: args.batch,
        patches_per_epoch: args.patches_per_epoch,
        lr: args.lr,
        weight_decay: args.weight_decay,
        loss: parse_name("loss", &args.loss, LossKind::from_name, "dice, dice+bce")?,
        schedule: parse_name(
            "schedule",
            &args.schedule,
            |s| match s {
                "constant" => Some(Schedule::Constant),
                "cosine" => Some(Schedule::Cosine),
                _ => None,
            },
            "constant, cosine",
        )?,
        warmup_steps: args.warmup_steps,
        grad_clip: args.grad_clip,
        positive_fraction: args.positive_fraction,
        augment: if args.no_augment {
            Augment::none()
        } else {
            Augment::default()
        },
        seed: args.seed,
        val_patches: args
            .val_patches
            .parse::<PatchSet>()
            .map_err(|e| usage(e.to_string()))?,
        selection: args.select.parse().map_err(usage)?,
        validate_every: args.validate_every,
        ..TrainConfig::default()
    };
    run.patches = CacheSpec {
        preprocess: args.preprocess.to_config()?,
        patch: args.patch,
        stride: args.stride.unwrap_or(args.patch / 2).max(1),
        min_breast_fraction: args.min_breast_fraction,
    };
    run.splits = args.splits.clone();
    run.val_fraction = args.val_fraction;
    run.test_fraction = args.test_fraction;
    run.overwrite = args.overwrite;
    run.cache = args.cache.clone();
    Ok(run)
}

pub fn run(args: Args) -> Result<()> {
    let engine = parse_name(
        "training engine",
        &args.engine,
        TrainEngine::from_name,
        "auto, cpu, burn",
    )?;
    let trainer = match (&args.resume, &args.out, &args.data) {
        (Some(dir), _, _) => {
            let trainer = Trainer::resume(dir, args.epochs).inspect_err(|_| {
                let run = RunDir::new(dir);
                if run.config().is_file() && !run.has_checkpoint() {
                    eprintln!(
                        "bacseg: no epoch of that run finished; start it again with --data DATA \
                         --out {} --overwrite",
                        dir.display()
                    );
                }
            })?;
            let before = RunDir::new(dir)
                .read_config()
                .map_err(bacseg::Error::from)?;
            if before.train.epochs != trainer.config().train.epochs {
                eprintln!(
                    "bacseg: continuing to {} epochs (the run was configured for {})",
                    trainer.config().train.epochs,
                    before.train.epochs
                );
            }
            trainer
        }
        (None, Some(out), Some(data)) => {
            if !args.overwrite && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
                return Err(usage(format!(
                    "{0} is not empty; use --resume {0} to continue a run there or --overwrite \
                     to replace it",
                    out.display()
                )));
            }
            Trainer::create(&new_run(&args, data, out)?)?
        }
        (None, Some(_), None) => return Err(usage("--data is required for a new run")),
        (None, None, _) => return Err(usage("give --out RUN for a new run or --resume RUN")),
    };
    let trainer = match (&args.cache, trainer.is_resume()) {
        (Some(cache), true) => trainer.with_cache(cache),
        _ => trainer,
    };
    let config = trainer.config();
    eprintln!(
        "bacseg: {} on {} ({} training, {} validation, {} test images), patches {}/{}, {} epochs",
        config.model.architecture,
        config.data.display(),
        config.split.train.len(),
        config.split.val.len(),
        config.split.test.len(),
        config.patches.patch,
        config.patches.stride,
        config.train.epochs
    );
    if let Some(classes) = config.split.describe() {
        eprintln!("bacseg: split by BAC class: {classes}");
    }
    let control = Control {
        engine,
        max_minutes: args.max_minutes,
        stop_after_epochs: args.stop_after_epochs,
    };
    let run_dir = trainer.run_dir().clone();
    let outcome = trainer.train(&control, &mut TrainProgress::new())?;
    report(&outcome, &run_dir);
    Ok(())
}

fn report(outcome: &Outcome, run: &RunDir) {
    let why = match outcome.stop {
        Stop::Finished => "finished",
        Stop::TimeBudget => "stopped at the time budget",
        Stop::Requested => "stopped as requested",
    };
    let epochs = outcome.history.len();
    match &outcome.best {
        Some(b) => println!(
            "{why} after {epochs} epoch(s); best epoch {} (val {} {}, val loss {}); weights {}",
            b.epoch,
            b.selection.as_str(),
            opt(b.val_f1, 3),
            opt(b.val_loss, 4),
            run.best_weights().display()
        ),
        None => println!("{why}; no epoch finished"),
    }
    println!(
        "metrics: {}  curves: {}",
        run.root.join("metrics.csv").display(),
        run.root.join("curves.svg").display()
    );
}
