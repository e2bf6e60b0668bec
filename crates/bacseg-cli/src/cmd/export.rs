//! `bacseg export`: a trained network as a standard ONNX model, optionally with a test input
//! and burn's output for it (`.npy`) to check the export in another runtime
//! (`tools/onnx_check.py`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use bacseg_core::io::write_atomic;
use bacseg_nn::Module;
use bacseg_nn::networks::Network;
use bacseg_nn::onnx::{IR_VERSION, OPSET};
use bacseg_nn::{
    Device, OutputActivation, Precision, SegmentationModel, load_pytorch_safetensors,
    load_scunet_checkpoint, outputs_of,
};

use crate::cmd::predict::ModelArgs;
use crate::exit::InputError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The network (any architecture, or the published SCU-Net checkpoint `scunet:PATH.pt`).
    #[command(flatten)]
    net: ModelArgs,
    /// Output format.
    #[arg(long, value_parser = ["onnx"], default_value = "onnx")]
    format: String,
    /// The model file to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write `input.npy` (a seeded `[1, channels, side, side]` test input) and
    /// `output.npy` (burn's raw network outputs for it) into this directory.
    #[arg(long)]
    reference_io: Option<PathBuf>,
    /// Side of the reference input (a multiple of the network's input multiple).
    #[arg(long, default_value_t = 64)]
    reference_side: usize,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = args.net.resolve()?;
    if let Some(dir) = &args.reference_io {
        std::fs::create_dir_all(dir).map_err(|e| InputError(format!("{}: {e}", dir.display())))?;
    }
    let job = Export {
        args: &args,
        weights: &loaded.weights,
    };
    if loaded.scunet_checkpoint {
        // The published checkpoint, exported in f32 (its outputs are probabilities).
        let model = load_scunet_checkpoint(&loaded.weights, Precision::F32, &Device::default())
            .map_err(|e| InputError(e.to_string()))?;
        return job.export(model.valid());
    }
    loaded
        .spec
        .build(&Device::default())
        .map(|model| job.visit(model))
        .map_err(|e| InputError(e.to_string()))?
}

struct Export<'a> {
    args: &'a Args,
    weights: &'a Path,
}

impl Export<'_> {
    fn visit(self, model: Network) -> Result<()> {
        let model = load_pytorch_safetensors(model, self.weights)
            .map_err(|e| InputError(e.to_string()))?
            .valid();
        self.export(model)
    }
}

impl Export<'_> {
    fn export<M: SegmentationModel>(self, model: M) -> Result<()> {
        let bytes = model
            .onnx()
            .ok_or_else(|| InputError(format!("{} has no ONNX export", model.name())))?
            .map_err(|e| InputError(e.to_string()))?;
        let args = self.args;
        write_atomic(&args.out, |w| {
            std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())
        })?;
        let outputs = match model.output_activation() {
            OutputActivation::Sigmoid => "logits",
            OutputActivation::Clamp => "probabilities (clamp to [0, 1])",
        };
        eprintln!(
            "bacseg: wrote {} ({}, ONNX IR {IR_VERSION}, opset {OPSET}, {:.1} MB; input \
             [batch, {}, height, width], output {outputs} [batch, 1, height, width])",
            args.out.display(),
            model.name(),
            bytes.len() as f64 / 1e6,
            model.in_channels()
        );
        if let Some(dir) = &args.reference_io {
            let side = args.reference_side;
            let shape = [1, model.in_channels(), side, side];
            // A fixed, reproducible input in [0, 1].
            let input: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 10_007) as f32 / 10_006.0)
                .collect();
            let output = outputs_of(&model, input.clone(), shape)
                .map_err(|e| InputError(format!("--reference-side: {e}")))?;
            write_npy(&dir.join("input.npy"), &shape, &input)?;
            write_npy(&dir.join("output.npy"), &[1, 1, side, side], &output)?;
            eprintln!(
                "bacseg: wrote {}/input.npy and output.npy (burn's raw outputs)",
                dir.display()
            );
        }
        Ok(())
    }
}

/// A little-endian float32 array in NumPy's `.npy` format (version 1.0, C order).
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64
    // and ended by a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * values.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    write_atomic(path, |w| {
        std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_describes_the_array() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_npy(&path, &[1, 2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.5]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(
            header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3,), }")
        );
        assert!(header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + len + 24);
        assert_eq!(&bytes[bytes.len() - 4..], 5.5f32.to_le_bytes());
    }
}
