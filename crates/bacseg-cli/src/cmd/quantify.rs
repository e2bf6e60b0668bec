//! `bacseg quantify`: measure the BAC burden of one or more masks (area, centreline length,
//! segments, SCU-Net probability measures, a severity grade that is not clinically
//! validated), optionally grouped per breast and per exam.

use std::path::PathBuf;

use anyhow::Result;
use bacseg::quantify::{self, BurdenReport, MaskFiles, QuantifyOptions};
use bacseg_core::quantify::{GRADE_DISCLAIMER, Grading, GroupBurden};

/// How to group the per-image burdens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// Each image on its own.
    Image,
    /// Per breast (views of one laterality), then per image.
    Breast,
    /// The whole exam (all images given), per breast and per image.
    Study,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// BAC mask(s): 8-bit PNG, non-zero = BAC.
    #[arg(required = true)]
    masks: Vec<PathBuf>,
    /// Probability map(s) (16- or 8-bit PNG scaled to [0, 1]) for the SCU-Net measures,
    /// matched to the masks by file stem.
    #[arg(long)]
    prob: Vec<PathBuf>,
    /// Breast mask(s), matched by stem, for the percentage of breast area.
    #[arg(long)]
    breast: Vec<PathBuf>,
    /// The mammogram(s) (DICOM), matched by stem, for pixel spacing, laterality and view.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Pixel spacing in mm (square pixels); overrides the spacing read from --image.
    #[arg(long)]
    spacing: Option<f64>,
    /// Probability above which a pixel counts in the SCU-Net area measure.
    #[arg(long, default_value_t = bacseg_core::postprocess::DEFAULT_THRESHOLD)]
    threshold: f32,
    #[arg(long, value_enum, default_value_t = GroupBy::Image)]
    group_by: GroupBy,
    /// Grade thresholds on the centreline length, mm (not clinically validated).
    #[arg(long, default_value_t = Grading::default().mild_from_mm)]
    mild_mm: f64,
    #[arg(long, default_value_t = Grading::default().moderate_from_mm)]
    moderate_mm: f64,
    #[arg(long, default_value_t = Grading::default().severe_from_mm)]
    severe_mm: f64,
    /// Print JSON (schema: docs/cli.md#quantify) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let files = MaskFiles {
        masks: args.masks,
        probs: args.prob,
        breasts: args.breast,
        images: args.image,
    };
    let options = QuantifyOptions {
        spacing_mm: args.spacing,
        threshold: args.threshold,
        grading: Grading {
            mild_from_mm: args.mild_mm,
            moderate_from_mm: args.moderate_mm,
            severe_from_mm: args.severe_mm,
        },
        group_by: match args.group_by {
            GroupBy::Image => quantify::GroupBy::Image,
            GroupBy::Breast => quantify::GroupBy::Breast,
            GroupBy::Study => quantify::GroupBy::Study,
        },
    };
    let report = quantify::quantify_files(&files, &options)?;
    for note in &report.notes {
        eprintln!("bacseg: {note}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &BurdenReport) {
    let num =
        |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
    let name_w = r
        .images
        .iter()
        .map(|v| v.image.len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "{:<name_w$} {:>4} {:>4} {:>9} {:>9} {:>8} {:>10} {:>9} {:>8} {:>10} {:>8}",
        "image",
        "side",
        "view",
        "area px",
        "area mm2",
        "% breast",
        "length mm",
        "width mm",
        "segments",
        "prob sum",
        "grade"
    );
    for v in &r.images {
        let b = &v.burden;
        println!(
            "{:<name_w$} {:>4} {:>4} {:>9} {:>9} {:>8} {:>10} {:>9} {:>8} {:>10} {:>8}",
            v.image,
            v.laterality.map_or("-", |l| l.as_str()),
            v.view.as_ref().map_or("-", |v| v.as_str()),
            b.area_px,
            num(b.area_mm2, 2),
            num(b.area_pct_of_breast, 3),
            num(b.length_mm, 1),
            num(b.mean_width_mm, 2),
            b.segments,
            num(b.prob.map(|p| p.sum), 1),
            b.grade.map_or("-", |g| g.as_str()),
        );
    }
    let groups: Vec<&GroupBurden> = r.breasts.iter().flatten().chain(r.exam.as_ref()).collect();
    if !groups.is_empty() {
        println!(
            "\n{:<6} {:>9} {:>9} {:>10} {:>8} {:>8}  images",
            "group", "area px", "area mm2", "length mm", "segments", "grade"
        );
        for g in groups {
            println!(
                "{:<6} {:>9} {:>9} {:>10} {:>8} {:>8}  {}",
                g.group,
                g.area_px,
                num(g.area_mm2, 2),
                num(g.length_mm, 1),
                g.segments,
                g.grade.map_or("-", |g| g.as_str()),
                g.images.join(", ")
            );
        }
    }
    let t = r.grading.thresholds;
    println!(
        "\ngrade: {} (by centreline length: mild from {} mm, moderate from {} mm, severe from {} mm; '-' = no pixel spacing)",
        GRADE_DISCLAIMER, t.mild_from_mm, t.moderate_from_mm, t.severe_from_mm
    );
}
