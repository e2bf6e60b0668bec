//! Burned-in view labels ("LCC", "R MLO") in a corner away from the breast: saturated,
//! sharp-edged and never inside the breast, as on exported mammograms. They teach a model
//! that the brightest pixels of an image are not necessarily calcium.

use rand::Rng;

use crate::mammogram::{Laterality, View};
use crate::raster::{Mask, Raster};

/// 5x7 glyphs, one row per byte, most significant of the low 5 bits on the left.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        _ => [0; 7],
    }
}

/// Draw a label if there is room for it outside the breast; returns its text.
pub(crate) fn draw(
    rng: &mut impl Rng,
    image: &mut Raster<u16>,
    breast: &Mask,
    laterality: &Laterality,
    view: &View,
    maxv: u16,
    mm: f64,
) -> Option<String> {
    if !rng.random_bool(0.85) {
        return None;
    }
    let sep = if rng.random_bool(0.5) { "" } else { " " };
    let text = format!("{}{sep}{}", laterality.as_str(), view.as_str());
    let scale = ((rng.random_range(0.8..1.4) / mm).round() as usize).max(1);
    let tw = text.len() * 6 * scale - scale;
    let th = 7 * scale;
    let margin = ((4.0 / mm).round() as usize).max(1);
    let (w, h) = (image.width(), image.height());
    if tw + 2 * margin > w || th + 2 * margin > h {
        return None;
    }
    // The side away from the chest wall has the free corners.
    let x = match laterality {
        Laterality::Left => w - margin - tw,
        Laterality::Right => margin,
    };
    let top_first = rng.random_bool(0.7);
    let ys = if top_first {
        [margin, h - margin - th]
    } else {
        [h - margin - th, margin]
    };
    let value = if rng.random_bool(0.85) {
        maxv
    } else {
        (f32::from(maxv) * 0.75) as u16
    };
    for y in ys {
        if clear_of_breast(
            breast,
            x.saturating_sub(margin),
            y.saturating_sub(margin),
            tw + 2 * margin,
            th + 2 * margin,
        ) {
            for (i, c) in text.chars().enumerate() {
                let rows = glyph(c);
                for (gy, bits) in rows.iter().enumerate() {
                    for gx in 0..5 {
                        if bits & (0x10 >> gx) == 0 {
                            continue;
                        }
                        let (x0, y0) = (x + (i * 6 + gx) * scale, y + gy * scale);
                        for py in y0..(y0 + scale).min(h) {
                            for px in x0..(x0 + scale).min(w) {
                                *image.get_mut(px, py) = value;
                            }
                        }
                    }
                }
            }
            return Some(text);
        }
    }
    None
}

fn clear_of_breast(breast: &Mask, x0: usize, y0: usize, w: usize, h: usize) -> bool {
    (y0..(y0 + h).min(breast.height())).all(|y| {
        let row = breast.row(y);
        row[x0.min(row.len())..(x0 + w).min(row.len())]
            .iter()
            .all(|&b| !b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn label_avoids_the_breast() {
        let mut img = Raster::filled(400, 300, 0u16);
        // Breast fills the left half.
        let breast = Mask::from_fn(400, 300, |x, _| x < 200);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut drawn = 0;
        for _ in 0..20 {
            if draw(
                &mut rng,
                &mut img,
                &breast,
                &Laterality::Left,
                &View::Cc,
                4095,
                0.5,
            )
            .is_some()
            {
                drawn += 1;
            }
        }
        assert!(drawn > 0);
        for y in 0..300 {
            for x in 0..200 {
                assert_eq!(*img.get(x, y), 0);
            }
        }
        assert!(img.data().contains(&4095));
    }
}
