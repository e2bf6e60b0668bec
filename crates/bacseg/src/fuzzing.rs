//! Entry points for coverage-guided fuzzing (`fuzz/`, run with cargo-afl; see
//! docs/fuzzing.md) and for replaying what the fuzzers found (`tests/fuzz_regressions.rs`).
//!
//! Each takes arbitrary bytes, hands them as a file to one parser that reads files from
//! outside (the readers go by path, as bacseg's users give them), and must return, with an
//! error or without, never panicking, hanging or allocating beyond the read limits
//! (`BACSEG_MAX_MEGAPIXELS`; tools/fuzz.sh sets a quarter megapixel).

use std::path::PathBuf;

use bacseg_nn::networks::{Architecture, ModelSpec};
use bacseg_nn::{Device, Precision};

/// The parsers a fuzz target can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Mammogram files: DICOM (header, sequences, pixel data of every transfer syntax), PNG,
    /// TIFF, JPEG (`io::info` and `io::load`).
    Image,
    /// A `predict --manifest` CSV.
    Manifest,
    /// JSON files a run reads: `splits.json`, `config.json` (run configuration, model spec).
    Configs,
    /// Weights: PyTorch-named safetensors and the published SCU-Net `.pt` checkpoints.
    Weights,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Image,
        Target::Manifest,
        Target::Configs,
        Target::Weights,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Image => "image",
            Target::Manifest => "manifest",
            Target::Configs => "configs",
            Target::Weights => "weights",
        }
    }

    /// Feed `data` to the target's parsers.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Image => image(data),
            Target::Manifest => manifest(data),
            Target::Configs => configs(data),
            Target::Weights => weights(data),
        }
    }
}

/// A scratch file of this process and thread holding `data`, under `name`.
fn scratch(name: &str, data: &[u8]) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "bacseg-fuzz-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(name);
    std::fs::write(&path, data).ok()?;
    Some(path)
}

fn image(data: &[u8]) {
    let Some(path) = scratch("input", data) else {
        return;
    };
    let _ = bacseg_core::io::info(&path);
    let _ = bacseg_core::io::load(&path);
}

fn manifest(data: &[u8]) {
    if let Some(path) = scratch("manifest.csv", data) {
        let _ = crate::batch::read_manifest(&path);
    }
}

fn configs(data: &[u8]) {
    let _ = serde_json::from_slice::<bacseg_core::dataset::Split>(data);
    let _ = serde_json::from_slice::<bacseg_nn::train::RunConfig>(data);
    if let Ok(spec) = serde_json::from_slice::<ModelSpec>(data) {
        // A spec is checked before a network is built from it; building is where a hostile
        // spec would allocate.
        let _ = spec.check();
    }
}

fn weights(data: &[u8]) {
    // The network the safetensors go into, built once (loading consumes a clone).
    static TINY: std::sync::OnceLock<Option<bacseg_nn::Network>> = std::sync::OnceLock::new();
    let device = Device::default();
    let tiny = TINY.get_or_init(|| {
        ModelSpec::reference(Architecture::DtUnet)
            .with_overrides(Some(2), Some(2))
            .and_then(|spec| spec.build_seeded(&Device::default(), 0))
            .ok()
    });
    if let (Some(path), Some(net)) = (scratch("w.safetensors", data), tiny) {
        let _ = bacseg_nn::load_pytorch_safetensors(net.clone(), &path);
    }
    if let Some(path) = scratch("w.pt", data) {
        let _ = bacseg_nn::load_scunet_checkpoint(&path, Precision::F32, &device);
    }
}
