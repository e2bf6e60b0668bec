//! `bacseg evaluate`: compare predicted BAC masks with ground-truth masks, matched by file
//! stem, at patch level and whole-image level, in both aggregations (DESIGN.md, Metrics).

use std::path::{Path, PathBuf};

use anyhow::Result;
use bacseg_core::io;
use bacseg_core::metrics::{
    Aggregate, ConfusionCounts, EmptyPolicy, Metrics, PatchSet, patch_counts,
};
use bacseg_core::patch::PatchGrid;
use bacseg_core::raster::Mask;
use serde::Serialize;

use crate::exit::InputError;

/// Which levels to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    Patch,
    Image,
    Both,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of predicted masks (8-bit PNG, non-zero = BAC), named like the truth masks.
    #[arg(long)]
    pred: PathBuf,
    /// Directory of ground-truth masks, or a dataset directory with a `masks/` folder.
    #[arg(long)]
    truth: PathBuf,
    #[arg(long, value_enum, default_value_t = Level::Both)]
    level: Level,
    /// Patch side for patch-level evaluation, pixels.
    #[arg(long, default_value_t = 512)]
    patch_size: usize,
    /// Distance between neighbouring patches, pixels (the last row and column are snapped to
    /// the image edge).
    #[arg(long, default_value_t = 384)]
    stride: usize,
    /// Patch-level units: `positive` = patches whose truth has any BAC, `all` = every patch
    /// (every in-breast patch with --breast).
    #[arg(long, default_value_t = PatchSet::Positive)]
    patches: PatchSet,
    /// Directory of breast masks (same stems): with `--patches all`, patches outside the
    /// breast are left out.
    #[arg(long)]
    breast: Option<PathBuf>,
    /// A metric whose denominator is zero in a unit is: `skip` (null, left out of the mean),
    /// `one` or `zero`.
    #[arg(long, default_value_t = EmptyPolicy::Skip)]
    empty_policy: EmptyPolicy,
    /// Row label in the table (default: the prediction directory's name).
    #[arg(long)]
    method: Option<String>,
    /// Print JSON (schema: docs/cli.md#evaluate) instead of a table.
    #[arg(long)]
    json: bool,
}

/// One image's results.
#[derive(Debug, Serialize)]
struct PerImage {
    name: String,
    counts: ConfusionCounts,
    metrics: Metrics,
    /// Patch-level units of this image; `null` without patch level.
    patches: Option<usize>,
    patch_counts: Option<ConfusionCounts>,
}

#[derive(Debug, Serialize)]
struct Report {
    method: String,
    empty_policy: EmptyPolicy,
    patch_set: PatchSet,
    patch_size: usize,
    stride: usize,
    images: usize,
    image: Option<Aggregate>,
    patch: Option<Aggregate>,
    per_image: Vec<PerImage>,
}

/// A mask file: any non-zero sample is inside.
pub fn load_mask(path: &Path) -> Result<Mask> {
    let m = io::load(path).map_err(InputError::from)?;
    Ok(m.pixels.map(|&v| v > 0.0))
}

fn validate(args: &Args) -> Result<(), InputError> {
    if args.patch_size == 0 || args.stride == 0 || args.stride > args.patch_size {
        return Err(InputError(format!(
            "--stride must be between 1 and --patch-size ({}), got {}",
            args.patch_size, args.stride
        )));
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    validate(&args)?;
    let paired = bacseg::evaluate::pair_masks(&args.pred, &args.truth)?;
    if !paired.missing.is_empty() {
        eprintln!(
            "bacseg: warning: no prediction for {} truth mask(s), not evaluated: {}",
            paired.missing.len(),
            paired.missing.join(", ")
        );
    }
    let breasts = args
        .breast
        .as_deref()
        .map(bacseg::evaluate::masks_by_name)
        .transpose()?;
    let do_patch = args.level != Level::Image;
    let do_image = args.level != Level::Patch;

    // One image at a time: two full-size masks of a mammogram are ~27 MB, and the patch
    // counting inside is already parallel.
    let results: Vec<(PerImage, Vec<ConfusionCounts>)> = paired
        .pairs
        .iter()
        .map(|(name, pred_path, truth_path)| -> Result<_> {
            let truth = load_mask(truth_path)?;
            let pred = load_mask(pred_path)?;
            let counts = ConfusionCounts::from_masks(&pred, &truth)
                .map_err(|e| InputError(format!("{name}: {e}")))?;
            let patches = if do_patch {
                let mut grid = PatchGrid::new(truth.size(), args.patch_size, args.stride)
                    .map_err(|e| InputError(format!("{name}: {e}")))?;
                if let Some(path) = breasts.as_ref().and_then(|b| b.get(name)) {
                    let breast = load_mask(path)?;
                    grid = grid
                        .within_breast(&breast, 0.0)
                        .map_err(|e| InputError(format!("{name}: {e}")))?;
                }
                patch_counts(&pred, &truth, &grid, args.patches)
                    .map_err(|e| InputError(format!("{name}: {e}")))?
            } else {
                Vec::new()
            };
            let per = PerImage {
                name: name.clone(),
                counts,
                metrics: counts.metrics(args.empty_policy),
                patches: do_patch.then_some(patches.len()),
                patch_counts: do_patch.then(|| patches.iter().copied().sum()),
            };
            Ok((per, patches))
        })
        .collect::<Result<_>>()?;

    let image_units: Vec<ConfusionCounts> = results.iter().map(|(p, _)| p.counts).collect();
    let patch_units: Vec<ConfusionCounts> = results
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    let method = args.method.clone().unwrap_or_else(|| {
        args.pred
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prediction".into())
    });
    let report = Report {
        method,
        empty_policy: args.empty_policy,
        patch_set: args.patches,
        patch_size: args.patch_size,
        stride: args.stride,
        images: results.len(),
        image: do_image.then(|| Aggregate::new(&image_units, args.empty_policy)),
        patch: do_patch.then(|| Aggregate::new(&patch_units, args.empty_policy)),
        per_image: results.into_iter().map(|(p, _)| p).collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The reference table's layout: one row per method and aggregation, the five metrics at
/// patch level, then the same five at whole-image level.
fn print_table(r: &Report) {
    const NAMES: [&str; 5] = ["Recall", "Precision", "Accuracy", "F1", "Jaccard"];
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    let block = |title: &str| {
        let header: Vec<String> = NAMES.iter().map(|n| format!("{n:>9}")).collect();
        (format!("{title:<49}"), header.join(" "))
    };
    let method_w = r.method.len().max(6);
    let (pt, ph) = block("Patch level");
    let (it, ih) = block("Whole image");
    println!("{:<method_w$}  {:<11} | {pt} | {it}", "", "");
    println!(
        "{:<method_w$}  {:<11} | {ph} | {ih}",
        "Method", "Aggregation"
    );
    let pick = |a: &Option<Aggregate>, pooled: bool| {
        a.map(|a| if pooled { a.pooled } else { a.mean })
            .unwrap_or_default()
    };
    for (label, pooled) in [("mean", false), ("pooled", true)] {
        let row = |m: Metrics| {
            m.values()
                .iter()
                .map(|&v| format!("{:>9}", cell(v)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{:<method_w$}  {label:<11} | {} | {}",
            r.method,
            row(pick(&r.patch, pooled)),
            row(pick(&r.image, pooled))
        );
    }
    let patches = r.patch.map_or_else(
        || "not computed".to_string(),
        |a| {
            format!(
                "{} {} patches of {} px at stride {}",
                a.units,
                r.patch_set.as_str(),
                r.patch_size,
                r.stride
            )
        },
    );
    println!(
        "\n{} images; patch level: {patches}; empty policy: {} ({})",
        r.images,
        r.empty_policy.as_str(),
        match r.empty_policy {
            EmptyPolicy::Skip =>
                "a metric whose denominator is zero in a unit is left out of that metric's mean, '-' = defined for no unit",
            EmptyPolicy::One => "a metric whose denominator is zero in a unit counts as 1",
            EmptyPolicy::Zero => "a metric whose denominator is zero in a unit counts as 0",
        }
    );
}
