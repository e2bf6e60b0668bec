//! Training on a tiny dataset written by bacseg's synthetic generator, with a tiny DT-UNet:
//! the loss falls (the loop learns), the run directory holds what it promises, and a run
//! interrupted after one epoch and resumed ends with the same metrics as an uninterrupted one.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

use std::path::Path;

use bacseg_core::augment::Augment;
use bacseg_core::cache::{CacheSpec, PatchCache};
use bacseg_core::dataset::{Dataset, Split};
use bacseg_core::preprocess::Preprocess;
use bacseg_core::raster::Size;
use bacseg_core::synth::{SeverityMix, SynthConfig, WriteOptions, write_dataset};
use bacseg_nn::networks::ModelSpec;
use bacseg_nn::train::{
    Control, Outcome, Quiet, RunConfig, RunDir, Stop, TrainConfig, TrainData, TrainEngine, train,
};
use bacseg_nn::{Architecture, Device};

fn synth_dataset(dir: &Path) -> Dataset {
    let config = SynthConfig {
        count: 4,
        seed: 3,
        size: Size::new(192, 240),
        spacing_mm: 0.42,
        negative_fraction: 0.0,
        // Moderate and severe BAC only: enough calcified pixels per patch at 0.42 mm for a
        // width-4 network to fit them within the test's epochs.
        severity_mix: SeverityMix {
            mild: 0.0,
            moderate: 0.5,
            severe: 0.5,
        },
        bits: Some(12),
        ..SynthConfig::default()
    };
    write_dataset(dir, &config, &WriteOptions::default(), &|_| {}).unwrap();
    Dataset::open(dir).unwrap()
}

fn run_config(data: &Path, dataset: &Dataset, epochs: usize) -> RunConfig {
    let stems = dataset.stems();
    RunConfig {
        bacseg_version: "test".into(),
        backend: format!("{:?}", Device::default()),
        data: data.to_path_buf(),
        split: Split {
            train: stems[..3].to_vec(),
            val: stems[3..].to_vec(),
            test: vec![],
            strata: Default::default(),
        },
        patches: CacheSpec {
            // At 0.42 mm a pixel, a 5x5 median would erase the thinnest vessels.
            preprocess: Preprocess {
                median_radius: 0,
                ..Preprocess::default()
            },
            patch: 32,
            stride: 32,
            min_breast_fraction: 0.2,
        },
        model: ModelSpec::reference(Architecture::DtUnet)
            .with_overrides(Some(4), Some(3))
            .unwrap(),
        train: TrainConfig {
            epochs,
            batch: 4,
            patches_per_epoch: Some(8),
            lr: 1e-2,
            positive_fraction: 1.0,
            augment: Augment::none(),
            seed: 11,
            ..TrainConfig::default()
        },
    }
}

fn go(
    config: &RunConfig,
    caches: &(PatchCache, PatchCache),
    dir: &Path,
    resume: bool,
    control: Control,
) -> Outcome {
    let device = Device::default();
    let run = RunDir::new(dir);
    let model = config
        .model
        .build_seeded(&device, config.train.seed)
        .unwrap();
    let data = TrainData {
        train: &caches.0,
        val: Some(&caches.1),
    };
    train(model, config, &data, &run, resume, &control, &mut Quiet).unwrap()
}

fn caches(dataset: &Dataset, config: &RunConfig, dir: &Path) -> (PatchCache, PatchCache) {
    let build = |stems: &[String]| {
        PatchCache::build(dataset, stems, &config.patches, dir, &|_, _, _| {}).unwrap()
    };
    (build(&config.split.train), build(&config.split.val))
}

#[test]
fn a_tiny_model_overfits_a_tiny_synthetic_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = synth_dataset(&data);
    let mut config = run_config(&data, &dataset, 60);
    // Overfitting: the same few positive patches, drawn again and again.
    let cache = caches(&dataset, &config, &tmp.path().join("cache"));
    let positives = cache.0.items().iter().filter(|i| i.positive).count();
    assert!(
        positives >= 2,
        "the synthetic images should have BAC patches"
    );
    config.train.patches_per_epoch = Some(16);
    config.train.lr = 2e-2;
    config.train.schedule = bacseg_nn::train::Schedule::Cosine;
    let out = go(
        &config,
        &cache,
        &tmp.path().join("run"),
        false,
        Control::default(),
    );
    assert_eq!(out.stop, Stop::Finished);
    let first = out.history[0].train_loss;
    let last = out
        .history
        .iter()
        .rev()
        .take(3)
        .map(|r| r.train_loss)
        .sum::<f64>()
        / 3.0;
    assert!(
        last < 0.5 * first,
        "training loss should fall by more than half: {first:.4} -> {last:.4}: {:.3?}",
        out.history.iter().map(|r| r.train_loss).collect::<Vec<_>>()
    );
    let run = tmp.path().join("run");
    for f in [
        "config.json",
        "metrics.csv",
        "curves.svg",
        "best.safetensors",
        "best.json",
        "last.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // Image level on the validation images: one image, with BAC.
    for r in &out.history {
        let d = r.val_images.as_ref().expect("image-level validation");
        assert_eq!((d.positives, d.negatives), (1, 0));
        assert!(d.sensitivity.is_some() && d.specificity.is_none());
    }
    // The best epoch is the one with the highest pooled validation F1 (the default).
    let best = out.best.as_ref().unwrap();
    assert_eq!(best.selection, bacseg_nn::train::Selection::PooledF1);
    let top = out
        .history
        .iter()
        .filter_map(|r| r.val_pooled.f1)
        .fold(f64::MIN, f64::max);
    assert_eq!(best.val_f1, Some(top));
    assert_eq!(out.history[best.epoch - 1].val_pooled.f1, Some(top));
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 61);
    assert!(csv.starts_with("epoch,train_loss,val_loss,"));
    let back = RunDir::new(&run).read_config().unwrap();
    assert_eq!(back, config);
    // Only the last checkpoint is kept.
    assert_eq!(
        std::fs::read_dir(run.join("checkpoints")).unwrap().count(),
        1
    );
}

#[test]
fn validating_every_few_epochs_keeps_the_first_and_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = synth_dataset(&data);
    let mut config = run_config(&data, &dataset, 6);
    config.train.validate_every = 4;
    let cache = caches(&dataset, &config, &tmp.path().join("cache"));
    let out = go(
        &config,
        &cache,
        &tmp.path().join("run"),
        false,
        Control::default(),
    );
    let validated: Vec<usize> = out
        .history
        .iter()
        .filter(|r| r.val_loss.is_some())
        .map(|r| r.epoch)
        .collect();
    assert_eq!(validated, [1, 4, 6]);
    assert!(out.history[1].val_images.is_none() && out.history[1].val_units == 0);
    let best = out.best.unwrap();
    assert!(validated.contains(&best.epoch), "best epoch {}", best.epoch);
    let csv = std::fs::read_to_string(tmp.path().join("run").join("metrics.csv")).unwrap();
    // Epoch 2's validation columns are empty.
    let row: Vec<&str> = csv.lines().nth(2).unwrap().split(',').collect();
    assert_eq!((row[0], row[2]), ("2", ""));
}

#[test]
fn an_interrupted_run_resumes_to_the_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = synth_dataset(&data);
    let mut config = run_config(&data, &dataset, 3);
    config.train.augment = Augment::default();
    config.train.positive_fraction = 0.5;
    let cache = caches(&dataset, &config, &tmp.path().join("cache"));

    let whole = go(
        &config,
        &cache,
        &tmp.path().join("a"),
        false,
        Control::default(),
    );
    let stopped = Control {
        stop_after_epochs: Some(1),
        ..Control::default()
    };
    let part = go(&config, &cache, &tmp.path().join("b"), false, stopped);
    assert_eq!((part.stop, part.history.len()), (Stop::Requested, 1));
    let resumed = go(
        &config,
        &cache,
        &tmp.path().join("b"),
        true,
        Control::default(),
    );
    assert_eq!(resumed.stop, Stop::Finished);
    assert_eq!(resumed.history.len(), 3);
    for (a, b) in whole.history.iter().zip(&resumed.history) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * (1.0 + x.abs());
        assert!(
            close(a.train_loss, b.train_loss),
            "epoch {}: {a:?} vs {b:?}",
            a.epoch
        );
        assert!(
            close(a.val_loss.unwrap(), b.val_loss.unwrap()),
            "epoch {}",
            a.epoch
        );
        assert_eq!(a.val.f1.is_some(), b.val.f1.is_some());
        if let (Some(x), Some(y)) = (a.val.f1, b.val.f1) {
            assert!(close(x, y), "epoch {}: F1 {x} vs {y}", a.epoch);
        }
    }
    let csv_a = std::fs::read_to_string(tmp.path().join("a/metrics.csv")).unwrap();
    let csv_b = std::fs::read_to_string(tmp.path().join("b/metrics.csv")).unwrap();
    assert_eq!(csv_a.lines().count(), csv_b.lines().count());
}

#[test]
fn a_budget_shorter_than_one_epoch_still_leaves_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = synth_dataset(&data);
    let config = run_config(&data, &dataset, 3);
    let cache = caches(&dataset, &config, &tmp.path().join("cache"));
    // Spent before the first batch ends: the first epoch is completed all the same, and no
    // second one is started.
    let tiny = Control {
        max_minutes: Some(1e-9),
        ..Control::default()
    };
    let run = tmp.path().join("run");
    let out = go(&config, &cache, &run, false, tiny);
    assert_eq!((out.stop, out.history.len()), (Stop::TimeBudget, 1));
    assert!(RunDir::new(&run).best_weights().is_file());
}

/// A run interrupted after one epoch on one engine and resumed on the other continues the
/// curve of an uninterrupted run (same batches, same steps up to float rounding: the engines
/// agree to about 1e-5 per step, see bacseg_nn::train::cpu's tests).
#[test]
fn a_run_resumes_on_the_other_engine() {
    resumes_on_the_other_engine(None);
}

/// The same with SegNet, which the CPU training engine trains too.
#[test]
fn a_segnet_run_resumes_on_the_other_engine() {
    resumes_on_the_other_engine(Some(
        ModelSpec::reference(Architecture::SegNet)
            .with_overrides(Some(4), Some(3))
            .unwrap(),
    ));
}

fn resumes_on_the_other_engine(model: Option<ModelSpec>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = synth_dataset(&data);
    let mut config = run_config(&data, &dataset, 3);
    if let Some(model) = model {
        config.model = model;
    }
    let cache = caches(&dataset, &config, &tmp.path().join("cache"));
    let on = |engine, stop_after_epochs| Control {
        engine,
        stop_after_epochs,
        ..Control::default()
    };
    let whole = go(
        &config,
        &cache,
        &tmp.path().join("a"),
        false,
        on(TrainEngine::Cpu, None),
    );
    assert!(whole.history.iter().all(|r| r.engine == "cpu"));
    for (first, then, name) in [
        (TrainEngine::Burn, TrainEngine::Cpu, "b"),
        (TrainEngine::Cpu, TrainEngine::Burn, "c"),
    ] {
        let dir = tmp.path().join(name);
        let part = go(&config, &cache, &dir, false, on(first, Some(1)));
        assert_eq!(part.history.len(), 1);
        let resumed = go(&config, &cache, &dir, true, on(then, None));
        assert_eq!(resumed.history.len(), 3);
        assert_eq!(resumed.history[0].engine, first.name());
        assert_eq!(resumed.history[2].engine, then.name());
        for (a, b) in whole.history.iter().zip(&resumed.history) {
            let close = |x: f64, y: f64| (x - y).abs() <= 2e-3 * (1.0 + x.abs());
            assert!(
                close(a.train_loss, b.train_loss)
                    && close(a.val_loss.unwrap(), b.val_loss.unwrap()),
                "{first:?} then {then:?}, epoch {}: {a:?} vs {b:?}",
                a.epoch
            );
        }
        // The best weights are written by whichever engine ran that epoch, in one format.
        assert!(RunDir::new(&dir).best_weights().is_file());
    }
}

/// The CPU training engine refuses architectures it does not train, with the remedy.
#[test]
fn the_cpu_engine_names_what_it_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = synth_dataset(&data);
    let mut config = run_config(&data, &dataset, 1);
    config.model = ModelSpec::reference(Architecture::ContextNet)
        .with_overrides(Some(4), None)
        .unwrap();
    let cache = caches(&dataset, &config, &tmp.path().join("cache"));
    let run = RunDir::new(&tmp.path().join("run"));
    let model = config.model.build_seeded(&Device::default(), 1).unwrap();
    let data = TrainData {
        train: &cache.0,
        val: Some(&cache.1),
    };
    let control = Control {
        engine: TrainEngine::Cpu,
        ..Control::default()
    };
    let message = match train(model, &config, &data, &run, false, &control, &mut Quiet) {
        Ok(_) => "trained".to_string(),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("the burn engine"), "{message}");
}
