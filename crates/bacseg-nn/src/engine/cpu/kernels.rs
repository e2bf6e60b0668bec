//! The CPU engine's kernels on channels-last (NHWC) feature maps: convolution as a cache-blocked
//! im2col + GEMM with the bias and ReLU applied while the block is hot (or, for 8 output
//! channels, directly: one 8-lane accumulator per pixel), 2x2 max-pooling, the 2x2 stride-2
//! transposed convolution as one GEMM per input row, and bilinear resizing. The GEMM is the
//! `gemm` crate's (AVX2/FMA/AVX-512 kernels chosen at run time), the direct convolution is
//! compiled for AVX2/FMA and chosen at run time through `pulp`; work is split over rayon.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

/// `n` feature maps of `h x w` pixels and `c` channels, channels last:
/// value `(i, y, x, ch)` is `data[((i * h + y) * w + x) * c + ch]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Nhwc {
    /// Wrap `data` (`n * h * w * c` values, channels last).
    pub fn new(n: usize, h: usize, w: usize, c: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), n * h * w * c, "NHWC buffer size");
        Self { n, h, w, c, data }
    }

    /// A map of the given shape reusing `buffer`'s allocation; every value is overwritten by
    /// the kernel that fills it.
    pub(crate) fn with_buffer(
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        mut buffer: Vec<f32>,
    ) -> Self {
        buffer.resize(n * h * w * c, 0.0);
        Self {
            n,
            h,
            w,
            c,
            data: buffer,
        }
    }

    /// Maps from PyTorch's and burn's layout: `values` are `[n, c, h, w]`, channels first.
    pub fn from_nchw(values: &[f32], [n, c, h, w]: [usize; 4]) -> Self {
        assert_eq!(values.len(), n * c * h * w, "NCHW buffer size");
        let mut data = vec![0.0; values.len()];
        for i in 0..n {
            for ch in 0..c {
                let plane = &values[(i * c + ch) * h * w..][..h * w];
                for (p, &v) in plane.iter().enumerate() {
                    data[(i * h * w + p) * c + ch] = v;
                }
            }
        }
        Self::new(n, h, w, c, data)
    }

    /// Pixels in all maps.
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// `dst[i][j] = sum_p lhs[i][p] * rhs[p][j]` for an `m x k` `lhs` with row stride `lhs_rs`, a
/// row-major `k x n` `rhs` and an `m x n` `dst` with row stride `dst_rs` (all unit column
/// stride); `dst` is overwritten. `threads > 1` lets the GEMM split itself over rayon.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    m: usize,
    n: usize,
    k: usize,
    threads: usize,
) {
    matmul_strided(
        dst,
        dst_rs,
        lhs,
        (lhs_rs, 1),
        rhs,
        (n, 1),
        (m, n, k),
        false,
        threads,
    );
}

/// `dst = sum_p lhs[i][p] * rhs[p][j]` (or `dst +=` when `accumulate`) for operands of any
/// strides: element `(i, p)` of `lhs` is `lhs[i * lhs_s.0 + p * lhs_s.1]`, element `(p, j)` of
/// `rhs` is `rhs[p * rhs_s.0 + j * rhs_s.1]`, element `(i, j)` of `dst` is `dst[i * dst_rs + j]`.
/// The training engine's transposed products (weight and input gradients) go through it.
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_strided(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_s: (usize, usize),
    rhs: &[f32],
    rhs_s: (usize, usize),
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_rs >= n, "GEMM destination stride");
    assert!(dst.len() >= (m - 1) * dst_rs + n, "GEMM destination size");
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        lhs.len() > (m - 1) * lhs_s.0 + (k - 1) * lhs_s.1,
        "GEMM left operand size"
    );
    assert!(
        rhs.len() > (k - 1) * rhs_s.0 + (n - 1) * rhs_s.1,
        "GEMM right operand size"
    );
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep the largest index each operand's strides address inside
    // its slice; `dst` is a unique borrow, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_s.1 as isize,
            lhs_s.0 as isize,
            rhs.as_ptr(),
            rhs_s.1 as isize,
            rhs_s.0 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Add `bias` to every pixel of a channels-last block and clamp at 0 when `relu`.
pub(crate) fn bias_relu(block: &mut [f32], bias: &[f32], relu: bool) {
    for px in block.chunks_exact_mut(bias.len()) {
        if relu {
            for (v, b) in px.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        } else {
            for (v, b) in px.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

thread_local! {
    /// Per-thread im2col block, reused between blocks and forward passes.
    pub(crate) static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A stride-1 "same" convolution with an odd square kernel, its BatchNorm folded in, an
/// optional ReLU, reading its input channels from one or more maps in turn (a concatenation
/// that is never materialised).
#[derive(Debug, Clone)]
pub struct Conv {
    pub(crate) kernel: usize,
    /// Channels of each input map, in concatenation order.
    pub(crate) splits: Vec<usize>,
    pub(crate) cout: usize,
    /// `[kernel * kernel * cin, cout]`, rows in im2col order: kernel row, input map, kernel
    /// column, channel (so the taps of one kernel row of one map are contiguous in NHWC).
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) relu: bool,
    /// The weights as bf16 pairs when the convolution runs in bf16 (see [`super::bf16`]).
    pub(crate) bf16: Option<Vec<u32>>,
    /// The Winograd-transformed weights when the convolution takes that path (see
    /// [`super::winograd`]).
    pub(crate) winograd: Option<Vec<f32>>,
}

/// Pixels per im2col block: enough rows for the GEMM to run at speed, few enough for the block
/// to stay in the core's L2 cache.
pub(crate) const BLOCK_VALUES: usize = 48 * 1024;

impl Conv {
    /// From PyTorch-layout weights `[cout, cin, k, k]` (cin = sum of `splits`), per-channel
    /// `bias`, and a per-output-channel affine `scale`, `shift` applied after it (a folded
    /// BatchNorm: `y = scale * (conv + bias) + shift`).
    pub fn from_oihw(
        weight: &[f32],
        kernel: usize,
        splits: Vec<usize>,
        cout: usize,
        bias: Option<&[f32]>,
        affine: Option<(&[f32], &[f32])>,
        relu: bool,
    ) -> Self {
        let cin: usize = splits.iter().sum();
        assert_eq!(kernel % 2, 1, "odd kernel");
        assert_eq!(weight.len(), cout * cin * kernel * kernel, "weight size");
        let k = kernel;
        let mut packed = vec![0.0; k * k * cin * cout];
        for co in 0..cout {
            let scale = affine.map_or(1.0, |(s, _)| s[co]);
            let mut base = 0;
            for ky in 0..k {
                let mut ci0 = 0;
                for &c in &splits {
                    for kx in 0..k {
                        for ci in 0..c {
                            let w = weight[((co * cin + ci0 + ci) * k + ky) * k + kx];
                            packed[(base + kx * c + ci) * cout + co] = w * scale;
                        }
                    }
                    base += k * c;
                    ci0 += c;
                }
            }
        }
        let bias = (0..cout)
            .map(|co| {
                let b = bias.map_or(0.0, |b| b[co]);
                match affine {
                    Some((s, t)) => s[co] * b + t[co],
                    None => b,
                }
            })
            .collect();
        Self {
            kernel,
            splits,
            cout,
            weight: packed,
            bias,
            relu,
            bf16: None,
            winograd: None,
        }
    }

    pub(crate) fn cin(&self) -> usize {
        self.splits.iter().sum()
    }

    /// The convolution of the channel concatenation of `inputs` into `out` (whose buffer is
    /// reused).
    pub fn forward(&self, inputs: &[&Nhwc], out: Vec<f32>) -> Nhwc {
        let first = inputs[0];
        let (n, h, w) = (first.n, first.h, first.w);
        assert_eq!(inputs.len(), self.splits.len(), "input maps");
        for (map, &c) in inputs.iter().zip(&self.splits) {
            assert_eq!(
                (map.n, map.h, map.w, map.c),
                (n, h, w, c),
                "input map shape"
            );
        }
        let mut out = Nhwc::with_buffer(n, h, w, self.cout, out);
        // Winograd first: where it runs it does a quarter of the multiplications, faster
        // than even the bf16 kernel and in f32.
        if self.forward_winograd(inputs, &mut out) || self.forward_bf16(inputs, &mut out) {
            return out;
        }
        if self.kernel > 1
            && let Some(blocking) = self.direct_blocking()
            && self.forward_direct(blocking, inputs, &mut out)
        {
            return out;
        }
        if self.forward_head(first, &mut out) {
            return out;
        }
        self.forward_gemm(inputs, &mut out);
        out
    }

    /// The im2col + GEMM path of [`forward`](Self::forward), into `out` (shaped already).
    pub(crate) fn forward_gemm(&self, inputs: &[&Nhwc], out: &mut Nhwc) {
        let first = inputs[0];
        let (n, h, w) = (first.n, first.h, first.w);
        let kk = self.kernel * self.kernel * self.cin();
        let rows = n * h;
        let threads = rayon::current_num_threads();
        if self.kernel == 1 && inputs.len() == 1 {
            // The input already is the im2col matrix.
            let block = (BLOCK_VALUES / (w * kk)).max(1) * w;
            out.data
                .par_chunks_mut(block * self.cout)
                .enumerate()
                .for_each(|(b, dst)| {
                    let m = dst.len() / self.cout;
                    let lhs = &first.data[b * block * kk..][..m * kk];
                    matmul(dst, self.cout, lhs, kk, &self.weight, m, self.cout, kk, 1);
                    bias_relu(dst, &self.bias, self.relu);
                });
            return;
        }
        let block_rows = (BLOCK_VALUES / (w * kk)).max(1);
        let blocks = rows.div_ceil(block_rows);
        if blocks >= 4 * threads || self.weight.len() <= BLOCK_VALUES {
            // Many blocks: each thread builds and multiplies its own blocks.
            out.data
                .par_chunks_mut(block_rows * w * self.cout)
                .enumerate()
                .for_each(|(b, dst)| {
                    let start = b * block_rows;
                    let m = dst.len() / self.cout;
                    COLUMNS.with_borrow_mut(|cols| {
                        cols.resize(m * kk, 0.0);
                        self.im2col(inputs, start..start + m / w, &mut cols[..m * kk]);
                        matmul(dst, self.cout, cols, kk, &self.weight, m, self.cout, kk, 1);
                    });
                    bias_relu(dst, &self.bias, self.relu);
                });
        } else {
            // Few pixels, large weights (the deep levels): one im2col, one GEMM split by rayon.
            COLUMNS.with_borrow_mut(|cols| {
                cols.resize(rows * w * kk, 0.0);
                self.im2col(inputs, 0..rows, &mut cols[..rows * w * kk]);
                matmul(
                    &mut out.data,
                    self.cout,
                    cols,
                    kk,
                    &self.weight,
                    rows * w,
                    self.cout,
                    kk,
                    threads,
                );
            });
            bias_relu(&mut out.data, &self.bias, self.relu);
        }
    }

    /// The im2col rows of the pixels of global rows `rows` (image-major) into `cols`.
    pub(crate) fn im2col(&self, inputs: &[&Nhwc], rows: Range<usize>, cols: &mut [f32]) {
        let (h, w) = (inputs[0].h, inputs[0].w);
        let k = self.kernel;
        let pad = k / 2;
        let kk = k * k * self.cin();
        for (ri, r) in rows.enumerate() {
            let (img, y) = (r / h, r % h);
            for x in 0..w {
                let dst = &mut cols[(ri * w + x) * kk..][..kk];
                let mut o = 0;
                // Kernel columns that fall inside the image: [kx0, kx1).
                let kx0 = pad.saturating_sub(x);
                let kx1 = k.min(w + pad - x);
                for ky in 0..k {
                    let sy = (y + ky).wrapping_sub(pad);
                    for (map, &c) in inputs.iter().zip(&self.splits) {
                        let seg = &mut dst[o..o + k * c];
                        o += k * c;
                        if sy >= h {
                            seg.fill(0.0);
                            continue;
                        }
                        let row = &map.data[(img * h + sy) * w * c..][..w * c];
                        seg[..kx0 * c].fill(0.0);
                        let sx0 = x + kx0 - pad;
                        seg[kx0 * c..kx1 * c].copy_from_slice(&row[sx0 * c..(sx0 + kx1 - kx0) * c]);
                        seg[kx1 * c..].fill(0.0);
                    }
                }
            }
        }
    }
}

impl Conv {
    /// Input rows `y0 - k/2 .. y0 + rows + k/2` of image `img` into `buf`, one after another,
    /// each laid out as every map's `k/2 + w + k/2` pixels in concatenation order: the `w`
    /// pixels of each map are written (zero above and below the image), the `k/2` padding
    /// pixels on each side are not (the caller zeroes them once).
    pub(crate) fn padded_input_rows(
        &self,
        inputs: &[&Nhwc],
        img: usize,
        y0: usize,
        rows: usize,
        buf: &mut [f32],
    ) {
        self.padded_rows(inputs, img, y0, rows, buf, 1, 0.0, |dst, src| {
            dst.copy_from_slice(src)
        });
    }

    /// [`padded_input_rows`](Self::padded_input_rows) into units of `per` channels each, a
    /// row's values of each map written by `convert(units, values)`, rows outside the image
    /// filled with `zero`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn padded_rows<T: Copy>(
        &self,
        inputs: &[&Nhwc],
        img: usize,
        y0: usize,
        rows: usize,
        buf: &mut [T],
        per: usize,
        zero: T,
        convert: impl Fn(&mut [T], &[f32]),
    ) {
        let pad = self.kernel / 2;
        let (h, w) = (inputs[0].h, inputs[0].w);
        let mut o = 0;
        for i in 0..rows + self.kernel - 1 {
            let sy = (y0 + i).wrapping_sub(pad);
            for (map, &c) in inputs.iter().zip(&self.splits) {
                let units = c / per;
                let inner = &mut buf[o + pad * units..o + (pad + w) * units];
                o += (w + 2 * pad) * units;
                if sy < h {
                    convert(inner, &map.data[(img * h + sy) * w * c..][..w * c]);
                } else {
                    inner.fill(zero);
                }
            }
        }
    }
}

/// 2x2 max-pooling with stride 2 (floor, as `nn.MaxPool2d(2)`), into `out`'s buffer.
pub fn max_pool2x2(x: &Nhwc, out: Vec<f32>) -> Nhwc {
    let (h2, w2, c) = (x.h / 2, x.w / 2, x.c);
    let mut out = Nhwc::with_buffer(x.n, h2, w2, c, out);
    if out.data.is_empty() {
        return out;
    }
    out.data
        .par_chunks_mut(w2 * c)
        .enumerate()
        .for_each(|(r, dst)| {
            let (img, y) = (r / h2, r % h2);
            let top = &x.data[(img * x.h + 2 * y) * x.w * c..][..x.w * c];
            let bottom = &x.data[(img * x.h + 2 * y + 1) * x.w * c..][..x.w * c];
            for (xo, d) in dst.chunks_exact_mut(c).enumerate() {
                let a = &top[2 * xo * c..][..2 * c];
                let b = &bottom[2 * xo * c..][..2 * c];
                for ch in 0..c {
                    d[ch] = a[ch].max(a[c + ch]).max(b[ch]).max(b[c + ch]);
                }
            }
        });
    out
}

/// A 2x2 transposed convolution with stride 2 and no padding (learned 2x upsampling).
#[derive(Debug, Clone)]
pub struct ConvTranspose2x2 {
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    /// For each kernel row `i`: `[cin, 2 * cout]`, columns ordered (kernel column, channel), so
    /// one input row times it is output row `2y + i` in NHWC.
    pub(crate) weight: [Vec<f32>; 2],
    /// The bias repeated for both kernel columns: `[2 * cout]`.
    pub(crate) bias: Vec<f32>,
}

impl ConvTranspose2x2 {
    /// From PyTorch-layout weights `[cin, cout, 2, 2]` and an optional bias.
    pub fn from_iohw(weight: &[f32], cin: usize, cout: usize, bias: Option<&[f32]>) -> Self {
        assert_eq!(weight.len(), cin * cout * 4, "weight size");
        let pack = |i: usize| {
            let mut m = vec![0.0; cin * 2 * cout];
            for ci in 0..cin {
                for co in 0..cout {
                    for j in 0..2 {
                        m[ci * 2 * cout + j * cout + co] =
                            weight[((ci * cout + co) * 2 + i) * 2 + j];
                    }
                }
            }
            m
        };
        let b: Vec<f32> = (0..cout).map(|co| bias.map_or(0.0, |b| b[co])).collect();
        Self {
            cin,
            cout,
            weight: [pack(0), pack(1)],
            bias: [b.clone(), b].concat(),
        }
    }

    pub fn forward(&self, x: &Nhwc, out: Vec<f32>) -> Nhwc {
        assert_eq!(x.c, self.cin, "input channels");
        let (w, c2) = (x.w, 2 * self.cout);
        let mut out = Nhwc::with_buffer(x.n, 2 * x.h, 2 * w, self.cout, out);
        if out.data.is_empty() {
            return out;
        }
        // Each input row makes two output rows: one contiguous chunk of the output.
        out.data
            .par_chunks_mut(2 * w * c2)
            .enumerate()
            .for_each(|(r, dst)| {
                let src = &x.data[r * w * self.cin..][..w * self.cin];
                for (i, half) in dst.chunks_exact_mut(w * c2).enumerate() {
                    matmul(half, c2, src, self.cin, &self.weight[i], w, c2, self.cin, 1);
                    bias_relu(half, &self.bias, false);
                }
            });
        out
    }
}

/// A 3x3 convolution with stride 2 and padding 1 of `x` (`ceil(h / 2) x ceil(w / 2)` outputs)
/// into `out`'s buffer, as im2col blocks of output rows times the weights (the weight rows are
/// in (kernel row, kernel column, channel) order, which is what the copy below writes); bias
/// and ReLU (when `conv.relu`) in the epilogue, then `post` on each block of whole pixels
/// while it is in cache.
pub(crate) fn conv3x3_stride2(
    conv: &Conv,
    x: &Nhwc,
    out: Vec<f32>,
    post: &(dyn Fn(&mut [f32]) + Sync),
) -> Nhwc {
    let (c, cout) = (x.c, conv.cout);
    debug_assert_eq!((conv.kernel, conv.cin()), (3, c), "a 3x3 convolution of x");
    let (oh, ow) = (x.h.div_ceil(2), x.w.div_ceil(2));
    let kk = 9 * c;
    let mut out = Nhwc::with_buffer(x.n, oh, ow, cout, out);
    if out.data.is_empty() {
        return out;
    }
    let block_rows = (BLOCK_VALUES / (ow * kk)).max(1);
    out.data
        .par_chunks_mut(block_rows * ow * cout)
        .enumerate()
        .for_each(|(b, dst)| {
            let m = dst.len() / cout;
            COLUMNS.with_borrow_mut(|cols| {
                cols.resize(m * kk, 0.0);
                for (ri, r) in (b * block_rows..b * block_rows + m / ow).enumerate() {
                    let (img, y) = (r / oh, r % oh);
                    for xo in 0..ow {
                        let d = &mut cols[(ri * ow + xo) * kk..][..kk];
                        for ky in 0..3 {
                            let sy = (2 * y + ky).wrapping_sub(1);
                            for kx in 0..3 {
                                let sx = (2 * xo + kx).wrapping_sub(1);
                                let seg = &mut d[(ky * 3 + kx) * c..][..c];
                                if sy < x.h && sx < x.w {
                                    seg.copy_from_slice(
                                        &x.data[((img * x.h + sy) * x.w + sx) * c..][..c],
                                    );
                                } else {
                                    seg.fill(0.0);
                                }
                            }
                        }
                    }
                }
                matmul(dst, cout, cols, kk, &conv.weight, m, cout, kk, 1);
            });
            bias_relu(dst, &conv.bias, conv.relu);
            post(dst);
        });
    out
}

/// Bilinear resizing to `oh x ow` with half-pixel centres (`F.interpolate(...,
/// mode="bilinear", align_corners=False)`, no antialiasing), into `out`'s buffer.
pub fn resize_bilinear_half_pixel(x: &Nhwc, oh: usize, ow: usize, out: Vec<f32>) -> Nhwc {
    resize_bilinear(x, oh, ow, out, half_pixel_coord)
}

/// The two source positions of output position `o` of `out_len` in bilinear resizing from
/// `in_len` with half-pixel centres (source `(o + 0.5) * in / out - 0.5`, clamped to the
/// edges), and the weight of the second.
pub(crate) fn half_pixel_coord(o: usize, out_len: usize, in_len: usize) -> (usize, usize, f32) {
    let s = ((o as f64 + 0.5) * in_len as f64 / out_len as f64 - 0.5).max(0.0);
    let i0 = (s.floor() as usize).min(in_len - 1);
    let i1 = (i0 + 1).min(in_len - 1);
    (i0, i1, (s - i0 as f64) as f32)
}

/// The two source positions of output position `o` of `out_len` in bilinear resizing from
/// `in_len` with aligned corners, and the weight of the second.
pub(crate) fn aligned_coord(o: usize, out_len: usize, in_len: usize) -> (usize, usize, f32) {
    let s = if out_len > 1 {
        o as f64 * (in_len - 1) as f64 / (out_len - 1) as f64
    } else {
        0.0
    };
    let i0 = (s.floor() as usize).min(in_len - 1);
    let i1 = (i0 + 1).min(in_len - 1);
    (i0, i1, (s - i0 as f64) as f32)
}

/// Bilinear resizing to `oh x ow` with aligned corners (`F.interpolate(..., mode="bilinear",
/// align_corners=True)`), into `out`'s buffer.
pub fn resize_bilinear_aligned(x: &Nhwc, oh: usize, ow: usize, out: Vec<f32>) -> Nhwc {
    resize_bilinear(x, oh, ow, out, aligned_coord)
}

/// Bilinear resizing to `oh x ow` with `coord` mapping an output position (of `out_len`, from
/// `in_len`) to its two source positions and the weight of the second.
fn resize_bilinear(
    x: &Nhwc,
    oh: usize,
    ow: usize,
    out: Vec<f32>,
    coord: fn(usize, usize, usize) -> (usize, usize, f32),
) -> Nhwc {
    let c = x.c;
    let mut out = Nhwc::with_buffer(x.n, oh, ow, c, out);
    if out.data.is_empty() {
        return out;
    }
    let cols: Vec<_> = (0..ow).map(|o| coord(o, ow, x.w)).collect();
    out.data
        .par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(r, dst)| {
            let (img, y) = (r / oh, r % oh);
            let (y0, y1, fy) = coord(y, oh, x.h);
            let row0 = &x.data[(img * x.h + y0) * x.w * c..][..x.w * c];
            let row1 = &x.data[(img * x.h + y1) * x.w * c..][..x.w * c];
            for (d, &(x0, x1, fx)) in dst.chunks_exact_mut(c).zip(&cols) {
                for ch in 0..c {
                    let top = row0[x0 * c + ch] * (1.0 - fx) + row0[x1 * c + ch] * fx;
                    let bottom = row1[x0 * c + ch] * (1.0 - fx) + row1[x1 * c + ch] * fx;
                    d[ch] = top * (1.0 - fy) + bottom * fy;
                }
            }
        });
    out
}
