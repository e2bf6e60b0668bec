//! bacseg-nn: the segmentation networks of bacseg (DT-UNet, UNet, SegNet, ContextNet, and the
//! published SCU-Net) in burn, their size and cost, and weight files shared with PyTorch by
//! tensor name. Arranged by concern (docs/architecture.md):
//! - [`networks`]: the architectures, [`Network`] (any of them) and [`ModelSpec`];
//! - [`engine`]: what runs forward passes over a whole image (burn, the CPU engine, ONNX
//!   Runtime) behind one `Runner`;
//! - [`train`]: the training loop and the CPU training engine;
//! - [`onnx`]: the ONNX graph builder and file format (each network writes its own graph).
//!
//! The compute backend follows the [`burn::tensor::Device`] a model is built on; which backends
//! exist is chosen by this crate's cargo features (`flex` CPU by default, `wgpu`, `cuda`).

pub mod bench;
pub mod cost;
pub mod engine;
pub mod error;
pub mod loss;
pub mod model;
pub mod networks;
pub mod onnx;
pub mod train;
pub mod weights;

/// burn's module trait (for `valid()`, `devices()` on the networks).
pub use burn::module::Module;
/// The device (and so the backend) models run on: `Device::default()` is the best compiled in.
pub use burn::tensor::Device;
pub use cost::trainable_parameters;
pub use error::NnError;
pub use model::{OutputActivation, SegmentationModel, outputs_of};
pub use networks::contextnet::{ContextNet, ContextNetConfig};
pub use networks::dt_unet::{DtUnet, DtUnetConfig};
pub use networks::scunet::{Precision, ScuNet, ScuNetConfig, load_scunet_checkpoint};
pub use networks::segnet::{SegNet, SegNetConfig};
pub use networks::unet::{Unet, UnetConfig};
pub use networks::unpool::{PoolIndices, max_pool2x2_with_indices, max_unpool2x2};
pub use networks::{Architecture, ModelSpec, ModelSummary, Network};
pub use weights::{load_pytorch_safetensors, save_pytorch_safetensors};
