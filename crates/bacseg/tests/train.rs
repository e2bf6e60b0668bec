//! The library's training entry: a new run is checked completely before an old run it
//! replaces is touched; a small run trains, writes its files and resumes.

#![allow(clippy::unwrap_used)] // helpers of tests: a failed unwrap is a failed test

use std::path::Path;

use bacseg::ErrorKind;
use bacseg::train::{Control, NewRun, Quiet, Stop, TrainEngine, Trainer};
use bacseg_core::io::{write_mask_png, write_png_gray16};
use bacseg_core::raster::Raster;
use bacseg_nn::Architecture;

/// Four 96x96 images with a bright breast and thin vertical "vessels" in the masks.
fn dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    for k in 0..4usize {
        let (w, h) = (96, 96);
        let img = Raster::from_fn(w, h, |x, y| {
            let vessel = (x + 3 * k) % 17 == 0 && y > 10;
            (if x < 80 { 2000 } else { 50 } + if vessel { 900 } else { (x * 7 + y) % 40 }) as u16
        });
        let mask = Raster::from_fn(w, h, |x, y| (x + 3 * k) % 17 == 0 && y > 10 && x < 80);
        write_png_gray16(&dir.join(format!("images/i{k}.png")), w, h, img.data()).unwrap();
        write_mask_png(&dir.join(format!("masks/i{k}.png")), &mask).unwrap();
    }
}

fn small(data: &Path, out: &Path) -> NewRun {
    let mut run = NewRun::new(data, out, Architecture::DtUnet);
    run.model = run.model.with_overrides(Some(2), Some(2)).unwrap();
    run.patches.patch = 32;
    run.patches.stride = 32;
    run.patches.preprocess.median_radius = 0;
    run.train.epochs = 2;
    run.train.batch = 2;
    run.train.patches_per_epoch = Some(4);
    run.val_fraction = 0.25;
    run
}

#[test]
fn overwrite_replaces_an_old_run_only_after_every_check_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("data"), dir.path().join("run"));
    dataset(&data);
    std::fs::create_dir_all(&out).unwrap();
    for old in ["config.json", "best.safetensors", "metrics.csv"] {
        std::fs::write(out.join(old), b"old run").unwrap();
    }
    let old_files_kept = || {
        ["config.json", "best.safetensors", "metrics.csv"]
            .iter()
            .all(|f| std::fs::read(out.join(f)).is_ok_and(|b| b == b"old run"))
    };

    // Without --overwrite a non-empty directory is refused.
    let err = Trainer::create(&small(&data, &out)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("not empty"), "{err}");

    // With it, but a missing dataset, invalid settings or a patch the network cannot take:
    // refused, and the old run is untouched.
    let mut missing = small(&dir.path().join("nothing"), &out);
    missing.overwrite = true;
    assert_eq!(
        Trainer::create(&missing).unwrap_err().kind(),
        ErrorKind::Input
    );
    let mut bad_lr = small(&data, &out);
    bad_lr.overwrite = true;
    bad_lr.train.lr = f64::NAN;
    assert_eq!(
        Trainer::create(&bad_lr).unwrap_err().kind(),
        ErrorKind::Config
    );
    let mut bad_patch = small(&data, &out);
    bad_patch.overwrite = true;
    bad_patch.patches.patch = 33; // the 2-level network halves the patch once
    bad_patch.patches.stride = 33;
    let err = Trainer::create(&bad_patch).unwrap_err();
    assert!(err.to_string().contains("multiple"), "{err}");
    assert!(old_files_kept());

    // A network the CPU training engine does not train: refused before anything goes.
    let mut contextnet = small(&data, &out);
    contextnet.overwrite = true;
    contextnet.model = bacseg_nn::ModelSpec::reference(Architecture::ContextNet)
        .with_overrides(Some(2), None)
        .unwrap();
    let cpu = Control {
        engine: TrainEngine::Cpu,
        ..Control::default()
    };
    let err = Trainer::create(&contextnet)
        .unwrap()
        .train(&cpu, &mut Quiet);
    assert_eq!(err.unwrap_err().kind(), ErrorKind::Config);
    assert!(old_files_kept());

    // A valid run replaces it when it starts training, not before.
    let mut good = small(&data, &out);
    good.overwrite = true;
    let trainer = Trainer::create(&good).unwrap();
    assert!(old_files_kept());
    assert_eq!(trainer.config().split.train.len(), 3);
    let stop = Control {
        stop_after_epochs: Some(1),
        ..Control::default()
    };
    trainer.train(&stop, &mut Quiet).unwrap();
    assert!(!old_files_kept());
    assert_ne!(std::fs::read(out.join("config.json")).unwrap(), b"old run");
}

#[test]
fn a_small_run_trains_stops_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("data"), dir.path().join("run"));
    dataset(&data);
    let control = Control {
        engine: TrainEngine::Auto,
        max_minutes: None,
        stop_after_epochs: Some(1),
    };
    let first = Trainer::create(&small(&data, &out))
        .unwrap()
        .train(&control, &mut Quiet)
        .unwrap();
    assert_eq!((first.stop, first.history.len()), (Stop::Requested, 1));
    assert!(out.join("config.json").is_file() && out.join("best.safetensors").is_file());
    let resumed = Trainer::resume(&out, Some(3)).unwrap();
    assert!(resumed.is_resume());
    assert_eq!(resumed.config().train.epochs, 3);
    let rest = resumed.train(&Control::default(), &mut Quiet).unwrap();
    assert_eq!(rest.stop, Stop::Finished);
    let epochs: Vec<usize> = rest.history.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [1, 2, 3]); // the run's whole history
    // A run directory without a finished epoch cannot be resumed.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(Trainer::resume(&empty, None).is_err());
}
