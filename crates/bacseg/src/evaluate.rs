//! Pairing predicted masks with ground truth for evaluation: a directory that `predict` wrote
//! (`<name>.mask.png` beside `.prob.png`, `.overlay.png`, `.bac.json`) or any directory of
//! plain mask files (`<name>.png`, `.tif`, `.dcm`), matched to truth masks by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
