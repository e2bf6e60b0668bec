//! BAC burden of mask files: area, centreline length, segments, the SCU-Net probability
//! measures and a severity grade (not clinically validated), per image and grouped per breast
//! and per exam (docs/cli.md#quantify). [`Predictor`](crate::Predictor) measures the burden of
//! what it predicts itself; this is for masks that already exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bacseg_core::io;
use bacseg_core::quantify::{
    self, BacBurden, GRADE_DISCLAIMER, GradeBasis, Grading, GroupBurden, ViewBurden, measure_prob,
};
use bacseg_core::raster::ProbMap;
use bacseg_core::{PixelSpacing, SpacingSource};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::evaluate::read_mask;

/// How the per-image burdens are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// Each image on its own.
    #[default]
    Image,
    /// Per breast (views of one laterality), then per image.
    Breast,
    /// The whole exam (all images given), per breast and per image.
    Study,
}

/// The files to measure: masks, and optional companions matched to them by file stem.
#[derive(Debug, Clone, Default)]
pub struct MaskFiles {
    /// BAC masks (non-zero = BAC).
    pub masks: Vec<PathBuf>,
    /// Probability maps scaled by their bit depth to [0, 1], for the SCU-Net measures.
    pub probs: Vec<PathBuf>,
    /// Breast masks, for the percentage of breast area.
    pub breasts: Vec<PathBuf>,
    /// The mammograms, read (header only) for pixel spacing, laterality and view.
    pub images: Vec<PathBuf>,
}

/// How to measure.
#[derive(Debug, Clone)]
pub struct QuantifyOptions {
    /// Square pixel spacing in mm; overrides the images'.
    pub spacing_mm: Option<f64>,
    /// Probability above which a pixel counts in the SCU-Net area measure.
    pub threshold: f32,
    pub grading: Grading,
    pub group_by: GroupBy,
}

impl Default for QuantifyOptions {
    fn default() -> Self {
        Self {
            spacing_mm: None,
            threshold: bacseg_core::postprocess::DEFAULT_THRESHOLD,
            grading: Grading::default(),
            group_by: GroupBy::Image,
        }
    }
}

/// Burdens per image and per group (the JSON of `bacseg quantify --json`).
#[derive(Debug, Clone, Serialize)]
pub struct BurdenReport {
    pub images: Vec<ViewBurden>,
    pub breasts: Option<Vec<GroupBurden>>,
    pub exam: Option<GroupBurden>,
    pub grading: GradeBasis,
    pub grade_note: &'static str,
    /// Conversions the readers made ("path: colour converted to grey").
    pub notes: Vec<String>,
}

fn stem(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::input(format!("{}: no file name", path.display())))
}

/// Files keyed by stem; every stem must be one of the masks'.
fn by_stem(files: &[PathBuf], masks: &[String], what: &str) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for f in files {
        let s = stem(f)?;
        if !masks.contains(&s) {
            return Err(Error::input(format!(
                "{what} {}: no mask with the stem {s:?}",
                f.display()
            )));
        }
        if out.insert(s.clone(), f.clone()).is_some() {
            return Err(Error::input(format!(
                "{what}: two files with the stem {s:?}"
            )));
        }
    }
    Ok(out)
}

fn load_prob(path: &Path, notes: &mut Vec<String>) -> Result<ProbMap> {
    let m = io::load(path)?;
    notes.extend(m.notes.iter().map(|n| format!("{}: {n}", path.display())));
    let max = m.value_range.1;
    if max <= 0.0 {
        return Err(Error::input(format!(
            "{}: no value range to scale to [0, 1]",
            path.display()
        )));
    }
    Ok(m.pixels.map(|&v| v / max))
}

/// Measure every mask of `files` (companions by stem) and group as `options` says.
pub fn quantify_files(files: &MaskFiles, options: &QuantifyOptions) -> Result<BurdenReport> {
    let grading = options.grading;
    grading
        .validate()
        .map_err(|e| Error::config(format!("grading: {e}")))?;
    if !options.threshold.is_finite() {
        return Err(Error::config(format!(
            "the threshold must be a number, got {}",
            options.threshold
        )));
    }
    let user_spacing = match options.spacing_mm {
        Some(mm) if !(mm.is_finite() && mm > 0.0) => {
            return Err(Error::config(format!(
                "the spacing must be a positive number of mm, got {mm}"
            )));
        }
        Some(mm) => Some(PixelSpacing {
            row_mm: mm,
            col_mm: mm,
            source: SpacingSource::User,
        }),
        None => None,
    };
    let stems = files
        .masks
        .iter()
        .map(|m| stem(m))
        .collect::<Result<Vec<_>>>()?;
    let probs = by_stem(&files.probs, &stems, "probability map")?;
    let breasts = by_stem(&files.breasts, &stems, "breast mask")?;
    let images = by_stem(&files.images, &stems, "image")?;

    let mut views = Vec::with_capacity(files.masks.len());
    let mut notes = Vec::new();
    for (path, name) in files.masks.iter().zip(&stems) {
        let mask = read_mask(path, &mut notes)?;
        let prob = probs
            .get(name)
            .map(|p| load_prob(p, &mut notes))
            .transpose()?;
        let breast = breasts
            .get(name)
            .map(|p| read_mask(p, &mut notes))
            .transpose()?;
        quantify::check_sizes(&mask, prob.as_ref(), breast.as_ref())
            .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
        let info = images.get(name).map(|p| io::info(p)).transpose()?;
        let spacing = user_spacing.or(info.as_ref().and_then(|i| i.pixel_spacing_mm));
        let mut burden: BacBurden =
            quantify::measure(&mask, None, spacing, breast.as_ref(), &grading);
        burden.prob = prob
            .as_ref()
            .map(|p| measure_prob(p, options.threshold, spacing));
        views.push(ViewBurden {
            image: name.clone(),
            laterality: info.as_ref().and_then(|i| i.laterality),
            view: info.and_then(|i| i.view_position),
            burden,
        });
    }
    let grouped = |e: quantify::QuantifyError| {
        Error::input(format!("grouping: {e} (give its DICOM as an image)"))
    };
    let breasts = match options.group_by {
        GroupBy::Image => None,
        GroupBy::Breast | GroupBy::Study => {
            Some(quantify::per_breast(&views, &grading).map_err(grouped)?)
        }
    };
    let exam = match options.group_by {
        GroupBy::Study => Some(quantify::per_exam(&views, &grading).map_err(grouped)?),
        _ => None,
    };
    Ok(BurdenReport {
        images: views,
        breasts,
        exam,
        grading: grading.into(),
        grade_note: GRADE_DISCLAIMER,
        notes,
    })
}
