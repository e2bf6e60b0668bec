//! Writes the generated part of the fuzz seed corpora into `DIR/<target>/` (docs/fuzzing.md):
//! small images in every format bacseg reads, manifests, the JSON files of a run and tiny
//! weights, all made by bacseg's own code (DICOM files of 32x24 pixels in native, RLE, JPEG and
//! JPEG 2000 transfer syntaxes, with and without a Modality LUT Sequence). `tools/fuzz.sh` adds
//! the small shared real DICOM files.

use std::path::Path;

use bacseg::nn::networks::{Architecture, ModelSpec};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: seeds DIR");
    let out = Path::new(&out);

    // Images: 8- and 16-bit grey PNG, 16-bit TIFF, grey and colour JPEG, 48x40 pixels.
    let image_dir = out.join("image");
    std::fs::create_dir_all(&image_dir).expect("seed directory");
    let (w, h) = (48u32, 40u32);
    let grey8 =
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8]));
    let grey16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(w, h, |x, y| {
        image::Luma([(x * 977 + y * 131) as u16])
    });
    let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, 90]));
    grey8.save(image_dir.join("grey8.png")).expect("png");
    grey16.save(image_dir.join("grey16.png")).expect("png");
    grey16.save(image_dir.join("grey16.tif")).expect("tiff");
    grey8
        .save_with_format(image_dir.join("grey.jpg"), image::ImageFormat::Jpeg)
        .expect("jpeg");
    rgb.save_with_format(image_dir.join("colour.jpg"), image::ImageFormat::Jpeg)
        .expect("jpeg");

    dicom_seeds(&image_dir);

    // Manifests.
    let manifest = out.join("manifest");
    write(&manifest, "plain.csv", b"a.dcm\nb.png\n");
    write(
        &manifest,
        "header.csv",
        b"path,view\n\"dir with, comma/a.dcm\",CC\nb.png,MLO\n",
    );

    // The JSON files of a run: a split, a run configuration, model specs.
    let configs = out.join("configs");
    let split = bacseg::core::dataset::Split {
        train: vec!["a".into(), "b".into()],
        val: vec!["c".into()],
        test: vec![],
        // A stratified split's record of each image's stratum.
        strata: [("a", "none"), ("b", "mild"), ("c", "severe")]
            .into_iter()
            .map(|(stem, bac)| {
                let stratum = bacseg::core::dataset::Stratum {
                    bac: bac.into(),
                    view: Some("L-CC".into()),
                };
                (stem.to_string(), stratum)
            })
            .collect(),
    };
    write(
        &configs,
        "splits.json",
        &serde_json::to_vec(&split).expect("json"),
    );
    let run = bacseg::train::NewRun::new("data", "run", Architecture::DtUnet);
    let config = bacseg::train::RunConfig {
        bacseg_version: "0".into(),
        backend: "cpu".into(),
        data: "data".into(),
        split,
        patches: run.patches,
        model: run.model,
        train: run.train,
    };
    write(
        &configs,
        "config.json",
        &serde_json::to_vec(&config).expect("json"),
    );
    for arch in Architecture::ALL {
        let spec = ModelSpec::reference(arch);
        write(
            &configs,
            &format!("{}.json", arch.name()),
            &serde_json::to_vec(&spec).expect("json"),
        );
    }

    // Weights: a tiny DT-UNet's safetensors (the target loads into that network).
    let weights = out.join("weights");
    std::fs::create_dir_all(&weights).expect("seed directory");
    let spec = ModelSpec::reference(Architecture::DtUnet)
        .with_overrides(Some(2), Some(2))
        .expect("spec");
    let net = spec.build(&Default::default()).expect("network");
    bacseg::nn::save_pytorch_safetensors(&net, &weights.join("tiny.safetensors")).expect("weights");
}

/// Small DICOM mammograms: one native file per byte order and VR encoding, one with a
/// sequence, and the native one transcoded to every encapsulated syntax dicom-rs can write.
fn dicom_seeds(dir: &Path) {
    use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    let (w, h) = (32u16, 24u16);
    let pixels: Vec<u16> = (0..u32::from(w) * u32::from(h))
        .map(|i| (i * 37 % 4096) as u16)
        .collect();
    let base = |photometric: &str| {
        InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(
                    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
                ),
            ),
            DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4"),
            ),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("MG")),
            DataElement::new(
                tags::PIXEL_SPACING,
                VR::DS,
                PrimitiveValue::from("0.07\\0.07"),
            ),
            DataElement::new(tags::IMAGE_LATERALITY, VR::CS, PrimitiveValue::from("L")),
            DataElement::new(tags::VIEW_POSITION, VR::CS, PrimitiveValue::from("CC")),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
            DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from(photometric),
            ),
            DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [h])),
            DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [w])),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
            DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [12])),
            DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [11])),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0])),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(pixels.clone().into()),
            ),
        ])
    };
    let save = |obj: InMemDicomObject, ts: &str, name: &str| {
        if let Ok(file) = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(ts)) {
            let _ = file.write_to_file(dir.join(name));
        }
    };
    save(
        base("MONOCHROME2"),
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        "native-explicit.dcm",
    );
    save(
        base("MONOCHROME1"),
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
        "native-implicit.dcm",
    );
    // Explicit VR big endian (retired, still found in archives).
    save(
        base("MONOCHROME2"),
        "1.2.840.10008.1.2.2",
        "native-big-endian.dcm",
    );
    // A Modality LUT Sequence (a sequence with one item).
    let mut lut = base("MONOCHROME2");
    let item = InMemDicomObject::from_element_iter([
        DataElement::new(tags::LUT_DESCRIPTOR, VR::US, dicom_value!(U16, [16, 0, 16])),
        DataElement::new(tags::MODALITY_LUT_TYPE, VR::LO, PrimitiveValue::from("US")),
        DataElement::new(
            tags::LUT_DATA,
            VR::OW,
            PrimitiveValue::U16((0..16u16).map(|v| v * 4000).collect()),
        ),
    ]);
    lut.put(DataElement::new(
        tags::MODALITY_LUT_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![item]),
    ));
    save(lut, uids::EXPLICIT_VR_LITTLE_ENDIAN, "modality-lut.dcm");
    // Encapsulated pixel data, encoded here: RLE Lossless (PackBits segments of the high and
    // low bytes) and JPEG baseline (8-bit, by the image crate).
    let encapsulated = |fragment: Vec<u8>, bits: u16, ts: &str, name: &str| {
        let mut obj = base("MONOCHROME2");
        obj.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            dicom_value!(U16, [bits]),
        ));
        obj.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            dicom_value!(U16, [bits.min(12)]),
        ));
        obj.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            dicom_value!(U16, [bits.min(12) - 1]),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            dicom_core::value::PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]),
        ));
        save(obj, ts, name);
    };
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for byte in [1usize, 0] {
        let mut seg = Vec::new();
        let bytes: Vec<u8> = pixels.iter().map(|v| v.to_le_bytes()[byte]).collect();
        for chunk in bytes.chunks(128) {
            seg.push((chunk.len() - 1) as u8); // a literal run
            seg.extend_from_slice(chunk);
        }
        if seg.len() % 2 == 1 {
            seg.push(0);
        }
        segments.push(seg);
    }
    let mut rle = vec![0u8; 64];
    rle[..4].copy_from_slice(&2u32.to_le_bytes());
    rle[4..8].copy_from_slice(&64u32.to_le_bytes());
    rle[8..12].copy_from_slice(&(64 + segments[0].len() as u32).to_le_bytes());
    rle.extend(segments.concat());
    encapsulated(rle, 16, uids::RLE_LOSSLESS, "rle.dcm");
    let grey8: Vec<u8> = pixels.iter().map(|v| (v >> 4) as u8).collect();
    let mut jpeg = Vec::new();
    let encoded = image::codecs::jpeg::JpegEncoder::new(&mut jpeg).encode(
        &grey8,
        u32::from(w),
        u32::from(h),
        image::ExtendedColorType::L8,
    );
    if encoded.is_ok() {
        if jpeg.len() % 2 == 1 {
            jpeg.push(0);
        }
        encapsulated(jpeg, 8, uids::JPEG_BASELINE8_BIT, "jpeg-baseline.dcm");
    }
}
