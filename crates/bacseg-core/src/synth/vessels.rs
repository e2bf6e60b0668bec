//! Calcified arteries (the BAC) and the tortuous centrelines shared with non-calcified
//! vessels and ducts.
//!
//! An artery is a cylinder of soft tissue along a smooth random centreline; along parts of it
//! (runs separated by gaps) its wall carries calcium. The wall is a shell of outer radius R
//! and inner radius rho*R, so its projected path length is `2 sqrt(R^2 - d^2) - 2 sqrt(r^2 -
//! d^2)`: thin shells give the "tram-track" look (two bright walls), thick ones a solid
//! band. Calcium coverage varies along the vessel (beads) and between its two sides.
//!
//! **Mask rule**: a pixel is BAC exactly when the calcium path length rendered at its centre
//! (before detector blur and noise) is at least [`MASK_LEVEL_MM`]. The image is made from the
//! same numbers, so mask and image always agree.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Severity;
use super::geometry::{Geometry, MU_SOFT_EXCESS};
use super::normal;
use super::stroke::{Polyline, StrokeCanvas};

/// Calcium path length (mm, at a pixel centre, before blur and noise) from which a pixel is
/// in the BAC mask. 0.05 mm of hydroxyapatite is about a tenth of a typical calcified wall's
/// projected thickness: faint enough that the mask covers what a reader sees, firm enough
/// that isolated sub-visible specks of the rendering are not labelled.
pub const MASK_LEVEL_MM: f32 = 0.05;

/// Walls closer than this to the skin carry no calcium, so that every mask pixel lies well
/// inside the breast.
const CALCIUM_SKIN_MARGIN_MM: f32 = 3.0;

/// How a random centreline bends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkStyle {
    pub step_px: f32,
    /// Standard deviation (rad/mm) and correlation length (mm) of the slowly varying curvature.
    pub curvature_sd: f64,
    pub curvature_mm: f64,
    /// Rate (per mm) at which the heading returns towards `target_heading`.
    pub pull: f64,
    pub target_heading: f64,
    /// Amplitude (rad) and wavelength range (mm) of the small-scale tortuosity.
    pub wiggle_rad: f64,
    pub wiggle_mm: (f64, f64),
    /// The walk stops this close to the skin.
    pub margin_mm: f32,
}

/// A smooth random centreline from `start` with initial `heading`, at most `length_mm` long;
/// it stops early at the skin or the image border.
pub(crate) fn walk(
    rng: &mut impl Rng,
    geom: &Geometry,
    start: [f32; 2],
    heading: f64,
    length_mm: f64,
    style: &WalkStyle,
) -> Polyline {
    let mm = geom.mm_per_px;
    let step_mm = f64::from(style.step_px) * mm;
    let steps = (length_mm / step_mm).ceil().max(1.0) as usize;
    // Tortuosity: a heading offset that is a twice-filtered random walk (an
    // Ornstein-Uhlenbeck process smoothed once more), so that it bends irregularly yet has
    // no kinks at pixel scale.
    let wiggle_len = rng.random_range(style.wiggle_mm.0..=style.wiggle_mm.1);
    let wa = (step_mm / wiggle_len).min(1.0);
    let wkick = style.wiggle_rad * (2.0 * wa).sqrt() * std::f64::consts::SQRT_2;
    let (mut w1, mut w2) = (0.0f64, 0.0f64);
    let mut line = Polyline::default();
    line.push(start);
    let (mut x, mut y) = (f64::from(start[0]), f64::from(start[1]));
    let (mut theta, mut kappa) = (heading, 0.0f64);
    let decay = (step_mm / style.curvature_mm).min(1.0);
    let kick = style.curvature_sd * (2.0 * decay).sqrt();
    for _ in 0..steps {
        kappa = kappa * (1.0 - decay) + kick * normal(rng);
        let mut dtheta = angle_diff(style.target_heading, theta);
        dtheta = dtheta.clamp(-1.0, 1.0);
        theta += (kappa + style.pull * dtheta) * step_mm;
        w1 = w1 * (1.0 - wa) + wkick * normal(rng);
        w2 += wa * (w1 - w2);
        let dir = theta + w2;
        let (nx, ny) = (
            x + dir.cos() * f64::from(style.step_px),
            y + dir.sin() * f64::from(style.step_px),
        );
        if geom.dist_mm(nx as f32, ny as f32) < style.margin_mm {
            break;
        }
        x = nx;
        y = ny;
        line.push([x as f32, y as f32]);
    }
    line
}

/// `a - b` wrapped to (-pi, pi].
pub(crate) fn angle_diff(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(std::f64::consts::TAU);
    if d > std::f64::consts::PI {
        d - std::f64::consts::TAU
    } else {
        d
    }
}

/// Smooth 1-D random function: values at knots `spacing` apart, interpolated with a
/// smoothstep so that it has no corners.
#[derive(Debug, Clone)]
pub(crate) struct Profile1d {
    knots: Vec<f32>,
    spacing: f32,
}

impl Profile1d {
    pub fn new(len: f32, spacing: f32, mut value: impl FnMut() -> f32) -> Self {
        let spacing = spacing.max(0.5);
        let n = (len / spacing).ceil() as usize + 2;
        Self {
            knots: (0..n).map(|_| value()).collect(),
            spacing,
        }
    }

    pub fn at(&self, s: f32) -> f32 {
        let u = (s / self.spacing).max(0.0);
        let i = (u.floor() as usize).min(self.knots.len().saturating_sub(2));
        let f = (u - i as f32).clamp(0.0, 1.0);
        let f = f * f * (3.0 - 2.0 * f);
        let (a, b) = (
            self.knots[i],
            self.knots.get(i + 1).copied().unwrap_or(self.knots[i]),
        );
        a + f * (b - a)
    }
}

/// What the manifest records about one calcified vessel tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VesselParams {
    /// First point of the trunk's centreline, output pixel coordinates.
    pub start_px: [f64; 2],
    /// Length of the artery drawn (soft tissue), trunk only, mm.
    pub artery_length_mm: f64,
    /// Summed centreline length of the calcified runs (trunk and branches, before the mask
    /// threshold), mm.
    pub calcified_run_length_mm: f64,
    /// Outer diameter at the start of the trunk, mm.
    pub diameter_mm: f64,
    /// Inner / outer radius of the calcified wall: 0 solid, above 0.5 "tram-track".
    pub lumen_ratio: f64,
    pub profile: WallProfile,
    /// Fraction of the wall volume that is calcium where it is calcified.
    pub calcium_density: f64,
    pub branches: usize,
    /// Interruptions of the calcification along trunk and branches.
    pub gaps: usize,
}

/// Appearance of a calcified wall in projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WallProfile {
    TramTrack,
    Solid,
}

/// One artery segment ready to render: centreline, radius, calcified runs and beads.
#[derive(Debug)]
struct Segment {
    line: Polyline,
    radius_px: f32,
    taper: f32,
    width_noise: Profile1d,
    /// Calcified runs `[start, end)` in arc length (px).
    runs: Vec<(f32, f32)>,
    bead_mid: Profile1d,
    bead_left: Profile1d,
    bead_right: Profile1d,
}

impl Segment {
    fn radius(&self, s: f32) -> f32 {
        let t = (s / self.line.len().max(1.0)).clamp(0.0, 1.0);
        self.radius_px * (1.0 - self.taper * t) * (1.0 + self.width_noise.at(s))
    }

    /// Calcified fraction in [0, 1] at arc length `s`: 1 inside a run, tapering to 0 over
    /// `ramp` px at its ends (a calcification fades out rather than stopping square).
    fn run_factor(&self, s: f32, ramp: f32) -> f32 {
        let mut best = 0.0f32;
        for &(a, b) in &self.runs {
            if s > a - ramp && s < b + ramp {
                let f = ((s - (a - ramp)) / ramp)
                    .min(((b + ramp) - s) / ramp)
                    .clamp(0.0, 1.0);
                best = best.max(f);
            }
        }
        best
    }

    fn run_length(&self) -> f32 {
        self.runs.iter().map(|(a, b)| b - a).sum()
    }
}

/// The calcified vessel trees of one image.
#[derive(Debug)]
pub(crate) struct VesselTree {
    segments: Vec<Segment>,
    lumen_ratio: f32,
    density: f32,
    pub params: VesselParams,
}

/// Measured centreline length (mm, as `quantify` measures the mask) aimed at for a severity,
/// inside the default grading bands (moderate from 20 mm, severe from 60 mm) with margins for
/// the spread of [`measured_per_run_mm`].
fn target_length_mm(rng: &mut impl Rng, severity: Severity) -> f64 {
    match severity {
        Severity::Mild => rng.random_range(5.0..14.0),
        Severity::Moderate => rng.random_range(28.0..48.0),
        Severity::Severe => rng.random_range(85.0..240.0),
    }
}

/// Measured centreline length per mm of calcified run, by wall profile: a tram-track's two
/// walls are two skeleton lines where the lumen is clear, and a solid vessel's skeleton picks
/// up the beading's wiggle and short spurs. Measured on 16 default-size images (seed 11):
/// tram-track 1.42-1.78, solid 1.15-1.37.
fn measured_per_run_mm(profile: WallProfile) -> f64 {
    match profile {
        WallProfile::TramTrack => 1.7,
        WallProfile::Solid => 1.3,
    }
}

/// Plan the calcified vessels of a BAC-positive image: trees are added until their expected
/// measured length reaches the severity's target, each asked for at most what remains divided
/// by the largest per-mm factor, so the last one does not overshoot into the next grade.
pub(crate) fn plan(rng: &mut impl Rng, geom: &Geometry, severity: Severity) -> Vec<VesselTree> {
    let target = target_length_mm(rng, severity);
    let worst = measured_per_run_mm(WallProfile::TramTrack);
    let mut trees: Vec<VesselTree> = Vec::new();
    let mut total = 0.0;
    // Give up after a bounded number of attempts: a tiny breast may not fit the target.
    for _ in 0..40 {
        if total >= target {
            break;
        }
        let remaining = (target - total) / worst;
        let want = match severity {
            Severity::Mild => remaining,
            Severity::Moderate => remaining.min(rng.random_range(10.0..28.0)),
            Severity::Severe => remaining.min(rng.random_range(18.0..60.0)),
        };
        if want < 2.0 {
            break;
        }
        if let Some(tree) = plan_tree(rng, geom, want, severity) {
            total += tree.params.calcified_run_length_mm * measured_per_run_mm(tree.params.profile);
            trees.push(tree);
        }
    }
    trees
}

fn plan_tree(
    rng: &mut impl Rng,
    geom: &Geometry,
    calc_mm: f64,
    severity: Severity,
) -> Option<VesselTree> {
    let mm = geom.mm_per_px;
    let start = geom.random_interior_point(rng, 12.0, (0.02, 0.75))?;
    // Breast arteries run from the chest wall and axilla towards the nipple.
    let to_nipple = geom.heading_to_nipple(start);
    let heading = to_nipple + rng.random_range(-0.6..0.6);
    // Mostly 0.5-1.2 mm, occasionally up to 2 mm.
    let diameter_mm: f64 = 0.5 + 1.5 * rng.random::<f64>().powi(3);
    let radius_px = (diameter_mm / 2.0 / mm) as f32;
    let tram = rng.random_bool(0.6);
    let lumen_ratio = if tram {
        rng.random_range(0.6..0.88)
    } else {
        rng.random_range(0.0..0.35)
    };
    let style = WalkStyle {
        step_px: (radius_px * 0.5).clamp(0.7, 3.0),
        curvature_sd: rng.random_range(0.01..0.04),
        curvature_mm: rng.random_range(8.0..25.0),
        pull: rng.random_range(0.01..0.05),
        target_heading: to_nipple,
        wiggle_rad: rng.random_range(0.1..0.5),
        wiggle_mm: (1.5, 5.0),
        margin_mm: 5.0,
    };
    let extra = rng.random_range(10.0..60.0);
    let line = walk(rng, geom, start, heading, calc_mm + extra, &style);
    let len_mm = f64::from(line.len()) * mm;
    if len_mm < 3.0 {
        return None;
    }
    let calc_mm = calc_mm.min(len_mm * 0.9);
    let offset_mm = rng.random_range(0.0..=(len_mm - calc_mm).max(0.0));
    let mut gaps = 0;
    let trunk = make_segment(rng, geom, line, radius_px, offset_mm, calc_mm, &mut gaps);
    let mut segments = vec![trunk];
    let branch_p = match severity {
        Severity::Mild => 0.15,
        Severity::Moderate => 0.35,
        Severity::Severe => 0.55,
    };
    let mut branch_mm = 0.0;
    if calc_mm > 15.0 && rng.random_bool(branch_p) {
        let n = if rng.random_bool(0.3) { 2 } else { 1 };
        for _ in 0..n {
            let a = segments[0].runs.first().map_or(0.0, |r| r.0);
            let b2 = segments[0].runs.last().map_or(a, |r| r.1);
            if b2 - a < 2.0 {
                break;
            }
            let s = rng.random_range(a..b2);
            let (p, dir) = segments[0].line.at(s);
            let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let h = f64::from(dir[1]).atan2(f64::from(dir[0])) + side * rng.random_range(0.4..1.0);
            let r = segments[0].radius(s) * rng.random_range(0.6..0.85);
            let bstyle = WalkStyle {
                target_heading: h,
                step_px: (r * 0.5).clamp(0.7, 3.0),
                ..style
            };
            let want = rng.random_range(6.0..30.0f64).min(calc_mm * 0.6);
            let extra = rng.random_range(3.0..15.0);
            let bline = walk(rng, geom, p, h, want + extra, &bstyle);
            let blen = f64::from(bline.len()) * mm;
            if blen < 3.0 {
                continue;
            }
            let bcalc = want.min(blen * 0.9);
            let seg = make_segment(rng, geom, bline, r, 0.0, bcalc, &mut gaps);
            branch_mm += f64::from(seg.run_length()) * mm;
            segments.push(seg);
        }
    }
    let trunk_calc = f64::from(segments[0].run_length()) * mm;
    let first = segments[0].line.pts.first().copied().unwrap_or(start);
    let params = VesselParams {
        start_px: [f64::from(first[0]) - 0.5, f64::from(first[1]) - 0.5],
        artery_length_mm: len_mm,
        calcified_run_length_mm: trunk_calc + branch_mm,
        diameter_mm,
        lumen_ratio,
        profile: if lumen_ratio > 0.5 {
            WallProfile::TramTrack
        } else {
            WallProfile::Solid
        },
        calcium_density: 0.0,
        branches: segments.len() - 1,
        gaps,
    };
    let density = rng.random_range(0.45..1.0);
    let mut tree = VesselTree {
        segments,
        lumen_ratio: lumen_ratio as f32,
        density: density as f32,
        params,
    };
    tree.params.calcium_density = density;
    Some(tree)
}

/// Calcified runs and gaps over `[offset, offset + calc]` (mm), beads and width variation.
fn make_segment(
    rng: &mut impl Rng,
    geom: &Geometry,
    line: Polyline,
    radius_px: f32,
    offset_mm: f64,
    calc_mm: f64,
    gaps: &mut usize,
) -> Segment {
    let mm = geom.mm_per_px;
    let px = |v: f64| (v / mm) as f32;
    let mut runs = Vec::new();
    let (mut s, end) = (offset_mm, offset_mm + calc_mm);
    let mean_run = rng.random_range(4.0..20.0f64);
    let mean_gap = rng.random_range(0.8..4.0f64);
    while s < end {
        let run = (-mean_run * rng.random::<f64>().max(1e-9).ln()).max(1.0);
        let e = (s + run).min(end);
        runs.push((px(s), px(e)));
        let gap = (-mean_gap * rng.random::<f64>().max(1e-9).ln()).max(0.6);
        s = e + gap;
        if s < end {
            *gaps += 1;
        }
    }
    // Keep the calcified length what was asked: the gaps are inserted, not subtracted.
    let bead_mm = rng.random_range(0.2..0.6);
    let gamma = rng.random_range(0.7..1.6f32);
    let len = line.len();
    let beads = |rng: &mut dyn rand::RngCore| {
        Profile1d::new(len, px(bead_mm), || {
            let u: f32 = rng.random();
            // Skewed towards bright beads with dimmer necks between them.
            0.1 + 0.9 * u.powf(gamma)
        })
    };
    let bead_mid = beads(rng);
    let bead_left = beads(rng);
    let bead_right = beads(rng);
    let width_noise = Profile1d::new(len, px(rng.random_range(0.6..2.0)), || {
        rng.random_range(-0.25..0.25)
    });
    Segment {
        line,
        radius_px,
        taper: rng.random_range(0.0..0.4),
        width_noise,
        runs,
        bead_mid,
        bead_left,
        bead_right,
    }
}

/// Plans of a positive image rendered at most this many times (see [`plan_and_render`]).
const MAX_VESSEL_PLANS: usize = 4;

/// The calcified vessels of an image: planned for `severity` from `rng` and rendered into
/// `calcium` and `soft` (image-sized, zero on entry), with `mask_of` turning the rendered
/// calcium into the image's BAC mask. The plan aims at the grade's band of measured length,
/// but what the mask measures depends on how the walls render (a thin tram-track may stay
/// under the mask level at coarse pixels, a background's breast mask may cut a vessel): when
/// the mask (measured at `spacing`) does not grade as requested, the buffers are cleared and
/// the vessels planned again from the same stream, at most [`MAX_VESSEL_PLANS`] times (the
/// last plan stays whatever it grades). Returns the trees, the number drawn visibly, the mask
/// and its burden as `quantify::measure` gives it at `spacing` with the default grading and no
/// breast mask (the manifest reuses it instead of measuring the mask again).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_and_render(
    rng: &mut impl Rng,
    geom: &Geometry,
    severity: Option<Severity>,
    spacing: crate::mammogram::PixelSpacing,
    canvas: &mut StrokeCanvas,
    calcium: &mut [f32],
    soft: &mut [f32],
    mask_of: impl Fn(&[f32]) -> crate::raster::Mask,
) -> Rendered {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let trees = severity.map(|s| plan(rng, geom, s)).unwrap_or_default();
        let grain_seed = rng.random();
        let visible = render(&trees, geom, canvas, calcium, soft, grain_seed);
        let mask = mask_of(calcium);
        let burden = crate::quantify::measure(
            &mask,
            None,
            Some(spacing),
            None,
            &crate::quantify::Grading::default(),
        );
        let done = match severity {
            None => true,
            Some(wanted) => burden.grade == Some(wanted.into()) || attempt == MAX_VESSEL_PLANS,
        };
        if done {
            return Rendered {
                trees,
                visible,
                mask,
                burden,
            };
        }
        calcium.fill(0.0);
        soft.fill(0.0);
    }
}

/// What [`plan_and_render`] made.
pub(crate) struct Rendered {
    pub trees: Vec<VesselTree>,
    /// Trees with at least one mask pixel of their own.
    pub visible: usize,
    pub mask: crate::raster::Mask,
    /// The mask's burden without a breast mask (see [`plan_and_render`]).
    pub burden: crate::quantify::BacBurden,
}

/// Draw the trees: calcium path length (mm) into `calcium`, the arteries' soft tissue into
/// `soft` (attenuation). Returns the number of trees with at least one pixel of their own at
/// or above [`MASK_LEVEL_MM`].
pub(crate) fn render(
    trees: &[VesselTree],
    geom: &Geometry,
    canvas: &mut StrokeCanvas,
    calcium: &mut [f32],
    soft: &mut [f32],
    grain_seed: u64,
) -> usize {
    let mm = geom.mm_per_px as f32;
    let width = geom.width;
    let mut visible = 0;
    for tree in trees {
        let mut own = false;
        for seg in &tree.segments {
            let reach = seg.radius_px * 1.25 + 1.5;
            let ramp = (0.4 / mm).max(1.0);
            canvas.stroke(&seg.line, reach, |p, d, s| {
                let (x, y) = ((p % width) as f32 + 0.5, (p / width) as f32 + 0.5);
                let dist = geom.dist_mm(x, y);
                if dist <= 0.0 {
                    return;
                }
                let big_r = seg.radius(s);
                let ad = d.abs();
                if ad >= big_r {
                    return;
                }
                // Non-calcified artery: blood and wall replace fat along the whole vessel.
                let chord_out = 2.0 * (big_r * big_r - ad * ad).sqrt();
                soft[p] += MU_SOFT_EXCESS * chord_out * mm;
                if dist < CALCIUM_SKIN_MARGIN_MM {
                    return;
                }
                let run = seg.run_factor(s, ramp);
                if run <= 0.0 {
                    return;
                }
                let r = tree.lumen_ratio * big_r;
                let chord_in = if ad < r {
                    2.0 * (r * r - ad * ad).sqrt()
                } else {
                    0.0
                };
                let shell_mm = (chord_out - chord_in) * mm;
                // Each wall (and the front/back walls seen face-on in the middle) carries its
                // own plaques, so the two tram lines break up independently.
                let w = smoothstep(0.1 * big_r, 0.6 * big_r, ad);
                let side = if d < 0.0 {
                    seg.bead_left.at(s)
                } else {
                    seg.bead_right.at(s)
                };
                let cov = seg.bead_mid.at(s) * (1.0 - w) + side * w;
                // Calcium is granular: a little per-pixel variation, fixed by the seed.
                let grain = 0.85 + 0.3 * unit_hash(grain_seed, p as u64);
                let t = tree.density * cov * run * grain * shell_mm;
                if t >= MASK_LEVEL_MM {
                    own = true;
                }
                calcium[p] += t;
            });
        }
        visible += usize::from(own);
    }
    visible
}

pub(crate) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Uniform in [0, 1) from a counter: per-pixel randomness that needs no sequential state, so
/// rows can be rendered in parallel and still be reproducible.
#[inline]
pub(crate) fn unit_hash(seed: u64, i: u64) -> f32 {
    (super::mix64(seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93)) >> 40) as f32 / (1u64 << 24) as f32
}
