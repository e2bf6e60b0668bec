//! The breast of a synthetic mammogram: its outline, thickness, nipple and pectoral muscle in
//! the canonical frame, and the attenuation coefficients of its tissues. Shared by the
//! phantom, the vessels and the distractors (none of which imports another's internals).

use rand::Rng;

use crate::mammogram::View;
use crate::raster::Mask;

/// Linear attenuation coefficients at a typical mammographic effective energy (about
/// 20 keV), per mm. Only differences matter for contrast; their ratios are what makes fat
/// dark, glandular tissue grey and calcium white.
pub(crate) const MU_FAT: f32 = 0.046;
pub(crate) const MU_GLAND: f32 = 0.080;
/// Soft tissue (vessel, duct, ligament, muscle) displacing fat.
pub(crate) const MU_SOFT_EXCESS: f32 = MU_GLAND - MU_FAT;
pub(crate) const MU_SKIN: f32 = 0.080;
/// Hydroxyapatite displacing soft tissue.
pub(crate) const MU_CALCIUM: f32 = 2.4;

/// The pectoral muscle of an MLO view: the region left of a slightly convex line from
/// `(x_top, 0)` to `(0, y_left)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pectoral {
    x_top: f32,
    y_left: f32,
    bulge: f32,
    /// Muscle thickness (mm) reached `ramp_px` inside its border.
    pub thickness_mm: f32,
    pub ramp_px: f32,
}

impl Pectoral {
    /// x of the muscle border at row `y` (0 below the muscle).
    pub(crate) fn border(&self, y: f32) -> f32 {
        if y >= self.y_left {
            return 0.0;
        }
        let t = y / self.y_left;
        self.x_top * (1.0 - t) + self.bulge * (std::f32::consts::PI * t).sin()
    }
}

/// Breast outline, thickness and landmarks in the canonical frame (chest wall at x = 0).
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub width: usize,
    pub height: usize,
    pub mm_per_px: f64,
    /// Per row: x of the skin (0 where the row has no breast) and the cosine of the outline's
    /// slope, which turns horizontal distance into distance normal to the skin.
    edge: Vec<f32>,
    cosf: Vec<f32>,
    pub nipple: [f32; 2],
    pub thickness_mm: f32,
    pub edge_radius_mm: f32,
    pub skin_mm: f32,
    pub pectoral: Option<Pectoral>,
    pub depth_px: f32,
}

impl Geometry {
    pub(crate) fn random(
        rng: &mut impl Rng,
        width: usize,
        height: usize,
        mm: f64,
        view: &View,
    ) -> Self {
        let (w, h) = (width as f32, height as f32);
        let mmf = mm as f32;
        // Depth and extent in mm, limited by the field of view.
        let depth_mm = rng.random_range(70.0..150.0f32).min(w * mmf * 0.88);
        let depth = depth_mm / mmf;
        let p: f32 = rng.random_range(1.8..2.6);
        let superellipse = |u: f32| {
            if u.abs() >= 1.0 {
                0.0
            } else {
                (1.0 - u.abs().powf(p)).powf(1.0 / p)
            }
        };
        let (ny, ry_top, ry_bot, pectoral) = match view {
            View::Mlo => {
                let ny = h * rng.random_range(0.52..0.66);
                let ry_top = ny * rng.random_range(1.15..1.6);
                let ry_bot = ((h - ny) * rng.random_range(0.7..0.97)).max(h * 0.1);
                let top_edge = depth * superellipse(ny / ry_top);
                let x_top = top_edge * rng.random_range(0.45..0.8);
                let pect = Pectoral {
                    x_top,
                    y_left: h * rng.random_range(0.4..0.75),
                    bulge: x_top * rng.random_range(0.0..0.18),
                    thickness_mm: rng.random_range(25.0..45.0),
                    ramp_px: rng.random_range(10.0..25.0) / mmf,
                };
                (ny, ry_top, ry_bot, Some(pect))
            }
            _ => {
                let ny = h * rng.random_range(0.44..0.56);
                let room = ny.min(h - ny) * 0.95;
                let ry = (rng.random_range(0.55..0.9f32) * depth)
                    .max(h * 0.22)
                    .min(room);
                let skew = rng.random_range(0.85..1.15f32);
                (ny, (ry * skew).min(room), (ry / skew).min(room), None)
            }
        };
        // Low-frequency wobble so that outlines are not perfect superellipses.
        let wob: Vec<(f32, f32, f32)> = (0..3)
            .map(|k| {
                (
                    rng.random_range(0.0..0.025),
                    (k + 1) as f32,
                    rng.random_range(0.0..std::f32::consts::TAU),
                )
            })
            .collect();
        let edge: Vec<f32> = (0..height)
            .map(|y| {
                let yc = y as f32 + 0.5;
                let u = if yc < ny {
                    (ny - yc) / ry_top
                } else {
                    (yc - ny) / ry_bot
                };
                let e = depth * superellipse(u);
                let phase = yc / h * std::f32::consts::PI;
                let wobble: f32 = wob
                    .iter()
                    .map(|&(a, k, ph)| a * (k * phase + ph).sin())
                    .sum();
                (e * (1.0 + wobble)).max(0.0)
            })
            .collect();
        let cosf = (0..height)
            .map(|y| {
                let a = edge[y.saturating_sub(1)];
                let b = edge[(y + 1).min(height - 1)];
                let slope = (b - a) / 2.0;
                1.0 / (1.0 + slope * slope).sqrt()
            })
            .collect();
        let thickness_mm = rng.random_range(35.0..70.0);
        let nipple_row = (ny as usize).min(height - 1);
        Self {
            width,
            height,
            mm_per_px: mm,
            nipple: [edge[nipple_row], ny],
            edge,
            cosf,
            thickness_mm,
            edge_radius_mm: thickness_mm * 0.5 * rng.random_range(0.8..1.6),
            skin_mm: rng.random_range(1.2..2.2),
            pectoral,
            depth_px: depth,
        }
    }

    /// The geometry of a real breast mask (`flip`: chest wall on the right). Each row's
    /// breast is the run of mask pixels that starts at the chest wall; thickness, skin and
    /// muscle are unknown and get typical values (only distances are used on real images).
    pub fn from_mask(mask: &Mask, mm: f64, flip: bool) -> Self {
        let (width, height) = (mask.width(), mask.height());
        let edge: Vec<f32> = (0..height)
            .map(|y| {
                let row = mask.row(y);
                let run = if flip {
                    row.iter().rev().take_while(|&&b| b).count()
                } else {
                    row.iter().take_while(|&&b| b).count()
                };
                run as f32
            })
            .collect();
        // Smooth the slope estimate over a few mm: mask edges are jagged at pixel scale.
        let k = ((3.0 / mm) as usize).max(1);
        let cosf = (0..height)
            .map(|y| {
                let (a, b) = (y.saturating_sub(k), (y + k).min(height - 1));
                let slope = (edge[b] - edge[a]) / (b - a).max(1) as f32;
                1.0 / (1.0 + slope * slope).sqrt()
            })
            .collect();
        let (ny, depth) =
            edge.iter().enumerate().fold(
                (0, 0.0f32),
                |(by, bd), (y, &e)| if e > bd { (y, e) } else { (by, bd) },
            );
        Self {
            width,
            height,
            mm_per_px: mm,
            nipple: [depth, ny as f32 + 0.5],
            edge,
            cosf,
            thickness_mm: 50.0,
            edge_radius_mm: 30.0,
            skin_mm: 1.5,
            pectoral: None,
            depth_px: depth,
        }
    }

    /// Distance (mm) from the point to the skin, positive inside the breast. Outside the
    /// image it is negative.
    #[inline]
    pub fn dist_mm(&self, x: f32, y: f32) -> f32 {
        if !(x >= 0.0 && y >= 0.0 && x < self.width as f32 && y < self.height as f32) {
            return -1.0;
        }
        let row = y as usize;
        (self.edge[row] - x) * self.cosf[row] * self.mm_per_px as f32
    }

    /// Pixels of row `y`, from the chest wall, inside the breast (`dist_mm > 0` at their
    /// centres): distance to the skin falls along a row, so they are a prefix.
    pub fn breast_run(&self, y: usize) -> usize {
        let yc = y as f32 + 0.5;
        let inside = |x: usize| self.dist_mm(x as f32 + 0.5, yc) > 0.0;
        // Start from the estimate and settle it on the exact test.
        let mut n = ((self.edge[y] - 0.5).ceil().max(0.0) as usize).min(self.width);
        while n > 0 && !inside(n - 1) {
            n -= 1;
        }
        while n < self.width && inside(n) {
            n += 1;
        }
        n
    }

    /// Row `y`'s skin position and the factor that turns `edge - x` into mm normal to the
    /// skin: `dist_mm(x, y) = (edge - x) * factor` inside the image.
    pub fn row_distance(&self, y: usize) -> (f32, f32) {
        (self.edge[y], self.cosf[y] * self.mm_per_px as f32)
    }

    pub fn has_pectoral(&self) -> bool {
        self.pectoral.is_some()
    }

    /// x of the pectoral muscle's border at row `y` (0 without a muscle).
    pub fn pectoral_border(&self, y: f32) -> f32 {
        self.pectoral.map_or(0.0, |p| p.border(y))
    }

    pub fn in_pectoral(&self, x: f32, y: f32) -> bool {
        self.pectoral.is_some_and(|p| x < p.border(y))
    }

    /// Direction from `p` to the nipple, radians (x right, y down).
    pub fn heading_to_nipple(&self, p: [f32; 2]) -> f64 {
        f64::from(self.nipple[1] - p[1]).atan2(f64::from(self.nipple[0] - p[0]))
    }

    /// A random point at least `min_depth_mm` inside the skin, outside the pectoral muscle,
    /// whose x lies in the given fraction range of the breast depth.
    pub fn random_interior_point(
        &self,
        rng: &mut impl Rng,
        min_depth_mm: f32,
        xfrac: (f32, f32),
    ) -> Option<[f32; 2]> {
        for _ in 0..200 {
            let x = self.depth_px * rng.random_range(xfrac.0..xfrac.1);
            let y = rng.random_range(0.0..self.height as f32);
            if self.dist_mm(x, y) >= min_depth_mm && !self.in_pectoral(x, y) {
                return Some([x, y]);
            }
        }
        None
    }

    /// Projected path lengths (mm) through the skin and through the tissue inside it at
    /// distance `d` (mm) from the skin: the compressed breast's rim is modelled as a half
    /// ellipse of semi-axes (`edge_radius`, thickness / 2), its skin as a shell of constant
    /// thickness. Returns (skin, tissue, total). Branch-free (0 outside, the full thickness
    /// beyond the rim), so that a row of pixels vectorises.
    #[inline]
    pub(crate) fn paths(&self, d: f32) -> (f32, f32, f32) {
        let (t, re, s) = (self.thickness_mm, self.edge_radius_mm, self.skin_mm);
        let outer = |d: f32, t: f32, re: f32| {
            let u = (1.0 - d / re).clamp(0.0, 1.0);
            t * (1.0 - u * u).sqrt()
        };
        let total = outer(d, t, re);
        let inner = outer(d - s, t - 2.0 * s, re - s);
        (total - inner, inner, total)
    }
}
