//! An annotated mammogram dataset on disk (`images/` and `masks/`, matched by file stem, and
//! an optional `splits.json`), and its split into training, validation and test images.
//! Splits are always by image, never by patch, so that no image leaks between them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::io::{self, IoError};
use crate::mammogram::Mammogram;
use crate::raster::Mask;

/// A dataset directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: cannot list directory: {source}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no images/ directory (a dataset holds images/ and masks/ matched by file stem)", .0.display())]
    NoImages(PathBuf),
    #[error("{}: no images found", .0.display())]
    Empty(PathBuf),
    #[error("{}: {} image(s) without a mask in masks/: {}", dir.display(), stems.len(), preview(stems))]
    MissingMasks { dir: PathBuf, stems: Vec<String> },
    #[error("{}: two images share the stem {stem:?} ({a} and {b})", dir.display())]
    DuplicateStem {
        dir: PathBuf,
        stem: String,
        a: String,
        b: String,
    },
    #[error("{}: {reason}", path.display())]
    Splits { path: PathBuf, reason: String },
    #[error("{}: the mask is {mask_w}x{mask_h} but its image is {image_w}x{image_h}", path.display())]
    MaskSize {
        path: PathBuf,
        mask_w: usize,
        mask_h: usize,
        image_w: usize,
        image_h: usize,
    },
    #[error(transparent)]
    Io(#[from] IoError),
}

fn preview(stems: &[String]) -> String {
    let mut s = stems.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if stems.len() > 5 {
        s.push_str(", ...");
    }
    s
}

/// One annotated image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub stem: String,
    pub image: PathBuf,
    pub mask: PathBuf,
}

/// The images of a dataset directory with their masks, sorted by stem.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub samples: Vec<Sample>,
    /// Entries of `images/` and `masks/` that were not taken, with why (hidden files aside).
    pub skipped: Vec<String>,
}

/// Why an entry of `images/` or `masks/` is not taken; `None`: it is. Hidden files are left
/// out silently (`Some("")`).
fn not_taken(p: &Path) -> Option<&'static str> {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') {
        return Some("");
    }
    match std::fs::metadata(p) {
        Err(_) => return Some("a dangling link or an entry that cannot be read"),
        Ok(m) if m.is_dir() => return Some("a directory"),
        Ok(m) if !m.is_file() => return Some("not a regular file (a FIFO, a socket or a device)"),
        Ok(_) => {}
    }
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        None | Some("png" | "tif" | "tiff" | "dcm" | "dicom" | "jpg" | "jpeg") => None,
        Some(_) => Some("not an image file name (.png, .tif, .dcm, .jpg or none)"),
    }
}

fn list(dir: &Path, skipped: &mut Vec<String>) -> Result<BTreeMap<String, PathBuf>, DatasetError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DatasetError::List {
        path: dir.into(),
        source,
    })?;
    let mut out = BTreeMap::new();
    let mut paths = Vec::new();
    for e in entries {
        paths.push(
            e.map_err(|source| DatasetError::List {
                path: dir.into(),
                source,
            })?
            .path(),
        );
    }
    paths.sort();
    for p in paths {
        match not_taken(&p) {
            Some("") => continue,
            Some(why) => {
                skipped.push(format!("{}: {why}: ignored", p.display()));
                continue;
            }
            None => {}
        }
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(prev) = out.insert(stem.clone(), p.clone()) {
            return Err(DatasetError::DuplicateStem {
                dir: dir.into(),
                stem,
                a: prev.display().to_string(),
                b: p.display().to_string(),
            });
        }
    }
    Ok(out)
}

impl Dataset {
    /// List `root/images` and `root/masks`; every image needs a mask of the same stem.
    pub fn open(root: &Path) -> Result<Self, DatasetError> {
        let images_dir = root.join("images");
        if !images_dir.is_dir() {
            return Err(DatasetError::NoImages(root.into()));
        }
        let mut skipped = Vec::new();
        let images = list(&images_dir, &mut skipped)?;
        if images.is_empty() {
            return Err(DatasetError::Empty(images_dir));
        }
        let masks_dir = root.join("masks");
        let masks = if masks_dir.is_dir() {
            list(&masks_dir, &mut skipped)?
        } else {
            BTreeMap::new()
        };
        let missing: Vec<String> = images
            .keys()
            .filter(|s| !masks.contains_key(*s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(DatasetError::MissingMasks {
                dir: masks_dir,
                stems: missing,
            });
        }
        let samples = images
            .into_iter()
            .map(|(stem, image)| {
                let mask = masks[&stem].clone();
                Sample { stem, image, mask }
            })
            .collect();
        Ok(Self {
            root: root.into(),
            samples,
            skipped,
        })
    }

    pub fn stems(&self) -> Vec<String> {
        self.samples.iter().map(|s| s.stem.clone()).collect()
    }

    /// The samples of `stems` that the dataset holds, in the order of `stems`.
    pub fn samples_of<'a>(&'a self, stems: &'a [String]) -> impl Iterator<Item = &'a Sample> + 'a {
        stems.iter().filter_map(|stem| self.get(stem))
    }

    pub fn get(&self, stem: &str) -> Option<&Sample> {
        self.samples.iter().find(|s| s.stem == stem)
    }
}

/// Read a mask PNG: any non-zero value is BAC.
pub fn load_mask(path: &Path) -> Result<Mask, IoError> {
    let m = io::load(path)?;
    Ok(m.pixels.map(|&v| v > 0.0))
}

/// Read an image and its mask, checking that they have the same size.
pub fn load_sample(sample: &Sample) -> Result<(Mammogram, Mask), DatasetError> {
    let image = io::load(&sample.image)?;
    let mask = load_mask(&sample.mask)?;
    if mask.size() != image.pixels.size() {
        return Err(DatasetError::MaskSize {
            path: sample.mask.clone(),
            mask_w: mask.width(),
            mask_h: mask.height(),
            image_w: image.width(),
            image_h: image.height(),
        });
    }
    Ok((image, mask))
}

/// What a stratified split balances for one image: its BAC class first, then its view.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stratum {
    /// `none` for a BAC-free image; for a positive, its severity grade (`mild`, `moderate`,
    /// `severe`) where the dataset records one (a `bacseg synth` manifest), else its BAC area
    /// among the dataset's positives: `small` (lowest third), `medium`, `large`.
    pub bac: String,
    /// Laterality and view (`L-CC`) where the dataset records them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
}

impl Stratum {
    pub fn is_negative(&self) -> bool {
        self.bac == "none"
    }
}

/// The stratum of every image of `dataset`, by stem. A `bacseg synth` dataset's
/// `manifest.json` gives presence, severity and view without reading a pixel; otherwise every
/// mask is read (in parallel) and positives are ranked by BAC area into thirds.
pub fn strata(dataset: &Dataset) -> Result<BTreeMap<String, Stratum>, DatasetError> {
    if let Some(m) = synth_manifest(&dataset.root) {
        let by_stem: BTreeMap<&str, &crate::synth::ManifestImage> =
            m.images.iter().map(|i| (i.stem.as_str(), i)).collect();
        if dataset
            .samples
            .iter()
            .all(|s| by_stem.contains_key(s.stem.as_str()))
        {
            return Ok(dataset
                .samples
                .iter()
                .map(|s| {
                    let i = by_stem[s.stem.as_str()];
                    let stratum = Stratum {
                        bac: if i.negative {
                            "none".into()
                        } else {
                            i.severity.as_str().into()
                        },
                        view: Some(format!(
                            "{}-{}",
                            i.params.laterality.as_str(),
                            i.params.view.as_str()
                        )),
                    };
                    (s.stem.clone(), stratum)
                })
                .collect());
        }
    }
    use rayon::prelude::*;
    let areas: Vec<(String, usize)> = dataset
        .samples
        .par_iter()
        .map(|s| {
            let mask = load_mask(&s.mask)?;
            Ok((s.stem.clone(), mask.data().iter().filter(|&&v| v).count()))
        })
        .collect::<Result<_, IoError>>()?;
    let mut positives: Vec<(usize, &str)> = areas
        .iter()
        .filter(|(_, a)| *a > 0)
        .map(|(s, a)| (*a, s.as_str()))
        .collect();
    positives.sort_unstable();
    let third = |rank: usize| match 3 * rank / positives.len().max(1) {
        0 => "small",
        1 => "medium",
        _ => "large",
    };
    let class: BTreeMap<&str, &str> = positives
        .iter()
        .enumerate()
        .map(|(rank, (_, s))| (*s, third(rank)))
        .collect();
    Ok(areas
        .iter()
        .map(|(s, _)| {
            let bac = class.get(s.as_str()).copied().unwrap_or("none");
            (
                s.clone(),
                Stratum {
                    bac: bac.into(),
                    view: None,
                },
            )
        })
        .collect())
}

/// Pixel spacing (mm, isotropic) by stem as a `bacseg synth` dataset at `root` records it in
/// its `manifest.json`; empty for any other directory.
pub fn recorded_spacing(root: &Path) -> BTreeMap<String, f64> {
    synth_manifest(root)
        .map(|m| {
            m.images
                .into_iter()
                .map(|i| (i.stem, i.spacing_mm))
                .collect()
        })
        .unwrap_or_default()
}

/// The dataset's `manifest.json` when `bacseg synth` wrote it (and finished).
fn synth_manifest(root: &Path) -> Option<crate::synth::Manifest> {
    let text = std::fs::read_to_string(root.join("manifest.json")).ok()?;
    let m: crate::synth::Manifest = serde_json::from_str(&text).ok()?;
    (m.format == crate::synth::MANIFEST_FORMAT && m.complete).then_some(m)
}

/// Which images train, which validate (model selection) and which are held out for the final
/// evaluation. The file `splits.json` has exactly this shape (`strata` optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
    #[serde(default)]
    pub test: Vec<String>,
    /// The strata a stratified split balanced, by stem (empty for other splits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub strata: BTreeMap<String, Stratum>,
}

impl Split {
    /// A seeded random split by image: `val_fraction` and `test_fraction` of the images (at
    /// least one each when the fraction is positive and there are enough images), the rest
    /// for training. The same stems, fractions and seed always give the same split.
    pub fn random(
        stems: &[String],
        val_fraction: f64,
        test_fraction: f64,
        seed: u64,
    ) -> Result<Self, String> {
        if !(0.0..1.0).contains(&val_fraction)
            || !(0.0..1.0).contains(&test_fraction)
            || val_fraction + test_fraction >= 1.0
        {
            return Err(format!(
                "validation ({val_fraction}) and test ({test_fraction}) fractions must be in [0, 1) and sum to less than 1"
            ));
        }
        let mut order: Vec<String> = stems.to_vec();
        order.sort();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n = order.len();
        let count = |f: f64| {
            if f > 0.0 {
                ((n as f64 * f).round() as usize).max(1)
            } else {
                0
            }
        };
        let (n_val, n_test) = (count(val_fraction), count(test_fraction));
        if n_val + n_test >= n {
            return Err(format!(
                "{n} image(s) are too few for {n_val} validation and {n_test} test image(s) plus training"
            ));
        }
        let test = order.split_off(n - n_test);
        let val = order.split_off(n - n_test - n_val);
        let mut s = Self {
            train: order,
            val,
            test,
            strata: BTreeMap::new(),
        };
        s.train.sort();
        s.val.sort();
        s.test.sort();
        Ok(s)
    }

    /// A seeded split by image that keeps every stratum's share in each part. The parts have
    /// the sizes [`Split::random`] gives them. The held-out test part is filled first, then
    /// validation: each takes one image of every BAC class that can spare one (BAC-free
    /// images first, then the larger classes; a class keeps at least one image for
    /// training), then the rest by each class's share (largest remainder). Within a class the
    /// images are drawn in a seeded order that alternates between views, so that views
    /// spread too. The same strata, fractions and seed always give the same split.
    pub fn stratified(
        strata: &BTreeMap<String, Stratum>,
        val_fraction: f64,
        test_fraction: f64,
        seed: u64,
    ) -> Result<Self, String> {
        let stems: Vec<String> = strata.keys().cloned().collect();
        // Sizes (and the fraction checks) exactly as the random split.
        let sizes = Self::random(&stems, val_fraction, test_fraction, seed)?;
        let (n_val, n_test) = (sizes.val.len(), sizes.test.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Classes in a fixed order: BAC-free first, then by size (largest first), then name.
        let mut classes: BTreeMap<&str, BTreeMap<Option<&str>, Vec<String>>> = BTreeMap::new();
        for (stem, s) in strata {
            classes
                .entry(s.bac.as_str())
                .or_default()
                .entry(s.view.as_deref())
                .or_default()
                .push(stem.clone());
        }
        let mut pools: Vec<(String, Vec<String>)> = classes
            .into_iter()
            .map(|(bac, views)| {
                // Shuffle each view, shuffle the order of the views, then take round-robin.
                let mut views: Vec<Vec<String>> = views.into_values().collect();
                for v in &mut views {
                    v.shuffle(&mut rng);
                }
                views.shuffle(&mut rng);
                let mut order = Vec::new();
                for k in 0..views.iter().map(Vec::len).max().unwrap_or(0) {
                    order.extend(views.iter().filter_map(|v| v.get(k).cloned()));
                }
                (bac.to_string(), order)
            })
            .collect();
        pools.sort_by(|a, b| {
            (a.0 != "none", std::cmp::Reverse(a.1.len()), &a.0).cmp(&(
                b.0 != "none",
                std::cmp::Reverse(b.1.len()),
                &b.0,
            ))
        });
        let sizes_of: Vec<usize> = pools.iter().map(|p| p.1.len()).collect();
        let mut taken = vec![0usize; pools.len()];
        let part = |want: usize, fraction: f64, taken: &mut Vec<usize>| -> Vec<String> {
            let mut got = vec![0usize; pools.len()];
            let spare = |c: usize, taken: &[usize], got: &[usize], reserve: usize| {
                sizes_of[c] > taken[c] + got[c] + reserve
            };
            let mut room = want;
            // One of every class that can spare one (keeping one for training).
            for c in 0..pools.len() {
                if room > 0 && spare(c, taken, &got, 1) {
                    got[c] += 1;
                    room -= 1;
                }
            }
            // The rest by share: largest remainder, keeping one per class for training, and
            // without that reserve only when nothing else is left.
            for reserve in [1, 0] {
                while room > 0 {
                    let best = (0..pools.len())
                        .filter(|&c| spare(c, taken, &got, reserve))
                        .max_by(|&a, &b| {
                            let r = |c: usize| sizes_of[c] as f64 * fraction - got[c] as f64;
                            r(a).total_cmp(&r(b)).then(b.cmp(&a))
                        });
                    let Some(c) = best else { break };
                    got[c] += 1;
                    room -= 1;
                }
            }
            let mut out = Vec::new();
            for c in 0..pools.len() {
                out.extend(pools[c].1[taken[c]..taken[c] + got[c]].iter().cloned());
                taken[c] += got[c];
            }
            out.sort();
            out
        };
        let test = part(n_test, test_fraction, &mut taken);
        let val = part(n_val, val_fraction, &mut taken);
        let mut train: Vec<String> = pools
            .iter()
            .zip(&taken)
            .flat_map(|(p, &t)| p.1[t..].iter().cloned())
            .collect();
        train.sort();
        Ok(Self {
            train,
            val,
            test,
            strata: strata.clone(),
        })
    }

    /// Images per BAC class in each part, e.g. `val: none 1, mild 1, severe 2`; `None` for a
    /// split without strata.
    pub fn describe(&self) -> Option<String> {
        if self.strata.is_empty() {
            return None;
        }
        let one = |name: &str, stems: &[String]| {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for s in stems {
                if let Some(st) = self.strata.get(s) {
                    *counts.entry(st.bac.as_str()).or_default() += 1;
                }
            }
            let list: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!("{name} {} ({})", stems.len(), list.join(", "))
        };
        Some(format!(
            "{}; {}; {}",
            one("train", &self.train),
            one("val", &self.val),
            one("test", &self.test)
        ))
    }

    /// Read `splits.json`, checking that every stem exists in `dataset` and that no image is
    /// in two parts.
    pub fn load(path: &Path, dataset: &Dataset) -> Result<Self, DatasetError> {
        let err = |reason: String| DatasetError::Splits {
            path: path.into(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let split: Split = serde_json::from_str(&text)
            .map_err(|e| err(format!("not a valid splits file: {e}")))?;
        split.check(dataset).map_err(err)?;
        Ok(split)
    }

    /// Every stem known to the dataset, none in two parts, training not empty.
    pub fn check(&self, dataset: &Dataset) -> Result<(), String> {
        let known: BTreeSet<&str> = dataset.samples.iter().map(|s| s.stem.as_str()).collect();
        let mut seen = BTreeSet::new();
        for (part, stems) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            for s in stems {
                if !known.contains(s.as_str()) {
                    return Err(format!("{part} lists {s:?}, which is not in images/"));
                }
                if !seen.insert(s.as_str()) {
                    return Err(format!("{s:?} is in more than one part of the split"));
                }
            }
        }
        if self.train.is_empty() {
            return Err("the training part is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stems(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("img{i:03}")).collect()
    }

    #[test]
    fn random_split_is_disjoint_complete_and_seeded() {
        let all = stems(20);
        let s = Split::random(&all, 0.2, 0.1, 7).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (14, 4, 2));
        let mut joined: Vec<String> = [s.train.clone(), s.val.clone(), s.test.clone()].concat();
        joined.sort();
        assert_eq!(joined, all);
        assert_eq!(s, Split::random(&all, 0.2, 0.1, 7).unwrap());
        assert_ne!(s, Split::random(&all, 0.2, 0.1, 8).unwrap());
        // Input order does not matter.
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(s, Split::random(&rev, 0.2, 0.1, 7).unwrap());
    }

    fn strata_of(classes: &[(&str, usize)]) -> BTreeMap<String, Stratum> {
        let mut out = BTreeMap::new();
        for (bac, n) in classes {
            for i in 0..*n {
                let view = ["L-CC", "R-CC", "L-MLO", "R-MLO"][i % 4];
                out.insert(
                    format!("{bac}{i:02}"),
                    Stratum {
                        bac: (*bac).into(),
                        view: Some(view.into()),
                    },
                );
            }
        }
        out
    }

    fn count(split: &Split, stems: &[String], bac: &str) -> usize {
        stems.iter().filter(|s| split.strata[*s].bac == bac).count()
    }

    #[test]
    fn stratified_split_puts_every_class_in_validation_and_test() {
        // The demo's shape: 20 images, 5 BAC-free, 3 mild, 6 moderate, 6 severe.
        let strata = strata_of(&[("none", 5), ("mild", 3), ("moderate", 6), ("severe", 6)]);
        for seed in 0..50 {
            let s = Split::stratified(&strata, 0.2, 0.2, seed).unwrap();
            assert_eq!((s.train.len(), s.val.len(), s.test.len()), (12, 4, 4));
            for bac in ["none", "mild", "moderate", "severe"] {
                assert_eq!(count(&s, &s.val, bac), 1, "seed {seed}: {s:?}");
                assert_eq!(count(&s, &s.test, bac), 1, "seed {seed}: {s:?}");
                assert!(count(&s, &s.train, bac) >= 1);
            }
            let mut joined: Vec<String> = [s.train.clone(), s.val.clone(), s.test.clone()].concat();
            joined.sort();
            assert_eq!(joined, strata.keys().cloned().collect::<Vec<_>>());
            assert_eq!(s, Split::stratified(&strata, 0.2, 0.2, seed).unwrap());
        }
        assert_ne!(
            Split::stratified(&strata, 0.2, 0.2, 1).unwrap(),
            Split::stratified(&strata, 0.2, 0.2, 2).unwrap()
        );
        let s = Split::stratified(&strata, 0.2, 0.2, 3).unwrap();
        assert_eq!(
            s.describe().unwrap(),
            "train 12 (mild 1, moderate 4, none 3, severe 4); val 4 (mild 1, moderate 1, none 1, severe 1); test 4 (mild 1, moderate 1, none 1, severe 1)"
        );
    }

    #[test]
    fn stratified_split_keeps_shares_and_spreads_views() {
        // 100 images: 40 BAC-free, 60 positive; 20% each to validation and test.
        let strata = strata_of(&[("none", 40), ("small", 20), ("medium", 20), ("large", 20)]);
        let s = Split::stratified(&strata, 0.2, 0.2, 9).unwrap();
        for part in [&s.val, &s.test] {
            assert_eq!(part.len(), 20);
            assert_eq!(count(&s, part, "none"), 8);
            for bac in ["small", "medium", "large"] {
                assert_eq!(count(&s, part, bac), 4);
            }
            // Each class's four views alternate: 8 BAC-free images are two of each view.
            let views: BTreeSet<&str> = part
                .iter()
                .filter(|p| strata[*p].bac == "none")
                .map(|p| strata[p].view.as_deref().unwrap())
                .collect();
            assert_eq!(views.len(), 4, "{part:?}");
        }
        // A class too small to spare one for both parts goes to the test part first, and a
        // single image stays in training.
        let strata = strata_of(&[("none", 6), ("mild", 2), ("severe", 1), ("moderate", 6)]);
        let s = Split::stratified(&strata, 0.2, 0.2, 0).unwrap();
        assert_eq!(count(&s, &s.test, "mild"), 1);
        assert_eq!(count(&s, &s.val, "mild"), 0);
        assert_eq!(count(&s, &s.train, "severe"), 1);
        // Impossible sizes are refused as the random split refuses them.
        assert!(Split::stratified(&strata_of(&[("none", 2)]), 0.5, 0.5, 1).is_err());
    }

    #[test]
    fn random_split_rejects_impossible_requests() {
        assert!(Split::random(&stems(2), 0.5, 0.5, 1).is_err());
        assert!(Split::random(&stems(2), 0.4, 0.4, 1).is_err());
        assert!(Split::random(&stems(3), 0.3, 0.3, 1).is_ok());
    }

    #[test]
    fn dataset_matches_by_stem_and_names_missing_masks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::create_dir_all(dir.path().join("masks")).unwrap();
        let img = crate::raster::Raster::filled(4, 3, 100u16);
        let mask = Mask::filled(4, 3, false);
        for s in ["a", "b", "c"] {
            io::write_png_gray16(
                &dir.path().join(format!("images/{s}.png")),
                4,
                3,
                img.data(),
            )
            .unwrap();
        }
        for s in ["a", "b"] {
            io::write_mask_png(&dir.path().join(format!("masks/{s}.png")), &mask).unwrap();
        }
        let err = Dataset::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("1 image(s) without a mask") && err.contains('c'),
            "{err}"
        );
        io::write_mask_png(&dir.path().join("masks/c.png"), &Mask::filled(5, 3, false)).unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.stems(), vec!["a", "b", "c"]);
        assert!(load_sample(ds.get("a").unwrap()).is_ok());
        let err = load_sample(ds.get("c").unwrap()).unwrap_err().to_string();
        assert!(err.contains("c.png") && err.contains("5x3"), "{err}");

        let splits = dir.path().join("splits.json");
        std::fs::write(&splits, r#"{"train": ["a"], "val": ["b"], "test": ["a"]}"#).unwrap();
        let err = Split::load(&splits, &ds).unwrap_err().to_string();
        assert!(err.contains("more than one part"), "{err}");
        std::fs::write(&splits, r#"{"train": ["a", "zz"], "val": ["b"]}"#).unwrap();
        assert!(
            Split::load(&splits, &ds)
                .unwrap_err()
                .to_string()
                .contains("zz")
        );
        std::fs::write(&splits, r#"{"train": ["a", "c"], "val": ["b"]}"#).unwrap();
        assert_eq!(Split::load(&splits, &ds).unwrap().train, vec!["a", "c"]);

        // Without a synth manifest the strata come from the masks: "a" and "b" are BAC-free,
        // "c" is the only positive.
        let mut c = Mask::filled(4, 3, false);
        *c.get_mut(1, 1) = true;
        io::write_mask_png(&dir.path().join("masks/c.png"), &c).unwrap();
        let st = strata(&ds).unwrap();
        let bac: Vec<&str> = st.values().map(|s| s.bac.as_str()).collect();
        assert_eq!(bac, ["none", "none", "small"]);
    }
}
