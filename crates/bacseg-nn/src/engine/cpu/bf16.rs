//! Reduced precision, chosen by the user: convolutions with bf16 weights and activations and f32
//! accumulation, on AVX512_BF16's `VDPBF16PS` (each 32-bit lane adds the products of two bf16
//! pairs to an f32 accumulator: twice the multiply-adds of an f32 FMA per instruction).
//!
//! Written by hand because no crate does it: the `gemm` crate has no bf16 dot-product kernel,
//! and the convolution reads channels-last rows with the decoder's concatenation in place like
//! the f32 direct convolution ([`super::direct`]), whose blocking this follows: a task converts
//! the zero-padded input rows under its output rows to bf16 once (two neighbouring channels per
//! 32-bit word, rounded to nearest even), then walks tiles of `P` pixels x `V` vectors of 16
//! output channels with the accumulators in registers; each tap and channel pair loads `V`
//! weight vectors and broadcasts one input word per pixel. Bias and ReLU are applied in f32.
//!
//! The instruction has no safe wrapper in `pulp` (the SIMD crate the engine uses), so this
//! module holds the engine's only `unsafe` besides the GEMM call: calling the kernel compiled
//! for AVX512_BF16 after the CPU was found to have it, and the intrinsics in it, whose memory
//! operands are bounds-checked slices.

#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

use super::isa::{Isa, engine_isa, measure_loop};
use super::kernels::{Conv, Nhwc};

/// Whether this process runs bf16 convolutions: the CPU has AVX512_BF16 and the engine's
/// instruction set is AVX-512 (`BACSEG_CPU_ISA` may hold it lower).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512bf16")
                && std::arch::is_x86_feature_detected!("avx512f")
        }) && engine_isa() == Isa::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `v` as bf16 bits, rounded to nearest even (a NaN stays a NaN).
fn bf16_bits(v: f32) -> u32 {
    let b = v.to_bits();
    if v.is_nan() {
        (b >> 16) | 0x40
    } else {
        (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    }
}

/// Two values as one word of bf16: `lo` in the low half (the first of a pair for `VDPBF16PS`).
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// The value `v` becomes in bf16 (for tests and error estimates).
pub fn round_to_bf16(v: f32) -> f32 {
    f32::from_bits(bf16_bits(v) << 16)
}

impl Conv {
    /// Run in bf16 from now on where this convolution can (`true`, on a CPU with AVX512_BF16),
    /// or in f32 (`false`). Returns whether it runs in bf16.
    pub fn set_bf16(&mut self, on: bool) -> bool {
        self.bf16 = if on && available() {
            self.pack_bf16()
        } else {
            None
        };
        self.bf16.is_some()
    }

    /// The weights as bf16 pairs, `[kernel * kernel * cin / 2, cout]` words (weight rows `2j`
    /// and `2j + 1`, which are neighbouring channels of one map and tap, in word `j`), where
    /// this convolution can run in bf16: output channels a multiple of 16, every input map an
    /// even number of channels.
    pub(crate) fn pack_bf16(&self) -> Option<Vec<u32>> {
        if self.cout == 0 || !self.cout.is_multiple_of(16) || self.splits.iter().any(|c| c % 2 != 0)
        {
            return None;
        }
        let cout = self.cout;
        let rows = self.weight.len() / cout;
        let mut packed = vec![0; rows / 2 * cout];
        for (j, words) in packed.chunks_exact_mut(cout).enumerate() {
            let (a, b) = (
                &self.weight[2 * j * cout..][..cout],
                &self.weight[(2 * j + 1) * cout..][..cout],
            );
            for ((word, &lo), &hi) in words.iter_mut().zip(a).zip(b) {
                *word = pair(lo, hi);
            }
        }
        Some(packed)
    }

    /// Input rows `y0 - k/2 .. y0 + rows + k/2` of image `img` as bf16 words, laid out like
    /// [`Conv::padded_input_rows`] with two channels per word.
    fn padded_input_words(
        &self,
        inputs: &[&Nhwc],
        img: usize,
        y0: usize,
        rows: usize,
        buf: &mut [u32],
    ) {
        self.padded_rows(inputs, img, y0, rows, buf, 2, 0, |words, values| {
            for (word, two) in words.iter_mut().zip(values.chunks_exact(2)) {
                *word = pair(two[0], two[1]);
            }
        });
    }

    /// The convolution in bf16 into `out` (shaped already) when this process runs bf16 and
    /// the convolution has packed bf16 weights; `false`, leaving `out` untouched, otherwise.
    pub(crate) fn forward_bf16(&self, inputs: &[&Nhwc], out: &mut Nhwc) -> bool {
        let Some(weights) = self.bf16.as_deref() else {
            return false;
        };
        if !available() || out.data.is_empty() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let w = out.w;
            let pad = self.kernel / 2;
            let row_words = (w + 2 * pad) * self.cin() / 2;
            self.for_each_task(out, row_words, |img, y0, rows, dst, scratch| {
                scratch.clear();
                scratch.resize((rows + self.kernel - 1) * row_words, 0.0);
                let words: &mut [u32] = pulp::bytemuck::cast_slice_mut(scratch.as_mut_slice());
                self.padded_input_words(inputs, img, y0, rows, words);
                let words: &[u32] = words;
                // SAFETY: `available()` found AVX512F and AVX512_BF16 on this CPU.
                unsafe {
                    if self.cout.is_multiple_of(32) {
                        bf16_task::<2, 12>(self, weights, words, row_words, w, rows, dst);
                    } else {
                        bf16_task::<1, 16>(self, weights, words, row_words, w, rows, dst);
                    }
                }
            });
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (weights, inputs);
            false
        }
    }
}

/// A task's output rows from its bf16 input rows, channel block by channel block (as
/// `direct_task`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bf16_task<const V: usize, const P: usize>(
    conv: &Conv,
    weights: &[u32],
    input: &[u32],
    row_words: usize,
    w: usize,
    rows: usize,
    dst: &mut [f32],
) {
    let k = conv.kernel;
    for block in 0..conv.cout / (16 * V) {
        for r in 0..rows {
            let input = &input[r * row_words..][..k * row_words];
            let out_row = &mut dst[r * w * conv.cout..][..w * conv.cout];
            let mut x = 0;
            // SAFETY (each call): this function runs only where AVX512_BF16 is available.
            while x + P <= w {
                unsafe { bf16_tile::<V, P>(conv, weights, block, input, row_words, x, out_row) };
                x += P;
            }
            while x + 4 <= w {
                unsafe { bf16_tile::<V, 4>(conv, weights, block, input, row_words, x, out_row) };
                x += 4;
            }
            while x < w {
                unsafe { bf16_tile::<V, 1>(conv, weights, block, input, row_words, x, out_row) };
                x += 1;
            }
        }
    }
}

/// Output pixels `x .. x + Q` of one row, output channels `16 V block ..` `16 V (block + 1)`.
///
/// # Safety
/// The CPU must have AVX512F and AVX512_BF16 (the function is inlined into [`bf16_task`], which
/// is compiled for them).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bf16_tile<const V: usize, const Q: usize>(
    conv: &Conv,
    weights: &[u32],
    block: usize,
    input: &[u32],
    row_words: usize,
    x: usize,
    out_row: &mut [f32],
) {
    let (k, cout) = (conv.kernel, conv.cout);
    let padded_w = row_words * 2 / conv.cin();
    let c0 = block * V * 16;
    // SAFETY: every load and store below reads or writes a slice of exactly 16 values, taken
    // with bounds-checked indexing; the bf16 reinterpretation is of a 512-bit integer vector
    // (same size, any bit pattern valid); the instructions are the caller's to have.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; Q];
        for a in &mut acc {
            for (v, av) in a.iter_mut().enumerate() {
                *av = _mm512_loadu_ps(conv.bias[c0 + 16 * v..][..16].as_ptr());
            }
        }
        let mut wrow = 0;
        for ky in 0..k {
            let mut o = ky * row_words;
            for &c in &conv.splits {
                let half = c / 2;
                let seg = &input[o..o + padded_w * half];
                o += padded_w * half;
                for kx in 0..k {
                    let taps = &seg[(x + kx) * half..][..Q * half];
                    for cp in 0..half {
                        let row = &weights[(wrow + cp) * cout + c0..][..V * 16];
                        let mut wv = [_mm512_setzero_si512(); V];
                        for (v, wvv) in wv.iter_mut().enumerate() {
                            *wvv = _mm512_loadu_si512(row[16 * v..][..16].as_ptr().cast());
                        }
                        for (p, a) in acc.iter_mut().enumerate() {
                            let b = _mm512_set1_epi32(taps[p * half + cp] as i32);
                            let b = core::mem::transmute::<__m512i, __m512bh>(b);
                            for (av, &wvv) in a.iter_mut().zip(&wv) {
                                *av = _mm512_dpbf16_ps(
                                    *av,
                                    b,
                                    core::mem::transmute::<__m512i, __m512bh>(wvv),
                                );
                            }
                        }
                    }
                    wrow += half;
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (p, a) in acc.into_iter().enumerate() {
            let px = &mut out_row[(x + p) * cout + c0..][..V * 16];
            for (v, av) in a.into_iter().enumerate() {
                let av = if conv.relu {
                    _mm512_max_ps(av, zero)
                } else {
                    av
                };
                _mm512_storeu_ps(px[16 * v..][..16].as_mut_ptr(), av);
            }
        }
    }
}

/// The bf16 peak of this CPU on `threads` threads at once, in GFLOP/s: a loop of `VDPBF16PS` on
/// 12 independent accumulators (4 flops per 32-bit lane: two products, two additions), best
/// of three runs of about `seconds` after a warm-up; `None` where bf16 is not [`available`].
pub fn measure_peak(threads: usize, seconds: f64) -> Option<f64> {
    if !available() {
        return None;
    }
    Some(measure_loop(threads, seconds, |iterations| {
        std::hint::black_box(dot_loop(iterations));
        (iterations * 12 * 16 * 4) as f64
    }))
}

/// `iterations` rounds of 12 dot-product instructions (only called where [`available`]).
fn dot_loop(iterations: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: callers check `available()`: the CPU has AVX512F and AVX512_BF16.
        unsafe { dot_loop_avx512bf16(iterations) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iterations;
        0.0
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn dot_loop_avx512bf16(iterations: u64) -> f32 {
    let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(2e-3));
    let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
    let mut acc = [_mm512_setzero_ps(); 12];
    for _ in 0..iterations {
        for v in &mut acc {
            *v = _mm512_dpbf16_ps(*v, a, b);
        }
    }
    _mm512_reduce_add_ps(
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v)),
    )
}
