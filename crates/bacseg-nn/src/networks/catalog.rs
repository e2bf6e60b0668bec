//! The architectures bacseg offers, by command-line name, with their reference configurations,
//! sizes and costs (what `bacseg models` lists).

use burn::tensor::Device;
use serde::Serialize;

use super::network::{Architecture, Network};
use super::spec::ModelSpec;

use crate::error::NnError;
use crate::model::SegmentationModel;

/// Side of the square patch the published costs refer to.
pub const REFERENCE_PATCH: usize = 512;

impl Architecture {
    /// Size and cost of the reference configuration. Parameters are lazily initialised by burn,
    /// so this allocates no weights.
    pub fn reference_summary(self, device: &Device) -> Result<ModelSummary, NnError> {
        let spec = ModelSpec::reference(self);
        let network = spec.build(device)?;
        Ok(summarise(&network, spec.config))
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

fn summarise(model: &Network, config: serde_json::Value) -> ModelSummary {
    ModelSummary {
        name: model.name(),
        parameters: model.trainable_parameters(),
        gflop_per_patch: model.forward_flops([REFERENCE_PATCH, REFERENCE_PATCH]) as f64 / 1e9,
        in_channels: model.in_channels(),
        config,
    }
}
