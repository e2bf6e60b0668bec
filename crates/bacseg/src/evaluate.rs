//! Evaluation of predicted masks against the truth: pairing a directory that `predict` wrote
//! (`<name>.mask.png` beside `.prob.png`, `.overlay.png`, `.bac.json`) or any directory of
//! plain mask files (`<name>.png`, `.tif`, `.dcm`) with truth masks by name, then counting
//! pixels per image and per patch, and measuring each image's true and predicted BAC burden
//! for the image-level detection results ([`evaluate_dirs`], docs/cli.md#evaluate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use bacseg_core::detection::MaskBurden;
use bacseg_core::detection::{BurdenUnit, Detection, DetectionRule, ImageBurden};
use bacseg_core::metrics::{
    Aggregate, ConfusionCounts, EmptyPolicy, Metrics, PatchSet, patch_counts,
};
use bacseg_core::patch::PatchGrid;
use bacseg_core::raster::Mask;
use serde::Serialize;

use bacseg_core::dataset::recorded_spacing;

use crate::error::{Error, ErrorKind, Result};

/// Extensions read as mask files.
pub const MASK_EXTENSIONS: [&str; 4] = ["png", "tif", "tiff", "dcm"];

/// Suffixes of `predict`'s outputs that are not masks.
const PREDICT_OTHER: [&str; 2] = [".prob", ".overlay"];

/// Mask files of a directory by name. In a directory `predict` wrote, the name is the output
/// name (`a` for `a.mask.png`) and its probability maps and overlays are not masks.
pub fn masks_by_name(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let fail =
        |e: std::io::Error| Error::with_source(ErrorKind::Input, dir.display().to_string(), e);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let path = entry.map_err(fail)?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if ext.is_some_and(|e| MASK_EXTENSIONS.contains(&e.as_str())) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let stem = |p: &Path| p.file_stem().and_then(|s| s.to_str()).map(str::to_string);
    let predicted = files
        .iter()
        .any(|p| stem(p).is_some_and(|s| s.ends_with(".mask")));
    let mut out = BTreeMap::new();
    for path in files {
        let Some(s) = stem(&path) else { continue };
        let name = if predicted {
            match s.strip_suffix(".mask") {
                Some(name) => name.to_string(),
                None if PREDICT_OTHER.iter().any(|o| s.ends_with(o)) => continue,
                None => s,
            }
        } else {
            s
        };
        if let Some(prev) = out.insert(name, path.clone()) {
            return Err(Error::input(format!(
                "{} and {} are masks of the same image",
                prev.display(),
                path.display()
            )));
        }
    }
    Ok(out)
}

/// Predicted and truth masks of the same images.
#[derive(Debug, Clone, Default)]
pub struct Pairs {
    /// Name, predicted mask, truth mask, in name order.
    pub pairs: Vec<(String, PathBuf, PathBuf)>,
    /// Truth masks with no prediction.
    pub missing: Vec<String>,
}

/// Pair the masks of `pred` with those of `truth` (a directory of masks, or a dataset
/// directory with a `masks/` folder). Images without a prediction are listed in
/// [`Pairs::missing`]; none at all in common is an error.
pub fn pair_masks(pred: &Path, truth: &Path) -> Result<Pairs> {
    let truth_dir = if truth.join("masks").is_dir() {
        truth.join("masks")
    } else {
        truth.to_path_buf()
    };
    let truths = masks_by_name(&truth_dir)?;
    if truths.is_empty() {
        return Err(Error::input(format!(
            "{}: no mask files (png, tif, dcm)",
            truth_dir.display()
        )));
    }
    let preds = masks_by_name(pred)?;
    let mut out = Pairs::default();
    for (name, t) in truths {
        match preds.get(&name) {
            Some(p) => out.pairs.push((name, p.clone(), t)),
            None => out.missing.push(name),
        }
    }
    if out.pairs.is_empty() {
        return Err(Error::input(format!(
            "{}: no prediction for any of the {} truth mask(s) in {}",
            pred.display(),
            out.missing.len(),
            truth_dir.display()
        )));
    }
    Ok(out)
}

/// How [`evaluate_dirs`] counts.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Whole-image metrics.
    pub image: bool,
    /// Patch-level metrics.
    pub patch: bool,
    /// Patch side, pixels.
    pub patch_size: usize,
    /// Distance between neighbouring patches (the last row and column snap to the edge).
    pub stride: usize,
    /// Patch-level units: patches whose truth holds BAC, or all (in the breast with
    /// [`breast`](Self::breast)).
    pub patches: PatchSet,
    /// Directory of breast masks named like the truth masks.
    pub breast: Option<PathBuf>,
    /// A metric whose denominator is zero in a unit.
    pub empty_policy: EmptyPolicy,
    /// Pixel spacing, mm, of every image; `None`: the spacing a `bacseg synth` dataset's
    /// `manifest.json` records for each image (beside `masks/`), else none (areas in pixels).
    pub spacing_mm: Option<f64>,
    /// When an image counts as predicted positive.
    pub detection: DetectionRule,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        Self {
            image: true,
            patch: true,
            patch_size: 512,
            stride: 384,
            patches: PatchSet::Positive,
            breast: None,
            empty_policy: EmptyPolicy::Skip,
            spacing_mm: None,
            detection: DetectionRule::default(),
        }
    }
}

impl EvaluateOptions {
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.stride == 0 || self.stride > self.patch_size {
            return Err(Error::config(format!(
                "the stride must be between 1 and the patch size ({}), got {}",
                self.patch_size, self.stride
            )));
        }
        if let Some(s) = self.spacing_mm
            && !(s.is_finite() && s > 0.0)
        {
            return Err(Error::config(format!(
                "the pixel spacing must be positive, got {s} mm"
            )));
        }
        self.detection.validate().map_err(Error::config)?;
        if !self.image && !self.patch {
            return Err(Error::config(
                "nothing to evaluate: neither image nor patch level",
            ));
        }
        Ok(())
    }
}

/// One image's results.
#[derive(Debug, Clone, Serialize)]
pub struct ImageEvaluation {
    pub name: String,
    /// Whole-image pixel counts and metrics.
    pub counts: ConfusionCounts,
    pub metrics: Metrics,
    /// Patch-level units of this image and their summed counts; `None` without patch level.
    pub patches: Option<usize>,
    pub patch_counts: Option<ConfusionCounts>,
    /// Pixel spacing used for the burden, mm; `None`: unknown.
    pub spacing_mm: Option<f64>,
    /// True and predicted BAC: area and centreline length in pixels (steps), and in mm^2 and
    /// mm with a spacing.
    pub truth_burden: MaskBurden,
    pub predicted_burden: MaskBurden,
}

/// Image-level detection over `images`: in mm^2 when every image has a spacing, else pixels.
pub fn detect(images: &[ImageEvaluation], rule: &DetectionRule) -> Detection {
    let unit = if images.iter().all(|i| i.spacing_mm.is_some()) {
        BurdenUnit::Mm
    } else {
        BurdenUnit::Px
    };
    let burdens: Vec<ImageBurden> = images
        .iter()
        .map(|i| ImageBurden {
            name: i.name.clone(),
            truth: i.truth_burden.in_unit(unit),
            predicted: i.predicted_burden.in_unit(unit),
        })
        .collect();
    Detection::new(&burdens, unit, rule)
}

/// The results over a set of images (the JSON of `bacseg evaluate --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub method: String,
    pub empty_policy: EmptyPolicy,
    pub patch_set: PatchSet,
    pub patch_size: usize,
    pub stride: usize,
    pub images: usize,
    /// Whole-image aggregates; `None` without image level.
    pub image: Option<Aggregate>,
    /// The same over the images whose truth holds BAC only (pixel overlap where there is BAC
    /// to overlap; BAC-free images are in `detection`); `None` without image level.
    pub image_positive: Option<Aggregate>,
    /// Patch aggregates; `None` without patch level.
    pub patch: Option<Aggregate>,
    /// Image-level detection and burden agreement ([`detect`]).
    pub detection: Detection,
    pub per_image: Vec<ImageEvaluation>,
    /// Truth masks without a prediction (not evaluated).
    pub missing: Vec<String>,
    /// Conversions the readers made to mask files ("path: colour converted to grey").
    pub notes: Vec<String>,
}

/// A mask file (any non-zero sample is inside); conversions the reader made go to `notes` as
/// "path: note".
pub(crate) fn read_mask(path: &Path, notes: &mut Vec<String>) -> Result<Mask> {
    let m = bacseg_core::io::load(path)?;
    notes.extend(m.notes.iter().map(|n| format!("{}: {n}", path.display())));
    Ok(m.pixels.map(|&v| v > 0.0))
}

/// Evaluate the predicted masks of `pred` against the truth masks of `truth` (see
/// [`pair_masks`]), one image at a time (two full-size masks of a mammogram are ~27 MB and
/// the patch counting inside is parallel). `method` names the row.
pub fn evaluate_dirs(
    pred: &Path,
    truth: &Path,
    method: &str,
    options: &EvaluateOptions,
) -> Result<Evaluation> {
    options.validate()?;
    let paired = pair_masks(pred, truth)?;
    let breasts = options.breast.as_deref().map(masks_by_name).transpose()?;
    let recorded = if truth.join("masks").is_dir() {
        recorded_spacing(truth)
    } else {
        truth.parent().map(recorded_spacing).unwrap_or_default()
    };
    let mut notes = Vec::new();
    let mut per_image = Vec::with_capacity(paired.pairs.len());
    let mut patch_units = Vec::new();
    for (name, pred_path, truth_path) in &paired.pairs {
        let at = |e: &dyn std::fmt::Display| Error::input(format!("{name}: {e}"));
        let truth = read_mask(truth_path, &mut notes)?;
        let predicted = read_mask(pred_path, &mut notes)?;
        let counts = ConfusionCounts::from_masks(&predicted, &truth).map_err(|e| at(&e))?;
        let patches = if options.patch {
            let mut grid = PatchGrid::new(truth.size(), options.patch_size, options.stride)
                .map_err(|e| at(&e))?;
            if let Some(path) = breasts.as_ref().and_then(|b| b.get(name)) {
                let breast = read_mask(path, &mut notes)?;
                grid = grid.within_breast(&breast, 0.0).map_err(|e| at(&e))?;
            }
            patch_counts(&predicted, &truth, &grid, options.patches).map_err(|e| at(&e))?
        } else {
            Vec::new()
        };
        let spacing_mm = options.spacing_mm.or_else(|| recorded.get(name).copied());
        per_image.push(ImageEvaluation {
            name: name.clone(),
            spacing_mm,
            truth_burden: MaskBurden::measure(&truth, spacing_mm),
            predicted_burden: MaskBurden::measure(&predicted, spacing_mm),
            counts,
            metrics: counts.metrics(options.empty_policy),
            patches: options.patch.then_some(patches.len()),
            patch_counts: options.patch.then(|| patches.iter().copied().sum()),
        });
        patch_units.extend(patches);
    }
    let image_units: Vec<ConfusionCounts> = per_image.iter().map(|p| p.counts).collect();
    Ok(Evaluation {
        method: method.to_string(),
        empty_policy: options.empty_policy,
        patch_set: options.patches,
        patch_size: options.patch_size,
        stride: options.stride,
        images: per_image.len(),
        image: options
            .image
            .then(|| Aggregate::new(&image_units, options.empty_policy)),
        patch: options
            .patch
            .then(|| Aggregate::new(&patch_units, options.empty_policy)),
        image_positive: options.image.then(|| {
            let positive: Vec<ConfusionCounts> = per_image
                .iter()
                .filter(|p| p.truth_burden.area_px > 0)
                .map(|p| p.counts)
                .collect();
            Aggregate::new(&positive, options.empty_policy)
        }),
        detection: detect(&per_image, &options.detection),
        per_image,
        missing: paired.missing,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predict_outputs_pair_with_truth_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (pred, truth) = (dir.path().join("pred"), dir.path().join("truth"));
        std::fs::create_dir_all(&pred).unwrap();
        std::fs::create_dir_all(truth.join("masks")).unwrap();
        for name in ["a", "b"] {
            for kind in ["mask.png", "prob.png", "overlay.png", "bac.json"] {
                std::fs::write(pred.join(format!("{name}.{kind}")), b"x").unwrap();
            }
        }
        std::fs::write(pred.join("summary.csv"), b"x").unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(truth.join(format!("masks/{name}.png")), b"x").unwrap();
        }
        let pairs = pair_masks(&pred, &truth).unwrap();
        let names: Vec<_> = pairs.pairs.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(pairs.pairs[0].1, pred.join("a.mask.png"));
        assert_eq!(pairs.missing, ["c"]);
        // Plain mask directories work as before.
        let plain = pair_masks(&truth.join("masks"), &truth).unwrap();
        assert_eq!(plain.pairs.len(), 3);
        // No truth masks, or no prediction for any truth mask: errors naming the directory.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = pair_masks(&pred, &empty).unwrap_err();
        assert!(err.to_string().contains("no mask files"), "{err}");
        let err = pair_masks(&empty, &truth).unwrap_err();
        assert!(err.to_string().contains("no prediction"), "{err}");
    }
}
