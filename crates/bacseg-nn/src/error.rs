//! Errors of the neural-network library: bad input shapes and weight files that do not fit a model.

use std::path::PathBuf;

/// What went wrong in bacseg-nn.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// An input batch whose shape the model cannot take.
    #[error("{model}: input of shape {shape:?} is invalid: {reason}")]
    InputShape {
        model: &'static str,
        shape: [usize; 4],
        reason: String,
    },
    /// A weight file that could not be read or applied (missing tensor, wrong shape, unreadable).
    #[error("weights {}: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    /// A weight file holding tensors the model does not have: almost always the weights of a
    /// different architecture or configuration, so loading it partially would be silently wrong.
    #[error("weights {}: tensors not in the model: {}", path.display(), names.join(", "))]
    UnexpectedTensors { path: PathBuf, names: Vec<String> },
    /// A configuration that describes no valid network.
    #[error("invalid {model} configuration: {reason}")]
    Config { model: &'static str, reason: String },
    /// ONNX Runtime (the `ort` engine) could not be loaded or failed.
    #[error("onnx runtime: {0}")]
    OnnxRuntime(String),
}
