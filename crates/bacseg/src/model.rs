//! A trained network ready to predict: [`Model`], loaded once from a training run directory,
//! from PyTorch-named safetensors plus a [`ModelSpec`], or from a published SCU-Net checkpoint.
//!
//! ```no_run
//! # fn main() -> bacseg::Result<()> {
//! use bacseg::{Model, ModelSource};
//! // A training run directory (its config.json and best.safetensors):
//! let model = Model::load(&ModelSource::RunDir("runs/dt-unet".into()))?;
//! println!("{} with {} parameters", model.architecture().name(), model.parameters());
//! // The published SCU-Net, as cached by `bacseg weights fetch scunet`:
//! let scunet = Model::load(&ModelSource::published_scunet(None))?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use bacseg_core::preprocess::Preprocess;
use bacseg_nn::train::RunDir;
use bacseg_nn::{
    Architecture, Device, ModelSpec, Module, Network, OutputActivation, Precision, ScuNetConfig,
    SegmentationModel, load_pytorch_safetensors, load_scunet_checkpoint,
};

use crate::error::{Error, ErrorKind, Result};
use crate::weights;

/// Where a model's network and weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A training run directory: its `config.json` (network, patches, preprocessing) and
    /// `best.safetensors`.
    RunDir(PathBuf),
    /// A `.safetensors` file with PyTorch tensor names, for the network `spec` describes.
    Safetensors { path: PathBuf, spec: ModelSpec },
    /// A published SCU-Net `.pt` checkpoint (`None`: the reference one from the weights
    /// cache, see [`crate::weights`]), computed in `precision`.
    PublishedScuNet {
        path: Option<PathBuf>,
        precision: Precision,
    },
}

impl ModelSource {
    /// The published reference SCU-Net (`None`: from the weights cache) in f32.
    pub fn published_scunet(path: Option<PathBuf>) -> Self {
        ModelSource::PublishedScuNet {
            path,
            precision: Precision::F32,
        }
    }

    /// The source a model argument names, as the command line writes it: a run directory; a
    /// `.safetensors` file of `architecture` (reference shape, or `width`/`depth` levels);
    /// `scunet:PATH` or a `.pt` file with architecture `scunet` (a published checkpoint);
    /// `scunet:` alone (the cached reference checkpoint).
    pub fn parse(
        text: &Path,
        architecture: &str,
        width: Option<usize>,
        depth: Option<usize>,
        precision: Precision,
    ) -> Result<Self> {
        let s = text.to_string_lossy();
        if let Some(path) = s.strip_prefix("scunet:") {
            let path = (!path.is_empty()).then(|| PathBuf::from(path));
            return Ok(ModelSource::PublishedScuNet { path, precision });
        }
        let is_pt = text
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pt") || e.eq_ignore_ascii_case("pth"));
        if is_pt {
            if architecture != Architecture::ScuNet.name() {
                return Err(Error::input(format!(
                    "{}: PyTorch .pt checkpoints are read for the published SCU-Net only \
                     (scunet:{0} or architecture scunet); other networks take .safetensors",
                    text.display()
                )));
            }
            return Ok(ModelSource::PublishedScuNet {
                path: Some(text.to_path_buf()),
                precision,
            });
        }
        if precision == Precision::F64 {
            return Err(Error::config(
                "f64 precision applies to published SCU-Net checkpoints only",
            ));
        }
        if text.is_dir() {
            return Ok(ModelSource::RunDir(text.to_path_buf()));
        }
        if !text.is_file() {
            return Err(Error::input(format!(
                "{}: no such run directory or weights file",
                text.display()
            )));
        }
        let arch = Architecture::from_name(architecture).ok_or_else(|| {
            Error::config(format!(
                "unknown architecture {architecture:?} (known: dt-unet, unet, segnet, \
                 contextnet, scunet)"
            ))
        })?;
        let spec = ModelSpec::reference(arch)
            .with_overrides(width, depth)
            .map_err(Error::from)?;
        Ok(ModelSource::Safetensors {
            path: text.to_path_buf(),
            spec,
        })
    }
}

impl ModelSource {
    /// The architecture, where the source says it without reading files (not for a run
    /// directory, whose config.json says it).
    pub fn architecture(&self) -> Option<Architecture> {
        match self {
            ModelSource::RunDir(_) => None,
            ModelSource::Safetensors { spec, .. } => spec.kind().ok(),
            ModelSource::PublishedScuNet { .. } => Some(Architecture::ScuNet),
        }
    }
}

/// What a training run recorded about the data its model was trained on, used as the
/// prediction defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDefaults {
    pub preprocess: Preprocess,
    /// Patch side and stride.
    pub patch: usize,
    pub stride: usize,
    pub min_breast_fraction: f64,
}

/// A network with its weights, in inference mode, and what is known about how it was trained.
#[derive(Debug, Clone)]
pub struct Model {
    spec: ModelSpec,
    network: Network,
    weights: PathBuf,
    published_scunet: bool,
    precision: Precision,
    run: Option<RunDefaults>,
}

impl Model {
    /// Load a model on the default device (the best backend compiled in).
    pub fn load(source: &ModelSource) -> Result<Self> {
        Self::load_on(source, &Device::default())
    }

    /// Load a model on `device`.
    pub fn load_on(source: &ModelSource, device: &Device) -> Result<Self> {
        match source {
            ModelSource::RunDir(dir) => Self::from_run_dir(dir, device),
            ModelSource::Safetensors { path, spec } => {
                let network = load_weights(spec, path, device)?;
                Ok(Self {
                    spec: spec.clone(),
                    network,
                    weights: path.clone(),
                    published_scunet: false,
                    precision: Precision::F32,
                    run: None,
                })
            }
            ModelSource::PublishedScuNet { path, precision } => {
                let path = match path {
                    Some(p) => p.clone(),
                    None => {
                        let cache = weights::cache_dir(None)?;
                        let published = weights::published("scunet")
                            .ok_or_else(|| Error::runtime("no published scunet weights entry"))?;
                        weights::cached_path(&cache, published)
                    }
                };
                if !path.is_file() {
                    return Err(Error::input(format!(
                        "{}: no such SCU-Net checkpoint (`bacseg weights fetch scunet` \
                         downloads the published one)",
                        path.display()
                    )));
                }
                let network = load_scunet_checkpoint(&path, *precision, device)
                    .map_err(|e| Error::from(e).context(path.display().to_string()))?;
                let config = ScuNetConfig::new().with_output(OutputActivation::Clamp);
                let spec = ModelSpec {
                    architecture: Architecture::ScuNet.name().into(),
                    config: serde_json::to_value(&config)
                        .map_err(|e| Error::with_source(ErrorKind::Runtime, "scunet", e))?,
                };
                Ok(Self {
                    spec,
                    network: Network::from(network).valid(),
                    weights: path,
                    published_scunet: true,
                    precision: *precision,
                    run: None,
                })
            }
        }
    }

    fn from_run_dir(dir: &Path, device: &Device) -> Result<Self> {
        let run = RunDir::new(dir);
        // A run directory is the user's input: a config it lacks or cannot parse is bad input.
        let config = run.read_config().map_err(|e| {
            Error::with_source(ErrorKind::Input, format!("model {}", dir.display()), e)
        })?;
        let weights = run.best_weights();
        if !weights.is_file() {
            return Err(Error::input(format!(
                "{}: no best.safetensors (has the run finished an epoch?)",
                dir.display()
            )));
        }
        let network = load_weights(&config.model, &weights, device)?;
        Ok(Self {
            spec: config.model,
            network,
            weights,
            published_scunet: false,
            precision: Precision::F32,
            run: Some(RunDefaults {
                preprocess: config.patches.preprocess,
                patch: config.patches.patch,
                stride: config.patches.stride,
                min_breast_fraction: config.patches.min_breast_fraction,
            }),
        })
    }

    /// A model from a network already in memory (weights as they are), e.g. one just trained.
    pub fn from_network(spec: ModelSpec, network: Network, weights: PathBuf) -> Self {
        Self {
            spec,
            network: network.valid(),
            weights,
            published_scunet: false,
            precision: Precision::F32,
            run: None,
        }
    }

    /// The network, in inference mode (BatchNorm with running statistics).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Architecture and configuration.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn architecture(&self) -> Architecture {
        self.network.architecture()
    }

    /// The weights file the model was loaded from.
    pub fn weights_path(&self) -> &Path {
        &self.weights
    }

    /// Whether this is a published SCU-Net checkpoint (which the published pipeline runs).
    pub fn is_published_scunet(&self) -> bool {
        self.published_scunet
    }

    /// Precision of the computation (f64 only for published SCU-Net checkpoints).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// What the training run recorded (None for bare weights files and published models).
    pub fn run_defaults(&self) -> Option<&RunDefaults> {
        self.run.as_ref()
    }

    /// Trainable parameters.
    pub fn parameters(&self) -> usize {
        self.network.trainable_parameters()
    }
}

fn load_weights(spec: &ModelSpec, path: &Path, device: &Device) -> Result<Network> {
    let network = spec.build(device).map_err(Error::from)?;
    let network = load_pytorch_safetensors(network, path)
        .map_err(|e| Error::from(e).context(format!("loading {}", path.display())))?;
    Ok(network.valid())
}
