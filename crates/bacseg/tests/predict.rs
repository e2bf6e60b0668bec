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
