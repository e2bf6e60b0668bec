//! bacseg-nn: the segmentation networks of bacseg (DT-UNet, UNet, SegNet, ContextNet, and the
//! published SCU-Net) in burn,
//! their size and cost, and weight files shared with PyTorch by tensor name.
//!
//! The compute backend follows the [`burn::tensor::Device`] a model is built on; which backends
//! exist is chosen by this crate's cargo features (`flex` CPU by default, `wgpu`, `cuda`).

pub mod bench;
pub mod blocks;
pub mod catalog;
pub mod contextnet;
pub mod cost;
pub mod cpu;
pub mod dt_unet;
pub mod error;
pub mod infer;
pub mod loss;
pub mod model;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_engine;
pub mod scunet;
pub mod segnet;
pub mod spec;
pub mod train;
pub mod unet;
pub mod unpool;
pub mod weights;

/// burn's module trait (for `valid()`, `devices()` on the networks).
pub use burn::module::Module;
/// The device (and so the backend) models run on: `Device::default()` is the best compiled in.
pub use burn::tensor::Device;
pub use catalog::{Architecture, ModelSummary};
pub use contextnet::{ContextNet, ContextNetConfig};
pub use cost::trainable_parameters;
pub use dt_unet::{DtUnet, DtUnetConfig};
pub use error::NnError;
pub use model::{OutputActivation, SegmentationModel, outputs_of};
pub use scunet::{Precision, ScuNet, ScuNetConfig, load_scunet_checkpoint};
pub use segnet::{SegNet, SegNetConfig};
pub use unet::{Unet, UnetConfig};
pub use unpool::{PoolIndices, max_pool2x2_with_indices, max_unpool2x2};
pub use weights::{load_pytorch_safetensors, save_pytorch_safetensors};
