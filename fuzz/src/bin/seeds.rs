//! Writes the generated part of the fuzz seed corpora into `DIR/<target>/` (docs/fuzzing.md):
//! small images in every format bacseg reads, manifests, the JSON files of a run and tiny
//! weights, all made by bacseg's own code. `tools/fuzz.sh` adds the shared real DICOM files.

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
    let grey8 = image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8]));
    let grey16 =
        image::ImageBuffer::<image::Luma<u16>, _>::from_fn(w, h, |x, y| image::Luma([(x * 977 + y * 131) as u16]));
    let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, 90]));
    grey8.save(image_dir.join("grey8.png")).expect("png");
    grey16.save(image_dir.join("grey16.png")).expect("png");
    grey16.save(image_dir.join("grey16.tif")).expect("tiff");
    grey8.save_with_format(image_dir.join("grey.jpg"), image::ImageFormat::Jpeg).expect("jpeg");
    rgb.save_with_format(image_dir.join("colour.jpg"), image::ImageFormat::Jpeg).expect("jpeg");

    // Manifests.
    let manifest = out.join("manifest");
    write(&manifest, "plain.csv", b"a.dcm\nb.png\n");
    write(&manifest, "header.csv", b"path,view\n\"dir with, comma/a.dcm\",CC\nb.png,MLO\n");

    // The JSON files of a run: a split, a run configuration, model specs.
    let configs = out.join("configs");
    let split = bacseg::core::dataset::Split {
        train: vec!["a".into(), "b".into()],
        val: vec!["c".into()],
        test: vec![],
    };
    write(&configs, "splits.json", &serde_json::to_vec(&split).expect("json"));
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
    write(&configs, "config.json", &serde_json::to_vec(&config).expect("json"));
    for arch in Architecture::ALL {
        let spec = ModelSpec::reference(arch);
        write(&configs, &format!("{}.json", arch.name()), &serde_json::to_vec(&spec).expect("json"));
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
