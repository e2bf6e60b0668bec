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

/// The frequency of FFT bin `k` of `n`, cycles per mm at `cell_mm` per cell.
fn frequency(k: usize, n: usize, cell_mm: f64) -> f64 {
    let k = if k < n / 2 {
        k as f64
    } else {
        k as f64 - n as f64
    };
    k / (n as f64 * cell_mm)
}

/// `amp` on the `n x n` FFT grid, 0 at the origin. The spectra are point-symmetric,
/// amp(-f) = amp(f), and the frequencies of bins k and n - k are exact negatives (bit for bit)
/// except at k = n / 2: each value off the Nyquist row and column serves its mirror too,
/// halving the evaluations.
fn amplitudes(n: usize, cell_mm: f64, amp: impl Fn(f64, f64) -> f64) -> Vec<f32> {
    let mirror = |k: usize| (n - k) % n;
    let mut amps = vec![f32::NAN; n * n];
    for ky in 0..n {
        let fy = frequency(ky, n, cell_mm);
        for kx in 0..n {
            if !amps[ky * n + kx].is_nan() {
                continue;
            }
            let a = if kx == 0 && ky == 0 {
                0.0
            } else {
                amp(frequency(kx, n, cell_mm), fy) as f32
            };
            amps[ky * n + kx] = a;
            if kx != n / 2 && ky != n / 2 {
                amps[mirror(ky) * n + mirror(kx)] = a;
            }
        }
    }
    amps
}

/// Two independent zero-mean, unit-variance Gaussian fields on an `n x n` grid whose
/// amplitude spectrum is `amp(fx, fy)` (frequencies in cycles per mm, `cell_mm` per cell).
/// A complex white spectrum without Hermitian symmetry gives two real fields at once: the
/// real and imaginary parts of its inverse transform are independent. `amp` must be
/// point-symmetric, `amp(-fx, -fy) = amp(fx, fy)`, as every power spectrum is.
pub(crate) fn field_pair(
    rng: &mut impl Rng,
    n: usize,
    cell_mm: f64,
    amp: impl Fn(f64, f64) -> f64,
) -> [Vec<f32>; 2] {
    let seed: u64 = rng.random();
    let amps = amplitudes(n, cell_mm, amp);
    let mut buf: Vec<Complex32> = amps
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let i = 2 * i as u64;
            Complex32::new(hash_normal(seed, i) * a, hash_normal(seed, i + 1) * a)
        })
        .collect();
    drop(amps);
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

/// Bilinear sample of a periodic `n x n` field at grid coordinates `(u, v)`; `n` is a power
/// of two (as [`grid_geometry`] makes it) and `|u|, |v| < 2^31`.
pub(crate) fn sample_periodic(field: &[f32], n: usize, u: f32, v: f32) -> f32 {
    debug_assert!(n.is_power_of_two());
    // floor without libm (a call on baseline x86-64), and the wrap as a mask.
    let floor = |t: f32| {
        let i = t as i64;
        i - i64::from(t < i as f32)
    };
    let (fu, fv) = (floor(u), floor(v));
    let (tu, tv) = (u - fu as f32, v - fv as f32);
    let wrap = n - 1;
    let (i0, j0) = (fu as usize & wrap, fv as usize & wrap);
    let (i1, j1) = ((i0 + 1) & wrap, (j0 + 1) & wrap);
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

    /// Row `ty` of the grid, interpolated between its two grid rows, into `out` (resized
    /// to the grid's side); [`Self::lerp`] then samples it along the row.
    pub fn row_into(&self, ty: Tap, out: &mut Vec<[f32; C]>) {
        out.clear();
        let (r0, r1) = (
            &self.data[ty.i * self.n..][..self.n],
            &self.data[(ty.i + 1) * self.n..][..self.n],
        );
        out.extend(
            r0.iter()
                .zip(r1)
                .map(|(a, b)| std::array::from_fn(|k| a[k] + ty.f * (b[k] - a[k]))),
        );
    }

    /// A row made by [`Self::row_into`], sampled at `tx`.
    #[inline]
    pub fn lerp(row: &[[f32; C]], tx: Tap) -> [f32; C] {
        let (a, b) = (&row[tx.i], &row[tx.i + 1]);
        std::array::from_fn(|k| a[k] + tx.f * (b[k] - a[k]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn half_plane_amplitudes_equal_direct_evaluation() {
        let amp = |fx: f64, fy: f64| anisotropic(fx, fy, 0.7, 9.0).max(1e-9).powf(-1.3);
        for n in [16, 32] {
            let got = amplitudes(n, 0.3, amp);
            for ky in 0..n {
                for kx in 0..n {
                    let want = if kx == 0 && ky == 0 {
                        0.0
                    } else {
                        amp(frequency(kx, n, 0.3), frequency(ky, n, 0.3)) as f32
                    };
                    assert_eq!(
                        got[ky * n + kx].to_bits(),
                        want.to_bits(),
                        "n {n} ({kx}, {ky})"
                    );
                }
            }
        }
    }

    #[test]
    fn periodic_sampling_wraps_negative_and_large_coordinates() {
        let n = 8;
        let field: Vec<f32> = (0..n * n).map(|i| ((i * 37) % 11) as f32).collect();
        let reference = |u: f32, v: f32| {
            let (fu, fv) = (u.floor(), v.floor());
            let at = |i: f32, j: f32| {
                let (i, j) = (
                    (i as i64).rem_euclid(n as i64) as usize,
                    (j as i64).rem_euclid(n as i64) as usize,
                );
                field[j * n + i]
            };
            let (tu, tv) = (u - fu, v - fv);
            let top = at(fu, fv) + tu * (at(fu + 1.0, fv) - at(fu, fv));
            let bot = at(fu, fv + 1.0) + tu * (at(fu + 1.0, fv + 1.0) - at(fu, fv + 1.0));
            top + tv * (bot - top)
        };
        for &(u, v) in &[
            (0.0, 0.0),
            (3.25, 7.5),
            (-0.25, -7.75),
            (-8.0, 15.999),
            (1234.5, -987.125),
            (7.0, -1.0),
        ] {
            let (got, want) = (sample_periodic(&field, n, u, v), reference(u, v));
            assert!((got - want).abs() < 1e-5, "({u}, {v}): {got} vs {want}");
        }
    }

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
        let sample = |tx: Tap, ty: Tap| {
            let mut row = Vec::new();
            g.row_into(ty, &mut row);
            Grid::lerp(&row, tx)[0]
        };
        assert!((sample(taps[5], taps[9]) - want).abs() < 1e-4);
        // Beyond the last cell centre the edge value holds.
        assert!((sample(taps[63], taps[0]) - (n - 1) as f32).abs() < 1e-4);
    }
}
