//! `bacseg train`: train a segmentation network on an annotated dataset (images/ + masks/),
//! writing a resumable run directory (see bacseg_nn::train and docs/cli.md#train).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bacseg_core::augment::Augment;
use bacseg_core::cache::{CacheSpec, PatchCache};
use bacseg_core::dataset::{Dataset, Split};
use bacseg_core::metrics::PatchSet;
use bacseg_nn::loss::LossKind;
use bacseg_nn::networks::{ModelSpec, Network};
use bacseg_nn::train::{
    Control, EpochRecord, Observer, Outcome, RunConfig, RunDir, Schedule, Stop, TrainConfig,
    TrainData, TrainEngine, TrainError, train,
};
use bacseg_nn::{Architecture, Device};

use crate::cmd::preprocess::PreprocessArgs;
use crate::exit::InputError;

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
    /// What runs the training steps: auto (bacseg's CPU engine for DT-UNet and UNet on a CPU
    /// build, burn otherwise), cpu or burn. A run may resume on another engine.
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
    f(value).ok_or_else(|| InputError(format!("unknown {what} {value:?} (known: {known})")).into())
}

/// Build the run configuration of a new run from the arguments.
fn new_config(args: &Args, data: &Path, dataset: &Dataset) -> Result<RunConfig> {
    let arch = parse_name(
        "model",
        &args.model,
        Architecture::from_name,
        "dt-unet, unet, segnet, contextnet, scunet",
    )?;
    let model = ModelSpec::reference(arch)
        .with_overrides(args.width, args.depth)
        .map_err(|e| InputError(e.to_string()))?;
    let splits_path = args
        .splits
        .clone()
        .or_else(|| Some(data.join("splits.json")).filter(|p| p.is_file()));
    let split = match &splits_path {
        Some(p) => Split::load(p, dataset).map_err(|e| InputError(e.to_string()))?,
        None => Split::random(
            &dataset.stems(),
            args.val_fraction,
            args.test_fraction,
            args.seed,
        )
        .map_err(|e| InputError(format!("{}: {e}", data.display())))?,
    };
    let train = TrainConfig {
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
            .map_err(|e| InputError(e.to_string()))?,
        ..TrainConfig::default()
    };
    train
        .validate()
        .map_err(|e| InputError(format!("training options: {e}")))?;
    let patches = CacheSpec {
        preprocess: args.preprocess.to_config()?,
        patch: args.patch,
        stride: args.stride.unwrap_or(args.patch / 2).max(1),
        min_breast_fraction: args.min_breast_fraction,
    };
    patches.validate().map_err(|e| InputError(e.to_string()))?;
    Ok(RunConfig {
        bacseg_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: format!("{:?}", Device::default()),
        data: std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf()),
        split,
        patches,
        model,
        train,
    })
}

pub fn run(args: Args) -> Result<()> {
    let engine = parse_name(
        "training engine",
        &args.engine,
        TrainEngine::from_name,
        "auto, cpu, burn",
    )?;
    let (run_dir, config, resume) = match (&args.resume, &args.out) {
        (Some(dir), _) => {
            let run = RunDir::new(dir);
            let mut config = run
                .read_config()
                .map_err(|e| InputError(format!("cannot resume: {e}")))?;
            if !run.has_checkpoint() {
                return Err(InputError(format!(
                    "{}: no finished epoch to resume from; start the run again with --out",
                    dir.display()
                ))
                .into());
            }
            if let Some(epochs) = args.epochs.filter(|&e| e != config.train.epochs) {
                eprintln!(
                    "bacseg: continuing to {epochs} epochs (the run was configured for {})",
                    config.train.epochs
                );
                config.train.epochs = epochs;
                run.write_config(&config)?;
            }
            (run, config, true)
        }
        (None, Some(out)) => {
            let data = args
                .data
                .as_deref()
                .ok_or_else(|| InputError("--data is required".into()))?;
            let run = RunDir::new(out);
            if out.exists() && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
                if !args.overwrite {
                    return Err(InputError(format!(
                        "{} is not empty; use --resume {0} to continue a run there or --overwrite to replace it",
                        out.display()
                    ))
                    .into());
                }
                for name in [
                    "checkpoints",
                    "last.json",
                    "best.json",
                    "best.safetensors",
                    "metrics.csv",
                    "curves.svg",
                    "config.json",
                ] {
                    let p = out.join(name);
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            let dataset = Dataset::open(data).map_err(|e| InputError(e.to_string()))?;
            let config = new_config(&args, data, &dataset)?;
            (run, config, false)
        }
        (None, None) => {
            return Err(InputError("give --out RUN for a new run or --resume RUN".into()).into());
        }
    };
    std::fs::create_dir_all(&run_dir.root)
        .with_context(|| format!("creating {}", run_dir.root.display()))?;
    let dataset = Dataset::open(&config.data).map_err(|e| InputError(e.to_string()))?;
    config
        .split
        .check(&dataset)
        .map_err(|e| InputError(format!("{}: split: {e}", config.data.display())))?;
    let cache_dir = args
        .cache
        .clone()
        .unwrap_or_else(|| run_dir.root.join("cache"));
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
    let train_cache = build_cache(
        &dataset,
        &config.split.train,
        &config.patches,
        &cache_dir,
        "training",
    )?;
    let val_cache = if config.split.val.is_empty() {
        None
    } else {
        Some(build_cache(
            &dataset,
            &config.split.val,
            &config.patches,
            &cache_dir,
            "validation",
        )?)
    };
    if train_cache.items().is_empty() {
        return Err(InputError("no training patch lies in the breast".into()).into());
    }
    let control = Control {
        engine,
        max_minutes: args.max_minutes,
        stop_after_epochs: args.stop_after_epochs,
    };
    let device = Device::default();
    let visitor = Train {
        config: &config,
        data: TrainData {
            train: &train_cache,
            val: val_cache.as_ref(),
        },
        run: &run_dir,
        resume,
        control: &control,
    };
    let outcome = config
        .model
        .build_seeded(&device, config.train.seed)
        .map(|model| visitor.visit(model))
        .map_err(|e| InputError(e.to_string()))??;
    report(&outcome, &run_dir);
    Ok(())
}

struct Train<'a> {
    config: &'a RunConfig,
    data: TrainData<'a>,
    run: &'a RunDir,
    resume: bool,
    control: &'a Control,
}

impl Train<'_> {
    fn visit(self, model: Network) -> Result<Outcome> {
        let mut progress = Progress::new();
        train(
            model,
            self.config,
            &self.data,
            self.run,
            self.resume,
            self.control,
            &mut progress,
        )
        .map_err(|e| match e {
            TrainError::Nn(e) => InputError(e.to_string()).into(),
            TrainError::Config(e) => InputError(e).into(),
            e => anyhow::Error::new(e),
        })
    }
}

fn build_cache(
    dataset: &Dataset,
    stems: &[String],
    spec: &CacheSpec,
    dir: &Path,
    what: &str,
) -> Result<PatchCache> {
    let bar = bar(stems.len() as u64, &format!("caching {what} images"));
    let plain = bar.is_none();
    let cache = PatchCache::build(dataset, stems, spec, dir, &|done, total| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        } else if plain && (done == total || done % 10 == 0) {
            eprintln!("bacseg: cached {done}/{total} {what} images");
        }
    })
    .map_err(|e| InputError(e.to_string()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let patches = cache.items().len();
    let positive = cache.items().iter().filter(|i| i.positive).count();
    eprintln!("bacseg: {what}: {patches} patches in the breast, {positive} with BAC");
    Ok(cache)
}

fn bar(len: u64, message: &str) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        bar
    })
}

/// Progress on stderr: a bar per epoch on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    epoch: usize,
    epochs: usize,
    total: usize,
    next_line: usize,
}

impl Progress {
    fn new() -> Self {
        Self {
            bar: None,
            epoch: 0,
            epochs: 0,
            total: 0,
            next_line: 0,
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

impl Observer for Progress {
    fn message(&mut self, text: &str) {
        match &self.bar {
            Some(b) => b.println(format!("bacseg: {text}")),
            None => eprintln!("bacseg: {text}"),
        }
    }
    fn epoch_start(&mut self, epoch: usize, epochs: usize, patches: usize) {
        self.epoch = epoch;
        self.epochs = epochs;
        self.total = patches;
        self.next_line = patches / 4;
        self.bar = bar(patches as u64, &format!("epoch {epoch}/{epochs}"));
    }
    fn step(&mut self, done: usize, loss: f64) {
        match &self.bar {
            Some(b) => {
                b.set_position(done as u64);
                b.set_message(format!(
                    "epoch {}/{} loss {loss:.4}",
                    self.epoch, self.epochs
                ));
            }
            None if done >= self.next_line && done < self.total => {
                eprintln!(
                    "bacseg: epoch {}/{}: {done}/{} patches, loss {loss:.4}",
                    self.epoch, self.epochs, self.total
                );
                self.next_line += self.total.div_ceil(4).max(1);
            }
            None => {}
        }
    }
    fn validating(&mut self, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "epoch {}/{} validating {done}/{total}",
                self.epoch, self.epochs
            ));
        }
    }
    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!(
            "bacseg: epoch {}/{}: train loss {:.4}, val loss {}, val F1 {} recall {} precision {} ({} patches), {:.2} patches/s, {:.0} s ({:.1} s waiting for data)",
            r.epoch,
            self.epochs,
            r.train_loss,
            opt(r.val_loss, 4),
            opt(r.val.f1, 3),
            opt(r.val.recall, 3),
            opt(r.val.precision, 3),
            r.val_units,
            r.patches_per_s,
            r.seconds,
            r.load_wait_s
        );
    }
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
            "{why} after {epochs} epoch(s); best epoch {} (val F1 {}, val loss {}); weights {}",
            b.epoch,
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
