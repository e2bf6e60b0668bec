//! `bacseg train` end to end on a tiny `bacseg synth` dataset with a tiny DT-UNet: the run
//! directory is complete, an existing run is not overwritten by accident, `--resume` continues
//! after the last finished epoch, and bad options exit with code 2.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use common::{bacseg, ok, s, tiny_dataset};

#[test]
fn train_writes_a_run_and_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    tiny_dataset(&data, 4, 5);
    let common = [
        "--patch",
        "32",
        "--stride",
        "32",
        "--batch",
        "2",
        "--patches-per-epoch",
        "4",
        "--width",
        "4",
        "--depth",
        "3",
        "--median-radius",
        "0",
        "--val-fraction",
        "0.25",
    ];
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--out",
        s(&run),
        "--epochs",
        "2",
    ];
    args.extend(common);
    args.extend(["--stop-after-epochs", "1"]);
    let out = bacseg(&args);
    ok(&out);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    for f in [
        "config.json",
        "curves.svg",
        "best.safetensors",
        "best.json",
        "last.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["architecture"], "dt-unet");
    assert_eq!(
        config["model"]["config"]["widths"],
        serde_json::json!([4, 8, 16])
    );
    assert_eq!(config["split"]["val"].as_array().unwrap().len(), 1);

    // Starting again over the run is refused (exit 2) and leaves it as it was.
    let again = bacseg(&args);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.csv")).unwrap(),
        csv
    );

    let out = bacseg(&["train", "--resume", s(&run)]);
    ok(&out);
    let csv2 = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv2.lines().count(), 3, "{csv2}");
    assert!(csv2.starts_with(&csv));
    assert!(String::from_utf8_lossy(&out.stdout).contains("finished after 2 epoch(s)"));
}

#[test]
fn bad_options_and_data_exit_with_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let missing = bacseg(&[
        "train",
        "--data",
        s(&tmp.path().join("nope")),
        "--out",
        s(&run),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
    let data = tmp.path().join("data");
    tiny_dataset(&data, 3, 0);
    for (flag, value) in [("--model", "resnet"), ("--loss", "l2"), ("--lr", "-1")] {
        let out = bacseg(&["train", "--data", s(&data), "--out", s(&run), flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(!run.join("config.json").exists());
    }
    let resume = bacseg(&["train", "--resume", s(&tmp.path().join("none"))]);
    assert_eq!(resume.status.code(), Some(2));
}

#[test]
fn overwrite_leaves_the_old_run_when_the_new_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, data) = (tmp.path().join("run"), tmp.path().join("data"));
    std::fs::create_dir_all(&run).unwrap();
    for f in ["config.json", "best.safetensors", "metrics.csv"] {
        std::fs::write(run.join(f), b"old run").unwrap();
    }
    tiny_dataset(&data, 3, 0);
    let nope = tmp.path().join("nope");
    for (data, extra) in [
        (&nope, None),
        (&data, Some(["--lr", "-1"])),
        (&data, Some(["--patch", "33"])),
    ] {
        let mut args = vec!["train", "--data", s(data), "--out", s(&run), "--overwrite"];
        args.extend(extra.into_iter().flatten());
        let out = bacseg(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        for f in ["config.json", "best.safetensors", "metrics.csv"] {
            assert_eq!(
                std::fs::read(run.join(f)).unwrap(),
                b"old run",
                "{args:?}: {f}"
            );
        }
    }
}

/// A run that fails before its first epoch (a corrupt training image) leaves no run directory
/// behind, so the same command works once the data is fixed; entries of images/ that are not
/// taken (a directory, a dangling link, a FIFO, a text file) are each named in a warning.
#[test]
fn a_failed_start_leaves_nothing_and_skipped_entries_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    tiny_dataset(&data, 3, 0);
    let images = data.join("images");
    let first = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let good = std::fs::read(&first).unwrap();
    std::fs::write(&first, &good[..good.len() / 3]).unwrap();
    let mut args = vec!["train", "--data", s(&data), "--out", s(&run)];
    args.extend(common::TINY_TRAINING);
    let failed = bacseg(&args);
    assert_eq!(
        failed.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(!run.exists(), "a failed start left {}", run.display());

    std::fs::write(&first, &good).unwrap();
    std::fs::create_dir(images.join("subdir")).unwrap();
    std::fs::write(images.join("notes.txt"), "x").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(tmp.path().join("gone.png"), images.join("dangling.png"))
            .unwrap();
        let _ = std::process::Command::new("mkfifo")
            .arg(images.join("fifo.png"))
            .status();
    }
    let out = bacseg(&args);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in ["subdir", "notes.txt"] {
        assert!(
            stderr.contains(&format!("warning: {}", images.join(name).display())),
            "{name}: {stderr}"
        );
    }
    #[cfg(unix)]
    assert!(stderr.contains("dangling.png: a dangling link"), "{stderr}");
}
