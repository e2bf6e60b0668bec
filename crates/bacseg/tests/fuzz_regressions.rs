//! Inputs the fuzzers found (fuzz/regressions/<target>/, one file per crash or hang fixed, see
//! docs/fuzzing.md) replayed through the same entry points as the fuzz targets, with a few
//! hostile inputs made here; each must return without a panic.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

use std::path::Path;

use bacseg::fuzzing::Target;

#[test]
fn every_recorded_input_returns_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for target in Target::ALL {
        let dir = root.join(target.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                eprintln!("replaying {}", path.display());
                target.run(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    eprintln!("{replayed} recorded input(s) replayed");
}

#[test]
fn hostile_inputs_return_without_panicking() {
    let mut nested = vec![0u8; 128];
    nested.extend_from_slice(b"DICM");
    for _ in 0..10_000 {
        nested.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let huge_widths = br#"{"architecture": "dt-unet", "config": {"widths": [1000000, 2000000]}}"#;
    let inputs: [&[u8]; 6] = [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"II*\0\xff\xff\xff\xff",
        &nested,
        huge_widths,
        b"PK\x03\x04 not a zip",
    ];
    for target in Target::ALL {
        for input in inputs {
            target.run(input);
        }
    }
    let spec: bacseg::nn::ModelSpec = serde_json::from_slice(huge_widths).unwrap();
    assert!(
        spec.check().is_err(),
        "a million channels must be refused before building"
    );
}
