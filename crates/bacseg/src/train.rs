//! Training: a new run or the continuation of one, with progress reported to an observer.
//!
//! A [`Trainer`] is made in two steps so that a previous run is not lost to a new one that
//! cannot start: [`Trainer::create`] (or [`Trainer::resume`]) checks the settings, opens the
//! dataset and makes the split, writing nothing; [`Trainer::train`] builds the patch caches,
//! checks the engine and only then, for a new run with [`NewRun::overwrite`], removes the
//! previous run's files, and runs the epochs, writing a resumable run directory
//! (docs/cli.md#train).
//!
//! ```no_run
//! use bacseg::nn::Architecture;
//! use bacseg::train::{Control, NewRun, Quiet, Trainer};
//!
//! fn main() -> bacseg::Result<()> {
//!     let mut run = NewRun::new("data/synthetic", "runs/dt-unet", Architecture::DtUnet);
//!     run.train.epochs = 10;
//!     run.patches.patch = 256;
//!     run.patches.stride = 128;
//!     let outcome = Trainer::create(&run)?.train(&Control::default(), &mut Quiet)?;
//!     println!("{:?} after {} epochs", outcome.stop, outcome.history.len());
//!     Ok(())
//! }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bacseg_core::cache::{CacheSpec, PatchCache};
use bacseg_core::dataset::{Dataset, Split, strata};
use bacseg_core::preprocess::Preprocess;
use bacseg_nn::networks::{ModelSpec, Network};
use bacseg_nn::train::TrainData;
use bacseg_nn::train::cpu::TrainNet;
use bacseg_nn::{Architecture, Device, SegmentationModel};

pub use bacseg_nn::loss::LossKind;
pub use bacseg_nn::train::{
    BestRecord, Control, EpochRecord, Observer, Outcome, Quiet, RunConfig, RunDir, Schedule, Stop,
    TrainConfig, TrainEngine,
};

use crate::error::{Error, ErrorKind, Result};

/// Files of a run directory that a new run replaces ([`NewRun::overwrite`]); the patch cache
/// is kept (its entries are keyed by settings and file contents, so stale ones are not used).
const RUN_FILES: [&str; 7] = [
    "checkpoints",
    "last.json",
    "best.json",
    "best.safetensors",
    "metrics.csv",
    "curves.svg",
    "config.json",
];

/// Everything a new training run needs. [`NewRun::new`] gives the reference setting (512x512
/// patches with 50% overlap, batch 4, soft Dice, AdamW 1e-3, 50 epochs, 20% validation).
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Dataset directory: `images/` and `masks/` matched by file stem.
    pub data: PathBuf,
    /// Run directory to create.
    pub out: PathBuf,
    /// The network (its architecture and widths).
    pub model: ModelSpec,
    /// Optimiser, loss, schedule, sampling, augmentation, seed.
    pub train: TrainConfig,
    /// Preprocessing and patch grid (the same as inference will use).
    pub patches: CacheSpec,
    /// Split file (`{"train": [...], "val": [...], "test": [...]}` of stems); `None`:
    /// `DATA/splits.json` when it exists, else a split stratified by BAC class and view
    /// ([`Split::stratified`], [`strata`]) by [`val_fraction`](Self::val_fraction) and
    /// [`test_fraction`](Self::test_fraction) seeded by `train.seed`.
    pub splits: Option<PathBuf>,
    pub val_fraction: f64,
    pub test_fraction: f64,
    /// Replace a previous run in `out` (once the new one is ready to train: settings, data,
    /// caches and engine checked); without it a non-empty `out` is an error.
    pub overwrite: bool,
    /// Patch cache directory (default `OUT/cache`); may be shared between runs.
    pub cache: Option<PathBuf>,
}

impl NewRun {
    /// The reference setting for `architecture` on `data`, written to `out`.
    pub fn new(
        data: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
        architecture: Architecture,
    ) -> Self {
        Self {
            data: data.into(),
            out: out.into(),
            model: ModelSpec::reference(architecture),
            train: TrainConfig::default(),
            patches: CacheSpec {
                preprocess: Preprocess::default(),
                patch: 512,
                stride: 256,
                min_breast_fraction: 0.05,
            },
            splits: None,
            val_fraction: 0.2,
            test_fraction: 0.0,
            overwrite: false,
            cache: None,
        }
    }
}

/// A run ready to train: its configuration checked, its dataset open and split.
#[derive(Debug)]
pub struct Trainer {
    run: RunDir,
    network: Network,
    config: RunConfig,
    dataset: Dataset,
    resume: bool,
    /// Remove a previous run's files once everything is ready to train.
    replace: bool,
    cache: PathBuf,
}

/// Progress of the patch caches, reported while [`Trainer::train`] builds them.
pub trait CacheObserver {
    /// `done` of `total` images of the `what` set ("training", "validation") cached; `notes`:
    /// conversions the reader made to the image just cached ("path: colour converted to
    /// grey"), for the user to see.
    fn caching(&mut self, _what: &str, _done: usize, _total: usize, _notes: &[String]) {}
    /// The `what` set is cached: `patches` in the breast, `positive` of them with BAC.
    fn cached(&mut self, _what: &str, _patches: usize, _positive: usize) {}
}

impl CacheObserver for Quiet {}

/// Remove the files of a previous run in `dir` (not its patch cache).
fn remove_run_files(dir: &Path) -> Result<()> {
    for name in RUN_FILES {
        let p = dir.join(name);
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::with_source(
                ErrorKind::Io,
                format!("replacing the run in {}: {}", dir.display(), p.display()),
                e,
            ));
        }
    }
    Ok(())
}

fn is_nonempty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some())
}

impl Trainer {
    /// A new run: checks the settings, opens the dataset and makes the split; nothing is
    /// written. A non-empty `out` is an error unless [`NewRun::overwrite`] is set, in which
    /// case [`Trainer::train`] replaces the previous run once it is ready to train.
    pub fn create(new: &NewRun) -> Result<Self> {
        new.train
            .validate()
            .map_err(|e| Error::config(format!("training options: {e}")))?;
        new.patches.validate()?;
        let network = new.model.build_seeded(&Device::default(), new.train.seed)?;
        let multiple = network.input_multiple();
        if !new.patches.patch.is_multiple_of(multiple) {
            return Err(Error::config(format!(
                "patch {} is not a multiple of {multiple}, the input multiple of this {}",
                new.patches.patch, new.model.architecture
            )));
        }
        if new.out.is_file() {
            return Err(Error::config(format!(
                "{} is a file, not a run directory",
                new.out.display()
            )));
        }
        if is_nonempty_dir(&new.out) && !new.overwrite {
            return Err(Error::config(format!(
                "{} is not empty: resume the run there, or replace it (overwrite)",
                new.out.display()
            )));
        }
        let dataset = Dataset::open(&new.data)?;
        let splits = new
            .splits
            .clone()
            .or_else(|| Some(new.data.join("splits.json")).filter(|p| p.is_file()));
        let split = match &splits {
            Some(p) => Split::load(p, &dataset)?,
            None => Split::stratified(
                &strata(&dataset)?,
                new.val_fraction,
                new.test_fraction,
                new.train.seed,
            )
            .map_err(|e| Error::config(format!("{}: {e}", new.data.display())))?,
        };
        if split.train.is_empty() {
            return Err(Error::config(format!(
                "{}: the split leaves no image for training",
                new.data.display()
            )));
        }
        let config = RunConfig {
            bacseg_version: env!("CARGO_PKG_VERSION").to_string(),
            backend: format!("{:?}", Device::default()),
            data: std::path::absolute(&new.data).unwrap_or_else(|_| new.data.clone()),
            split,
            patches: new.patches.clone(),
            model: new.model.clone(),
            train: new.train.clone(),
        };
        let cache = new.cache.clone().unwrap_or_else(|| new.out.join("cache"));
        Ok(Self {
            run: RunDir::new(&new.out),
            network,
            config,
            dataset,
            resume: false,
            replace: new.overwrite,
            cache,
        })
    }

    /// Continue the run in `dir` from its last finished epoch, up to `epochs` in total when
    /// given (else as configured). Its `config.json` defines everything else.
    pub fn resume(dir: &Path, epochs: Option<usize>) -> Result<Self> {
        let run = RunDir::new(dir);
        // A directory that holds no readable run is the user's input, not an I/O failure.
        let mut config = run
            .read_config()
            .map_err(|e| Error::with_source(ErrorKind::Input, "cannot resume", e))?;
        if !run.has_checkpoint() {
            return Err(Error::config(format!(
                "{}: no finished epoch to resume from; start the run again, replacing it (overwrite)",
                dir.display()
            )));
        }
        if let Some(epochs) = epochs {
            config.train.epochs = epochs;
            config
                .train
                .validate()
                .map_err(|e| Error::config(format!("training options: {e}")))?;
        }
        let dataset = Dataset::open(&config.data)?;
        config
            .split
            .check(&dataset)
            .map_err(|e| Error::input(format!("{}: split: {e}", config.data.display())))?;
        let network = config
            .model
            .build_seeded(&Device::default(), config.train.seed)?;
        Ok(Self {
            network,
            replace: false,
            cache: dir.join("cache"),
            run,
            config,
            dataset,
            resume: true,
        })
    }

    /// Cache patches in `dir` instead of `RUN/cache` (a cache may be shared between runs).
    pub fn with_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = dir.into();
        self
    }

    /// The run's configuration (what `config.json` holds).
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Whether this continues an existing run.
    pub fn is_resume(&self) -> bool {
        self.resume
    }

    /// Build (or reuse) the patch caches and train until the configured epochs are done or
    /// `control` stops the run. Every finished epoch is a checkpoint; the best one's weights
    /// are `RUN/best.safetensors`.
    pub fn train<O: Observer + CacheObserver + Send>(
        self,
        control: &Control,
        observer: &mut O,
    ) -> Result<Outcome> {
        for entry in &self.dataset.skipped {
            observer.message(&format!("warning: {entry}"));
        }
        // A new run that fails before its first epoch leaves nothing behind: no half-built
        // cache or config.json that would make the next `create` refuse a "non-empty" directory.
        let (run, cache) = (self.run.clone(), self.cache.clone());
        let (root_existed, empty_root) = (run.root.exists(), !is_nonempty_dir(&run.root));
        let fresh_cache = !cache.exists();
        let new_run = !self.resume;
        let mut replaced = false;
        let result = self.train_steps(control, observer, &mut replaced);
        if result.is_err() && new_run && !run.has_checkpoint() {
            if !root_existed {
                let _ = std::fs::remove_dir_all(&run.root);
            } else if empty_root {
                // The directory was given empty: everything in it is this run's.
                for entry in std::fs::read_dir(&run.root).into_iter().flatten().flatten() {
                    let p = entry.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            } else {
                if fresh_cache {
                    let _ = std::fs::remove_dir_all(&cache);
                }
                // Files of this run only: a previous run's were removed when it started.
                if replaced {
                    let _ = remove_run_files(&run.root);
                }
            }
        }
        result
    }

    fn train_steps<O: Observer + CacheObserver + Send>(
        self,
        control: &Control,
        observer: &mut O,
        replaced: &mut bool,
    ) -> Result<Outcome> {
        std::fs::create_dir_all(&self.run.root).map_err(|e| {
            Error::with_source(ErrorKind::Io, self.run.root.display().to_string(), e)
        })?;
        if self.resume {
            // A changed number of epochs is part of the run from now on.
            self.run.write_config(&self.config)?;
        }
        let split = &self.config.split;
        let train = self.cache_set(&split.train, "training", observer)?;
        let val = match split.val.is_empty() {
            true => None,
            false => Some(self.cache_set(&split.val, "validation", observer)?),
        };
        if train.items().is_empty() {
            return Err(Error::input(format!(
                "{}: no training patch lies in the breast",
                self.config.data.display()
            )));
        }
        if control.engine == TrainEngine::Cpu && !TrainNet::trains(&self.network) {
            return Err(Error::config(format!(
                "the CPU training engine trains DT-UNet, UNet and SegNet, not {}",
                self.network.name()
            )));
        }
        if self.replace {
            remove_run_files(&self.run.root)?;
            *replaced = true;
        }
        let data = TrainData {
            train: &train,
            val: val.as_ref(),
        };
        Ok(bacseg_nn::train::train(
            self.network,
            &self.config,
            &data,
            &self.run,
            self.resume,
            control,
            observer,
        )?)
    }

    fn cache_set<O: CacheObserver + Send>(
        &self,
        stems: &[String],
        what: &str,
        observer: &mut O,
    ) -> Result<PatchCache> {
        let progress = Mutex::new(&mut *observer);
        let cache = PatchCache::build(
            &self.dataset,
            stems,
            &self.config.patches,
            &self.cache,
            &|done, total, notes| {
                if let Ok(mut o) = progress.lock() {
                    o.caching(what, done, total, notes);
                }
            },
        )?;
        let items = cache.items();
        observer.cached(
            what,
            items.len(),
            items.iter().filter(|i| i.positive).count(),
        );
        Ok(cache)
    }
}
