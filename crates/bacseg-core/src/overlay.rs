//! Downscaled RGB pictures for people to look at: the normalised mammogram in grey, the
//! breast outline in green and BAC in red.

use crate::raster::{Mask, Raster, UnitValue};

/// An interleaved 8-bit RGB picture.
#[derive(Debug, Clone)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Render `image` (values in [0, 1]; integers over their whole range) downscaled so its longest side is at most `max_side`
/// (box averaging), with the outline of `breast` in green and `bac` pixels in red (a
/// downscaled pixel is red when any full-resolution pixel under it is BAC, so thin vessels
/// stay visible).
pub fn render<G: UnitValue>(
    image: &Raster<G>,
    breast: Option<&Mask>,
    bac: Option<&Mask>,
    max_side: usize,
) -> Rgb8 {
    let (w, h) = (image.width(), image.height());
    let f = w.max(h).div_ceil(max_side.max(1)).max(1);
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    let mut grey = vec![0f32; ow * oh];
    let mut count = vec![0u32; ow * oh];
    let mut inside = vec![0u32; ow * oh];
    let mut red = vec![false; ow * oh];
    for y in 0..h {
        for x in 0..w {
            let o = (y / f) * ow + x / f;
            grey[o] += image.get(x, y).unit();
            count[o] += 1;
            if breast.is_some_and(|b| *b.get(x, y)) {
                inside[o] += 1;
            }
            if bac.is_some_and(|b| *b.get(x, y)) {
                red[o] = true;
            }
        }
    }
    // Outline: a downscaled pixel mostly inside whose 4-neighbour is mostly outside.
    let is_in = |i: usize| inside[i] * 2 > count[i];
    let mut data = Vec::with_capacity(ow * oh * 3);
    for oy in 0..oh {
        for ox in 0..ow {
            let i = oy * ow + ox;
            let g = (grey[i] / count[i].max(1) as f32 * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8;
            let edge = breast.is_some()
                && is_in(i)
                && (ox == 0
                    || oy == 0
                    || ox + 1 == ow
                    || oy + 1 == oh
                    || !is_in(i - 1)
                    || !is_in(i + 1)
                    || !is_in(i - ow)
                    || !is_in(i + ow));
            let px = if red[i] {
                [255, 0, 0]
            } else if edge {
                [0, 220, 0]
            } else {
                [g, g, g]
            };
            data.extend_from_slice(&px);
        }
    }
    Rgb8 {
        width: ow,
        height: oh,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscales_and_marks() {
        let img = Raster::filled(100, 50, 0.5f32);
        let breast = Raster::from_fn(100, 50, |x, _| x < 60);
        let bac = Raster::from_fn(100, 50, |x, y| x == 10 && y == 10);
        let o = render(&img, Some(&breast), Some(&bac), 25);
        assert_eq!((o.width, o.height), (25, 13));
        let px = |x: usize, y: usize| &o.data[(y * o.width + x) * 3..(y * o.width + x) * 3 + 3];
        assert_eq!(px(2, 2), &[255, 0, 0]);
        assert_eq!(px(14, 5), &[0, 220, 0]);
        assert_eq!(px(5, 5), &[128, 128, 128]);
        assert_eq!(px(20, 5), &[128, 128, 128]);
    }
}
