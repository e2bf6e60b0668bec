//! `bacseg quantify`: measure the BAC burden of one or more masks (area, centreline length,
//! segments, SCU-Net probability measures, a severity grade that is not clinically
//! validated), optionally grouped per breast and per exam.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use bacseg_core::io;
use bacseg_core::quantify::{
    self, BacBurden, GRADE_DISCLAIMER, GradeBasis, Grading, GroupBurden, ViewBurden, measure_prob,
};
use bacseg_core::raster::ProbMap;
use bacseg_core::{PixelSpacing, SpacingSource};
use serde::Serialize;

use crate::cmd::evaluate::load_mask;
use crate::exit::InputError;

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

#[derive(Debug, Serialize)]
struct Report {
    images: Vec<ViewBurden>,
    breasts: Option<Vec<GroupBurden>>,
    exam: Option<GroupBurden>,
    grading: GradeBasis,
    grade_note: &'static str,
}

fn stem(path: &Path) -> Result<String, InputError> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
        .ok_or_else(|| InputError(format!("{}: no file name", path.display())))
}

/// Files keyed by stem; every stem must be one of the masks'.
fn by_stem(
    files: &[PathBuf],
    masks: &[String],
    flag: &str,
) -> Result<BTreeMap<String, PathBuf>, InputError> {
    let mut out = BTreeMap::new();
    for f in files {
        let s = stem(f)?;
        if !masks.contains(&s) {
            return Err(InputError(format!(
                "{flag} {}: no mask with the stem {s:?}",
                f.display()
            )));
        }
        if out.insert(s.clone(), f.clone()).is_some() {
            return Err(InputError(format!("{flag}: two files with the stem {s:?}")));
        }
    }
    Ok(out)
}

fn load_prob(path: &Path) -> Result<ProbMap> {
    let m = io::load(path).map_err(InputError::from)?;
    let max = m.value_range.1;
    if max <= 0.0 {
        return Err(InputError(format!(
            "{}: no value range to scale to [0, 1]",
            path.display()
        ))
        .into());
    }
    Ok(m.pixels.map(|&v| v / max))
}

pub fn run(args: Args) -> Result<()> {
    let grading = Grading {
        mild_from_mm: args.mild_mm,
        moderate_from_mm: args.moderate_mm,
        severe_from_mm: args.severe_mm,
    };
    grading.validate().map_err(|e| InputError(e.to_string()))?;
    if !args.threshold.is_finite() {
        return Err(InputError(format!(
            "--threshold must be a number, got {}",
            args.threshold
        ))
        .into());
    }
    let user_spacing = match args.spacing {
        Some(mm) if !(mm.is_finite() && mm > 0.0) => {
            return Err(InputError(format!(
                "--spacing must be a positive number of mm, got {mm}"
            ))
            .into());
        }
        Some(mm) => Some(PixelSpacing {
            row_mm: mm,
            col_mm: mm,
            source: SpacingSource::User,
        }),
        None => None,
    };
    let stems = args
        .masks
        .iter()
        .map(|m| stem(m))
        .collect::<Result<Vec<_>, _>>()?;
    let probs = by_stem(&args.prob, &stems, "--prob")?;
    let breasts = by_stem(&args.breast, &stems, "--breast")?;
    let images = by_stem(&args.image, &stems, "--image")?;

    let mut views = Vec::with_capacity(args.masks.len());
    for (path, name) in args.masks.iter().zip(&stems) {
        let mask = load_mask(path)?;
        let prob = probs.get(name).map(|p| load_prob(p)).transpose()?;
        let breast = breasts.get(name).map(|p| load_mask(p)).transpose()?;
        quantify::check_sizes(&mask, prob.as_ref(), breast.as_ref())
            .map_err(|e| InputError(format!("{}: {e}", path.display())))?;
        let info = images
            .get(name)
            .map(|p| io::info(p).map_err(InputError::from))
            .transpose()?;
        let spacing = user_spacing.or(info.as_ref().and_then(|i| i.pixel_spacing_mm));
        let mut burden: BacBurden =
            quantify::measure(&mask, None, spacing, breast.as_ref(), &grading);
        burden.prob = prob
            .as_ref()
            .map(|p| measure_prob(p, args.threshold, spacing));
        views.push(ViewBurden {
            image: name.clone(),
            laterality: info.as_ref().and_then(|i| i.laterality),
            view: info.and_then(|i| i.view_position),
            burden,
        });
    }
    let grouped = |e: quantify::QuantifyError| {
        InputError(format!("--group-by: {e} (give its DICOM with --image)"))
    };
    let breasts = match args.group_by {
        GroupBy::Image => None,
        GroupBy::Breast | GroupBy::Study => {
            Some(quantify::per_breast(&views, &grading).map_err(grouped)?)
        }
    };
    let exam = match args.group_by {
        GroupBy::Study => Some(quantify::per_exam(&views, &grading).map_err(grouped)?),
        _ => None,
    };
    let report = Report {
        images: views,
        breasts,
        exam,
        grading: grading.into(),
        grade_note: GRADE_DISCLAIMER,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
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
