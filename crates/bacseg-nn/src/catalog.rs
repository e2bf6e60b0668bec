//! The architectures bacseg offers, by command-line name, with their reference configurations,
//! sizes and costs (what `bacseg models` lists).

use burn::tensor::Device;
use serde::Serialize;

use crate::contextnet::ContextNetConfig;
use crate::dt_unet::DtUnetConfig;
use crate::error::NnError;
use crate::model::SegmentationModel;
use crate::scunet::ScuNetConfig;
use crate::segnet::SegNetConfig;
use crate::unet::UnetConfig;

/// Side of the square patch the published costs refer to.
pub const REFERENCE_PATCH: usize = 512;

/// One of the segmentation architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    DtUnet,
    Unet,
    SegNet,
    ContextNet,
    /// The published SCU-Net (pretrained weights: `bacseg weights fetch scunet`).
    ScuNet,
}

impl Architecture {
    /// Whether the CPU inference engine ([`crate::cpu`]) runs this architecture.
    pub fn has_cpu_engine(self) -> bool {
        matches!(self, Architecture::DtUnet | Architecture::Unet)
    }

    /// Every architecture, in the order of the reference comparison.
    pub const ALL: [Architecture; 5] = [
        Architecture::DtUnet,
        Architecture::Unet,
        Architecture::SegNet,
        Architecture::ContextNet,
        Architecture::ScuNet,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::DtUnet => "dt-unet",
            Architecture::Unet => "unet",
            Architecture::SegNet => "segnet",
            Architecture::ContextNet => "contextnet",
            Architecture::ScuNet => "scunet",
        }
    }

    /// The architecture called `name` on the command line, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Size and cost of the reference configuration. Parameters are lazily initialised by burn,
    /// so this allocates no weights.
    pub fn reference_summary(self, device: &Device) -> Result<ModelSummary, NnError> {
        match self {
            Architecture::DtUnet => {
                let config = DtUnetConfig::new();
                summarise(&config.init(device)?, json(&config))
            }
            Architecture::Unet => {
                let config = UnetConfig::new();
                summarise(&config.init(device)?, json(&config))
            }
            Architecture::SegNet => {
                let config = SegNetConfig::new();
                summarise(&config.init(device)?, json(&config))
            }
            Architecture::ContextNet => {
                let config = ContextNetConfig::new();
                summarise(&config.init(device)?, json(&config))
            }
            Architecture::ScuNet => {
                let config = ScuNetConfig::new();
                summarise(&config.init(device)?, json(&config))
            }
        }
    }
}

/// Size and cost of a configured architecture.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Command-line name.
    pub name: &'static str,
    /// Trainable parameters (BatchNorm running statistics excluded).
    pub parameters: usize,
    /// Forward GFLOP (convolution multiply-adds x 2) for one `in_channels x 512 x 512` patch.
    pub gflop_per_patch: f64,
    /// Input channels of the configuration.
    pub in_channels: usize,
    /// The configuration, as saved in a training run's config file.
    pub config: serde_json::Value,
}

fn summarise<M: SegmentationModel>(
    model: &M,
    config: serde_json::Value,
) -> Result<ModelSummary, NnError> {
    Ok(ModelSummary {
        name: M::NAME,
        parameters: model.trainable_parameters(),
        gflop_per_patch: model.forward_flops([REFERENCE_PATCH, REFERENCE_PATCH]) as f64 / 1e9,
        in_channels: model.in_channels(),
        config,
    })
}

fn json<T: Serialize>(config: &T) -> serde_json::Value {
    // Serialising a plain struct of numbers and vectors cannot fail.
    serde_json::to_value(config).unwrap_or(serde_json::Value::Null)
}
