//! The library's prediction API on a small network: a model from weights plus a spec, a
//! predictor, and what it promises about the breast.

#![allow(clippy::unwrap_used)] // helpers of tests: a failed unwrap is a failed test

use bacseg::{Mammogram, Model, ModelSource, PredictConfig, Predictor};
use bacseg_core::raster::Raster;
use bacseg_nn::{Architecture, Device, ModelSpec, save_pytorch_safetensors};

/// A 12-bit image: a bright half-disc breast against the chest wall on the left, and a
/// burned-in label (a bright block) in the background.
fn image() -> Mammogram {
    let (w, h) = (160usize, 192usize);
    let pixels = Raster::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32, y as f32 - h as f32 / 2.0);
        let inside = dx * dx + dy * dy < 80.0 * 80.0;
        let label = (130..150).contains(&x) && (10..30).contains(&y);
        if label {
            4000.0
        } else if inside {
            1800.0 + 600.0 * ((x * 7 + y * 3) % 11) as f32 / 11.0
        } else {
            40.0
        }
    });
    Mammogram {
        pixels,
        spacing: None,
        laterality: None,
        view: None,
        bits_stored: 12,
        value_range: (0.0, 4095.0),
        notes: Vec::new(),
    }
}

fn model(dir: &std::path::Path) -> Model {
    let spec = ModelSpec::reference(Architecture::DtUnet)
        .with_overrides(Some(2), Some(3))
        .unwrap();
    let net = spec.build_seeded(&Device::default(), 3).unwrap();
    let path = dir.join("w.safetensors");
    save_pytorch_safetensors(&net, &path).unwrap();
    Model::load(&ModelSource::Safetensors { path, spec }).unwrap()
}

#[test]
fn probabilities_outside_the_breast_are_zero() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut config = PredictConfig::for_model(&model);
    config.infer.patch = 64;
    config.infer.stride = 32;
    let mut predictor = Predictor::new(&model, config).unwrap();
    let found = predictor.predict(&image()).unwrap();
    let breast = found.breast.count();
    assert!(
        breast > 5000 && breast < found.breast.len(),
        "breast {breast}"
    );
    let mut outside_max = 0.0f32;
    let mut inside_max = 0.0f32;
    for (&p, &b) in found.prob.data().iter().zip(found.breast.data()) {
        if b {
            inside_max = inside_max.max(p);
        } else {
            outside_max = outside_max.max(p);
        }
    }
    assert_eq!(outside_max, 0.0, "BAC probability outside the breast");
    assert!(inside_max > 0.0, "the network predicted nothing at all");
    // The burned-in label is never part of the mask.
    assert!((130..150).all(|x| (10..30).all(|y| !*found.mask.get(x, y))));
    assert_eq!(found.burden.area_px, found.mask.count());
}

#[test]
fn settings_are_checked_against_the_model_before_any_image() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut config = PredictConfig::for_model(&model);
    config.infer.stride = config.infer.patch + 1;
    let e = Predictor::new(&model, config).unwrap_err();
    assert_eq!(e.kind(), bacseg::ErrorKind::Config);
    assert_eq!(e.exit_code(), 2);
    let e = Predictor::new(&model, PredictConfig::published_scunet()).unwrap_err();
    assert!(e.to_string().contains("published SCU-Net"), "{e}");
}

/// Preparing on another thread and predicting the prepared image gives what `predict` gives;
/// an image prepared with other settings is refused.
#[test]
fn an_image_prepared_elsewhere_predicts_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut config = PredictConfig::for_model(&model);
    config.infer.patch = 64;
    config.infer.stride = 32;
    let mut predictor = Predictor::new(&model, config.clone()).unwrap();
    let direct = predictor.predict(&image()).unwrap();
    let prepared = std::thread::spawn({
        let config = config.clone();
        move || config.prepare(image()).unwrap()
    })
    .join()
    .unwrap();
    assert!(prepared.preprocess_s > 0.0);
    let found = predictor.predict_prepared(prepared).unwrap();
    assert_eq!(found.prob.data(), direct.prob.data());
    assert_eq!(found.mask.data(), direct.mask.data());
    assert_eq!(found.breast.data(), direct.breast.data());
    assert_eq!(found.burden.area_px, direct.burden.area_px);
    let mut other = config.clone();
    other.scale = 0.5;
    let e = predictor
        .predict_prepared(other.prepare(image()).unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), bacseg::ErrorKind::Config, "{e}");
}

/// Write `image()` with brightness `offset` added as a 16-bit PNG.
fn write_image(path: &std::path::Path, offset: f32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let m = image();
    let data: Vec<u16> = m
        .pixels
        .data()
        .iter()
        .map(|&v| (v + offset) as u16)
        .collect();
    bacseg_core::io::write_png_gray16(path, m.width(), m.height(), &data).unwrap();
}

/// Records every summary.csv seen while the batch runs.
struct Watch(std::path::PathBuf, Vec<usize>);

impl bacseg::batch::BatchObserver for Watch {
    fn image(&mut self, _: usize, _: usize, _: &bacseg::batch::Row) {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        self.1.push(text.lines().count());
    }
}

/// Files all named `1-1` in different folders (as CBIS-DDSM ships them): a folder added
/// between two runs shifts the output names, and outputs under a name made from another file
/// are predicted again instead of being reported as that file's. Outputs made with other
/// settings are predicted again too. summary.csv grows as images finish.
#[test]
fn outputs_are_reused_only_for_the_same_file_model_and_settings() {
    use bacseg::batch::{BatchOptions, Silent, Status, predict_files};
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut config = PredictConfig::for_model(&model);
    config.infer.patch = 64;
    config.infer.stride = 64;
    let mut predictor = Predictor::new(&model, config.clone()).unwrap();
    let (a, b, c) = (
        dir.path().join("a/1-1.png"),
        dir.path().join("b/1-1.png"),
        dir.path().join("c/1-1.png"),
    );
    write_image(&a, 0.0);
    write_image(&b, 300.0);
    write_image(&c, 600.0);
    let out = dir.path().join("out");
    let options = BatchOptions::new(&out);
    let mut watch = Watch(out.join("summary.csv"), Vec::new());
    let first = predict_files(
        &mut predictor,
        &[a.clone(), c.clone()],
        &options,
        &mut watch,
    )
    .unwrap();
    assert_eq!(first.count(Status::Ok), 2);
    assert_eq!(watch.1, [2, 3], "rows appended as images finish");

    let names: Vec<String> = first.rows.iter().map(|r| r.name.clone()).collect();
    let second = predict_files(
        &mut predictor,
        &[a.clone(), b.clone(), c.clone()],
        &options,
        &mut Silent,
    )
    .unwrap();
    let by_input = |input: &std::path::Path| {
        second
            .rows
            .iter()
            .find(|r| r.input == input)
            .unwrap()
            .clone()
    };
    assert_eq!(by_input(&a).status, Status::Skipped);
    // b takes the name c had: those outputs are c's, so b is predicted.
    let rb = by_input(&b);
    assert_eq!(rb.name, names[1]);
    assert_eq!(rb.status, Status::Ok);
    assert!(rb.message.contains("another file"), "{}", rb.message);
    assert_eq!(by_input(&c).status, Status::Ok);

    // Other settings: predicted again.
    config.postprocess.threshold = 0.3;
    let mut other = Predictor::new(&model, config).unwrap();
    let third = predict_files(&mut other, std::slice::from_ref(&a), &options, &mut Silent).unwrap();
    assert_eq!(third.rows[0].status, Status::Ok);
    assert!(
        third.rows[0].message.contains("other settings"),
        "{}",
        third.rows[0].message
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("1-1.bac.json")).unwrap()).unwrap();
    assert_eq!(json["input"]["path"], a.display().to_string());
    assert_eq!(json["input"]["size"], std::fs::metadata(&a).unwrap().len());
}

/// With anonymised paths no output holds the input's path.
#[test]
fn anonymised_outputs_hold_no_path() {
    use bacseg::batch::{BatchOptions, Silent, anonymize_key, predict_files};
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut config = PredictConfig::for_model(&model);
    config.infer.patch = 64;
    config.infer.stride = 64;
    let mut predictor = Predictor::new(&model, config).unwrap();
    let input = dir.path().join("PATIENT-0042/1-1.png");
    write_image(&input, 0.0);
    let broken = dir.path().join("PATIENT-0043/1-1.png");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, b"not a png").unwrap();
    let out = dir.path().join("out");
    let mut options = BatchOptions::new(&out);
    options.anonymize_key = Some(anonymize_key(&out).unwrap());
    predict_files(&mut predictor, &[input, broken], &options, &mut Silent).unwrap();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv" || e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains("PATIENT"), "{}: {text}", path.display());
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.matches(",anon-").count(), 2, "{summary}");
}
