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
