//! The direct convolution: a stride-1 "same" convolution on channels-last maps computed with no
//! im2col matrix, for any number of output channels that is a multiple of 8.
//!
//! Written by hand because no crate does what it does: convolution straight from NHWC rows with
//! the decoder's concatenation read in place, the bias and ReLU applied in registers, and the
//! register blocking chosen at run time for the CPU's instruction set (AVX-512 with 32
//! registers of 16 lanes, AVX2 with 16 registers of 8). The im2col + GEMM path it replaces
//! spent as long building the im2col block as multiplying it at the full-resolution levels.
//!
//! How it works: a task takes a few output rows of one image and copies the input rows under
//! them once, zero-padded on both sides (and zero above and below the image). For each block of
//! `V` vectors of output channels, it walks the row in tiles of `P` pixels whose `P x V`
//! accumulators stay in registers: for every kernel tap and input channel, `V` weight vectors
//! are loaded once and multiplied with each of the `P` input values broadcast to a vector (an
//! embedded broadcast on AVX-512). A task's rows are walked inside each channel block, so a
//! block's weights are read from memory once per task, not once per pixel tile.
//!
//! The packed weights (`[kernel * kernel * cin, cout]`, rows in im2col order) are read in place.

use rayon::prelude::*;

use super::isa::{Isa, engine_isa};
use super::kernels::{Conv, Nhwc};

#[cfg(target_arch = "x86_64")]
use pulp::x86::{V3, V4};
#[cfg(target_arch = "x86_64")]
use pulp::{f32x8, f32x16};

/// The vector operations of one lane width on one instruction set.
trait Lanes: Copy + Send + Sync {
    type V: Copy + Send + Sync + pulp::bytemuck::Pod;
    const LANES: usize;
    fn splat(self, v: f32) -> Self::V;
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Run `f` compiled for this instruction set (everything it inlines included).
    fn run<R>(self, f: impl FnOnce() -> R) -> R;
}

/// AVX2/FMA, 8 lanes, 16 registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2x8(V3);

/// AVX-512 at 8 lanes (VL): the 8-channel blocks get 32 registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512x8(V4);

/// AVX-512, 16 lanes, 32 registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512x16(V4);

/// `Lanes` for a token wrapper: its vector type, lane count and pulp's operations on it.
macro_rules! lanes {
    ($name:ident, $v:ty, $lanes:expr, $splat:ident, $fma:ident, $max:ident) => {
        #[cfg(target_arch = "x86_64")]
        impl Lanes for $name {
            type V = $v;
            const LANES: usize = $lanes;
            #[inline(always)]
            fn splat(self, v: f32) -> $v {
                self.0.$splat(v)
            }
            #[inline(always)]
            fn fma(self, a: $v, b: $v, c: $v) -> $v {
                self.0.$fma(a, b, c)
            }
            #[inline(always)]
            fn max(self, a: $v, b: $v) -> $v {
                self.0.$max(a, b)
            }
            #[inline(always)]
            fn run<R>(self, f: impl FnOnce() -> R) -> R {
                self.0.vectorize(f)
            }
        }
    };
}

lanes!(Avx2x8, f32x8, 8, splat_f32x8, mul_add_f32x8, max_f32x8);
lanes!(Avx512x8, f32x8, 8, splat_f32x8, mul_add_f32x8, max_f32x8);
lanes!(
    Avx512x16,
    f32x16,
    16,
    splat_f32x16,
    mul_add_f32x16,
    max_f32x16
);

/// Values of padded input rows one task copies (about half a core's L2 cache).
const TASK_VALUES: usize = 64 * 1024;

/// How one convolution is blocked: the kernel monomorphisation that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocking {
    /// AVX2, 8 channels x 8 pixels.
    Avx2C8,
    /// AVX2, 16 channels x 6 pixels.
    Avx2C16,
    /// AVX-512 (VL), 8 channels x 16 pixels.
    Avx512C8,
    /// AVX-512, 16 channels x 16 pixels.
    Avx512C16,
    /// AVX-512, 32 channels x 12 pixels.
    Avx512C32,
    /// AVX-512 with pixels in the lanes: 8 channels x 48 pixels (3 vectors of 16 neighbouring
    /// pixels), for maps of few channels (see [`Conv::forward_pixel_lanes`]).
    Avx512Px8,
}

/// The blocking the direct convolution uses for `cout` output channels with instruction set
/// `isa`, or `None` where it does not run (then the im2col + GEMM path does).
pub(crate) fn blocking(isa: Isa, cout: usize) -> Option<Blocking> {
    if !cfg!(target_arch = "x86_64") || cout == 0 || !cout.is_multiple_of(8) {
        return None;
    }
    match isa {
        Isa::Avx512 if cout <= 16 => Some(Blocking::Avx512Px8),
        Isa::Avx512 if cout.is_multiple_of(32) => Some(Blocking::Avx512C32),
        Isa::Avx512 if cout.is_multiple_of(16) => Some(Blocking::Avx512C16),
        Isa::Avx512 => Some(Blocking::Avx512C8),
        Isa::Avx2 if cout.is_multiple_of(16) => Some(Blocking::Avx2C16),
        Isa::Avx2 => Some(Blocking::Avx2C8),
        Isa::Portable => None,
    }
}

/// `BACSEG_CPU_DIRECT=0` turns the direct convolution off (for comparing with the im2col +
/// GEMM path).
pub(crate) fn direct_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("BACSEG_CPU_DIRECT").is_some_and(|v| v == "0"))
}

impl Conv {
    /// The blocking this convolution runs with in this process, if it runs directly: where
    /// it is faster than the im2col + GEMM path, as measured per layer by `bacseg bench
    /// --layers`): up to 32 output channels (the full-resolution levels,
    /// where building the im2col block costs as much as the product); the `gemm` crate's
    /// kernels are faster on the deep levels' wide layers.
    pub(crate) fn direct_blocking(&self) -> Option<Blocking> {
        if direct_disabled() || self.cout > 32 {
            return None;
        }
        blocking(engine_isa(), self.cout)
    }

    /// The convolution of the channel concatenation of `inputs` into `out` with `blocking`
    /// (which must be one this CPU runs: see [`blocking`]). Returns `false`, leaving `out`
    /// untouched, where the CPU lacks the instruction set.
    pub(crate) fn forward_direct(
        &self,
        blocking: Blocking,
        inputs: &[&Nhwc],
        out: &mut Nhwc,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match blocking {
                Blocking::Avx2C8 => {
                    V3::try_new().map(|s| self.run_direct::<_, 1, 8>(Avx2x8(s), inputs, out))
                }
                Blocking::Avx2C16 => {
                    V3::try_new().map(|s| self.run_direct::<_, 2, 6>(Avx2x8(s), inputs, out))
                }
                Blocking::Avx512C8 => {
                    V4::try_new().map(|s| self.run_direct::<_, 1, 16>(Avx512x8(s), inputs, out))
                }
                Blocking::Avx512C16 => {
                    V4::try_new().map(|s| self.run_direct::<_, 1, 16>(Avx512x16(s), inputs, out))
                }
                Blocking::Avx512C32 => {
                    V4::try_new().map(|s| self.run_direct::<_, 2, 12>(Avx512x16(s), inputs, out))
                }
                Blocking::Avx512Px8 => {
                    V4::try_new().map(|s| self.forward_pixel_lanes(s, inputs, out))
                }
            }
            .is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (blocking, inputs, out);
            false
        }
    }

    /// Split `out` into tasks of whole output rows of one image, as many as the input rows a
    /// task copies (`row_values` each, plus the kernel's extra rows) allow within
    /// [`TASK_VALUES`] and at least a few per thread, and run `task(image, first row, rows,
    /// output rows, per-thread scratch)` on each in parallel.
    pub(super) fn for_each_task(
        &self,
        out: &mut Nhwc,
        row_values: usize,
        task: impl Fn(usize, usize, usize, &mut [f32], &mut Vec<f32>) + Sync,
    ) {
        let (h, w, cout) = (out.h, out.w, out.c);
        let threads = rayon::current_num_threads();
        let fit = (TASK_VALUES / row_values)
            .saturating_sub(self.kernel - 1)
            .max(1);
        let spread = (out.n * h).div_ceil(4 * threads).max(1);
        let rows_per_task = fit.min(spread).min(h);
        out.data
            .par_chunks_mut(h * w * cout)
            .enumerate()
            .for_each(|(img, image_out)| {
                image_out
                    .par_chunks_mut(rows_per_task * w * cout)
                    .enumerate()
                    .for_each(|(t, dst)| {
                        let rows = dst.len() / (w * cout);
                        super::kernels::COLUMNS.with_borrow_mut(|scratch| {
                            task(img, t * rows_per_task, rows, dst, scratch)
                        });
                    });
            });
    }

    /// Split the output into tasks of whole rows of one image and run them.
    fn run_direct<S: Lanes, const V: usize, const P: usize>(
        &self,
        simd: S,
        inputs: &[&Nhwc],
        out: &mut Nhwc,
    ) {
        let (w, cout) = (out.w, out.c);
        assert_eq!(cout, self.cout, "output channels");
        if out.data.is_empty() {
            return;
        }
        let pad = self.kernel / 2;
        let row_values = (w + 2 * pad) * self.cin();
        let weights: &[S::V] = pulp::bytemuck::cast_slice(&self.weight);
        let bias: &[S::V] = pulp::bytemuck::cast_slice(&self.bias);
        self.for_each_task(out, row_values, |img, y0, rows, dst, scratch| {
            scratch.clear();
            scratch.resize((rows + self.kernel - 1) * row_values, 0.0);
            self.padded_input_rows(inputs, img, y0, rows, scratch);
            simd.run(
                #[inline(always)]
                || self.direct_task::<S, V, P>(simd, weights, bias, scratch, w, rows, dst),
            );
        });
    }

    /// A task's output rows from its padded input rows, channel block by channel block.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn direct_task<S: Lanes, const V: usize, const P: usize>(
        &self,
        simd: S,
        weights: &[S::V],
        bias: &[S::V],
        scratch: &[f32],
        w: usize,
        rows: usize,
        dst: &mut [f32],
    ) {
        let row_values = (w + 2 * (self.kernel / 2)) * self.cin();
        for block in 0..self.cout / (V * S::LANES) {
            for r in 0..rows {
                let input = &scratch[r * row_values..][..self.kernel * row_values];
                let out_row = &mut dst[r * w * self.cout..][..w * self.cout];
                let mut x = 0;
                while x + P <= w {
                    self.tile::<S, V, P>(simd, weights, bias, block, input, row_values, x, out_row);
                    x += P;
                }
                while x + 4 <= w {
                    self.tile::<S, V, 4>(simd, weights, bias, block, input, row_values, x, out_row);
                    x += 4;
                }
                while x < w {
                    self.tile::<S, V, 1>(simd, weights, bias, block, input, row_values, x, out_row);
                    x += 1;
                }
            }
        }
    }

    /// Output pixels `x .. x + Q` of one row, channel block `block`, from the `kernel` padded
    /// input rows under it (`input`, rows of `row_values`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn tile<S: Lanes, const V: usize, const Q: usize>(
        &self,
        simd: S,
        weights: &[S::V],
        bias: &[S::V],
        block: usize,
        input: &[f32],
        row_values: usize,
        x: usize,
        out_row: &mut [f32],
    ) {
        let k = self.kernel;
        let padded_w = row_values / self.cin();
        let vectors_per_row = self.cout / S::LANES;
        let b0 = block * V;
        let mut acc = [[simd.splat(0.0); V]; Q];
        for a in &mut acc {
            a.copy_from_slice(&bias[b0..b0 + V]);
        }
        // Weight rows in im2col order: kernel row, map, kernel column, channel.
        let mut wrow = 0;
        for ky in 0..k {
            let mut o = ky * row_values;
            for &c in &self.splits {
                let seg = &input[o..o + padded_w * c];
                o += padded_w * c;
                for kx in 0..k {
                    let taps = &seg[(x + kx) * c..][..Q * c];
                    for ci in 0..c {
                        let wv = &weights[(wrow + ci) * vectors_per_row + b0..][..V];
                        for (p, a) in acc.iter_mut().enumerate() {
                            let v = simd.splat(taps[p * c + ci]);
                            for (av, &wvv) in a.iter_mut().zip(wv) {
                                *av = simd.fma(v, wvv, *av);
                            }
                        }
                    }
                    wrow += c;
                }
            }
        }
        let zero = simd.splat(0.0);
        for (p, a) in acc.into_iter().enumerate() {
            let px = &mut out_row[(x + p) * self.cout + b0 * S::LANES..][..V * S::LANES];
            for (dst, v) in px.chunks_exact_mut(S::LANES).zip(a) {
                let v = if self.relu { simd.max(v, zero) } else { v };
                dst.copy_from_slice(pulp::bytemuck::cast_slice(std::slice::from_ref(&v)));
            }
        }
    }
}

impl Conv {
    /// A 1x1 convolution to one channel (a network's head) on AVX-512: 16 pixels at a time, their
    /// channels in groups of 8 turned into planes in registers and multiplied by the broadcast
    /// weights. Returns `false`, leaving `out` untouched, where it does not apply (another
    /// shape, input channels not a multiple of 8, no AVX-512, or not chosen in this process).
    pub(crate) fn forward_head(&self, input: &Nhwc, out: &mut Nhwc) -> bool {
        if self.kernel != 1
            || self.cout != 1
            || self.splits.len() != 1
            || !self.cin().is_multiple_of(8)
            || direct_disabled()
            || engine_isa() != Isa::Avx512
        {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = V4::try_new() {
            let c = self.cin();
            let pixels = out.data.len();
            let chunk = (pixels / (4 * rayon::current_num_threads()))
                .next_multiple_of(16)
                .max(4096);
            out.data
                .par_chunks_mut(chunk)
                .zip(input.data.par_chunks(chunk * c))
                .for_each(|(dst, src)| {
                    simd.vectorize(
                        #[inline(always)]
                        || self.head_chunk(simd, src, dst),
                    )
                });
            return true;
        }
        false
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn head_chunk(&self, simd: V4, src: &[f32], dst: &mut [f32]) {
        let c = self.cin();
        let whole = dst.len() / 16 * 16;
        let (body, tail) = dst.split_at_mut(whole);
        for (i, d) in body.chunks_exact_mut(16).enumerate() {
            let px = &src[i * 16 * c..][..16 * c];
            let mut acc = simd.splat_f32x16(self.bias[0]);
            for g in 0..c / 8 {
                let mut pairs = [simd.splat_f32x16(0.0); 8];
                for (j, pair) in pairs.iter_mut().enumerate() {
                    let lanes: &mut [f32] =
                        pulp::bytemuck::cast_slice_mut(std::slice::from_mut(pair));
                    let (first, second) = lanes.split_at_mut(8);
                    first.copy_from_slice(&px[2 * j * c + 8 * g..][..8]);
                    second.copy_from_slice(&px[(2 * j + 1) * c + 8 * g..][..8]);
                }
                let channels = untranspose_8x16(simd, pairs);
                for (ch, v) in channels.into_iter().enumerate() {
                    let wv = simd.splat_f32x16(self.weight[8 * g + ch]);
                    acc = simd.mul_add_f32x16(v, wv, acc);
                }
            }
            let acc = if self.relu {
                simd.max_f32x16(acc, simd.splat_f32x16(0.0))
            } else {
                acc
            };
            d.copy_from_slice(pulp::bytemuck::cast_slice(std::slice::from_ref(&acc)));
        }
        for (p, d) in tail.iter_mut().enumerate() {
            let px = &src[(whole + p) * c..][..c];
            let v = self.bias[0] + px.iter().zip(&self.weight).map(|(a, b)| a * b).sum::<f32>();
            *d = if self.relu { v.max(0.0) } else { v };
        }
    }
}

/// Output channels per block of the pixel-lane kernel.
#[cfg(target_arch = "x86_64")]
const PX_COUT: usize = 8;
/// Pixel vectors (of 16) per tile of the pixel-lane kernel: 8 x 3 accumulators.
#[cfg(target_arch = "x86_64")]
const PX_VECTORS: usize = 3;

#[cfg(target_arch = "x86_64")]
impl Conv {
    /// The direct convolution with pixels in the lanes (AVX-512): for maps of 8 or 16 channels
    /// the channel-lane kernel broadcasts one input value per FMA and is bound by loads; here a
    /// task's input rows are copied once into planes (one row of one channel contiguous, zero
    /// padded), one load brings 16 neighbouring pixels of a channel, and each weight is
    /// broadcast once for 48 pixels. The accumulators (8 channels x 48 pixels) are written back
    /// channels-last through a small transpose.
    fn forward_pixel_lanes(&self, simd: V4, inputs: &[&Nhwc], out: &mut Nhwc) {
        let (w, cout) = (out.w, out.c);
        assert_eq!(cout, self.cout, "output channels");
        assert_eq!(cout % PX_COUT, 0, "output channels in blocks of 8");
        if out.data.is_empty() {
            return;
        }
        let k = self.kernel;
        let pad = k / 2;
        // A plane row: `pad` zeros, `w` pixels, zeros up to whole vectors of a tile past the end
        // (tiles read past `w`; their extra pixels are never stored).
        let plane_w = (pad + w).next_multiple_of(16) + 16 * PX_VECTORS + 2 * pad;
        let cin = self.cin();
        let row_values = plane_w * cin;
        self.for_each_task(out, row_values, |img, y0, rows, dst, scratch| {
            // Every value is written by plane_rows: no zeroing here.
            scratch.resize((rows + k - 1) * row_values, 0.0);
            let scratch = &mut scratch[..(rows + k - 1) * row_values];
            simd.vectorize(
                #[inline(always)]
                || {
                    self.plane_rows(simd, inputs, img, y0, rows, plane_w, scratch);
                    self.pixel_lane_task(simd, scratch, plane_w, w, rows, dst)
                },
            );
        });
    }

    /// Input rows `y0 - pad .. y0 + rows + pad` of image `img` as planes: row `i`, channel `c`
    /// (in concatenation order) at `(i * cin + c) * plane_w`, pixel `x` at `pad + x`, zero
    /// outside the image (every value of `scratch` is written). Maps of 8 channels go through
    /// a transpose in registers, 16 pixels at a time.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn plane_rows(
        &self,
        simd: V4,
        inputs: &[&Nhwc],
        img: usize,
        y0: usize,
        rows: usize,
        plane_w: usize,
        scratch: &mut [f32],
    ) {
        let pad = self.kernel / 2;
        let (h, w) = (inputs[0].h, inputs[0].w);
        let cin = self.cin();
        for i in 0..rows + self.kernel - 1 {
            let sy = (y0 + i).wrapping_sub(pad);
            let row = &mut scratch[i * cin * plane_w..][..cin * plane_w];
            if sy >= h {
                row.fill(0.0);
                continue;
            }
            let mut planes = row.chunks_exact_mut(plane_w);
            for (map, &c) in inputs.iter().zip(&self.splits) {
                let src = &map.data[(img * h + sy) * w * c..][..w * c];
                let mut mine: [&mut [f32]; 8] = Default::default();
                if c == 1 {
                    let plane = planes.next().expect("one plane per channel");
                    plane[..pad].fill(0.0);
                    plane[pad..pad + w].copy_from_slice(src);
                    plane[pad + w..].fill(0.0);
                    continue;
                }
                if c % 8 != 0 {
                    // Any other channel count, value by value.
                    let mut those: Vec<&mut [f32]> = planes.by_ref().take(c).collect();
                    for plane in &mut those {
                        plane[..pad].fill(0.0);
                        plane[pad + w..].fill(0.0);
                    }
                    for (x, px) in src.chunks_exact(c).enumerate() {
                        for (plane, &v) in those.iter_mut().zip(px) {
                            plane[pad + x] = v;
                        }
                    }
                    continue;
                }
                // Groups of 8 channels: 16 pixels at a time through a transpose in registers.
                for g in 0..c / 8 {
                    for m in &mut mine {
                        *m = planes.next().expect("one plane per channel");
                        m[..pad].fill(0.0);
                        m[pad + w..].fill(0.0);
                    }
                    let whole = w / 16 * 16;
                    for x in (0..whole).step_by(16) {
                        let mut pairs = [simd.splat_f32x16(0.0); 8];
                        for (j, pair) in pairs.iter_mut().enumerate() {
                            let lanes: &mut [f32] =
                                pulp::bytemuck::cast_slice_mut(std::slice::from_mut(pair));
                            let (first, second) = lanes.split_at_mut(8);
                            first.copy_from_slice(&src[(x + 2 * j) * c + 8 * g..][..8]);
                            second.copy_from_slice(&src[(x + 2 * j + 1) * c + 8 * g..][..8]);
                        }
                        let channels = untranspose_8x16(simd, pairs);
                        for (plane, v) in mine.iter_mut().zip(&channels) {
                            plane[pad + x..pad + x + 16].copy_from_slice(
                                pulp::bytemuck::cast_slice(std::slice::from_ref(v)),
                            );
                        }
                    }
                    for x in whole..w {
                        for (ch, plane) in mine.iter_mut().enumerate() {
                            plane[pad + x] = src[x * c + 8 * g + ch];
                        }
                    }
                }
            }
        }
    }

    /// A task's output rows from its planes, 8-channel block by block, 48 pixels at a time.
    #[inline(always)]
    fn pixel_lane_task(
        &self,
        simd: V4,
        scratch: &[f32],
        plane_w: usize,
        w: usize,
        rows: usize,
        dst: &mut [f32],
    ) {
        let cin = self.cin();
        for block in 0..self.cout / PX_COUT {
            for r in 0..rows {
                let out_row = &mut dst[r * w * self.cout..][..w * self.cout];
                let mut x = 0;
                while x < w {
                    self.pixel_lane_tile(simd, scratch, plane_w, cin, r, x, block, w, out_row);
                    x += 16 * PX_VECTORS;
                }
            }
        }
    }

    /// Output pixels `x .. x + 48` (those below `w`) of local row `r`, channels
    /// `8 block .. 8 block + 8`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn pixel_lane_tile(
        &self,
        simd: V4,
        scratch: &[f32],
        plane_w: usize,
        cin: usize,
        r: usize,
        x: usize,
        block: usize,
        w: usize,
        out_row: &mut [f32],
    ) {
        let k = self.kernel;
        let cout = self.cout;
        let c0 = block * PX_COUT;
        let mut acc = [[simd.splat_f32x16(0.0); PX_VECTORS]; PX_COUT];
        for (co, a) in acc.iter_mut().enumerate() {
            *a = [simd.splat_f32x16(self.bias[c0 + co]); PX_VECTORS];
        }
        // Weight rows in im2col order: kernel row, map, kernel column, channel.
        let mut wrow = 0;
        for ky in 0..k {
            let mut ci0 = 0;
            for &c in &self.splits {
                for kx in 0..k {
                    for ci in 0..c {
                        let plane = &scratch[((r + ky) * cin + ci0 + ci) * plane_w + x + kx..]
                            [..16 * PX_VECTORS];
                        let v: &[f32x16] = pulp::bytemuck::cast_slice(plane);
                        let wv = &self.weight[(wrow + ci) * cout + c0..][..PX_COUT];
                        for (a, &wc) in acc.iter_mut().zip(wv) {
                            let b = simd.splat_f32x16(wc);
                            for (av, &vv) in a.iter_mut().zip(v) {
                                *av = simd.mul_add_f32x16(vv, b, *av);
                            }
                        }
                    }
                    wrow += c;
                }
                ci0 += c;
            }
        }
        // Back to channels last: pixel p's 8 channels are lane p of the 8 accumulators; a
        // transpose in registers makes each vector two pixels' 8 channels.
        let zero = simd.splat_f32x16(0.0);
        let n = (w - x).min(16 * PX_VECTORS);
        for (v, mut column) in (0..PX_VECTORS).map(|v| (v, acc.map(|a| a[v]))) {
            if self.relu {
                for c in &mut column {
                    *c = simd.max_f32x16(*c, zero);
                }
            }
            let pairs = transpose_8x16(simd, column);
            for (j, pair) in pairs.iter().enumerate() {
                let values: &[f32] = pulp::bytemuck::cast_slice(std::slice::from_ref(pair));
                for (half, px) in values.chunks_exact(PX_COUT).enumerate() {
                    let p = 16 * v + 2 * j + half;
                    if p < n {
                        out_row[(x + p) * cout + c0..][..PX_COUT].copy_from_slice(px);
                    }
                }
            }
        }
    }
}

/// Indices of the transpose's three rounds of two-vector permutations (`_mm512_permutex2var_ps`:
/// below 16 from the first vector, from 16 the second), for the low and the high half of the
/// result. Round 1 interleaves channels 2m, 2m+1 (pixels 0-7, 8-15); round 2 makes quads of
/// channels for 4 pixels; round 3 makes the 8 channels of 2 pixels.
#[cfg(target_arch = "x86_64")]
const TRANSPOSE_IDX: [[[u32; 16]; 2]; 3] = {
    let mut idx = [[[0u32; 16]; 2]; 3];
    let mut i = 0;
    while i < 16 {
        let (p, s) = (i / 2, (i % 2) as u32);
        idx[0][0][i] = p as u32 + 16 * s;
        idx[0][1][i] = (p + 8) as u32 + 16 * s;
        let (p, q) = (i / 4, i % 4);
        let (first, second) = if q < 2 { (0, q) } else { (16, q - 2) };
        idx[1][0][i] = (first + 2 * p + second) as u32;
        idx[1][1][i] = (first + 2 * (p + 4) + second) as u32;
        let (p, q) = (i / 8, i % 8);
        let (first, second) = if q < 4 { (0, q) } else { (16, q - 4) };
        idx[2][0][i] = (first + 4 * p + second) as u32;
        idx[2][1][i] = (first + 4 * (p + 2) + second) as u32;
        i += 1;
    }
    idx
};

/// The inverse of each round of [`TRANSPOSE_IDX`]: the two vectors a round made, back to the
/// two it made them from.
#[cfg(target_arch = "x86_64")]
const UNTRANSPOSE_IDX: [[[u32; 16]; 2]; 3] = {
    let mut inv = [[[0u32; 16]; 2]; 3];
    let mut r = 0;
    while r < 3 {
        // Result slot i (of 32: 16 per vector) came from source slot TRANSPOSE_IDX[r][v][i].
        let mut v = 0;
        while v < 2 {
            let mut i = 0;
            while i < 16 {
                let from = TRANSPOSE_IDX[r][v][i] as usize;
                inv[r][from / 16][from % 16] = (16 * v + i) as u32;
                i += 1;
            }
            v += 1;
        }
        r += 1;
    }
    inv
};

/// Lanes of `x` and `y` picked by `idx` (below 16 from `x`, from 16 `y`'s).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn permute2(simd: V4, x: f32x16, idx: &[u32; 16], y: f32x16) -> f32x16 {
    use core::arch::x86_64::{__m512, __m512i};
    let idx: __m512i = pulp::cast(*idx);
    let r: __m512 = simd
        .avx512f
        ._mm512_permutex2var_ps(pulp::cast(x), idx, pulp::cast(y));
    pulp::cast(r)
}

/// [`transpose_8x16`] undone: eight vectors of two pixels' 8 channels (16 pixels of a map of
/// 8 channels, as they lie in memory) as eight vectors of one channel's 16 pixels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn untranspose_8x16(simd: V4, out: [f32x16; 8]) -> [f32x16; 8] {
    let perm = |x, idx, y| permute2(simd, x, idx, y);
    let [r1, r2, r3] = &UNTRANSPOSE_IDX;
    let mut c = [out[0]; 8];
    for g in 0..4 {
        let (half, lohi) = (g / 2, g % 2);
        c[4 * half + lohi] = perm(out[2 * g], &r3[0], out[2 * g + 1]);
        c[4 * half + 2 + lohi] = perm(out[2 * g], &r3[1], out[2 * g + 1]);
    }
    let mut b = [out[0]; 8];
    for (half, base) in [0usize, 1].into_iter().enumerate() {
        b[base] = perm(c[4 * half], &r2[0], c[4 * half + 1]);
        b[base + 2] = perm(c[4 * half], &r2[1], c[4 * half + 1]);
        b[base + 4] = perm(c[4 * half + 2], &r2[0], c[4 * half + 3]);
        b[base + 6] = perm(c[4 * half + 2], &r2[1], c[4 * half + 3]);
    }
    let mut a = [out[0]; 8];
    for m in 0..4 {
        a[2 * m] = perm(b[2 * m], &r1[0], b[2 * m + 1]);
        a[2 * m + 1] = perm(b[2 * m], &r1[1], b[2 * m + 1]);
    }
    a
}

/// Eight vectors of 16 pixels (one channel each) as eight vectors of two pixels' 8 channels:
/// result `j` holds pixel `2j`'s channels 0-7, then pixel `2j + 1`'s.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose_8x16(simd: V4, a: [f32x16; 8]) -> [f32x16; 8] {
    let perm = |x, idx, y| permute2(simd, x, idx, y);
    let [r1, r2, r3] = &TRANSPOSE_IDX;
    // Round 1: b[2m] pixels 0-7, b[2m+1] pixels 8-15, of channels 2m and 2m + 1.
    let mut b = [a[0]; 8];
    for m in 0..4 {
        b[2 * m] = perm(a[2 * m], &r1[0], a[2 * m + 1]);
        b[2 * m + 1] = perm(a[2 * m], &r1[1], a[2 * m + 1]);
    }
    // Round 2: quads of channels 0-3 (from b[0], b[2]) and 4-7 (b[4], b[6]) for pixels 0-3,
    // 4-7, then 8-11, 12-15 (from b[1], b[3] and b[5], b[7]).
    let mut c = [a[0]; 8];
    for (half, base) in [0usize, 1].into_iter().enumerate() {
        c[4 * half] = perm(b[base], &r2[0], b[base + 2]);
        c[4 * half + 1] = perm(b[base], &r2[1], b[base + 2]);
        c[4 * half + 2] = perm(b[base + 4], &r2[0], b[base + 6]);
        c[4 * half + 3] = perm(b[base + 4], &r2[1], b[base + 6]);
    }
    // Round 3: pixels 4g + 0..4 have channels 0-3 in c[q] and 4-7 in c[q + 2] (q the group).
    let mut out = [a[0]; 8];
    for g in 0..4 {
        let (half, lohi) = (g / 2, g % 2);
        let lo = c[4 * half + lohi];
        let hi = c[4 * half + 2 + lohi];
        out[2 * g] = perm(lo, &r3[0], hi);
        out[2 * g + 1] = perm(lo, &r3[1], hi);
    }
    out
}
