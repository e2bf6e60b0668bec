//! The segmentation networks and the one place that knows all of them.
//!
//! Each architecture lives in its own module (its layers, its forward pass, its ONNX graph);
//! [`Network`] holds any of them and is the only type that matches on the architecture, so that
//! code working with "a model" (prediction, training, export, benchmarks) takes a `Network` and
//! never names an architecture. [`ModelSpec`] is a network as data (architecture name plus its
//! configuration, as in a training run's `config.json`) and [`ModelSpec::build`] turns it into a
//! `Network`; [`Architecture`] lists what exists with reference sizes and costs.
//!
//! Adding an architecture: a module here with its `Config` and a type implementing
//! [`SegmentationModel`], one variant in [`Architecture`] and in [`Network`], and one arm in
//! each `match` of this folder (the compiler lists them).

pub mod blocks;
pub mod catalog;
pub mod contextnet;
pub mod dt_unet;
pub mod network;
pub mod scunet;
pub mod segnet;
pub mod spec;
pub mod unet;
pub mod unpool;

pub use catalog::ModelSummary;
pub use contextnet::ContextNet;
pub use dt_unet::DtUnet;
pub use network::{Architecture, Network};
pub use scunet::ScuNet;
pub use segnet::SegNet;
pub use spec::ModelSpec;
pub use unet::Unet;
