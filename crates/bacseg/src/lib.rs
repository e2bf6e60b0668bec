//! bacseg: find and measure breast arterial calcifications (BAC) on full-field digital
//! mammograms.
//!
//! The whole job as a library, for programs, services, notebooks (through bindings) and
//! cluster jobs; the `bacseg` command line is flag parsing over these calls.
//!
//! - [`Model`]: a trained network loaded once ([`ModelSource`]: a training run directory,
//!   PyTorch-named safetensors plus a spec, or a published SCU-Net checkpoint);
//! - [`Predictor`]: a model plus a [`PredictConfig`] (bacseg's pipeline or the published
//!   SCU-Net one); [`Predictor::predict`] turns a [`Mammogram`] into probabilities, a mask, the
//!   breast mask, the BAC burden and timings;
//! - [`batch`]: many files at once with outputs, `summary.csv`, shards, skipping and failure
//!   isolation;
//! - [`train::Trainer`]: a new training run or the continuation of one, with progress for an
//!   observer;
//! - [`evaluate`]: predicted masks against the truth, per image and over a set;
//! - [`compare`]: architectures trained on one split, evaluated side by side, with a table and
//!   figures;
//! - [`quantify`]: the BAC burden of existing mask files, per image, breast and exam;
//! - [`bench`]: the speed of this build, measurement by measurement, optionally beside PyTorch;
//! - [`Error`]: every failure, with an [`ErrorKind`] and its cause.
//!
//! ```no_run
//! use bacseg::{Model, ModelSource, PredictConfig, Predictor};
//!
//! fn main() -> bacseg::Result<()> {
//!     let model = Model::load(&ModelSource::RunDir("runs/dt-unet".into()))?;
//!     let mut predictor = Predictor::new(&model, PredictConfig::for_model(&model))?;
//!     let image = bacseg::load_image("mammogram.dcm".as_ref())?;
//!     let found = predictor.predict(&image)?;
//!     println!("BAC area: {:?} mm^2, grade {:?}", found.burden.area_mm2, found.burden.grade);
//!     Ok(())
//! }
//! ```
//!
//! The crates below it stay available: [`core`] (images, preprocessing, patches, metrics,
//! quantification, synthetic data) and [`nn`] (networks, engines, training, ONNX).
//! docs/architecture.md describes how it fits together.

pub mod batch;
pub mod bench;
pub mod compare;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod fuzzing;
pub mod model;
pub mod predict;
pub mod quantify;
pub mod train;
pub mod weights;

pub use bacseg_core as core;
pub use bacseg_core::mammogram::Mammogram;
pub use bacseg_nn as nn;
pub use batch::{BatchOptions, BatchSummary, Shard, collect_inputs, predict_files};
pub use error::{Error, ErrorKind, Result};
pub use model::{Model, ModelSource};
pub use predict::{ImagePrediction, Pipeline, PredictConfig, Predictor, Prepared};

use std::path::Path;

/// Read a mammogram (DICOM, PNG, TIFF, JPEG). Conversions the reader made (colour to grey, for
/// instance) are listed in its `notes`, for the caller to show.
pub fn load_image(path: &Path) -> Result<Mammogram> {
    Ok(bacseg_core::io::load(path)?)
}
