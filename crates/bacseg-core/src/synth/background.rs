//! Inserting synthetic BAC into real BAC-free mammograms (`--background`): data
//! augmentation for users with few annotations.
//!
//! The vessels are planned exactly as on a phantom, on a geometry derived from the breast
//! mask of [`crate::preprocess::breast_mask`], and only inside that mask. The blend is
//! physical: attenuation adds in the log domain. A "for presentation" mammogram is close to
//! linear in log exposure, so the added attenuation is scaled into grey values with the
//! image's own contrast (the spread of its in-breast grey values, taken to span the
//! fat-to-dense attenuation range of a typical compressed breast) and added.

use std::path::{Path, PathBuf};

use super::geometry::{Geometry, MU_CALCIUM};
use super::stroke::StrokeCanvas;
use super::vessels::{self, MASK_LEVEL_MM};
use super::{Stream, SynthConfig, SynthParams, SynthSample, stream_rng};
use crate::io::{self, IoError};
use crate::mammogram::{Laterality, View};
use crate::preprocess::{BreastMaskConfig, breast_mask};
use crate::raster::{Mask, Raster};

/// Attenuation (mu x path) assumed to separate the 2nd and 98th percentiles of in-breast grey
/// values: glandular minus fat (0.034 /mm) over about 35 mm of a 50 mm compressed breast.
const BREAST_ATTENUATION_SPAN: f32 = 1.2;

/// A real mammogram to insert calcified vessels into; read when it is used, so that a large
/// directory is never held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundImage {
    /// File name, as recorded in the manifest.
    pub name: String,
    pub path: PathBuf,
}

/// A background directory or file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("{}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no DICOM, PNG or TIFF file to use as background", .0.display())]
    Empty(PathBuf),
    #[error(transparent)]
    Image(#[from] IoError),
    #[error("{}: no breast found (the breast mask is empty)", .0.display())]
    NoBreast(PathBuf),
}

/// The mammograms of `dir` (DICOM, PNG, TIFF, recognised by content), sorted by name so that
/// image `i` always gets the same background.
pub fn load_backgrounds(dir: &Path) -> Result<Vec<BackgroundImage>, BackgroundError> {
    let rd = std::fs::read_dir(dir).map_err(|source| BackgroundError::ReadDir {
        dir: dir.into(),
        source,
    })?;
    let mut out: Vec<BackgroundImage> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && io::detect_format(p).is_ok())
        .map(|path| BackgroundImage {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.is_empty() {
        return Err(BackgroundError::Empty(dir.into()));
    }
    Ok(out)
}

/// Image `index` of a `--background` dataset: `bg` with the calcified vessels that
/// `config.plan(index)` asks for (none for a negative). The output keeps the background's
/// size; grey values are rescaled from its value range to 16 bits.
pub fn insert_into_background(
    bg: &BackgroundImage,
    config: &SynthConfig,
    index: u64,
) -> Result<SynthSample, BackgroundError> {
    let m = io::load(&bg.path)?;
    let (width, height) = (m.width(), m.height());
    let breast = breast_mask(&m.pixels, &BreastMaskConfig::default());
    if breast.count() == 0 {
        return Err(BackgroundError::NoBreast(bg.path.clone()));
    }
    let mm = m
        .spacing
        .map_or(config.spacing_mm, |s| 0.5 * (s.row_mm + s.col_mm));
    // Chest wall on the side where the breast touches the image border more.
    let touches = |x: usize| (0..height).filter(|&y| *breast.get(x, y)).count();
    let flip = touches(width - 1) > touches(0);
    let geom = Geometry::from_mask(&breast, mm, flip);
    let severity = config.plan(index);
    let n = width * height;
    let mut calcium = vec![0.0f32; n];
    let mut soft = vec![0.0f32; n];
    let mut canvas = StrokeCanvas::new(width, height);
    let out_x = |x: usize| if flip { width - 1 - x } else { x };
    let spacing = crate::mammogram::PixelSpacing {
        row_mm: mm,
        col_mm: mm,
        source: crate::mammogram::SpacingSource::User,
    };
    let vessels::Rendered {
        trees,
        visible: calcified_vessels,
        mask,
        burden,
    } = vessels::plan_and_render(
        &mut stream_rng(config.seed, index, Stream::Vessels),
        &geom,
        severity,
        spacing,
        &mut canvas,
        &mut calcium,
        &mut soft,
        // Only inside the breast mask, whatever the geometry's approximation says.
        |calcium| {
            Mask::from_fn(width, height, |x, y| {
                let o = y * width + x;
                let p = y * width + out_x(x);
                breast.data()[o] && calcium[p] >= MASK_LEVEL_MM
            })
        },
    );
    drop(canvas);

    let mut added = vec![0.0f32; n];
    for y in 0..height {
        for x in 0..width {
            let p = y * width + x;
            let o = y * width + out_x(x);
            if breast.data()[o] {
                added[o] = MU_CALCIUM * calcium[p] + soft[p];
            }
        }
    }
    drop(calcium);
    drop(soft);
    blur3(&mut added, width, height);

    let scale = grey_per_attenuation(&m.pixels, &breast);
    let (lo, hi) = m.value_range;
    let span = (hi - lo).max(1.0);
    let image = Raster::from_fn(width, height, |x, y| {
        let p = y * width + x;
        let v = (m.pixels.data()[p] + scale * added[p]).clamp(lo, hi);
        super::round_u16((v - lo) / span * 65535.0)
    });
    let view = m.view.clone().unwrap_or(View::Cc);
    let laterality = m.laterality.unwrap_or(if flip {
        Laterality::Right
    } else {
        Laterality::Left
    });
    let to_out = |v: [f64; 2]| {
        [
            if flip {
                width as f64 - 1.0 - v[0]
            } else {
                v[0]
            },
            v[1],
        ]
    };
    let mut vessel_params: Vec<_> = trees.iter().map(|t| t.params.clone()).collect();
    for v in &mut vessel_params {
        v.start_px = to_out(v.start_px);
    }
    Ok(SynthSample {
        image,
        mask,
        breast,
        params: SynthParams {
            view,
            laterality,
            bits_stored: 16,
            requested_severity: severity,
            phantom: None,
            vessels: vessel_params,
        },
        spacing_mm: mm,
        calcified_vessels,
        burden,
        notes: m.notes.clone(),
    })
}

/// Grey values per unit of attenuation: the 2nd-98th percentile spread of the breast's grey
/// values over [`BREAST_ATTENUATION_SPAN`].
fn grey_per_attenuation(pixels: &Raster<f32>, breast: &Mask) -> f32 {
    let mut v: Vec<f32> = pixels
        .data()
        .iter()
        .zip(breast.data())
        .filter(|&(_, &b)| b)
        .map(|(&p, _)| p)
        .step_by(7)
        .collect();
    if v.len() < 2 {
        return 1.0;
    }
    v.sort_by(f32::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    ((at(0.98) - at(0.02)) / BREAST_ATTENUATION_SPAN).max(1e-3)
}

/// [1 2 1]/4 blur in both directions (the detector's unsharpness), so that an inserted
/// vessel is no sharper than the anatomy around it.
fn blur3(buf: &mut [f32], width: usize, height: usize) {
    let mut tmp = vec![0.0f32; buf.len()];
    for (src, dst) in buf.chunks(width).zip(tmp.chunks_mut(width)) {
        super::phantom::blur_row(src, dst);
    }
    for y in 0..height {
        let (a, b) = (y.saturating_sub(1), (y + 1).min(height - 1));
        for x in 0..width {
            buf[y * width + x] =
                0.25 * tmp[a * width + x] + 0.5 * tmp[y * width + x] + 0.25 * tmp[b * width + x];
        }
    }
}
