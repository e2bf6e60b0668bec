//! What is bright and linear or punctate on a mammogram but is NOT arterial calcification:
//! non-calcified vessels, ducts converging on the nipple, Cooper's ligaments, clusters of
//! microcalcifications, benign punctate and rim calcifications, axillary lymph nodes and a
//! nipple marker. A detector trained on the phantoms must learn to ignore all of them; none
//! of them ever enters the BAC mask.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::geometry::{Geometry, MU_CALCIUM, MU_SOFT_EXCESS};
use super::stroke::StrokeCanvas;
use super::vessels::{WalkStyle, walk};

/// How many of each distractor an image carries (written to the manifest).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DistractorCounts {
    pub noncalcified_vessels: usize,
    pub ducts: usize,
    pub cooper_ligaments: usize,
    pub microcalcification_clusters: usize,
    pub microcalcifications: usize,
    pub benign_calcifications: usize,
    pub lymph_node: bool,
    pub nipple_marker: bool,
}

/// Add every distractor's attenuation to `soft`.
pub(crate) fn render(
    rng: &mut impl Rng,
    geom: &Geometry,
    canvas: &mut StrokeCanvas,
    soft: &mut [f32],
) -> DistractorCounts {
    let mut counts = DistractorCounts::default();
    let mm = geom.mm_per_px;
    let mmf = mm as f32;
    let width = geom.width;

    // Tubes of soft tissue: arteries and veins without calcium, and ducts.
    let tube = |canvas: &mut StrokeCanvas,
                soft: &mut [f32],
                line: &super::stroke::Polyline,
                r0: f32,
                taper: f32,
                contrast: f32| {
        let len = line.len().max(1.0);
        canvas.stroke(line, r0 + 1.0, |p, d, s| {
            let (x, y) = ((p % width) as f32 + 0.5, (p / width) as f32 + 0.5);
            if geom.dist_mm(x, y) <= 0.0 {
                return;
            }
            let r = r0 * (1.0 - taper * s / len);
            if d.abs() < r {
                soft[p] += contrast * MU_SOFT_EXCESS * 2.0 * (r * r - d * d).sqrt() * mmf;
            }
        });
    };

    counts.noncalcified_vessels = rng.random_range(2..=8);
    for _ in 0..counts.noncalcified_vessels {
        let Some(start) = geom.random_interior_point(rng, 6.0, (0.0, 0.6)) else {
            continue;
        };
        let to_nipple = geom.heading_to_nipple(start);
        let style = WalkStyle {
            step_px: 2.0,
            curvature_sd: rng.random_range(0.01..0.04),
            curvature_mm: rng.random_range(10.0..30.0),
            pull: rng.random_range(0.0..0.04),
            target_heading: to_nipple,
            wiggle_rad: rng.random_range(0.02..0.25),
            wiggle_mm: (4.0, 15.0),
            margin_mm: 3.0,
        };
        let heading = to_nipple + rng.random_range(-0.8..0.8);
        let length = rng.random_range(40.0..160.0);
        let line = walk(rng, geom, start, heading, length, &style);
        let r = rng.random_range(0.4..1.4) / mmf;
        tube(
            canvas,
            soft,
            &line,
            r,
            rng.random_range(0.0..0.5),
            rng.random_range(0.8..1.6),
        );
    }

    counts.ducts = rng.random_range(4..=12);
    for _ in 0..counts.ducts {
        let back = rng.random_range(3.0..12.0) / mmf;
        let spread = rng.random_range(-0.35..0.35f32);
        let start = [geom.nipple[0] - back, geom.nipple[1] + back * spread];
        if geom.dist_mm(start[0], start[1]) < 1.0 {
            continue;
        }
        let heading = std::f64::consts::PI + f64::from(spread) * 1.5 + rng.random_range(-0.4..0.4);
        let style = WalkStyle {
            step_px: 2.0,
            curvature_sd: rng.random_range(0.01..0.03),
            curvature_mm: 15.0,
            pull: 0.0,
            target_heading: heading,
            wiggle_rad: rng.random_range(0.02..0.12),
            wiggle_mm: (5.0, 15.0),
            margin_mm: 2.0,
        };
        let length = rng.random_range(15.0..60.0);
        let line = walk(rng, geom, start, heading, length, &style);
        let r = rng.random_range(0.4..1.0) / mmf;
        tube(canvas, soft, &line, r, 0.6, rng.random_range(0.6..1.2));
    }

    // Cooper's ligaments: thin sheets seen edge-on as fine curved lines near the skin.
    counts.cooper_ligaments = rng.random_range(15..=50);
    for _ in 0..counts.cooper_ligaments {
        let Some(start) = geom.random_interior_point(rng, 4.0, (0.2, 1.0)) else {
            continue;
        };
        if geom.dist_mm(start[0], start[1]) > 30.0 {
            continue;
        }
        let radial = f64::from(start[1] - geom.nipple[1]).atan2(f64::from(start[0]).max(1.0));
        let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let heading = radial + side * rng.random_range(0.6..1.5);
        let style = WalkStyle {
            step_px: 3.0,
            curvature_sd: rng.random_range(0.03..0.1),
            curvature_mm: 8.0,
            pull: 0.0,
            target_heading: heading,
            wiggle_rad: 0.05,
            wiggle_mm: (5.0, 12.0),
            margin_mm: 1.0,
        };
        let length = rng.random_range(8.0..30.0);
        let line = walk(rng, geom, start, heading, length, &style);
        let w = rng.random_range(0.07..0.18) / mmf;
        let c = rng.random_range(0.04..0.14f32);
        let len = line.len().max(1.0);
        canvas.stroke(&line, w * 3.0 + 1.0, |p, d, s| {
            let (x, y) = ((p % width) as f32 + 0.5, (p / width) as f32 + 0.5);
            if geom.dist_mm(x, y) <= 0.0 {
                return;
            }
            // Fade in and out along the arc: a sheet leaves the projection plane gradually.
            let fade = (std::f32::consts::PI * s / len).sin();
            let u = d / w;
            soft[p] += c * fade * (-u * u).exp();
        });
    }

    // Microcalcification clusters: sub-millimetre specks a few mm apart.
    if rng.random_bool(0.35) {
        counts.microcalcification_clusters = if rng.random_bool(0.25) { 2 } else { 1 };
    }
    for _ in 0..counts.microcalcification_clusters {
        let Some(c) = geom.random_interior_point(rng, 10.0, (0.1, 0.9)) else {
            continue;
        };
        let n = rng.random_range(5..=25);
        let spread = rng.random_range(1.5..4.0) / mmf;
        for _ in 0..n {
            let (dx, dy) = (
                super::normal(rng) as f32 * spread,
                super::normal(rng) as f32 * spread,
            );
            let (x, y) = (c[0] + dx, c[1] + dy);
            if geom.dist_mm(x, y) < 3.0 {
                continue;
            }
            let r_mm = rng.random_range(0.05..0.25f32);
            // A sphere's projected volume, spread as a Gaussian no narrower than a pixel:
            // the integral (what the detector records) is right even below pixel size.
            let volume = 4.0 / 3.0 * std::f32::consts::PI * r_mm.powi(3);
            let sigma_px = (r_mm / mmf * 0.6).max(0.6);
            let sigma_mm = sigma_px * mmf;
            let amp = MU_CALCIUM * volume / (std::f32::consts::TAU * sigma_mm * sigma_mm);
            splat(soft, geom, x, y, sigma_px * 3.5, |rho| {
                amp * (-0.5 * (rho / sigma_px).powi(2)).exp()
            });
            counts.microcalcifications += 1;
        }
    }

    // Benign punctate and rim ("eggshell") calcifications: round, dense, isolated.
    let benign = if rng.random_bool(0.6) {
        rng.random_range(1..=12)
    } else {
        0
    };
    for _ in 0..benign {
        let Some(c) = geom.random_interior_point(rng, 5.0, (0.05, 1.0)) else {
            continue;
        };
        let r = rng.random_range(0.3..1.2) / mmf;
        let rim = rng.random_bool(0.3);
        let inner = if rim {
            r * rng.random_range(0.6..0.8)
        } else {
            0.0
        };
        let k = rng.random_range(0.3..0.9) * MU_CALCIUM * mmf;
        splat(soft, geom, c[0], c[1], r + 1.0, |rho| {
            let chord = |a: f32| {
                if rho < a {
                    2.0 * (a * a - rho * rho).sqrt()
                } else {
                    0.0
                }
            };
            k * (chord(r) - chord(inner))
        });
        counts.benign_calcifications += 1;
    }

    // Axillary lymph node on MLO views: an oval of soft tissue with a fatty hilum.
    if geom.has_pectoral() && rng.random_bool(0.6) {
        let y = geom.height as f32 * rng.random_range(0.08..0.3);
        let x = geom.pectoral_border(y) + rng.random_range(5.0..25.0) / mmf;
        if geom.dist_mm(x, y) > 8.0 {
            let a = rng.random_range(4.0..9.0) / mmf;
            let b = a * rng.random_range(0.5..0.8);
            let depth_mm = rng.random_range(4.0..8.0f32);
            let hilum = [x + a * 0.5, y];
            let (ha, hb) = (a * 0.35, b * 0.35);
            for py in (y - b - 1.0).max(0.0) as usize..((y + b + 1.0) as usize).min(geom.height) {
                for px in (x - a - 1.0).max(0.0) as usize..((x + a + 1.0) as usize).min(geom.width)
                {
                    let (u, v) = ((px as f32 + 0.5 - x) / a, (py as f32 + 0.5 - y) / b);
                    let rr = u * u + v * v;
                    if rr >= 1.0 {
                        continue;
                    }
                    let (hu, hv) = (
                        (px as f32 + 0.5 - hilum[0]) / ha,
                        (py as f32 + 0.5 - hilum[1]) / hb,
                    );
                    let fat = (1.0 - (hu * hu + hv * hv)).max(0.0).sqrt();
                    let t = depth_mm * ((1.0 - rr).sqrt() - 0.6 * fat).max(0.0);
                    soft[py * geom.width + px] += MU_SOFT_EXCESS * 1.3 * t;
                }
            }
            counts.lymph_node = true;
        }
    }

    // A metal skin marker ("BB") on the nipple: saturates, partly outside the breast.
    if rng.random_bool(0.25) {
        let r = rng.random_range(0.8..1.5) / mmf;
        let (x, y) = (geom.nipple[0] + r * 0.3, geom.nipple[1]);
        for py in (y - r - 1.0).max(0.0) as usize..((y + r + 1.0) as usize).min(geom.height) {
            for px in (x - r - 1.0).max(0.0) as usize..((x + r + 1.0) as usize).min(geom.width) {
                let rho = ((px as f32 + 0.5 - x).powi(2) + (py as f32 + 0.5 - y).powi(2)).sqrt();
                if rho < r {
                    soft[py * geom.width + px] += 6.0 * 2.0 * (r * r - rho * rho).sqrt() * mmf;
                }
            }
        }
        counts.nipple_marker = true;
    }
    counts
}

/// Add `f(distance in px)` around `(cx, cy)` within `reach` px, inside the breast only.
fn splat(soft: &mut [f32], geom: &Geometry, cx: f32, cy: f32, reach: f32, f: impl Fn(f32) -> f32) {
    let y0 = (cy - reach).floor().max(0.0) as usize;
    let y1 = ((cy + reach).ceil().max(0.0) as usize).min(geom.height);
    let x0 = (cx - reach).floor().max(0.0) as usize;
    let x1 = ((cx + reach).ceil().max(0.0) as usize).min(geom.width);
    for y in y0..y1 {
        for x in x0..x1 {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let rho = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
            if rho <= reach && geom.dist_mm(px, py) > 0.0 {
                soft[y * geom.width + x] += f(rho);
            }
        }
    }
}
