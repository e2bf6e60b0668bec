//! `bacseg compare`: train several architectures on the same data, split, seed and time budget
//! (or reuse their runs), evaluate them on the held-out test images at patch level (patch
//! predictions before stitching, over the patches that contain BAC) and at whole-image level
//! (`bacseg predict` outputs), and write a table and figures to compare them. It runs the same
//! code as the `train` and `predict` commands, with the options it prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use bacseg::{Model, ModelSource};
use bacseg_core::dataset::{Dataset, Split, load_mask};
use bacseg_core::io::{self, write_atomic, write_png_gray8};
use bacseg_core::metrics::{Aggregate, ConfusionCounts, EmptyPolicy, Metrics};
use bacseg_core::patch::{Patch, PatchGrid, SummedArea};
use bacseg_core::preprocess::preprocess;
use bacseg_core::raster::{Mask, Raster};
use bacseg_nn::Architecture;
use bacseg_nn::engine::patch_probabilities;
use bacseg_nn::train::{BestRecord, RunConfig, RunDir};

use crate::cmd::chain;
use crate::exit::InputError;

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

fn display_name(arch: Architecture) -> &'static str {
    match arch {
        Architecture::DtUnet => "DT-UNet",
        Architecture::Unet => "UNet",
        Architecture::SegNet => "SegNet",
        Architecture::ContextNet => "ContextNet",
        Architecture::ScuNet => "SCU-Net",
    }
}

/// Published F1 (patch, whole image) of each architecture, and DT-UNet's recall.
const REFERENCE: [(&str, f64, f64); 4] = [
    ("DT-UNet", 0.687, 0.729),
    ("UNet", 0.689, 0.735),
    ("SegNet", 0.676, 0.734),
    ("ContextNet", 0.628, 0.671),
];
const REFERENCE_DT_UNET_RECALL: (f64, f64) = (0.770, 0.826);

/// One compared model: its run and what the evaluation counted.
struct Entry {
    arch: Architecture,
    run: PathBuf,
    predictions: PathBuf,
    config: RunConfig,
    trained_now: bool,
    /// Trainable parameters.
    parameters: usize,
    patch_units: Vec<ConfusionCounts>,
    image_units: Vec<ConfusionCounts>,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    if args.minutes_per_model.is_nan() || args.minutes_per_model <= 0.0 {
        return Err(InputError("--minutes-per-model must be > 0".into()).into());
    }
    let mut archs = Vec::new();
    for name in &args.models {
        let arch = Architecture::from_name(name.trim()).ok_or_else(|| {
            InputError(format!(
                "unknown model {name:?} in --models (known: dt-unet, unet, segnet, contextnet, scunet)"
            ))
        })?;
        if archs.contains(&arch) {
            return Err(InputError(format!("--models lists {name} twice")).into());
        }
        archs.push(arch);
    }
    if archs.is_empty() {
        return Err(InputError("--models is empty".into()).into());
    }
    let dataset = Dataset::open(&args.data).map_err(|e| InputError(e.to_string()))?;
    // The split: DATA/splits.json, else a seeded random one written to OUT/splits.json.
    let data_splits = args.data.join("splits.json");
    let given = data_splits.is_file();
    let (split, splits_path) = if given {
        let split = Split::load(&data_splits, &dataset).map_err(|e| InputError(e.to_string()))?;
        (split, data_splits)
    } else {
        let split = Split::random(
            &dataset.stems(),
            args.val_fraction,
            args.test_fraction,
            args.seed,
        )
        .map_err(|e| InputError(format!("{}: {e}", args.data.display())))?;
        (split, args.out.join("splits.json"))
    };
    if split.test.is_empty() {
        return Err(InputError(if given {
            format!(
                "{}: the test part is empty; compare evaluates on the test images",
                splits_path.display()
            )
        } else {
            "the test split is empty: give --test-fraction > 0 (or more images)".into()
        })
        .into());
    }
    // Runs to reuse must have been trained on this split; checked before anything is written.
    for &arch in &archs {
        let dir = RunDir::new(&args.out.join("runs").join(arch.name()));
        if !args.overwrite
            && dir.has_checkpoint()
            && dir.read_config().is_ok_and(|c| c.split != split)
        {
            return Err(InputError(format!(
                "{} was trained on another split than this one ({}); use --overwrite to train \
                 it again, or the same --seed and fractions",
                dir.root.display(),
                splits_path.display()
            ))
            .into());
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if !given {
        write_atomic(&splits_path, |w| {
            serde_json::to_writer_pretty(&mut *w, &split).map_err(|e| e.to_string())
        })?;
    }
    let test: Vec<(String, PathBuf, PathBuf)> = dataset
        .samples_of(&split.test)
        .map(|s| (s.stem.clone(), s.image.clone(), s.mask.clone()))
        .collect();
    let s = |p: &Path| p.display().to_string();

    // 1. Train (or reuse) every model with the same split, seed and budget.
    let mut entries = Vec::new();
    for (i, &arch) in archs.iter().enumerate() {
        let name = arch.name();
        let run = args.out.join("runs").join(name);
        let dir = RunDir::new(&run);
        let finished = dir.has_checkpoint() && dir.best_weights().is_file();
        let trained_now = args.overwrite || !finished;
        if trained_now {
            let mut parts: Vec<String> = vec![
                "--data".into(),
                s(&args.data),
                "--out".into(),
                s(&run),
                "--model".into(),
                name.into(),
                "--splits".into(),
                s(&splits_path),
                "--seed".into(),
                args.seed.to_string(),
                "--max-minutes".into(),
                args.minutes_per_model.to_string(),
                "--cache".into(),
                s(&args.out.join("cache")),
            ];
            let mut opt = |flag: &str, v: Option<String>| {
                if let Some(v) = v {
                    parts.push(flag.into());
                    parts.push(v);
                }
            };
            opt("--epochs", args.epochs.map(|v| v.to_string()));
            opt("--patch", args.patch.map(|v| v.to_string()));
            opt("--stride", args.stride.map(|v| v.to_string()));
            opt("--batch", args.batch.map(|v| v.to_string()));
            opt(
                "--patches-per-epoch",
                args.patches_per_epoch.map(|v| v.to_string()),
            );
            opt("--lr", args.lr.map(|v| v.to_string()));
            // SCU-Net's shape is fixed; ContextNet takes only a width.
            if arch != Architecture::ScuNet {
                opt("--width", args.width.map(|v| v.to_string()));
            }
            if !matches!(arch, Architecture::ContextNet | Architecture::ScuNet) {
                opt("--depth", args.depth.map(|v| v.to_string()));
            }
            opt("--median-radius", args.median_radius.map(|v| v.to_string()));
            if run.exists() {
                parts.push("--overwrite".into());
            }
            let train = chain::argv("train", &parts);
            chain::show(
                "compare",
                &format!("{}/{} training {}", i + 1, archs.len(), display_name(arch)),
                &train,
            );
            chain::train(&train)?;
        } else {
            eprintln!(
                "\nbacseg compare: {}/{} reusing {} (a finished run; --overwrite trains again)",
                i + 1,
                archs.len(),
                run.display()
            );
        }
        let config = dir
            .read_config()
            .map_err(|e| InputError(format!("{}: {e}", run.display())))?;
        if config.split != split {
            return Err(InputError(format!(
                "{} was trained on another split than {}; use --overwrite to train it again",
                run.display(),
                splits_path.display()
            ))
            .into());
        }
        if !dir.best_weights().is_file() {
            return Err(InputError(format!(
                "{}: no best.safetensors (no epoch finished within the budget?)",
                run.display()
            ))
            .into());
        }
        entries.push(Entry {
            arch,
            predictions: args.out.join("predictions").join(name),
            run,
            config,
            trained_now,
            parameters: 0,
            patch_units: Vec::new(),
            image_units: Vec::new(),
        });
    }
    let patches = entries[0].config.patches.clone();
    if let Some(e) = entries.iter().find(|e| e.config.patches != patches) {
        return Err(InputError(format!(
            "{} uses other preprocessing or patch settings than {}; the patch-level comparison \
             needs the same; use --overwrite to train them again with the same options",
            e.run.display(),
            entries[0].run.display()
        ))
        .into());
    }

    // 2. Whole-image predictions of the test images.
    let batch = args.batch.unwrap_or(4).max(1);
    for e in &entries {
        let mut parts: Vec<String> = vec![
            "--model".into(),
            s(&e.run),
            "--out".into(),
            s(&e.predictions),
            "--batch".into(),
            batch.to_string(),
        ];
        if e.trained_now {
            parts.push("--overwrite".into());
        }
        parts.extend(test.iter().map(|(_, image, _)| s(image)));
        let predict = chain::argv("predict", &parts);
        chain::show(
            "compare",
            &format!("predicting the test images with {}", display_name(e.arch)),
            &predict,
        );
        chain::predict(&predict)?;
    }

    // 3. Evaluation, one test image at a time, all models loaded.
    eprintln!(
        "\nbacseg compare: evaluating {} model(s) on {} test image(s)",
        entries.len(),
        test.len()
    );
    let mut models: Vec<Model> = Vec::new();
    for e in entries.iter_mut() {
        let model = Model::load(&ModelSource::RunDir(e.run.clone()))?;
        e.parameters = model.parameters();
        models.push(model);
    }
    let mut patch_examples: Vec<Example> = Vec::new();
    let mut whole_examples: Vec<Example> = Vec::new();
    let mut positive_patches = 0usize;
    for (k, (stem, image_path, mask_path)) in test.iter().enumerate() {
        eprintln!("bacseg compare: {}/{} {stem}", k + 1, test.len());
        let truth = load_mask(mask_path)?;
        let m = io::load(image_path)?;
        let pre = preprocess(&m, &patches.preprocess);
        if pre.image.size() != truth.size() {
            return Err(InputError(format!(
                "{}: the mask is {}x{}, the image {}x{}",
                mask_path.display(),
                truth.width(),
                truth.height(),
                pre.image.width(),
                pre.image.height()
            ))
            .into());
        }
        // Whole image: the predict outputs against the truth.
        let mut predicted = Vec::with_capacity(entries.len());
        for e in entries.iter_mut() {
            let path = e.predictions.join(format!("{stem}.mask.png"));
            let pred = load_mask(&path)?;
            e.image_units.push(
                ConfusionCounts::from_masks(&pred, &truth)
                    .map_err(|err| InputError(format!("{}: {err}", path.display())))?,
            );
            predicted.push(pred);
        }
        whole_examples.push(Example::whole(stem, &pre.image, &truth, &predicted));
        whole_examples.sort_by_key(|x| std::cmp::Reverse(x.bac));
        whole_examples.truncate(2);

        // Patch level: the grid of the runs, the patches whose truth holds BAC.
        let grid = PatchGrid::new(truth.size(), patches.patch, patches.stride)
            .and_then(|g| g.within_breast(&pre.breast, patches.min_breast_fraction))
            .map_err(|e| InputError(format!("{stem}: {e}")))?;
        let bac = SummedArea::new(&truth);
        let positive: Vec<(Patch, usize)> = grid
            .patches()
            .iter()
            .map(|p| {
                (
                    *p,
                    bac.sum(p.x, p.y, p.valid_width, p.valid_height) as usize,
                )
            })
            .filter(|(_, bac)| *bac > 0)
            .collect();
        positive_patches += positive.len();
        if positive.is_empty() {
            continue;
        }
        let n = patches.patch;
        let mut per_model: Vec<Vec<Mask>> = Vec::with_capacity(models.len());
        for (model, e) in models.iter().zip(entries.iter_mut()) {
            let mut masks = Vec::with_capacity(positive.len());
            for chunk in positive.chunks(batch.max(1)) {
                // Each patch's own forward pass, before any stitching.
                let mut images = Vec::with_capacity(chunk.len() * n * n);
                for (p, _) in chunk {
                    images.extend_from_slice(grid.extract(&pre.image, p, 0.0).data());
                }
                let prob = patch_probabilities(model.network(), images, n, false)
                    .map_err(|err| anyhow::anyhow!("{}: {stem}: {err}", e.run.display()))?;
                for (j, (p, _)) in chunk.iter().enumerate() {
                    let at = j * n * n;
                    let pred = Raster::from_fn(n, n, |x, y| {
                        x < p.valid_width && y < p.valid_height && prob[at + y * n + x] > 0.5
                    });
                    let t = grid.extract(&truth, p, false);
                    let valid = Patch { x: 0, y: 0, ..*p };
                    e.patch_units
                        .push(ConfusionCounts::in_patch(&pred, &t, &valid));
                    masks.push(pred);
                }
            }
            per_model.push(masks);
        }
        for (j, (p, bac)) in positive.iter().enumerate() {
            let worst = patch_examples.last().map_or(0, |x| x.bac);
            if patch_examples.len() < 4 || *bac > worst {
                let preds: Vec<Mask> = per_model.iter().map(|m| m[j].clone()).collect();
                patch_examples.push(Example::patch(stem, &pre.image, &truth, p, n, *bac, preds));
                patch_examples.sort_by_key(|x| std::cmp::Reverse(x.bac));
                patch_examples.truncate(4);
            }
        }
    }

    // 4. Table and figures.
    let table = render_table(&args, &split, &entries, positive_patches, &splits_path);
    let table_path = args.out.join("table.md");
    write_text(&table_path, &table)?;
    let names: Vec<&str> = entries.iter().map(|e| display_name(e.arch)).collect();
    let fig_patches = args.out.join("figure-patches.png");
    let fig_whole = args.out.join("figure-whole.png");
    let mut written = Vec::new();
    if patch_examples.is_empty() {
        eprintln!("bacseg compare: no test patch contains BAC; no patch figure");
    } else {
        write_grid(&fig_patches, &patch_examples)?;
        written.push(fig_patches.clone());
    }
    write_grid(&fig_whole, &whole_examples)?;
    written.push(fig_whole.clone());
    let figures_md = args.out.join("figures.md");
    write_text(
        &figures_md,
        &render_figures_md(&names, &patch_examples, &whole_examples),
    )?;

    println!("\n{table}");
    println!("table: {}", table_path.display());
    for p in &written {
        println!("figure: {}", p.display());
    }
    println!("figure legend: {}", figures_md.display());
    for e in &entries {
        println!(
            "{}: run {}, predictions {}",
            display_name(e.arch),
            e.run.display(),
            e.predictions.display()
        );
    }
    println!("Done in {:.1} min.", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}

/// One row of a figure: grey image, truth, then each model's mask, all the same size.
struct Example {
    bac: usize,
    what: String,
    image: Raster<u8>,
    masks: Vec<Raster<u8>>,
}

/// Side of the figure cells: small patches are enlarged (nearest) to at least this.
const MIN_CELL: usize = 128;
/// Height of the whole-image cells, about.
const WHOLE_HEIGHT: usize = 400;

fn grey(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

fn white(b: bool) -> u8 {
    if b { 255 } else { 0 }
}

impl Example {
    fn patch(
        stem: &str,
        image: &Raster<f32>,
        truth: &Mask,
        p: &Patch,
        n: usize,
        bac: usize,
        preds: Vec<Mask>,
    ) -> Self {
        let f = MIN_CELL.div_ceil(n).max(1);
        let up = |r: &Raster<u8>| Raster::from_fn(n * f, n * f, |x, y| *r.get(x / f, y / f));
        let crop_img = image.crop(p.x, p.y, n, n, 0.0).map(|&v| grey(v));
        let crop_truth = truth.crop(p.x, p.y, n, n, false).map(|&b| white(b));
        let mut masks = vec![up(&crop_truth)];
        masks.extend(preds.iter().map(|m| up(&m.map(|&b| white(b)))));
        Self {
            bac,
            what: format!(
                "{stem}, patch at x {} y {} ({n} px), {bac} BAC px",
                p.x, p.y
            ),
            image: up(&crop_img),
            masks,
        }
    }

    fn whole(stem: &str, image: &Raster<f32>, truth: &Mask, preds: &[Mask]) -> Self {
        let (w, h) = (image.width(), image.height());
        let f = h.div_ceil(WHOLE_HEIGHT).max(1);
        let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
        // Box average for the image; a mask pixel is white when any pixel under it is BAC, so
        // that thin vessels stay visible.
        let img = Raster::from_fn(ow, oh, |ox, oy| {
            let (x0, y0) = (ox * f, oy * f);
            let (x1, y1) = ((x0 + f).min(w), (y0 + f).min(h));
            let mut sum = 0.0;
            for y in y0..y1 {
                sum += image.row(y)[x0..x1].iter().sum::<f32>();
            }
            grey(sum / ((x1 - x0) * (y1 - y0)) as f32)
        });
        let any = |m: &Mask| {
            Raster::from_fn(ow, oh, |ox, oy| {
                let (x0, y0) = (ox * f, oy * f);
                let (x1, y1) = ((x0 + f).min(w), (y0 + f).min(h));
                white((y0..y1).any(|y| m.row(y)[x0..x1].iter().any(|&b| b)))
            })
        };
        let mut masks = vec![any(truth)];
        masks.extend(preds.iter().map(any));
        let bac = truth.count();
        Self {
            bac,
            what: format!("{stem}: {w}x{h} px shown at 1/{f}, {bac} BAC px"),
            image: img,
            masks,
        }
    }
}

/// Rows of cells separated by a grey border, as one 8-bit grey PNG.
fn write_grid(path: &Path, rows: &[Example]) -> Result<()> {
    const BORDER: usize = 4;
    const BORDER_GREY: u8 = 128;
    let cols = rows.first().map_or(0, |r| 1 + r.masks.len());
    let cell_w = rows.iter().map(|r| r.image.width()).max().unwrap_or(1);
    let cell_h = rows.iter().map(|r| r.image.height()).max().unwrap_or(1);
    let width = BORDER + cols * (cell_w + BORDER);
    let height = BORDER + rows.len() * (cell_h + BORDER);
    let mut out = Raster::filled(width, height.max(1), BORDER_GREY);
    for (r, ex) in rows.iter().enumerate() {
        let y0 = BORDER + r * (cell_h + BORDER);
        for (c, cell) in std::iter::once(&ex.image).chain(&ex.masks).enumerate() {
            let x0 = BORDER + c * (cell_w + BORDER);
            for y in 0..cell.height() {
                for x in 0..cell.width() {
                    *out.get_mut(x0 + x, y0 + y) = *cell.get(x, y);
                }
            }
        }
    }
    write_png_gray8(path, out.width(), out.height(), out.data())?;
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())
    })?;
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.3}"))
}

fn cells(m: &Metrics) -> String {
    m.values()
        .iter()
        .map(|v| fmt(*v))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Epochs trained, seconds spent (from metrics.csv) and the best epoch of a run.
fn run_summary(run: &Path) -> (usize, f64, Option<BestRecord>) {
    let (mut epochs, mut seconds) = (0, 0.0);
    if let Ok(text) = std::fs::read_to_string(run.join("metrics.csv")) {
        let mut lines = text.lines();
        let col = lines
            .next()
            .and_then(|h| h.split(',').position(|c| c.trim() == "seconds"));
        for line in lines.filter(|l| !l.trim().is_empty()) {
            epochs += 1;
            if let Some(v) = col
                .and_then(|c| line.split(',').nth(c))
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                seconds += v;
            }
        }
    }
    let best = std::fs::read_to_string(run.join("best.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<BestRecord>(&t).ok());
    (epochs, seconds, best)
}

fn render_table(
    args: &Args,
    split: &Split,
    entries: &[Entry],
    positive_patches: usize,
    splits_path: &Path,
) -> String {
    let mut t = String::new();
    let p = &entries[0].config.patches;
    t.push_str(&format!(
        "# Model comparison on {}\n\n\
         Split ({}): {} training, {} validation, {} test images. Seed {}. Budget: {} minutes \
         of training per model (`--max-minutes`), at most {} epochs. Patches {} px at stride \
         {}.\n\n\
         Measured on the {} test images, threshold 0.5. Patch level: the {} in-breast test \
         patches whose truth contains BAC, each model's patch prediction before stitching, \
         counted over the patch's image pixels. Whole image: `bacseg predict` outputs. Mean over \
         units; a metric undefined for a unit (no true and no predicted BAC) is left out of \
         its mean.\n\n",
        args.data.display(),
        splits_path.display(),
        split.train.len(),
        split.val.len(),
        split.test.len(),
        args.seed,
        args.minutes_per_model,
        entries[0].config.train.epochs,
        p.patch,
        p.stride,
        split.test.len(),
        positive_patches,
    ));
    t.push_str(
        "| model | patch recall | patch precision | patch accuracy | patch F1 | patch Jaccard \
         | image recall | image precision | image accuracy | image F1 | image Jaccard |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for e in entries {
        let patch = Aggregate::new(&e.patch_units, EmptyPolicy::Skip);
        let image = Aggregate::new(&e.image_units, EmptyPolicy::Skip);
        t.push_str(&format!(
            "| {} | {} | {} |\n",
            display_name(e.arch),
            cells(&patch.mean),
            cells(&image.mean)
        ));
    }
    t.push_str(
        "\n## Runs\n\n\
         | model | parameters | run | epochs trained | training minutes | best epoch | \
         validation F1 |\n|---|---|---|---|---|---|---|\n",
    );
    for e in entries {
        let (epochs, seconds, best) = run_summary(&e.run);
        t.push_str(&format!(
            "| {} | {} | `{}` | {epochs} | {:.1} | {} | {} |\n",
            display_name(e.arch),
            e.parameters,
            e.run.display(),
            seconds / 60.0,
            best.as_ref().map_or("-".into(), |b| b.epoch.to_string()),
            fmt(best.and_then(|b| b.val_f1)),
        ));
    }
    t.push_str(
        "\n## Published reference (different, real data)\n\n\
         The numbers reported for the reference method on its own full-field digital \
         mammograms, trained to convergence. They are not measured here and are not comparable \
         with the table above; they show the expected ranking and scale.\n\n\
         | published reference (different, real data) | patch F1 | image F1 | patch recall | \
         image recall |\n|---|---|---|---|---|\n",
    );
    for (name, patch, image) in REFERENCE {
        let (rp, ri) = if name == "DT-UNet" {
            (
                format!("{:.3}", REFERENCE_DT_UNET_RECALL.0),
                format!("{:.3}", REFERENCE_DT_UNET_RECALL.1),
            )
        } else {
            ("-".into(), "-".into())
        };
        t.push_str(&format!(
            "| {name} (published) | {patch:.3} | {image:.3} | {rp} | {ri} |\n"
        ));
    }
    t
}

fn render_figures_md(names: &[&str], patches: &[Example], whole: &[Example]) -> String {
    let columns = ["image", "truth"]
        .into_iter()
        .chain(names.iter().copied())
        .enumerate()
        .map(|(i, c)| format!("{}. {c}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let mut t = format!(
        "# Figures\n\n\
         Columns, left to right: {columns}. The image is the preprocessed mammogram in grey; \
         truth and predictions are white (BAC) on black, predictions thresholded at 0.5. Cells \
         are separated by a grey border.\n\n\
         ## figure-patches.png\n\n\
         Test patches with the most BAC, one per row (the patch predictions before stitching; \
         patches smaller than {MIN_CELL} px are enlarged, nearest neighbour):\n\n"
    );
    if patches.is_empty() {
        t.push_str("(no test patch contains BAC: not written)\n");
    }
    for (i, ex) in patches.iter().enumerate() {
        t.push_str(&format!("{}. {}\n", i + 1, ex.what));
    }
    t.push_str(&format!(
        "\n## figure-whole.png\n\n\
         Test images with the most BAC, one per row, downscaled to about {WHOLE_HEIGHT} px \
         height (box average for the image; a mask pixel is white when any pixel under it is \
         BAC); predictions are the `bacseg predict` masks:\n\n"
    ));
    for (i, ex) in whole.iter().enumerate() {
        t.push_str(&format!("{}. {}\n", i + 1, ex.what));
    }
    t
}
