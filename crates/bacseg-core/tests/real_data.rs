//! The shared real mammograms and DICOM files (../shared/data, located through the
//! `BACSEG_SHARED_DATA` environment variable that `.ci/run` sets). Decoded DICOM values are
//! compared with pydicom's (tools/dicom_reference.py wrote the fixture). Skipped with a
//! notice when the directory is absent, so a fresh clone still passes.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

use std::path::PathBuf;

use bacseg_core::io::{self, IoError};
use bacseg_core::preprocess::{self, Preprocess};
use sha2::{Digest, Sha256};

fn shared() -> Option<PathBuf> {
    bacseg_core::shared_data("the real-data tests")
}

#[test]
fn dicom_values_match_pydicom() {
    let Some(dir) = shared() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/dicom_reference.json")).unwrap();
    let mut compared = 0;
    for (name, want) in reference.as_object().unwrap() {
        let Some(width) = want.get("width") else {
            continue;
        };
        let path = dir.join("dicom").join(name);
        let m = io::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.width() as u64, width.as_u64().unwrap(), "{name}");
        assert_eq!(
            m.height() as u64,
            want["height"].as_u64().unwrap(),
            "{name}"
        );
        let sum: f64 = m.pixels.data().iter().map(|&v| f64::from(v)).sum();
        assert_eq!(sum, want["sum"].as_f64().unwrap(), "{name}: sum");
        let mut h = Sha256::new();
        for v in m.pixels.data() {
            h.update(v.to_le_bytes());
        }
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            digest,
            want["sha256_f32le"].as_str().unwrap(),
            "{name}: pixel digest"
        );
        compared += 1;
    }
    assert!(compared >= 6, "compared only {compared} files");
}

#[test]
fn jpeg2000_and_uncompressed_pair_decode_identically() {
    let Some(dir) = shared() else { return };
    let a = io::load(&dir.join("dicom/RG1_J2KR.dcm")).unwrap();
    let b = io::load(&dir.join("dicom/RG1_UNCR.dcm")).unwrap();
    assert_eq!(a.pixels, b.pixels);
}

#[test]
fn broken_files_give_clear_errors() {
    let Some(dir) = shared() else { return };
    // Truncated JPEG 2000 (also multi-frame): an error naming the file, never a panic.
    let p = dir.join("dicom/emri_small_jpeg_2k_lossless_too_short.dcm");
    let err = io::load(&p).unwrap_err();
    assert!(
        err.to_string()
            .contains("emri_small_jpeg_2k_lossless_too_short.dcm"),
        "{err}"
    );
    assert!(matches!(
        err,
        IoError::Unsupported { .. } | IoError::Corrupt { .. }
    ));
    // The malformed sequence is read as far as it is valid: the image itself is intact.
    let m = io::load(&dir.join("dicom/bad_sequence.dcm")).unwrap();
    assert_eq!((m.width(), m.height()), (512, 512));
}

#[test]
fn real_mammograms_load_and_preprocess() {
    let Some(dir) = shared() else { return };
    let cfg = Preprocess::default();
    for name in [
        "emory-bac-positive-cc.png",
        "nyu-negative-L-CC.png",
        "nyu-negative-L-MLO.png",
        "nyu-negative-R-CC.png",
        "nyu-negative-R-MLO.png",
    ] {
        let m = io::load(&dir.join("real").join(name)).unwrap();
        assert_eq!(m.bits_stored, 8, "{name}");
        let pre = preprocess::preprocess(&m, &cfg);
        let frac = pre.breast.count() as f64 / pre.breast.len() as f64;
        // The breast fills a good part of each image; background and labels are out.
        assert!(
            (0.3..0.75).contains(&frac),
            "{name}: breast fraction {frac}"
        );
        // Top-right corner: background or the burned-in view label, never breast.
        let (w, _) = (m.width(), m.height());
        assert!(
            !*pre.breast.get(w - 40, 40),
            "{name}: label corner inside the mask"
        );
    }
}

/// A JPEG 2000 codestream whose SIZ marker claims another size than the DICOM header (the
/// shared RG1_J2KR file with its width in SIZ made 60,000): refused before OpenJPEG allocates
/// for it.
#[test]
fn a_jpeg2000_codestream_claiming_another_size_is_refused() {
    let Some(dir) = shared() else { return };
    let mut bytes = std::fs::read(dir.join("dicom/RG1_J2KR.dcm")).unwrap();
    let siz = bytes
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
        .unwrap()
        + 4;
    bytes[siz + 4..siz + 8].copy_from_slice(&60_000u32.to_be_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("siz.dcm");
    std::fs::write(&path, &bytes).unwrap();
    let err = io::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("siz.dcm") && err.contains("JPEG 2000 codestream is 60000x"),
        "{err}"
    );
}
