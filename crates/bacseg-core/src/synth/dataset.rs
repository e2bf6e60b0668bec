//! Writing a synthetic dataset in the project's layout: `images/<stem>.png` (16-bit grey),
//! `masks/<stem>.png` (8-bit, 0/255), `manifest.json` (configuration, per-image generator
//! parameters and the true burden measured on the written mask) and an optional
//! `preview.png` montage. Images are generated in parallel; every file is written atomically.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::background::BackgroundImage;
use super::{MASK_LEVEL_MM, SynthConfig, SynthError, SynthParams, SynthSample};
use crate::io::{self, IoError};
use crate::quantify::{self, BacBurden, Grade, Grading};
use crate::raster::{Mask, Raster};

/// `format` field of every synth manifest.
pub const MANIFEST_FORMAT: &str = "bacseg-synth";
/// Bumped whenever the same configuration would give different pixels or a different schema.
pub const MANIFEST_VERSION: u32 = 1;

/// Contents of `manifest.json` (schema in docs/cli.md, section "synth").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The crate that generated the data, with its version.
    pub generator: String,
    /// False while the dataset is being written: a crash leaves `false` behind.
    pub complete: bool,
    pub config: SynthConfig,
    /// Real BAC-free mammograms the calcifications were inserted into (`--background`).
    pub background: Vec<String>,
    /// How the masks relate to the images.
    pub mask_rule: String,
    /// Thresholds of the `severity` grades.
    pub grading: Grading,
    pub images: Vec<ManifestImage>,
}

/// One image of the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestImage {
    pub index: u64,
    pub stem: String,
    /// Paths relative to the dataset directory.
    pub image: String,
    pub mask: String,
    pub width: usize,
    pub height: usize,
    pub spacing_mm: f64,
    pub bits_stored: u8,
    /// True when the image has no BAC (its mask is empty).
    pub negative: bool,
    /// Severity measured on the written mask (`burden.grade`).
    pub severity: Grade,
    /// Calcified vessel trees drawn with at least one mask pixel of their own (the
    /// generator's count; `burden.segments` is the measured count of mask components).
    pub calcified_vessels: usize,
    /// Measured on the written mask by `quantify::measure`, exactly as `bacseg quantify`
    /// would measure it, with the phantom's breast for the percentage.
    pub burden: BacBurden,
    /// The background file for `--background` datasets.
    pub background: Option<String>,
    pub params: SynthParams,
}

/// Failure to write a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Config(#[from] SynthError),
    #[error(
        "{}: already holds {what}; choose another --out or pass --overwrite",
        dir.display()
    )]
    DifferentDataset { dir: PathBuf, what: String },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: {source}", path.display())]
    Fs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Background(#[from] super::BackgroundError),
}

fn fs_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Fs {
        path: path.to_path_buf(),
        source,
    }
}

/// How to write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Replace another dataset's files in a non-empty directory.
    pub overwrite: bool,
    /// Also write `preview.png` (a montage of the first images).
    pub preview: bool,
    /// Insert calcifications into these images instead of generating phantoms.
    pub background: Vec<BackgroundImage>,
}

/// Progress reports, in completion order (which varies between runs; the files do not).
#[derive(Debug, Clone)]
pub enum Progress {
    Started {
        total: usize,
    },
    Wrote {
        done: usize,
        total: usize,
        stem: String,
        /// Conversions the reader made to the image's real background ("path: note").
        notes: Vec<String>,
    },
    Preview {
        path: PathBuf,
    },
}

/// What was written.
#[derive(Debug, Clone)]
pub struct DatasetSummary {
    pub manifest: PathBuf,
    pub preview: Option<PathBuf>,
    pub images: usize,
    pub negatives: usize,
    pub by_severity: [usize; 4],
}

/// Stem of image `index`.
pub fn stem(index: u64) -> String {
    format!("synth-{index:05}")
}

/// Images shown in the preview montage.
const PREVIEW_IMAGES: usize = 6;

/// Generate `config.count` images into `dir` (created if missing).
pub fn write_dataset(
    dir: &Path,
    config: &SynthConfig,
    options: &WriteOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<DatasetSummary, DatasetError> {
    config.validate()?;
    let grading = Grading::default();
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        generator: format!("bacseg-core {}", env!("CARGO_PKG_VERSION")),
        complete: false,
        config: config.clone(),
        background: options.background.iter().map(|b| b.name.clone()).collect(),
        mask_rule: format!(
            "mask = pixels whose rendered calcium path length (before detector blur and noise) is >= {MASK_LEVEL_MM} mm"
        ),
        grading,
        images: Vec::new(),
    };
    let previous = check_destination(dir, &manifest, options.overwrite)?;
    for sub in ["images", "masks"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(fs_err(&p))?;
    }
    let manifest_path = dir.join("manifest.json");
    write_manifest(&manifest_path, &manifest)?;

    let total = config.count;
    progress(Progress::Started { total });
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(ManifestImage, Option<PreviewTile>), DatasetError>> = (0..total
        as u64)
        .into_par_iter()
        .map(|index| {
            let (sample, bg) = if options.background.is_empty() {
                (super::generate(config, index), None)
            } else {
                let bg = &options.background[index as usize % options.background.len()];
                (super::insert_into_background(bg, config, index)?, Some(bg))
            };
            let notes = bg.map_or_else(Vec::new, |bg| {
                sample
                    .notes
                    .iter()
                    .map(|n| format!("{}: {n}", bg.path.display()))
                    .collect()
            });
            let bg_name = bg.map(|bg| bg.name.clone());
            let entry = write_sample(dir, config, index, &sample, bg_name, &grading)?;
            let tile = (options.preview && (index as usize) < PREVIEW_IMAGES)
                .then(|| PreviewTile::new(&sample));
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(Progress::Wrote {
                done: n,
                total,
                stem: entry.stem.clone(),
                notes,
            });
            Ok((entry, tile))
        })
        .collect();
    let mut tiles = Vec::new();
    for r in results {
        let (entry, tile) = r?;
        manifest.images.push(entry);
        tiles.extend(tile);
    }
    // Files of a replaced dataset that this one does not rewrite.
    if let Some(old) = previous {
        let keep: std::collections::HashSet<&str> = manifest
            .images
            .iter()
            .flat_map(|i| [i.image.as_str(), i.mask.as_str()])
            .collect();
        for img in &old.images {
            for rel in [&img.image, &img.mask] {
                if !keep.contains(rel.as_str()) && is_plain_relative(rel) {
                    let _ = std::fs::remove_file(dir.join(rel));
                }
            }
        }
    }
    let preview = if options.preview && !tiles.is_empty() {
        let path = dir.join("preview.png");
        let (w, h, rgb) = render_preview(&tiles);
        io::write_png_rgb8(&path, w, h, &rgb)?;
        progress(Progress::Preview { path: path.clone() });
        Some(path)
    } else {
        None
    };
    manifest.complete = true;
    write_manifest(&manifest_path, &manifest)?;
    let mut by_severity = [0; 4];
    for i in &manifest.images {
        by_severity[i.severity as usize] += 1;
    }
    Ok(DatasetSummary {
        manifest: manifest_path,
        preview,
        images: manifest.images.len(),
        negatives: manifest.images.iter().filter(|i| i.negative).count(),
        by_severity,
    })
}

/// A path from an old manifest that stays inside the dataset directory.
fn is_plain_relative(rel: &str) -> bool {
    let p = Path::new(rel);
    p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Refuse a non-empty directory unless it holds the same dataset (same format, version and
/// configuration: regenerating it rewrites identical files) or `overwrite` is set. Returns
/// the old manifest when one was found, so that its stale files can be removed.
fn check_destination(
    dir: &Path,
    new: &Manifest,
    overwrite: bool,
) -> Result<Option<Manifest>, DatasetError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(fs_err(dir))?;
        return Ok(None);
    }
    let mut entries = std::fs::read_dir(dir).map_err(fs_err(dir))?;
    if entries.next().is_none() {
        return Ok(None);
    }
    let path = dir.join("manifest.json");
    let old: Option<Manifest> = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let same = old.as_ref().is_some_and(|o| {
        o.format == new.format
            && o.version == new.version
            && o.config == new.config
            && o.background == new.background
    });
    if same || overwrite {
        return Ok(old);
    }
    let what = match &old {
        Some(_) => "a synthetic dataset with another configuration".to_string(),
        None if path.exists() => "a manifest.json that is not a bacseg synth manifest".to_string(),
        None => "files that are not a bacseg synth dataset".to_string(),
    };
    Err(DatasetError::DifferentDataset {
        dir: dir.to_path_buf(),
        what,
    })
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), DatasetError> {
    let mut text = serde_json::to_string_pretty(manifest).map_err(|e| IoError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    io::write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())
    })?;
    Ok(())
}

fn write_sample(
    dir: &Path,
    config: &SynthConfig,
    index: u64,
    sample: &SynthSample,
    background: Option<String>,
    grading: &Grading,
) -> Result<ManifestImage, DatasetError> {
    let stem = stem(index);
    let image_rel = format!("images/{stem}.png");
    let mask_rel = format!("masks/{stem}.png");
    let (w, h) = (sample.image.width(), sample.image.height());
    io::write_png_gray16(&dir.join(&image_rel), w, h, sample.image.data())?;
    io::write_mask_png(&dir.join(&mask_rel), &sample.mask)?;
    let burden = measure(sample, config, grading);
    Ok(ManifestImage {
        index,
        stem,
        image: image_rel,
        mask: mask_rel,
        width: w,
        height: h,
        spacing_mm: sample.spacing_mm,
        bits_stored: sample.params.bits_stored,
        negative: sample.params.requested_severity.is_none(),
        severity: burden.grade.unwrap_or(Grade::None),
        calcified_vessels: sample.calcified_vessels,
        burden,
        background,
        params: sample.params.clone(),
    })
}

/// The true burden of a sample: what `bacseg quantify` measures on its mask (the sample's
/// own measurement, which describes its mask as generated, with its breast share added when
/// spacing and grading agree, as they do for every sample the generator makes).
pub fn measure(sample: &SynthSample, config: &SynthConfig, grading: &Grading) -> BacBurden {
    let mut spacing = config.pixel_spacing();
    spacing.row_mm = sample.spacing_mm;
    spacing.col_mm = sample.spacing_mm;
    let own = &sample.burden;
    if own.spacing == Some(spacing) && own.grading == (*grading).into() {
        return own.clone().with_breast(&sample.breast, sample.mask.size());
    }
    quantify::measure(
        &sample.mask,
        None,
        Some(spacing),
        Some(&sample.breast),
        grading,
    )
}

/// A downscaled image, the same with the mask in red, and a 1:1 crop where the mask is
/// densest (the breast's centre for a negative), for the preview montage.
#[derive(Debug, Clone)]
pub struct PreviewTile {
    small: Raster<u8>,
    small_mask: Raster<u8>,
    crop: Raster<u8>,
    crop_mask: Mask,
}

/// Height of a montage row, px.
const TILE: usize = 512;

impl PreviewTile {
    pub fn new(sample: &SynthSample) -> Self {
        let img = &sample.image;
        let maxv = ((1u32 << sample.params.bits_stored) - 1) as f32;
        let grey = |v: u16| (f32::from(v) / maxv * 255.0).round().clamp(0.0, 255.0) as u8;
        let f = img
            .height()
            .div_ceil(TILE)
            .max(img.width().div_ceil(TILE))
            .max(1);
        let (sw, sh) = (img.width().div_ceil(f), img.height().div_ceil(f));
        let mut small = Raster::filled(sw, sh, 0u8);
        let mut small_mask = Raster::filled(sw, sh, 0u8);
        for y in 0..sh {
            for x in 0..sw {
                let (mut sum, mut n, mut m) = (0f32, 0f32, 0f32);
                for yy in y * f..((y + 1) * f).min(img.height()) {
                    for xx in x * f..((x + 1) * f).min(img.width()) {
                        sum += f32::from(*img.get(xx, yy));
                        m += f32::from(u8::from(*sample.mask.get(xx, yy)));
                        n += 1.0;
                    }
                }
                *small.get_mut(x, y) = grey((sum / n.max(1.0)) as u16);
                // Any calcified pixel in the block shows, however thin the vessel.
                *small_mask.get_mut(x, y) = if m > 0.0 { 255 } else { 0 };
            }
        }
        let (cx, cy) = densest_block(&sample.mask).unwrap_or_else(|| centroid(&sample.breast));
        let x0 = cx
            .saturating_sub(TILE / 2)
            .min(img.width().saturating_sub(TILE));
        let y0 = cy
            .saturating_sub(TILE / 2)
            .min(img.height().saturating_sub(TILE));
        let crop = img.crop(x0, y0, TILE, TILE, 0).map(|&v| grey(v));
        let crop_mask = sample.mask.crop(x0, y0, TILE, TILE, false);
        Self {
            small,
            small_mask,
            crop,
            crop_mask,
        }
    }
}

fn densest_block(mask: &Mask) -> Option<(usize, usize)> {
    let b = 128;
    let (bw, bh) = (mask.width().div_ceil(b), mask.height().div_ceil(b));
    let mut counts = vec![0usize; bw * bh];
    for y in 0..mask.height() {
        for (x, &m) in mask.row(y).iter().enumerate() {
            if m {
                counts[(y / b) * bw + x / b] += 1;
            }
        }
    }
    let (i, &c) = counts
        .iter()
        .enumerate()
        .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))?;
    (c > 0).then_some(((i % bw) * b + b / 2, (i / bw) * b + b / 2))
}

fn centroid(mask: &Mask) -> (usize, usize) {
    let (mut sx, mut sy, mut n) = (0usize, 0usize, 0usize);
    for y in 0..mask.height() {
        for (x, &m) in mask.row(y).iter().enumerate() {
            if m {
                sx += x;
                sy += y;
                n += 1;
            }
        }
    }
    match (sx.checked_div(n), sy.checked_div(n)) {
        (Some(x), Some(y)) => (x, y),
        _ => (mask.width() / 2, mask.height() / 2),
    }
}

/// Lay the tiles out one image per row: [image | image with mask in red | 1:1 crop | crop
/// with mask outline]. Returns (width, height, RGB bytes).
pub fn render_preview(tiles: &[PreviewTile]) -> (usize, usize, Vec<u8>) {
    let gap = 8;
    let sw = tiles.iter().map(|t| t.small.width()).max().unwrap_or(0);
    let width = 2 * sw + 2 * TILE + 5 * gap;
    let height = tiles.len() * (TILE + gap) + gap;
    let mut rgb = vec![40u8; width * height * 3];
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < width && y < height {
            rgb[(y * width + x) * 3..][..3].copy_from_slice(&c);
        }
    };
    for (row, t) in tiles.iter().enumerate() {
        let y0 = gap + row * (TILE + gap);
        let cols = [gap, 2 * gap + sw, 3 * gap + 2 * sw, 4 * gap + 2 * sw + TILE];
        for y in 0..t.small.height() {
            for x in 0..t.small.width() {
                let g = *t.small.get(x, y);
                put(cols[0] + x, y0 + y, [g; 3]);
                let red = *t.small_mask.get(x, y) > 0;
                put(
                    cols[1] + x,
                    y0 + y,
                    if red { [255, 40, 40] } else { [g; 3] },
                );
            }
        }
        for y in 0..TILE {
            for x in 0..TILE {
                let g = *t.crop.get(x, y);
                put(cols[2] + x, y0 + y, [g; 3]);
                let m = *t.crop_mask.get(x, y);
                let edge = m
                    && [(0i64, 1i64), (1, 0), (0, -1), (-1, 0)]
                        .iter()
                        .any(|&(dx, dy)| {
                            let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                            nx < 0
                                || ny < 0
                                || nx >= TILE as i64
                                || ny >= TILE as i64
                                || !*t.crop_mask.get(nx as usize, ny as usize)
                        });
                put(
                    cols[3] + x,
                    y0 + y,
                    if edge { [255, 40, 40] } else { [g; 3] },
                );
            }
        }
    }
    (width, height, rgb)
}
