//! The `bacseg` binary on small generated images and, when present, the shared real files:
//! `info`, `convert`, `preprocess`, help and version, error handling and exit codes.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use common::{bacseg, s};

use std::path::{Path, PathBuf};

fn write_png16(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u16) {
    let img = image::ImageBuffer::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    img.save(path).unwrap();
}

#[test]
fn help_and_version() {
    let out = bacseg(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    for sub in ["info", "convert", "preprocess"] {
        let out = bacseg(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{sub}"
        );
    }
}

#[test]
fn convert_png16_round_trips_and_tiff_works() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    let f = |x: u32, y: u32| ((x * 131 + y * 17) % 4096) as u16;
    write_png16(&input, 40, 30, f);
    for ext in ["png", "tif"] {
        let out = dir.path().join(format!("out.{ext}"));
        let o = bacseg(&["convert", s(&input), s(&out)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let back = image::open(&out).unwrap().into_luma16();
        assert_eq!(back.dimensions(), (40, 30));
        for (x, y, p) in back.enumerate_pixels() {
            assert_eq!(p.0[0], f(x, y));
        }
    }
    // An existing output is not replaced without --overwrite.
    let out = dir.path().join("out.png");
    let o = bacseg(&["convert", s(&input), s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    // --normalized spans the 16-bit range inside the breast.
    let norm = dir.path().join("norm.png");
    let o = bacseg(&[
        "convert",
        s(&input),
        s(&norm),
        "--normalized",
        "--no-breast-mask",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = image::open(&norm).unwrap().into_luma16();
    let max = back.pixels().map(|p| p.0[0]).max().unwrap();
    let min = back.pixels().map(|p| p.0[0]).min().unwrap();
    assert_eq!((min, max), (0, 65535));
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.dcm");
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', 0xff, 0x7f]);
    std::fs::write(&bad, bytes).unwrap();
    let out = dir.path().join("out.png");
    for args in [vec!["info", s(&bad)], vec!["convert", s(&bad), s(&out)]] {
        let o = bacseg(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("corrupt.dcm"), "{err}");
    }
    assert!(!out.exists());
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary files left behind: {leftovers:?}"
    );

    let o = bacseg(&["convert", s(&bad), s(&dir.path().join("out.jpg"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".png, .tif"));
    let o = bacseg(&[
        "preprocess",
        s(&bad),
        "--low-percentile",
        "90",
        "--high-percentile",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn info_json_for_png() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_png16(&input, 12, 7, |x, _| x as u16);
    let o = bacseg(&["info", s(&input), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "png");
    assert_eq!(
        (
            v["width"].as_u64(),
            v["height"].as_u64(),
            v["bits_stored"].as_u64()
        ),
        (Some(12), Some(7), Some(16))
    );
}

#[test]
fn preprocess_writes_mask_image_and_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("breast.png");
    // A bright half-disc (the breast) on a dark background.
    write_png16(&input, 200, 260, |x, y| {
        let d = ((x as f32).powi(2) + (y as f32 - 130.0).powi(2)).sqrt();
        if d < 120.0 {
            2000 + (1000.0 * (1.0 - d / 120.0)) as u16
        } else {
            50
        }
    });
    let (mask, img, ov) = (
        dir.path().join("m.png"),
        dir.path().join("i.png"),
        dir.path().join("o.png"),
    );
    let o = bacseg(&[
        "preprocess",
        s(&input),
        "--mask",
        s(&mask),
        "--image",
        s(&img),
        "--overlay",
        s(&ov),
        "--overlay-size",
        "100",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let frac = v["breast_fraction"].as_f64().unwrap();
    let truth = std::f64::consts::PI * 120.0 * 120.0 / 2.0 / (200.0 * 260.0);
    assert!((frac - truth).abs() < 0.02, "{frac} vs {truth}");
    let m = image::open(&mask).unwrap().into_luma8();
    assert_eq!(m.get_pixel(10, 130).0[0], 255);
    assert_eq!(m.get_pixel(190, 10).0[0], 0);
    // Downscaled by the smallest integer factor that fits 100 px: 260 / 3.
    assert_eq!(image::open(&ov).unwrap().into_rgb8().dimensions(), (67, 87));
}

fn shared() -> Option<PathBuf> {
    bacseg_core::shared_data("the CLI on the shared real files")
}

#[test]
fn every_shared_file_is_described_and_converted_or_rejected_clearly() {
    let Some(data) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let broken = ["emri_small_jpeg_2k_lossless_too_short.dcm"];
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in ["dicom", "real"] {
        for e in std::fs::read_dir(data.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if matches!(p.extension().and_then(|e| e.to_str()), Some("dcm" | "png")) {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 13, "{files:?}");
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let o = bacseg(&["info", s(&f), "--json"]);
        assert!(
            o.status.success(),
            "info {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_lowercase();
        for key in ["patient", "birth", "accession", "institution"] {
            assert!(!text.contains(key), "{name}: info mentions {key}");
        }
        let out = dir.path().join(format!("{name}.png"));
        let o = bacseg(&["convert", s(&f), s(&out)]);
        if broken.contains(&name.as_str()) {
            assert_eq!(o.status.code(), Some(2), "{name}");
            assert!(String::from_utf8_lossy(&o.stderr).contains(&name));
            assert!(!out.exists());
        } else {
            assert!(
                o.status.success(),
                "convert {name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let back = image::open(&out).unwrap();
            assert_eq!(
                u64::from(back.width()),
                info["width"].as_u64().unwrap(),
                "{name}"
            );
        }
    }
}

/// dicom-rs's RLE decoder panics (index out of bounds) on the shared CBIS-DDSM RLE file with
/// one byte of its RLE header changed. The panic is caught: one line naming the file, exit 2,
/// no "panicked at" and no backtrace, with or without RUST_BACKTRACE.
#[test]
fn a_decoder_panic_is_one_line_without_a_backtrace() {
    let Some(data) = shared() else { return };
    let mut bytes = std::fs::read(data.join("dicom/cbis-ddsm-mg-rle.dcm")).unwrap();
    assert_eq!(bytes[1317], 45, "the shared file changed");
    bytes[1317] = 37;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("rle-panic.dcm");
    std::fs::write(&bad, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bacseg"))
        .args(["convert", s(&bad), s(&dir.path().join("out.png"))])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rle-panic.dcm") && stderr.contains("decoder failed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
