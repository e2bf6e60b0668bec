//! The breast phantom and image formation: outline against the chest wall (CC, or MLO with
//! pectoral muscle), compressed thickness with a rounded edge and skin, fibroglandular
//! density from a 1/f^beta field, strand networks, detector blur, Poisson and electronic
//! noise, and a "for presentation" mapping to 12-14 bits.
//!
//! Geometry is built in a canonical frame with the chest wall at x = 0; right breasts are
//! mirrored when the image is written, so that the chest wall is on the image's left for a
//! left breast and on its right for a right breast (the usual back-to-back hanging).

use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::distractors::{self, DistractorCounts};
use super::geometry::{Geometry, MU_CALCIUM, MU_FAT, MU_GLAND, MU_SKIN, MU_SOFT_EXCESS};
use super::stroke::StrokeCanvas;
use super::texture::{self, Grid, Tap};
use super::vessels::{self, MASK_LEVEL_MM, smoothstep};
use super::{
    Severity, Stream, SynthConfig, SynthParams, SynthSample, fast_exp, hash_normal, labels,
    round_u16, stream_rng,
};
use crate::mammogram::{Laterality, View};
use crate::raster::{Mask, Raster};

/// BI-RADS breast composition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Density {
    /// Almost entirely fatty.
    A,
    /// Scattered fibroglandular density.
    B,
    /// Heterogeneously dense.
    C,
    /// Extremely dense.
    D,
}

/// What the manifest records about the phantom of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhantomParams {
    /// Chest wall to nipple, mm.
    pub breast_depth_mm: f64,
    /// Compressed thickness, mm.
    pub thickness_mm: f64,
    /// Width of the uncompressed rim where the thickness falls to 0, mm.
    pub edge_radius_mm: f64,
    pub skin_mm: f64,
    pub density: Density,
    /// Exponent of the parenchymal power spectrum 1/f^beta.
    pub parenchyma_beta: f64,
    /// Typical spacing of the strand network (Cooper's ligaments, trabeculae), mm.
    pub strand_wavelength_mm: f64,
    /// Nipple position, output pixel coordinates.
    pub nipple_px: [f64; 2],
    pub pectoral_muscle: bool,
    pub distractors: DistractorCounts,
    /// Unattenuated quanta per pixel (sets the Poisson noise).
    pub quanta_per_pixel: f64,
    /// Electronic noise, quanta per pixel (standard deviation).
    pub electronic_noise: f64,
    /// Fraction of the thickness fall-off removed by the "for presentation" processing.
    pub periphery_equalisation: f64,
    /// Burned-in label text, if any.
    pub label: Option<String>,
}

/// The coarse-grid fields sampled per pixel: parenchyma, its modulation, two strand
/// networks (value and gradient) and the fibroglandular envelope.
struct Fields {
    grid: Grid<5>,
    taps_x: Vec<Tap>,
    taps_y: Vec<Tap>,
}

const CH_DENSITY: usize = 0;
const CH_MOD: usize = 1;
const CH_FIBRE_A: usize = 2;
const CH_FIBRE_B: usize = 3;
const CH_ENV: usize = 4;

fn build_fields(
    rng: &mut impl Rng,
    geom: &Geometry,
    beta: f64,
    strand_mm: f64,
    density: Density,
) -> Fields {
    let (n, cell) = texture::grid_geometry(geom.width, geom.height);
    let cell_mm = cell as f64 * geom.mm_per_px;
    // Parenchyma is mildly elongated along the chest wall-nipple axis.
    let axis =
        f64::from(geom.nipple[1] - geom.height as f32 * 0.5).atan2(f64::from(geom.nipple[0])) * 0.6;
    let f0 = 1.0 / 40.0;
    let aniso = rng.random_range(1.2..1.8);
    let [dens, modu] = texture::field_pair(rng, n, cell_mm, |fx, fy| {
        let f = texture::anisotropic(fx, fy, axis, aniso);
        (f * f + f0 * f0).powf(-beta / 4.0)
    });
    // Fibres (trabeculae, ligaments, ducts) converge on the nipple: synthesise a strongly
    // anisotropic band-pass field in (radius, arc) coordinates around the nipple, elongated
    // along the radius, then resample it onto the image grid. Its positive lobes are long,
    // roughly radial streaks of varying width and contrast that fade out at their ends.
    let fc = 1.0 / strand_mm;
    // Elongation of the streaks; long straight bright streaks are what models trained on the
    // phantom confused with calcified vessels, so they stay moderate and are bent below.
    let ratio = rng.random_range(8.0..14.0);
    let [polar_a, polar_b] = texture::field_pair(rng, n, cell_mm, |fx, fy| {
        let f = texture::anisotropic(fx, fy, 0.0, ratio).max(1e-9);
        let l = (f / fc).ln();
        (-l * l / (2.0 * 0.5 * 0.5)).exp()
    });
    let r_ref = f64::from(geom.depth_px) * 0.6;
    let bend = rng.random_range(0.08..0.16);
    let fine = rng.random_range(0.4..0.6f32);
    let mut net_a = vec![0.0f32; n * n];
    let mut net_b = vec![0.0f32; n * n];
    for gy in 0..n {
        for gx in 0..n {
            let (x, y) = (
                (gx as f32 + 0.5) * cell as f32,
                (gy as f32 + 0.5) * cell as f32,
            );
            let (dx, dy) = (f64::from(geom.nipple[0] - x), f64::from(y - geom.nipple[1]));
            let r = (dx * dx + dy * dy).sqrt();
            // The low-frequency modulation field bends the streaks: trabeculae curve.
            let theta = dy.atan2(dx) + bend * f64::from(modu[gy * n + gx]);
            let (u, v) = (
                (r / cell as f64) as f32,
                (theta * r_ref / cell as f64) as f32,
            );
            net_a[gy * n + gx] = texture::sample_periodic(&polar_a, n, u, v);
            // The fine family is narrower but about as long.
            net_b[gy * n + gx] =
                texture::sample_periodic(&polar_b, n, u * 0.8, v / fine + 0.5 * n as f32);
        }
    }
    // Fibroglandular envelope: a rounded blob behind the nipple, larger when denser.
    let spread = match density {
        Density::A => 0.25,
        Density::B => 0.33,
        Density::C => 0.45,
        Density::D => 0.6,
    };
    let cx = geom.nipple[0] * rng.random_range(0.45..0.7);
    let cy = geom.nipple[1] + geom.depth_px * rng.random_range(-0.15..0.1);
    let sx = geom.depth_px * spread * rng.random_range(0.85..1.15);
    let sy = geom.depth_px * spread * rng.random_range(0.9..1.4);
    let tilt = axis as f32 + rng.random_range(-0.3..0.3);
    let flat = rng.random_range(0.0..0.6f32);
    let (sin, cos) = tilt.sin_cos();
    let env: Vec<f32> = (0..n * n)
        .map(|i| {
            let (gx, gy) = ((i % n) as f32 + 0.5, (i / n) as f32 + 0.5);
            let (x, y) = (gx * cell as f32 - cx, gy * cell as f32 - cy);
            let (a, b) = ((x * cos + y * sin) / sx, (-x * sin + y * cos) / sy);
            let r2 = a * a + b * b;
            super::fast_exp(-r2 * (1.0 + flat * r2))
        })
        .collect();
    let grid = Grid::new(n, cell, [&dens, &modu, &net_a, &net_b, &env]);
    let taps_x = grid.taps(geom.width);
    let taps_y = grid.taps(geom.height);
    Fields {
        grid,
        taps_x,
        taps_y,
    }
}

/// Row buffers of the composition, one set per rayon task.
struct RowScratch {
    /// Column-blurred tissue attenuation, then (in `l`) also blurred along the row.
    column: Vec<f32>,
    l: Vec<f32>,
    /// Attenuation removed by the periphery equalisation.
    flat: Vec<f32>,
    noise: Vec<f32>,
    values: Vec<u16>,
    grid_row: Vec<[f32; 5]>,
    fields: Vec<[f32; 5]>,
}

impl RowScratch {
    fn new(width: usize) -> Self {
        Self {
            column: vec![0.0; width],
            l: vec![0.0; width],
            flat: vec![0.0; width],
            noise: vec![0.0; width],
            values: vec![0; width],
            grid_row: Vec::new(),
            fields: vec![[0.0; 5]; width],
        }
    }
}

/// [1 2 1]/4 along a row with replicated ends: the detector's unsharpness (focal spot and
/// scintillator spread) of about 0.7 px sigma, together with the same down the columns.
pub(crate) fn blur_row(src: &[f32], dst: &mut [f32]) {
    let w = src.len();
    if w < 2 {
        dst.copy_from_slice(src);
        return;
    }
    dst[0] = 0.75 * src[0] + 0.25 * src[1];
    dst[w - 1] = 0.25 * src[w - 2] + 0.75 * src[w - 1];
    let inner = dst[1..w - 1]
        .iter_mut()
        .zip(src.windows(3))
        .map(|(d, s)| (d, s[0], s[1], s[2]));
    for (d, a, b, c) in inner {
        *d = 0.25 * a + 0.5 * b + 0.25 * c;
    }
}

/// Generate one image (see [`super::generate`]); `severity` is `None` for a BAC-free image.
pub(crate) fn generate(
    config: &SynthConfig,
    index: u64,
    severity: Option<Severity>,
) -> SynthSample {
    let (width, height) = (config.size.width, config.size.height);
    let mm = config.spacing_mm;
    let mut rng = stream_rng(config.seed, index, Stream::Geometry);
    let view = match config.view {
        super::ViewChoice::Cc => View::Cc,
        super::ViewChoice::Mlo => View::Mlo,
        super::ViewChoice::Mixed => {
            if rng.random_bool(0.5) {
                View::Cc
            } else {
                View::Mlo
            }
        }
    };
    let laterality = if rng.random_bool(0.5) {
        Laterality::Left
    } else {
        Laterality::Right
    };
    let bits = config
        .bits
        .unwrap_or(if rng.random_bool(0.5) { 12 } else { 14 });
    let geom = Geometry::random(&mut rng, width, height, mm, &view);
    let density = match rng.random_range(0..20) {
        0..=2 => Density::A,
        3..=10 => Density::B,
        11..=17 => Density::C,
        _ => Density::D,
    };
    let beta = rng.random_range(2.7..3.3);
    let strand_mm = rng.random_range(2.5..5.0);
    let quanta = rng.random_range(6000.0..20000.0f64);
    let electronic = rng.random_range(1.0..4.0f64);
    let equalisation = rng.random_range(0.8..0.92f64);
    let fat_level = rng.random_range(0.12..0.22f32);
    let strand_contrast = rng.random_range(0.05..0.11f32);
    let density_bias = match density {
        Density::A => rng.random_range(1.3..1.8),
        Density::B => rng.random_range(0.7..1.2),
        Density::C => rng.random_range(0.0..0.5),
        Density::D => rng.random_range(-0.8..-0.3),
    };
    let fields = build_fields(
        &mut stream_rng(config.seed, index, Stream::Texture),
        &geom,
        beta,
        strand_mm,
        density,
    );
    let n = width * height;
    let mut soft = vec![0.0f32; n];
    let mut calcium = vec![0.0f32; n];
    let mut canvas = StrokeCanvas::new(width, height);
    // Calcified vessels first, straight into the tissue buffers (a re-plan, when the mask
    // does not grade as requested, clears them), then the distractors on top: each has its
    // own random stream, so the order changes nothing but the buffers needed.
    let flip = laterality == Laterality::Right;
    let out_x = |x: usize| if flip { width - 1 - x } else { x };
    let vessels::Rendered {
        trees,
        visible: calcified_vessels,
        mask,
        burden,
    } = vessels::plan_and_render(
        &mut stream_rng(config.seed, index, Stream::Vessels),
        &geom,
        severity,
        config.pixel_spacing(),
        &mut canvas,
        &mut calcium,
        &mut soft,
        // The mask is taken here, before blur and noise, from the same numbers as the image.
        |calcium| {
            let mut mask = Mask::filled(width, height, false);
            for (y, row) in calcium.chunks(width).enumerate() {
                let mrow = mask.row_mut(y);
                for (x, &c) in row.iter().enumerate() {
                    if c >= MASK_LEVEL_MM {
                        mrow[out_x(x)] = true;
                    }
                }
            }
            mask
        },
    );
    let counts = distractors::render(
        &mut stream_rng(config.seed, index, Stream::Distractors),
        &geom,
        &mut canvas,
        &mut soft,
    );
    drop(canvas);
    for (s, c) in soft.iter_mut().zip(&calcium) {
        *s += MU_CALCIUM * c;
    }
    drop(calcium);

    let maxv = f32::from((1u16 << bits) - 1);
    let noise_seed: u64 = stream_rng(config.seed, index, Stream::Noise).random();
    let t_mm = geom.thickness_mm;
    let eq = equalisation as f32;
    // "For presentation" curve: a linear toe up to the fat level (so that the thinning rim
    // fades smoothly to the black background), then a shoulder that keeps dense tissue and
    // calcium apart instead of clipping them.
    let d_fat = (1.0 - eq) * MU_FAT * t_mm;
    let d_dense = (MU_GLAND - MU_FAT) * t_mm * 0.7;
    let dense_level = rng.random_range(0.68..0.8f32);
    let shoulder = d_dense / -((1.0 - (dense_level - fat_level) / (1.0 - fat_level)).ln());
    // Both branches are computed and one selected, so that rows of pixels vectorise.
    let (inv_d_fat, inv_shoulder) = (1.0 / d_fat, 1.0 / shoulder);
    let present = move |dd: f32| {
        let toe = fat_level * dd.max(0.0) * inv_d_fat;
        let knee = fat_level + (1.0 - fat_level) * (1.0 - fast_exp((d_fat - dd) * inv_shoulder));
        if dd <= d_fat { toe } else { knee }
    };
    let mmf = mm as f32;
    let q0 = quanta as f32;
    let e_noise = electronic as f32;
    let mut image = Raster::filled(width, height, 0u16);
    let mut breast = Mask::filled(width, height, false);
    let e2 = e_noise * e_noise;
    // The muscle's border, inverse ramp and attenuation (none: zero attenuation).
    let pect = geom
        .pectoral
        .map(|p| (p, 1.0 / p.ramp_px, MU_SOFT_EXCESS * p.thickness_mm));
    // Each row in stages over row buffers, so that the arithmetic vectorises: the detector
    // blur ([1 2 1]/4 down the columns, then along the row), the grid fields, the tissue
    // inside the breast (a prefix of the canonical row: distance to the skin falls with x),
    // the noise, then detection and presentation.
    image
        .data_mut()
        .par_chunks_mut(width)
        .zip(breast.data_mut().par_chunks_mut(width))
        .enumerate()
        .for_each_init(
            || RowScratch::new(width),
            |rs, (y, (out, brow))| {
                let yc = y as f32 + 0.5;
                let up = &soft[y.saturating_sub(1) * width..][..width];
                let mid = &soft[y * width..][..width];
                let down = &soft[(y + 1).min(height - 1) * width..][..width];
                for (((v, a), b), c) in rs.column.iter_mut().zip(up).zip(mid).zip(down) {
                    *v = 0.25 * a + 0.5 * b + 0.25 * c;
                }
                blur_row(&rs.column, &mut rs.l);
                let breast_end = geom.breast_run(y);
                let (edge, slope_mm) = geom.row_distance(y);
                let (pect_x, inv_ramp, pect_mu) = match pect {
                    Some((p, inv, mu)) => (p.border(yc), inv, mu),
                    None => (0.0, 1.0, 0.0),
                };
                fields.grid.row_into(fields.taps_y[y], &mut rs.grid_row);
                for (x, f) in rs.fields[..breast_end].iter_mut().enumerate() {
                    *f = Grid::lerp(&rs.grid_row, fields.taps_x[x]);
                }
                let tissue_part = rs.l[..breast_end]
                    .iter_mut()
                    .zip(&mut rs.flat[..breast_end])
                    .zip(&rs.fields[..breast_end]);
                for (x, ((l, flat), f)) in tissue_part.enumerate() {
                    // Through i32, which converts in vector registers (rows are < 2^31).
                    let xc = x as i32 as f32 + 0.5;
                    let d = (edge - xc) * slope_mm;
                    let (skin, tissue, total) = geom.paths(d);
                    // Subcutaneous and retromammary fat carry no glandular tissue.
                    let fat_rims = smoothstep(2.0, 14.0, d) * smoothstep(2.0, 18.0, xc * mmf);
                    let fa = (f[CH_FIBRE_A] - 0.6).max(0.0);
                    let fb = (f[CH_FIBRE_B] - 0.8).max(0.0);
                    // Glandular tissue follows the fibres, so dense areas are streaky too.
                    let z = (f[CH_DENSITY] + 0.35 * f[CH_FIBRE_A] - density_bias) / 1.2;
                    let sig = 0.5 + 0.5 * z / (1.0 + z.abs());
                    let g = (f[CH_ENV] * fat_rims * sig * 1.3).min(1.0);
                    let vis = smoothstep(-1.5, 1.0, f[CH_MOD]);
                    let strands = strand_contrast
                        * (fa * fa * (0.3 + 0.7 * vis) + 0.8 * fb * fb)
                        * (1.0 - 0.4 * g)
                        * (tissue / t_mm).min(1.0);
                    // The pectoral muscle, 0 right of its border.
                    let inside = ((pect_x - xc) * inv_ramp).clamp(0.0, 1.0).sqrt();
                    *l += MU_FAT * tissue
                        + (MU_GLAND - MU_FAT) * g * tissue
                        + MU_SKIN * skin
                        + strands
                        + pect_mu * inside * (0.9 + 0.1 * f[CH_MOD]);
                    *flat = eq * MU_FAT * total;
                }
                rs.flat[breast_end..].fill(0.0);
                let row0 = (y * width) as u64;
                for (x, n) in rs.noise.iter_mut().enumerate() {
                    *n = hash_normal(noise_seed, row0 + x as u64);
                }
                // Quanta reaching the detector: Poisson (as its Gaussian limit) plus
                // electronic noise, then back to the log domain and the presentation curve.
                // (Outside the breast with nothing in the beam this is the direct beam's
                // noise: l = 0, q = q0.)
                let pixels = rs.values.iter_mut().zip(&rs.l).zip(&rs.flat).zip(&rs.noise);
                for (((v, &l), &flat), &n) in pixels {
                    let q = q0 * fast_exp(-l);
                    let sigma = ((q + e2).sqrt() / q.max(1.0)).min(0.5);
                    let p = present(l + sigma * n - flat);
                    *v = round_u16((p * maxv).min(maxv));
                }
                if flip {
                    for (o, &v) in out.iter_mut().rev().zip(&rs.values) {
                        *o = v;
                    }
                    brow[width - breast_end..].fill(true);
                } else {
                    out.copy_from_slice(&rs.values);
                    brow[..breast_end].fill(true);
                }
            },
        );
    drop(soft);
    let mut lrng = stream_rng(config.seed, index, Stream::Labels);
    let label = labels::draw(
        &mut lrng,
        &mut image,
        &breast,
        &laterality,
        &view,
        maxv as u16,
        mm,
    );
    let to_out = |p: [f32; 2]| {
        let x = f64::from(p[0]) - 0.5;
        [
            if flip { width as f64 - 1.0 - x } else { x },
            f64::from(p[1]) - 0.5,
        ]
    };
    let mut vessel_params: Vec<_> = trees.iter().map(|t| t.params.clone()).collect();
    for v in &mut vessel_params {
        let [x, y] = v.start_px;
        v.start_px = to_out([(x + 0.5) as f32, (y + 0.5) as f32]);
    }
    let phantom = PhantomParams {
        breast_depth_mm: f64::from(geom.depth_px) * mm,
        thickness_mm: f64::from(geom.thickness_mm),
        edge_radius_mm: f64::from(geom.edge_radius_mm),
        skin_mm: f64::from(geom.skin_mm),
        density,
        parenchyma_beta: beta,
        strand_wavelength_mm: strand_mm,
        nipple_px: to_out(geom.nipple),
        pectoral_muscle: geom.pectoral.is_some(),
        distractors: counts,
        quanta_per_pixel: quanta,
        electronic_noise: electronic,
        periphery_equalisation: equalisation,
        label,
    };
    SynthSample {
        image,
        mask,
        breast,
        params: SynthParams {
            view,
            laterality,
            bits_stored: bits,
            requested_severity: severity,
            phantom: Some(phantom),
            vessels: vessel_params,
        },
        spacing_mm: mm,
        calcified_vessels,
        burden,
        notes: Vec::new(),
    }
}
