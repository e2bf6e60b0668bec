//! The `ort` engine: the network exported to ONNX ([`crate::onnx`], in memory) and run by ONNX
//! Runtime through the `ort` crate. Nothing of ONNX Runtime is linked or downloaded at build
//! time: the library the user installed is loaded when the first session is made, from
//! `ORT_DYLIB_PATH` when set, else from the system's library search path (`libonnxruntime.so`).
//! ONNX Runtime 1.17 or newer.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::error::NnError;

/// The library the engine loads: `ORT_DYLIB_PATH`, else `libonnxruntime.so` (platform name) from
/// the system's library search path.
pub fn library_path() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => p.into(),
        _ => format!(
            "{}onnxruntime{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )
        .into(),
    }
}

fn error(message: impl std::fmt::Display) -> NnError {
    NnError::OnnxRuntime(message.to_string())
}

/// The process's ONNX Runtime environment: the library is loaded once, and a failure is reported
/// (not a panic) to every caller.
fn environment() -> Result<&'static Environment, NnError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path();
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from {}: {e}; install it (e.g. `pip install \
                 onnxruntime`) and set ORT_DYLIB_PATH to its libonnxruntime.so.* \
                 (site-packages/onnxruntime/capi/)",
                path.display()
            )
        })?;
        builder
            .with_name("bacseg")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("creating the ONNX Runtime environment: {e}"))
    })
    .as_ref()
    .map_err(error)
}

/// One network in an ONNX Runtime session, all graph optimisations on, one intra-op thread per
/// available core.
pub struct OrtNet {
    session: Session,
    in_channels: usize,
}

impl std::fmt::Debug for OrtNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtNet")
            .field("in_channels", &self.in_channels)
            .finish_non_exhaustive()
    }
}

impl OrtNet {
    /// A session for the ONNX model `onnx` (as written by [`crate::onnx::export`]) taking
    /// `in_channels` image channels.
    pub fn new(onnx: &[u8], in_channels: usize) -> Result<Self, NnError> {
        let env = environment()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let options = |e: &dyn std::fmt::Display| error(format!("session options: {e}"));
        let session = Session::builder(env)
            .map_err(|e| options(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| options(&e))?
            .with_intra_threads(threads)
            .map_err(|e| options(&e))?
            .commit_from_memory(onnx)
            .map_err(|e| error(format!("loading the exported model: {e}")))?;
        Ok(Self {
            session,
            in_channels,
        })
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Network outputs `[batch, 1, height, width]` of a row-major `shape` (NCHW) batch.
    pub fn forward(&mut self, input: Vec<f32>, shape: [usize; 4]) -> Result<Vec<f32>, NnError> {
        let [batch, channels, height, width] = shape;
        if channels != self.in_channels || input.len() != shape.iter().product::<usize>() {
            return Err(error(format!(
                "input of {} values does not hold a {shape:?} batch of {}-channel images",
                input.len(),
                self.in_channels
            )));
        }
        let tensor = Tensor::from_array((shape, input)).map_err(error)?;
        let outputs = self
            .session
            .run(ort::inputs![tensor])
            .map_err(|e| error(format!("forward pass: {e}")))?;
        let (out_shape, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| error(format!("reading the output: {e}")))?;
        let expected = [batch, 1, height, width].map(|d| d as i64);
        if **out_shape != expected {
            return Err(error(format!(
                "output of shape {:?}, expected {expected:?}",
                &**out_shape
            )));
        }
        Ok(values.to_vec())
    }
}
