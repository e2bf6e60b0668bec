//! The published SCU-Net checkpoints load into bacseg's network and give PyTorch's output.
//!
//! The checkpoints are shared material (`../shared/models/scunet`, found next to the data
//! directory that `BACSEG_SHARED_DATA` names); the tests that need them are skipped with a notice
//! when it is absent. The parity fixture `tests/fixtures/scunet_emory_crop.safetensors` was made
//! by `tools/scunet_reference.py fixture` with the published PyTorch code, in float64.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bacseg_nn::engine::cpu::{Net, Nhwc};
use bacseg_nn::{NnError, OutputActivation, Precision, SegmentationModel, load_scunet_checkpoint};
use burn::tensor::{DType, Device, Tensor, TensorData};

const CHECKPOINTS: [&str; 3] = [
    "SCUNet_dice_512_512_best.pt",
    "SCUNet_dice_512_512_best_nosigmoid.pt",
    "SCU_Net_512_512_best_BCE_pos_all.pt",
];

fn scunet_dir() -> Option<PathBuf> {
    let dir = bacseg_core::shared_data("the SCU-Net checkpoint tests")?.join("../models/scunet");
    if !dir.is_dir() {
        eprintln!("SKIPPED: no ../models/scunet beside the shared data directory");
        return None;
    }
    Some(dir)
}

/// A tensor of the fixture: (dtype, shape, little-endian bytes).
fn fixture_tensor(name: &str) -> (safetensors::Dtype, Vec<usize>, Vec<u8>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scunet_emory_crop.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(name).unwrap();
    (view.dtype(), view.shape().to_vec(), view.data().to_vec())
}

fn f64_values(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn every_published_checkpoint_loads_and_runs() {
    let Some(dir) = scunet_dir() else { return };
    let device = Device::default();
    for name in CHECKPOINTS {
        let model = load_scunet_checkpoint(&dir.join(name), Precision::F32, &device)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.in_channels(), 3);
        assert_eq!(model.output_activation(), OutputActivation::Clamp);
        let x = Tensor::<4>::full([1, 3, 64, 64], 0.5, &device);
        let y: Vec<f32> = model.forward(x).into_data().try_to_vec().unwrap();
        assert_eq!(y.len(), 64 * 64);
        assert!(y.iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn output_matches_pytorch_float64_on_a_real_crop() {
    let Some(dir) = scunet_dir() else { return };
    let device = Device::default();
    let (dtype, shape, raw) = fixture_tensor("input_u8");
    assert_eq!(dtype, safetensors::Dtype::U8);
    let (h, w) = (shape[0], shape[1]);
    let (_, _, reference) = fixture_tensor("output_f64");
    let reference = f64_values(&reference);
    // Grey values on [0, 1]; the network's own forward pass applies the published normalisation.
    let input: Vec<f64> = raw.iter().map(|&v| f64::from(v) / 255.0).collect();
    let checkpoint = dir.join(CHECKPOINTS[0]);
    for (precision, tolerance) in [(Precision::F32, 1e-4), (Precision::F64, 1e-7)] {
        let model = load_scunet_checkpoint(&checkpoint, precision, &device).unwrap();
        let x = match precision {
            Precision::F64 => Tensor::<4>::from_data(
                TensorData::new(input.clone(), [1, 1, h, w]),
                (&device, DType::F64),
            ),
            Precision::F32 => Tensor::<4>::from_data(
                TensorData::new(
                    input.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                    [1, 1, h, w],
                ),
                &device,
            ),
        }
        .repeat_dim(1, 3);
        let y: Vec<f32> = model.forward(x).into_data().try_to_vec().unwrap();
        let max_diff = y
            .iter()
            .zip(&reference)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        eprintln!("{precision:?}: max |bacseg - PyTorch float64| = {max_diff:.3e}");
        assert!(max_diff < tolerance, "{precision:?}: {max_diff}");
        // The crop holds calcified vessels: the published threshold marks some of it.
        assert!(y.iter().filter(|&&v| v > 0.65).count() > 20);
    }
}

#[test]
fn cpu_engine_matches_pytorch_float64_on_a_real_crop() {
    let Some(dir) = scunet_dir() else { return };
    let device = Device::default();
    let (_, shape, raw) = fixture_tensor("input_u8");
    let (h, w) = (shape[0], shape[1]);
    let (_, _, reference) = fixture_tensor("output_f64");
    let reference = f64_values(&reference);
    let model = load_scunet_checkpoint(&dir.join(CHECKPOINTS[0]), Precision::F32, &device).unwrap();
    let mut net = Net::for_model(&model)
        .expect("the CPU engine runs SCU-Net")
        .unwrap();
    // Channels last, the grey value in each of the three channels.
    let input: Vec<f32> = raw
        .iter()
        .flat_map(|&v| [f32::from(v) / 255.0; 3])
        .collect();
    let y = net.forward(&Nhwc::new(1, h, w, 3, input)).unwrap();
    let max_diff = y
        .iter()
        .zip(&reference)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    eprintln!("CPU engine: max |bacseg - PyTorch float64| = {max_diff:.3e}");
    assert!(max_diff < 1e-4, "{max_diff}");
    assert!(y.iter().filter(|&&v| v > 0.65).count() > 20);
}

#[test]
fn files_that_are_not_scunet_checkpoints_are_refused_by_name() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.pt");
    let error = load_scunet_checkpoint(&missing, Precision::F32, &device).unwrap_err();
    assert!(error.to_string().contains("absent.pt"), "{error}");
    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, b"this is not a pickle or a zip archive").unwrap();
    let error = load_scunet_checkpoint(&garbage, Precision::F32, &device).unwrap_err();
    assert!(matches!(error, NnError::Weights { .. }), "{error}");
    assert!(error.to_string().contains("garbage.pt"), "{error}");
    if let Some(scunet) = scunet_dir() {
        // A truncated checkpoint.
        let bytes = std::fs::read(scunet.join(CHECKPOINTS[0])).unwrap();
        let cut = dir.path().join("cut.pt");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let error = load_scunet_checkpoint(&cut, Precision::F32, &device).unwrap_err();
        assert!(error.to_string().contains("cut.pt"), "{error}");
    }
}
