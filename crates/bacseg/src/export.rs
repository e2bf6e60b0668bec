//! A trained model for other runtimes: a standard ONNX file (opset 18, see
//! [`bacseg_nn::onnx`]), and optionally a reproducible test input with this library's output
//! for it (`.npy`), to check the export elsewhere (`tools/onnx_check.py`).

use std::path::{Path, PathBuf};

use bacseg_core::io::write_atomic;
use bacseg_nn::{OutputActivation, SegmentationModel, outputs_of};

use crate::error::{Error, Result};
use crate::model::Model;

/// What [`export_onnx`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: PathBuf,
    pub bytes: usize,
    pub in_channels: usize,
    /// What the output is: `logits` or `probabilities (clamp to [0, 1])`.
    pub outputs: &'static str,
    /// The reference input and output written, if asked for.
    pub reference: Option<(PathBuf, PathBuf)>,
}

/// The model as ONNX bytes.
pub fn onnx_bytes(model: &Model) -> Result<Vec<u8>> {
    let net = model.network();
    net.onnx()
        .ok_or_else(|| Error::config(format!("{} has no ONNX export", net.name())))?
        .map_err(Error::from)
}

/// Write the model to `path` as ONNX and, with `reference = Some((dir, side))`, a fixed input
/// of `side x side` pixels and the model's raw output for it as `dir/input.npy` and
/// `dir/output.npy`. Everything is checked before anything is written.
pub fn export_onnx(
    model: &Model,
    path: &Path,
    reference: Option<(&Path, usize)>,
) -> Result<Exported> {
    let net = model.network();
    let in_channels = net.in_channels();
    let reference_io = match reference {
        Some((dir, side)) => {
            let shape = [1, in_channels, side, side];
            net.check_input(shape)
                .map_err(|e| Error::from(e).context("reference input size"))?;
            // A fixed, reproducible input in [0, 1].
            let input: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 10_007) as f32 / 10_006.0)
                .collect();
            let output = outputs_of(net, input.clone(), shape)?;
            Some((dir, shape, input, output))
        }
        None => None,
    };
    let bytes = onnx_bytes(model)?;
    write_atomic(path, |w| {
        std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())
    })?;
    let reference = match reference_io {
        Some((dir, shape, input, output)) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::with_source(crate::ErrorKind::Io, dir.display().to_string(), e)
            })?;
            let (i, o) = (dir.join("input.npy"), dir.join("output.npy"));
            write_npy(&i, &shape, &input)?;
            write_npy(&o, &[1, 1, shape[2], shape[3]], &output)?;
            Some((i, o))
        }
        None => None,
    };
    Ok(Exported {
        path: path.to_path_buf(),
        bytes: bytes.len(),
        in_channels,
        outputs: match net.output_activation() {
            OutputActivation::Sigmoid => "logits",
            OutputActivation::Clamp => "probabilities (clamp to [0, 1])",
        },
        reference,
    })
}

/// A little-endian float32 array in NumPy's `.npy` format (version 1.0, C order).
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
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
