//! `bacseg compare`: train several architectures on the same data, split, seed and time budget
//! (or reuse their runs), evaluate them on the held-out test images at patch level (patch
//! predictions before stitching, over the patches that contain BAC) and at whole-image level
//! (`bacseg predict` outputs), and write a table and figures to compare them. It runs the same
//! code as the `train` and `predict` commands, with the options it prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use bacseg::compare::{self, CompareOptions, display_name};
use bacseg_nn::Architecture;

use crate::cmd::chain;
use crate::exit::usage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset directory: images/ and masks/ matched by file stem (DATA/splits.json, when it
    /// exists, defines the split).
    #[arg(long)]
    data: PathBuf,
    /// Architectures to compare, comma-separated: dt-unet, unet, segnet, contextnet, scunet.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dt-unet,unet,segnet,contextnet"
    )]
    models: Vec<String>,
    /// Output directory: splits.json, runs/<model>/, predictions/<model>/, table.md, figures.
    #[arg(long)]
    out: PathBuf,
    /// Training time budget of each model, minutes (`train --max-minutes`).
    #[arg(long, default_value_t = 10.0)]
    minutes_per_model: f64,
    /// Training epochs of each model at most [default: train's, 50].
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed of the split and of every training run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Patch side in pixels [default: train's, 512].
    #[arg(long)]
    patch: Option<usize>,
    /// Distance between patch origins [default: half a patch].
    #[arg(long)]
    stride: Option<usize>,
    /// Patches per optimiser step and per forward pass at evaluation [default: 4].
    #[arg(long)]
    batch: Option<usize>,
    /// Patches drawn per epoch [default: train's].
    #[arg(long)]
    patches_per_epoch: Option<usize>,
    /// AdamW learning rate [default: train's].
    #[arg(long)]
    lr: Option<f64>,
    /// Validate every K epochs [default: train's, every epoch].
    #[arg(long, value_name = "K")]
    validate_every: Option<usize>,
    /// Width of the first level of every model instead of the reference.
    #[arg(long)]
    width: Option<usize>,
    /// Number of resolution levels of the U-shaped models (not ContextNet) instead of the
    /// reference.
    #[arg(long)]
    depth: Option<usize>,
    /// Median filter radius of the preprocessing [default: train's].
    #[arg(long)]
    median_radius: Option<usize>,
    /// Fraction of the images used for validation (without DATA/splits.json).
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Fraction of the images held out for the comparison (without DATA/splits.json).
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Train every model again even when OUT/runs/<model> holds a finished epoch.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let mut architectures = Vec::new();
    for name in &args.models {
        architectures.push(Architecture::from_name(name.trim()).ok_or_else(|| {
            usage(format!(
                "unknown model {name:?} in --models (known: dt-unet, unet, segnet, contextnet, scunet)"
            ))
        })?);
    }
    let plan = compare::plan(&CompareOptions {
        data: args.data.clone(),
        out: args.out.clone(),
        architectures,
        minutes_per_model: args.minutes_per_model,
        seed: args.seed,
        val_fraction: args.val_fraction,
        test_fraction: args.test_fraction,
        overwrite: args.overwrite,
    })?;
    plan.write_split()?;
    let s = |p: &Path| p.display().to_string();
    let count = plan.runs.len();

    // 1. Train (or reuse) every model with the same split, seed and budget, with the `train`
    // command a user would type.
    for (i, r) in plan.runs.iter().enumerate() {
        let (arch, name) = (r.architecture, r.architecture.name());
        if !r.train {
            eprintln!(
                "\nbacseg compare: {}/{count} reusing {} (a finished run; --overwrite trains again)",
                i + 1,
                r.run.display()
            );
            continue;
        }
        let mut parts: Vec<String> = [
            "--data",
            &s(&args.data),
            "--out",
            &s(&r.run),
            "--model",
            name,
            "--splits",
            &s(&plan.splits_path),
            "--seed",
            &args.seed.to_string(),
            "--max-minutes",
            &args.minutes_per_model.to_string(),
            "--cache",
            &s(&args.out.join("cache")),
        ]
        .map(String::from)
        .to_vec();
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.extend([flag.to_string(), v]);
            }
        };
        let text = |v: Option<usize>| v.map(|v| v.to_string());
        opt("--epochs", text(args.epochs));
        opt("--patch", text(args.patch));
        opt("--stride", text(args.stride));
        opt("--batch", text(args.batch));
        opt("--patches-per-epoch", text(args.patches_per_epoch));
        opt("--lr", args.lr.map(|v| v.to_string()));
        opt("--validate-every", text(args.validate_every));
        // SCU-Net's shape is fixed; ContextNet takes only a width.
        if arch != Architecture::ScuNet {
            opt("--width", text(args.width));
        }
        if !matches!(arch, Architecture::ContextNet | Architecture::ScuNet) {
            opt("--depth", text(args.depth));
        }
        opt("--median-radius", text(args.median_radius));
        if r.run.exists() {
            parts.push("--overwrite".into());
        }
        let train = chain::argv("train", &parts);
        let step = format!("{}/{count} training {}", i + 1, display_name(arch));
        chain::show("compare", &step, &train);
        chain::train(&train)?;
    }

    // Every run is usable (split, weights, same patch settings) before anything is predicted.
    plan.check_runs()?;

    // 2. Whole-image predictions of the test images, with the `predict` command.
    let batch = args.batch.unwrap_or(4).max(1);
    for r in &plan.runs {
        let mut parts = vec![
            "--model".to_string(),
            s(&r.run),
            "--out".into(),
            s(&r.predictions),
            "--batch".into(),
            batch.to_string(),
        ];
        if r.train {
            parts.push("--overwrite".into());
        }
        parts.extend(plan.test.iter().map(|(_, image, _)| s(image)));
        let predict = chain::argv("predict", &parts);
        let step = format!(
            "predicting the test images with {}",
            display_name(r.architecture)
        );
        chain::show("compare", &step, &predict);
        chain::predict(&predict)?;
    }

    // 3. Evaluation and report.
    eprintln!(
        "\nbacseg compare: evaluating {count} model(s) on {} test image(s)",
        plan.test.len()
    );
    let result = compare::evaluate(&plan, batch, &mut |k, total, stem| {
        eprintln!("bacseg compare: {k}/{total} {stem}");
    })?;
    for note in &result.notes {
        eprintln!("bacseg: {note}");
    }
    if result.positive_patches == 0 {
        eprintln!("bacseg compare: no test patch contains BAC; no patch figure");
    }
    println!("\n{}", result.table);
    println!("table: {}", result.table_path.display());
    for p in &result.figures {
        println!("figure: {}", p.display());
    }
    println!("figure legend: {}", result.figures_md.display());
    for e in &result.entries {
        println!(
            "{}: run {}, predictions {}",
            display_name(e.architecture),
            e.run.display(),
            e.predictions.display()
        );
    }
    println!("Done in {:.1} min.", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}
