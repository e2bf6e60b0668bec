//! DICOM cases the shared real files do not cover, built by the test itself: MONOCHROME1,
//! Presentation LUT Shape INVERSE, rescale, pixel spacing provenance, multi-frame rejection,
//! and no patient identifiers in what `info` reports.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

use std::path::Path;

use bacseg_core::io::{self, IoError};
use bacseg_core::{Laterality, SpacingSource, View};
use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

struct Spec<'a> {
    photometric: &'a str,
    bits: u16,
    pixels: Vec<u16>,
    width: u16,
    height: u16,
    extra: Vec<DataElement<InMemDicomObject>>,
}

fn write(path: &Path, spec: Spec) {
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PROCESSING),
        ),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.826.0.1.3680043.10.1.1"),
        ),
        DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane")),
        DataElement::new(
            tags::PATIENT_ID,
            VR::LO,
            PrimitiveValue::from("PID-0042-SECRET"),
        ),
        DataElement::new(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            PrimitiveValue::from("19610203"),
        ),
        DataElement::new(
            tags::ACCESSION_NUMBER,
            VR::SH,
            PrimitiveValue::from("ACC77123"),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("MG")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(spec.photometric),
        ),
        DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [spec.height])),
        DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [spec.width])),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
        DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [spec.bits])),
        DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [spec.bits - 1])),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0])),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(spec.pixels.into()),
        ),
    ]);
    for e in spec.extra {
        obj.put(e);
    }
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .expect("meta");
    file.write_to_file(path).expect("write dicom");
}

fn ramp(w: u16, h: u16) -> Vec<u16> {
    (0..u32::from(w) * u32::from(h))
        .map(|i| (i * 7 % 4096) as u16)
        .collect()
}

#[test]
fn monochrome1_is_inverted_over_the_stored_range() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m1.dcm");
    write(
        &p,
        Spec {
            photometric: "MONOCHROME1",
            bits: 12,
            pixels: ramp(8, 4),
            width: 8,
            height: 4,
            extra: vec![],
        },
    );
    let m = io::load(&p).unwrap();
    let raw = ramp(8, 4);
    for (got, raw) in m.pixels.data().iter().zip(&raw) {
        assert_eq!(*got, 4095.0 - f32::from(*raw));
    }
    assert_eq!(m.bits_stored, 12);
    assert_eq!(m.value_range, (0.0, 4095.0));
}

#[test]
fn presentation_lut_inverse_inverts_and_rescale_applies() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("inv.dcm");
    write(
        &p,
        Spec {
            photometric: "MONOCHROME2",
            bits: 12,
            pixels: ramp(6, 5),
            width: 6,
            height: 5,
            extra: vec![
                DataElement::new(
                    tags::PRESENTATION_LUT_SHAPE,
                    VR::CS,
                    PrimitiveValue::from("INVERSE"),
                ),
                DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("2")),
                DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("10")),
            ],
        },
    );
    let m = io::load(&p).unwrap();
    // Modality range: 10 .. 4095*2+10; inverted value = lo + hi - (2v + 10).
    let (lo, hi) = (10.0, 8200.0);
    assert_eq!(m.value_range, (lo, hi));
    for (got, raw) in m.pixels.data().iter().zip(ramp(6, 5)) {
        assert_eq!(*got, lo + hi - (2.0 * f32::from(raw) + 10.0));
    }
    // MONOCHROME1 together with INVERSE (the conforming combination) inverts only once.
    let p2 = dir.path().join("m1inv.dcm");
    write(
        &p2,
        Spec {
            photometric: "MONOCHROME1",
            bits: 12,
            pixels: ramp(6, 5),
            width: 6,
            height: 5,
            extra: vec![DataElement::new(
                tags::PRESENTATION_LUT_SHAPE,
                VR::CS,
                PrimitiveValue::from("INVERSE"),
            )],
        },
    );
    let m2 = io::load(&p2).unwrap();
    assert_eq!(*m2.pixels.get(1, 0), 4095.0 - 7.0);
}

/// Extra header elements and the spacing (with its source) that they should produce.
type SpacingCase = (
    Vec<DataElement<InMemDicomObject>>,
    Option<(f64, SpacingSource)>,
);

#[test]
fn pixel_spacing_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<SpacingCase> = vec![
        (vec![], None),
        (
            vec![DataElement::new(
                tags::IMAGER_PIXEL_SPACING,
                VR::DS,
                PrimitiveValue::from("0.085\\0.085"),
            )],
            Some((0.085, SpacingSource::ImagerPixelSpacing)),
        ),
        (
            vec![
                DataElement::new(
                    tags::IMAGER_PIXEL_SPACING,
                    VR::DS,
                    PrimitiveValue::from("0.085\\0.085"),
                ),
                DataElement::new(
                    tags::ESTIMATED_RADIOGRAPHIC_MAGNIFICATION_FACTOR,
                    VR::DS,
                    PrimitiveValue::from("1.0625"),
                ),
            ],
            Some((
                0.08,
                SpacingSource::ImagerPixelSpacingMagnificationCorrected,
            )),
        ),
        (
            vec![
                DataElement::new(
                    tags::PIXEL_SPACING,
                    VR::DS,
                    PrimitiveValue::from("0.07\\0.07"),
                ),
                DataElement::new(
                    tags::IMAGER_PIXEL_SPACING,
                    VR::DS,
                    PrimitiveValue::from("0.085\\0.085"),
                ),
            ],
            Some((0.07, SpacingSource::PixelSpacing)),
        ),
    ];
    for (i, (extra, want)) in cases.into_iter().enumerate() {
        let p = dir.path().join(format!("s{i}.dcm"));
        write(
            &p,
            Spec {
                photometric: "MONOCHROME2",
                bits: 14,
                pixels: ramp(4, 4),
                width: 4,
                height: 4,
                extra,
            },
        );
        let m = io::load(&p).unwrap();
        match (m.spacing, want) {
            (None, None) => {}
            (Some(s), Some((mm, src))) => {
                assert!(
                    (s.row_mm - mm).abs() < 1e-9 && (s.col_mm - mm).abs() < 1e-9,
                    "case {i}: {s:?}"
                );
                assert_eq!(s.source, src, "case {i}");
            }
            (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn info_reports_acquisition_facts_and_no_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("id.dcm");
    write(
        &p,
        Spec {
            photometric: "MONOCHROME2",
            bits: 12,
            pixels: ramp(4, 3),
            width: 4,
            height: 3,
            extra: vec![
                DataElement::new(tags::IMAGE_LATERALITY, VR::CS, PrimitiveValue::from("R")),
                DataElement::new(tags::VIEW_POSITION, VR::CS, PrimitiveValue::from("MLO")),
                DataElement::new(
                    tags::MANUFACTURER_MODEL_NAME,
                    VR::LO,
                    PrimitiveValue::from("Senographe Test"),
                ),
            ],
        },
    );
    let info = io::info(&p).unwrap();
    assert_eq!((info.width, info.height, info.bits_stored), (4, 3, 12));
    assert_eq!(info.laterality, Some(Laterality::Right));
    assert_eq!(info.view_position, Some(View::Mlo));
    assert_eq!(info.manufacturer_model.as_deref(), Some("Senographe Test"));
    let json = serde_json::to_string(&info).unwrap();
    for secret in ["Doe", "Jane", "PID-0042", "19610203", "ACC77123"] {
        assert!(!json.contains(secret), "info leaks {secret}: {json}");
    }
}

#[test]
fn multi_frame_is_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mf.dcm");
    write(
        &p,
        Spec {
            photometric: "MONOCHROME2",
            bits: 12,
            pixels: ramp(4, 6),
            width: 4,
            height: 3,
            extra: vec![DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from("2"),
            )],
        },
    );
    let err = io::load(&p).unwrap_err();
    assert!(matches!(err, IoError::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("mf.dcm") && msg.contains("multi-frame"),
        "{msg}"
    );
}

#[test]
fn truncated_and_foreign_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.dcm");
    write(
        &good,
        Spec {
            photometric: "MONOCHROME2",
            bits: 12,
            pixels: ramp(64, 64),
            width: 64,
            height: 64,
            extra: vec![],
        },
    );
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.dcm");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let err = io::load(&cut).unwrap_err();
    assert!(err.to_string().contains("cut.dcm"), "{err}");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, not an image").unwrap();
    let err = io::load(&text).unwrap_err();
    assert!(
        matches!(err, IoError::UnknownFormat { .. }) && err.to_string().contains("notes.txt"),
        "{err}"
    );

    let missing = dir.path().join("missing.png");
    let err = io::load(&missing).unwrap_err();
    assert!(
        matches!(err, IoError::Io { .. }) && err.to_string().contains("missing.png"),
        "{err}"
    );

    // A PNG signature followed by garbage.
    let png = dir.path().join("broken.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRgarbage").unwrap();
    let err = io::load(&png).unwrap_err();
    assert!(err.to_string().contains("broken.png"), "{err}");
}

fn good(path: &Path, extra: Vec<DataElement<InMemDicomObject>>) {
    write(
        path,
        Spec {
            photometric: "MONOCHROME2",
            bits: 12,
            pixels: ramp(16, 16),
            width: 16,
            height: 16,
            extra,
        },
    );
}

/// Files whose header lies about their structure are refused before dicom-rs parses them: no
/// stack overflow (the process would abort), no allocation of what a length claims.
#[test]
fn hostile_structure_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.dcm");
    good(&base, vec![]);
    let bytes = std::fs::read(&base).unwrap();

    // 20,000 nested sequences (undefined lengths) after the pixel data.
    let mut nested = bytes.clone();
    for _ in 0..20_000 {
        nested.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let path = dir.path().join("nested.dcm");
    std::fs::write(&path, &nested).unwrap();
    for err in [io::load(&path).unwrap_err(), io::info(&path).unwrap_err()] {
        let msg = err.to_string();
        assert!(
            msg.contains("nested.dcm") && msg.contains("nested more than"),
            "{msg}"
        );
    }

    // Pixel Data declaring 0xFFFFFFF0 bytes.
    let at = bytes
        .windows(8)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0])
        .unwrap();
    let mut huge = bytes.clone();
    huge[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let path = dir.path().join("huge.dcm");
    std::fs::write(&path, &huge).unwrap();
    let msg = io::load(&path).unwrap_err().to_string();
    assert!(msg.contains("declares 4294967280 bytes"), "{msg}");
}

/// What the header claims about the pixels is checked: dimensions, bit depths, photometric
/// interpretation, and a pixel spacing no mammogram has is ignored with a note.
#[test]
fn implausible_headers_are_refused_or_their_spacing_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let us = |tag, v: u16| DataElement::new(tag, VR::US, dicom_value!(U16, [v]));
    for (name, extra, expect) in [
        ("bits0.dcm", vec![us(tags::BITS_STORED, 0)], "Bits Stored 0"),
        (
            "bits255.dcm",
            vec![us(tags::BITS_STORED, 255)],
            "Bits Stored 255",
        ),
        ("rows1.dcm", vec![us(tags::ROWS, 1)], "not an image"),
        (
            "mono3.dcm",
            vec![DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from("MONOCHROME3"),
            )],
            "MONOCHROME3",
        ),
    ] {
        let path = dir.path().join(name);
        good(&path, extra);
        let msg = io::load(&path).unwrap_err().to_string();
        assert!(msg.contains(name) && msg.contains(expect), "{name}: {msg}");
    }
    for (name, spacing) in [("s50.dcm", "50\\50"), ("s1e300.dcm", "1e300\\1e300")] {
        let path = dir.path().join(name);
        good(
            &path,
            vec![DataElement::new(
                tags::PIXEL_SPACING,
                VR::DS,
                PrimitiveValue::from(spacing),
            )],
        );
        let m = io::load(&path).unwrap();
        assert!(m.spacing.is_none(), "{name}");
        assert!(
            m.notes.iter().any(|n| n.contains("plausible")),
            "{name}: {:?}",
            m.notes
        );
    }
    let path = dir.path().join("s007.dcm");
    good(
        &path,
        vec![DataElement::new(
            tags::PIXEL_SPACING,
            VR::DS,
            PrimitiveValue::from("0.07\\0.07"),
        )],
    );
    assert_eq!(io::load(&path).unwrap().spacing.unwrap().row_mm, 0.07);
}

/// CRC-32 (PNG's) of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A 15000x15000 PNG is refused from its header (the default limit is 120 megapixels), and a
/// FIFO is refused without being opened (reading it would block for ever).
#[test]
fn oversized_images_and_special_files_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&15000u32.to_be_bytes());
    ihdr.extend_from_slice(&15000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    for chunk in [b"IDAT", b"IEND"] {
        png.extend_from_slice(&[0, 0, 0, 0]);
        png.extend_from_slice(chunk);
        png.extend_from_slice(&crc32(chunk).to_be_bytes());
    }
    let path = dir.path().join("big.png");
    std::fs::write(&path, &png).unwrap();
    let err = io::load(&path).unwrap_err();
    assert!(
        matches!(err, IoError::TooLarge { .. }) && err.to_string().contains("15000x15000"),
        "{err}"
    );

    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo.dcm");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = io::load(&fifo).unwrap_err();
            assert!(
                matches!(err, IoError::NotAFile { .. }) && err.to_string().contains("FIFO"),
                "{err}"
            );
            assert!(matches!(
                io::info(&fifo).unwrap_err(),
                IoError::NotAFile { .. }
            ));
        }
    }
    let err = io::load(dir.path()).unwrap_err();
    assert!(matches!(err, IoError::NotAFile { .. }), "{err}");
}
