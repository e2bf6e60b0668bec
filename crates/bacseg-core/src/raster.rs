//! A dense, row-major 2-D grid of samples: the storage under every image, mask and
//! probability map in bacseg.

use serde::{Deserialize, Serialize};

/// Width/height pair validated to be non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Size {
    pub width: usize,
    pub height: usize,
}

impl Size {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height }
    }

    pub fn area(&self) -> usize {
        self.width * self.height
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Row-major 2-D samples. `data.len() == width * height` always holds: it is checked at
/// construction and every mutator keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Raster<T> {
    width: usize,
    height: usize,
    data: Vec<T>,
}

/// A binary mask (true = inside). Used for breast masks and BAC masks.
pub type Mask = Raster<bool>;
/// Per-pixel probabilities in [0, 1].
pub type ProbMap = Raster<f32>;

/// A pixel value read as a number in [0, 1] by a network or a picture: f32 as it is, 16-bit
/// and 8-bit values over their whole range.
pub trait UnitValue: Copy + Default + Send + Sync {
    fn unit(self) -> f32;
}

impl UnitValue for f32 {
    fn unit(self) -> f32 {
        self
    }
}

impl UnitValue for u16 {
    fn unit(self) -> f32 {
        f32::from(self) / 65535.0
    }
}

impl UnitValue for u8 {
    fn unit(self) -> f32 {
        f32::from(self) / 255.0
    }
}

/// Values in [0, 1] (clamped) as 16-bit levels, `round(v x 65535)`: half the memory of f32,
/// and exactly how the training patch cache stores a preprocessed image
/// ([`crate::cache`]), so a network sees the values it was trained on.
pub fn unit_to_u16(image: &Raster<f32>) -> Raster<u16> {
    image.map(|&v| (v.clamp(0.0, 1.0) * 65535.0).round() as u16)
}

/// A buffer whose length does not match the stated size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("raster of {width}x{height} needs {} samples, got {len}", width * height)]
pub struct RasterSizeError {
    pub width: usize,
    pub height: usize,
    pub len: usize,
}

impl<T: Clone> Raster<T> {
    /// A raster filled with `value`.
    pub fn filled(width: usize, height: usize, value: T) -> Self {
        Self {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// Copy out the `w x h` window whose top-left corner is `(x0, y0)`; parts of the window
    /// outside the raster take `pad`.
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize, pad: T) -> Self {
        let mut out = Vec::with_capacity(w * h);
        for y in y0..y0 + h {
            if y < self.height {
                let row = self.row(y);
                let inside = row.get(x0..self.width.min(x0 + w)).unwrap_or(&[]);
                out.extend_from_slice(inside);
                out.extend(std::iter::repeat_n(pad.clone(), w - inside.len()));
            } else {
                out.extend(std::iter::repeat_n(pad.clone(), w));
            }
        }
        Self {
            width: w,
            height: h,
            data: out,
        }
    }
}

impl<T> Raster<T> {
    /// Wrap a row-major buffer; fails if its length is not `width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<T>) -> Result<Self, RasterSizeError> {
        if data.len() != width * height {
            return Err(RasterSizeError {
                width,
                height,
                len: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Build by evaluating `f(x, y)` at every pixel.
    pub fn from_fn(width: usize, height: usize, mut f: impl FnMut(usize, usize) -> T) -> Self {
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        Self {
            width,
            height,
            data,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// Sample at `(x, y)`. Panics when out of bounds, like slice indexing.
    #[inline]
    pub fn get(&self, x: usize, y: usize) -> &T {
        &self.data[y * self.width + x]
    }

    #[inline]
    pub fn get_mut(&mut self, x: usize, y: usize) -> &mut T {
        &mut self.data[y * self.width + x]
    }

    #[inline]
    pub fn row(&self, y: usize) -> &[T] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    #[inline]
    pub fn row_mut(&mut self, y: usize) -> &mut [T] {
        &mut self.data[y * self.width..(y + 1) * self.width]
    }

    /// Apply `f` to every sample, keeping the geometry.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Raster<U> {
        Raster {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(f).collect(),
        }
    }
}

impl Raster<bool> {
    /// Number of true pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&b| b).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length() {
        assert!(Raster::from_vec(3, 2, vec![0u8; 6]).is_ok());
        let err = Raster::from_vec(3, 2, vec![0u8; 5]).unwrap_err();
        assert_eq!(err.len, 5);
    }

    #[test]
    fn crop_pads_outside() {
        let r = Raster::from_fn(3, 2, |x, y| (y * 3 + x) as i32);
        let c = r.crop(1, 1, 3, 2, -1);
        assert_eq!(c.data(), &[4, 5, -1, -1, -1, -1]);
    }
}
