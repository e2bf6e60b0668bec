//! Kills at any moment: `predict` and `train` are interrupted (SIGKILL) many times at
//! pseudo-random moments, each time resumed, and the invariants checked after every kill:
//! an image with a bac.json has every output and a readable record, summary.csv parses and
//! names only inputs; a run's metrics.csv holds contiguous epochs, its last checkpoint loads
//! (resuming works) and the finished run has every epoch once.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TINY_TRAINING, bacseg, ok, s, tiny_dataset};

/// Delays in milliseconds from a fixed linear congruential sequence (reproducible runs).
fn delays(seed: u64, n: usize, max_ms: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % max_ms
        })
        .collect()
}

/// Run `bacseg ARGS` and kill it after `ms` milliseconds (if it is still running).
fn run_and_kill(args: &[&str], ms: u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bacseg"))
        .args(args)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("BACSEG_SHARD_COUNT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    let _ = child.kill();
    let _ = child.wait();
}

fn check_predictions(out: &Path, inputs: &[String]) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = name.strip_suffix(".bac.json") {
            let record: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            assert!(record["burden"].is_object(), "{name}");
            for kind in ["mask.png", "prob.png", "overlay.png"] {
                let f = out.join(format!("{stem}.{kind}"));
                assert!(
                    image::open(&f).is_ok(),
                    "{} unreadable beside its bac.json",
                    f.display()
                );
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(out.join("summary.csv")) {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        for row in reader.records() {
            let row = row.unwrap();
            assert!(
                inputs.iter().any(|i| i == &row[1]),
                "summary names {}",
                &row[1]
            );
        }
    }
}

#[test]
fn predict_killed_anywhere_leaves_consistent_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    tiny_dataset(&data, 6, 7);
    let mut train = vec!["train", "--data", s(&data), "--out", s(&run)];
    train.extend(TINY_TRAINING);
    ok(&bacseg(&train));
    let images = data.join("images");
    let mut inputs: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    inputs.sort();
    let out = tmp.path().join("pred");
    let args = ["predict", "--model", s(&run), "--out", s(&out), s(&images)];
    for ms in delays(1, 12, 900) {
        run_and_kill(&args, ms);
        check_predictions(&out, &inputs);
    }
    // Resumed to the end: every image done, no lock left, a complete summary.
    ok(&bacseg(&args));
    check_predictions(&out, &inputs);
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 7, "{summary}");
    assert!(!summary.contains(",failed,"), "{summary}");
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        assert!(
            p.extension().is_none_or(|e| e != "lock"),
            "{} left",
            p.display()
        );
    }
}

fn epochs_in(run: &Path) -> Vec<usize> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split(',').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn train_killed_anywhere_resumes_to_every_epoch_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    tiny_dataset(&data, 3, 8);
    let mut new: Vec<&str> = vec!["train", "--data", s(&data), "--out", s(&run)];
    let mut tiny = TINY_TRAINING;
    let at = tiny.iter().position(|a| *a == "--epochs").unwrap();
    tiny[at + 1] = "6";
    new.extend(tiny);
    let resume = ["train", "--resume", s(&run)];
    for ms in delays(2, 10, 1500) {
        let started = run.join("last.json").is_file();
        if started {
            run_and_kill(&resume, ms);
        } else {
            // No finished epoch yet: start again (replacing what a kill left).
            let mut again = new.clone();
            if run.exists() {
                again.push("--overwrite");
            }
            run_and_kill(&again, ms);
        }
        let epochs = epochs_in(&run);
        let expected: Vec<usize> = (1..=epochs.len()).collect();
        assert_eq!(epochs, expected, "metrics.csv epochs after a kill");
    }
    if run.join("last.json").is_file() {
        ok(&bacseg(&resume));
    } else {
        let mut again = new.clone();
        if run.exists() {
            again.push("--overwrite");
        }
        ok(&bacseg(&again));
    }
    assert_eq!(epochs_in(&run), (1..=6).collect::<Vec<_>>());
}
