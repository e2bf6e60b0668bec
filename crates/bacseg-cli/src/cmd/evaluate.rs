//! `bacseg evaluate`: compare predicted BAC masks with ground-truth masks, matched by file
//! stem, at patch level and whole-image level, in both aggregations (DESIGN.md, Metrics).

use std::path::PathBuf;

use anyhow::Result;
use bacseg::evaluate::{EvaluateOptions, Evaluation, evaluate_dirs};
use bacseg_core::detection::{Detection, DetectionRule};
use bacseg_core::metrics::{Aggregate, EmptyPolicy, Metrics, PatchSet};

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
    /// Pixel spacing of every image, mm, for the burden in mm^2 and mm (default: what a
    /// `bacseg synth` dataset's manifest.json records, else areas in pixels).
    #[arg(long)]
    spacing: Option<f64>,
    /// Least predicted BAC area, mm^2, for an image to count as BAC-positive.
    #[arg(long, default_value_t = DetectionRule::default().min_area_mm2)]
    detect_min_area: f64,
    /// The same in pixels, used when the pixel spacing of some image is unknown.
    #[arg(long, default_value_t = DetectionRule::default().min_area_px)]
    detect_min_pixels: f64,
    /// Row label in the table (default: the prediction directory's name).
    #[arg(long)]
    method: Option<String>,
    /// Print JSON (schema: docs/cli.md#evaluate) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let options = EvaluateOptions {
        image: args.level != Level::Patch,
        patch: args.level != Level::Image,
        patch_size: args.patch_size,
        stride: args.stride,
        patches: args.patches,
        breast: args.breast.clone(),
        empty_policy: args.empty_policy,
        spacing_mm: args.spacing,
        detection: DetectionRule {
            min_area_mm2: args.detect_min_area,
            min_area_px: args.detect_min_pixels,
        },
    };
    let method = args.method.clone().unwrap_or_else(|| {
        args.pred
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prediction".into())
    });
    let report = evaluate_dirs(&args.pred, &args.truth, &method, &options)?;
    for note in &report.notes {
        eprintln!("bacseg: {note}");
    }
    if !report.missing.is_empty() {
        eprintln!(
            "bacseg: warning: no prediction for {} truth mask(s), not evaluated: {}",
            report.missing.len(),
            report.missing.join(", ")
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The reference table's layout: one row per method and aggregation, the five metrics at
/// patch level, then the same five at whole-image level.
fn print_table(r: &Evaluation) {
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
    println!("\n{}", detection_summary(&r.detection));
}

/// The image-level results in a few lines: detection, false-positive burden, agreement.
pub fn detection_summary(d: &Detection) -> String {
    let unit = d.unit.area();
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    let area = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2} {unit}"));
    let mut out = format!(
        "Image level (BAC present = predicted area >= {} {unit}): {} positive, {} BAC-free images\n  \
         sensitivity {} ({}/{}), specificity {} ({}/{}), ROC AUC over predicted area {}\n  \
         false-positive burden on BAC-free images: mean {}, max {}",
        d.threshold,
        d.positives,
        d.negatives,
        f(d.sensitivity),
        d.true_positives,
        d.positives,
        f(d.specificity),
        d.true_negatives,
        d.negatives,
        f(d.auc),
        area(d.fp_area_mean),
        area(d.fp_area_max),
    );
    out.push_str(&format!(
        "\n  burden on positives: Spearman rho area {}, length {}; Bland-Altman area bias {} (limits {})",
        f(d.spearman_area),
        f(d.spearman_length),
        area(d.area_agreement.map(|b| b.bias)),
        d.area_agreement.map_or_else(
            || "-".to_string(),
            |b| format!("{:.2} to {:.2} {unit}", b.lower, b.upper)
        ),
    ));
    out
}
