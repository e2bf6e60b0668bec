//! Random fields with a prescribed power spectrum (1/f^beta parenchyma, band-passed
//! networks of strands), synthesised by inverse FFT on a coarse grid and sampled bilinearly
//! at full resolution. Mammographic texture has little power at fine scales (beta about 3),
//! so a grid of about 1024 cells loses nothing visible and keeps one image well under a second.

use rand::Rng;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;

use super::hash_normal;

/// Side of the square FFT grid for an image of `width x height` and the pixels per cell.
pub(crate) fn grid_geometry(width: usize, height: usize) -> (usize, usize) {
    let cell = width.max(height).div_ceil(1024).max(1);
    let need = width.max(height).div_ceil(cell);
    (need.next_power_of_two().max(16), cell)
}

/// Two independent zero-mean, unit-variance Gaussian fields on an `n x n` grid whose
/// amplitude spectrum is `amp(fx, fy)` (frequencies in cycles per mm, `cell_mm` per cell).
/// A complex white spectrum without Hermitian symmetry gives two real fields at once: the
/// real and imaginary parts of its inverse transform are independent.
pub(crate) fn field_pair(
    rng: &mut impl Rng,
    n: usize,
    cell_mm: f64,
    amp: impl Fn(f64, f64) -> f64,
) -> [Vec<f32>; 2] {
    let freq = |k: usize| {
        let k = if k < n / 2 {
            k as f64
        } else {
            k as f64 - n as f64
        };
        k / (n as f64 * cell_mm)
    };
    let seed: u64 = rng.random();
    let mut buf: Vec<Complex32> = Vec::with_capacity(n * n);
    for ky in 0..n {
        let fy = freq(ky);
        for kx in 0..n {
            let a = if kx == 0 && ky == 0 {
                0.0
            } else {
                amp(freq(kx), fy) as f32
            };
            let i = 2 * (ky * n + kx) as u64;
            buf.push(Complex32::new(
                hash_normal(seed, i) * a,
                hash_normal(seed, i + 1) * a,
            ));
        }
    }
    let fft = FftPlanner::<f32>::new().plan_fft_inverse(n);
    fft.process(&mut buf);
    transpose(&mut buf, n);
    fft.process(&mut buf);
    transpose(&mut buf, n);
    let mut re: Vec<f32> = buf.iter().map(|c| c.re).collect();
    let mut im: Vec<f32> = buf.iter().map(|c| c.im).collect();
    normalise(&mut re);
    normalise(&mut im);
    [re, im]
}

/// In-place transpose of a square matrix, in blocks so that both sides stay in cache.
fn transpose(buf: &mut [Complex32], n: usize) {
    const B: usize = 32;
    for by in (0..n).step_by(B) {
        for bx in (by..n).step_by(B) {
            for y in by..(by + B).min(n) {
                let start = if bx == by { y + 1 } else { bx };
                for x in start..(bx + B).min(n) {
                    buf.swap(y * n + x, x * n + y);
                }
            }
        }
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = var.sqrt().max(1e-12);
    for x in v {
        *x = ((f64::from(*x) - mean) / sd) as f32;
    }
}

/// Spectral coordinates stretched along `angle` by `ratio`: structures become `ratio` times
/// longer along that direction (ducts and ligaments run towards the nipple).
pub(crate) fn anisotropic(fx: f64, fy: f64, angle: f64, ratio: f64) -> f64 {
    let (s, c) = angle.sin_cos();
    let along = fx * c + fy * s;
    let across = -fx * s + fy * c;
    ((along * ratio).powi(2) + across.powi(2)).sqrt()
}

/// Bilinear sample of a periodic `n x n` field at grid coordinates `(u, v)`.
pub(crate) fn sample_periodic(field: &[f32], n: usize, u: f32, v: f32) -> f32 {
    let (fu, fv) = (u.floor(), v.floor());
    let (tu, tv) = (u - fu, v - fv);
    let nn = n as i64;
    let (i0, j0) = (
        (fu as i64).rem_euclid(nn) as usize,
        (fv as i64).rem_euclid(nn) as usize,
    );
    let (i1, j1) = ((i0 + 1) % n, (j0 + 1) % n);
    let top = field[j0 * n + i0] + tu * (field[j0 * n + i1] - field[j0 * n + i0]);
    let bot = field[j1 * n + i0] + tu * (field[j1 * n + i1] - field[j1 * n + i0]);
    top + tv * (bot - top)
}

/// `C` interleaved channels on an `n x n` grid of `cell` pixels per cell, sampled
/// bilinearly at pixel centres.
#[derive(Debug, Clone)]
pub(crate) struct Grid<const C: usize> {
    n: usize,
    cell: f32,
    data: Vec<[f32; C]>,
}

/// Where one pixel column or row falls on the grid: lower cell and weight of the upper.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tap {
    i: usize,
    f: f32,
}

impl<const C: usize> Grid<C> {
    pub fn new(n: usize, cell: usize, channels: [&[f32]; C]) -> Self {
        let data = (0..n * n)
            .map(|i| std::array::from_fn(|c| channels[c][i]))
            .collect();
        Self {
            n,
            cell: cell as f32,
            data,
        }
    }

    pub fn taps(&self, len: usize) -> Vec<Tap> {
        (0..len)
            .map(|x| {
                let u = ((x as f32 + 0.5) / self.cell - 0.5).clamp(0.0, (self.n - 1) as f32);
                let i = (u.floor() as usize).min(self.n.saturating_sub(2));
                Tap { i, f: u - i as f32 }
            })
            .collect()
    }

    #[inline]
    pub fn sample(&self, tx: Tap, ty: Tap) -> [f32; C] {
        let r0 = ty.i * self.n + tx.i;
        let r1 = r0 + self.n;
        let (a, b, c, d) = (
            &self.data[r0],
            &self.data[r0 + 1],
            &self.data[r1],
            &self.data[r1 + 1],
        );
        std::array::from_fn(|k| {
            let top = a[k] + tx.f * (b[k] - a[k]);
            let bot = c[k] + tx.f * (d[k] - c[k]);
            top + ty.f * (bot - top)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn power_law_slope_is_recovered() {
        // Radially averaged power of a beta=3 field falls about 3 decades per decade.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 128;
        let [f, _] = field_pair(&mut rng, n, 1.0, |fx, fy| (fx * fx + fy * fy).powf(-0.75));
        let mut buf: Vec<Complex32> = f.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        let fft = FftPlanner::<f32>::new().plan_fft_forward(n);
        fft.process(&mut buf);
        transpose(&mut buf, n);
        fft.process(&mut buf);
        let band = |lo: f64, hi: f64| {
            let (mut s, mut c) = (0.0, 0);
            for ky in 0..n {
                for kx in 0..n {
                    let fx = if kx < n / 2 {
                        kx as f64
                    } else {
                        kx as f64 - n as f64
                    };
                    let fy = if ky < n / 2 {
                        ky as f64
                    } else {
                        ky as f64 - n as f64
                    };
                    let r = (fx * fx + fy * fy).sqrt();
                    if r >= lo && r < hi {
                        s += f64::from(buf[ky * n + kx].norm_sqr());
                        c += 1;
                    }
                }
            }
            s / c as f64
        };
        let slope = (band(4.0, 6.0) / band(40.0, 60.0)).log10();
        assert!((2.5..3.5).contains(&slope), "slope {slope}");
    }

    #[test]
    fn bilinear_is_exact_on_a_linear_field() {
        let n = 16;
        let v: Vec<f32> = (0..n * n).map(|i| i as f32).collect();
        let g = Grid::new(n, 4, [&v]);
        let taps = g.taps(64);
        // Pixel centre 5.5 is grid coordinate 5.5/4 - 0.5 = 0.875; 9.5 is 1.875.
        let want = 1.875 * n as f32 + 0.875;
        assert!((g.sample(taps[5], taps[9])[0] - want).abs() < 1e-4);
        // Beyond the last cell centre the edge value holds.
        assert!((g.sample(taps[63], taps[0])[0] - (n - 1) as f32).abs() < 1e-4);
    }
}
