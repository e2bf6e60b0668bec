//! `bacseg demo`: the whole method on built-in defaults, sized for a 2-core CPU: a synthetic
//! dataset, a few minutes of DT-UNet training, prediction on the held-out images, whole-image
//! metrics and the overlays to look at. It runs the same code as the `synth`, `train` and
//! `predict` commands, with the options it prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use bacseg::evaluate::{EvaluateOptions, evaluate_dirs};
use bacseg::train::RunDir;
use bacseg_core::dataset::Dataset;
use bacseg_core::metrics::Aggregate;

use crate::cmd::chain;
use crate::exit::usage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for everything the demo writes (data/, run/, predictions/).
    #[arg(long, default_value = "bacseg-demo")]
    out: PathBuf,
    /// Training time budget in minutes.
    #[arg(long, default_value_t = 6.0)]
    minutes: f64,
    /// Synthetic images to generate (20% validation, 20% held out for the test, each
    /// stratified by BAC class).
    #[arg(long, default_value_t = 60)]
    count: usize,
    /// Seed of the data, the split and the training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start again even if OUT already holds a demo.
    #[arg(long)]
    overwrite: bool,
    /// What runs the training steps (see `bacseg train --engine`).
    #[arg(long, default_value = "auto")]
    engine: String,
}

pub fn run(args: Args) -> Result<()> {
    if args.minutes.is_nan() || args.minutes <= 0.0 || args.count < 5 {
        return Err(usage("need --minutes > 0 and --count >= 5"));
    }
    let started = Instant::now();
    let (data, run, pred) = (
        args.out.join("data"),
        args.out.join("run"),
        args.out.join("predictions"),
    );
    if args.out.exists()
        && !args.overwrite
        && std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some())
    {
        return Err(usage(format!(
            "{} is not empty; use --overwrite to run the demo there again or --out elsewhere",
            args.out.display()
        )));
    }
    if args.overwrite {
        for d in [&data, &run, &pred] {
            if d.exists() {
                std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
    }
    let (seed, count, minutes) = (
        args.seed.to_string(),
        args.count.to_string(),
        args.minutes.to_string(),
    );
    let s = |p: &Path| p.display().to_string();

    // 1. Data: small, coarse images so that a CPU trains in minutes (vessels 2.5-10 px wide).
    let (data_s, run_s, pred_s) = (s(&data), s(&run), s(&pred));
    let synth = chain::argv(
        "synth",
        &[
            "--out",
            &data_s,
            "--count",
            &count,
            "--size",
            "512x640",
            "--spacing",
            "0.2",
            // More moderate and severe BAC than the default mix: in a few minutes of training
            // the network needs to see enough calcified vessels.
            "--severity-mix",
            "mild=0.2,moderate=0.4,severe=0.4",
            "--seed",
            &seed,
            "--preview",
        ],
    );
    chain::show(
        "demo",
        "1/3 synthetic mammograms with exact BAC masks",
        &synth,
    );
    chain::synth(&synth)?;

    // 2. Train DT-UNet (reference widths, 5 levels for 128-pixel patches).
    let train = chain::argv(
        "train",
        &[
            "--data",
            &data_s,
            "--out",
            &run_s,
            "--model",
            "dt-unet",
            "--depth",
            "5",
            "--patch",
            "128",
            "--stride",
            "64",
            "--batch",
            "8",
            // 512 patches an epoch and 34 epochs: the cosine schedule ends within the 6
            // minutes on a 2-core CPU; validation (12 images) and checkpoints take a quarter.
            "--patches-per-epoch",
            "512",
            "--epochs",
            "34",
            "--max-minutes",
            &minutes,
            "--lr",
            "5e-3",
            "--schedule",
            "cosine",
            "--positive-fraction",
            "0.5",
            "--val-patches",
            "positive",
            "--val-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
            "--median-radius",
            "1",
            "--seed",
            &seed,
            "--engine",
            &args.engine,
        ],
    );
    chain::show("demo", "2/3 training DT-UNet", &train);
    chain::train(&train)?;

    // 3. Predict the held-out test images.
    let config = RunDir::new(&run).read_config()?;
    let dataset = Dataset::open(&data)?;
    let test: Vec<(String, PathBuf, PathBuf)> = dataset
        .samples_of(&config.split.test)
        .map(|s| (s.stem.clone(), s.image.clone(), s.mask.clone()))
        .collect();
    let mut predict = chain::argv(
        "predict",
        &["--model", &run_s, "--out", &pred_s, "--batch", "8"],
    );
    predict.extend(test.iter().map(|(_, image, _)| s(image)));
    chain::show("demo", "3/3 predicting the held-out images", &predict);
    chain::predict(&predict)?;

    // Whole-image metrics against the exact synthetic masks (the truth masks of the other
    // images have no prediction and are left out), and the image-level results.
    let options = EvaluateOptions {
        patch: false,
        ..EvaluateOptions::default()
    };
    let result = evaluate_dirs(&pred, &data, "demo", &options)?;
    let unit = result.detection.unit.area();
    println!(
        "\nWhole-image results on {} held-out synthetic images (threshold 0.5):",
        result.images
    );
    println!(
        "| image | BAC class | recall | precision | F1 | Jaccard | true BAC {unit} | predicted BAC {unit} |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let area = |b: &bacseg::evaluate::MaskBurden| match (result.detection.unit, b.area_mm2) {
        (bacseg_core::detection::BurdenUnit::Mm, Some(a)) => format!("{a:.1}"),
        _ => b.area_px.to_string(),
    };
    for r in &result.per_image {
        let m = &r.metrics;
        let class = config
            .split
            .strata
            .get(&r.name)
            .map_or("-", |s| s.bac.as_str());
        println!(
            "| {} | {class} | {} | {} | {} | {} | {} | {} |",
            r.name,
            fmt(m.recall),
            fmt(m.precision),
            fmt(m.f1),
            fmt(m.jaccard),
            area(&r.truth_burden),
            area(&r.predicted_burden),
        );
    }
    // Pixel overlap is measured on the images with BAC; on BAC-free images it is the
    // false-positive burden below that counts.
    let all = result
        .image_positive
        .unwrap_or_else(|| Aggregate::new(&[], options.empty_policy));
    for (name, m) in [
        ("mean over positive images", all.mean),
        ("pooled over positive images", all.pooled),
    ] {
        println!(
            "| **{name}** | | {} | {} | {} | {} | | |",
            fmt(m.recall),
            fmt(m.precision),
            fmt(m.f1),
            fmt(m.jaccard)
        );
    }
    println!(
        "(pixel metrics: how well the predicted BAC overlaps the true BAC on the {} images with BAC; \
         image level: whether BAC is found at all, and how much is marked on the BAC-free images)",
        all.units
    );
    println!(
        "{}",
        crate::cmd::evaluate::detection_summary(&result.detection)
    );
    println!("\nOverlays (BAC in red, breast outline in green):");
    for (stem, _, _) in &test {
        println!("  {}", pred.join(format!("{stem}.overlay.png")).display());
    }
    println!(
        "Training curves: {}\nSynthetic data preview: {}\nDone in {:.1} min.",
        run.join("curves.svg").display(),
        data.join("preview.png").display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}
