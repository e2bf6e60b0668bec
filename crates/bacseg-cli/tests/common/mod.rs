//! Running the `bacseg` binary from integration tests.
#![allow(dead_code, reason = "each test file uses its own subset")]

use std::path::Path;
use std::process::{Command, Output};

/// Run `bacseg ARGS`, without the sharding variables a CI runner might set.
pub fn bacseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bacseg"))
        .args(args)
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("BACSEG_SHARD_COUNT")
        .output()
        .expect("run bacseg")
}

/// A temporary path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temporary path")
}

/// Assert success, showing both streams otherwise.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tiny synthetic dataset (128x160 images at 0.625 mm, every image with BAC) in `dir`.
pub fn tiny_dataset(dir: &Path, count: usize, seed: u64) {
    let (count, seed) = (count.to_string(), seed.to_string());
    ok(&bacseg(&[
        "synth",
        "--out",
        s(dir),
        "--count",
        &count,
        "--size",
        "128x160",
        "--spacing",
        "0.625",
        "--negative-fraction",
        "0",
        "--seed",
        &seed,
    ]));
}

/// Training options that make a run of a tiny DT-UNet on a tiny dataset take about a second.
pub const TINY_TRAINING: [&str; 16] = [
    "--epochs",
    "1",
    "--patch",
    "32",
    "--stride",
    "32",
    "--batch",
    "2",
    "--patches-per-epoch",
    "2",
    "--width",
    "2",
    "--depth",
    "2",
    "--median-radius",
    "0",
];
