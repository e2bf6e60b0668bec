//! Winograd's minimal filtering F(4x4, 3x3) for the CPU engine's 3x3 "same" convolutions of
//! the wide layers: every 4x4 block of output pixels (a tile) is computed from its 6x6 input
//! neighbourhood with 36 multiplications per input and output channel pair instead of 144, so
//! the layers where the engine is bound by arithmetic (32 or more channels in and out) do a
//! quarter of the multiplications of the direct or im2col + GEMM paths.
//!
//! Written by hand because no crate does it on the engine's channels-last maps with the
//! decoder's concatenation read in place and the bias and ReLU applied on the way out; the
//! products themselves are the `gemm` crate's.
//!
//! How it works (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016,
//! interpolation points 0, +-1, +-2): the weights of each channel pair become `U = G g G^T`
//! (6x6, computed when a network is compiled, and at every step by the
//! training engine, whose weights change). A task takes a few rows of tiles; for each tile and input
//! channel the 6x6 input block becomes `V = B^T d B`, stored as 36 matrices `[tiles, cin]`;
//! 36 GEMMs give `M[xi] = V[xi] U[xi]` (`[tiles, cout]`), and each output tile is
//! `A^T M A` plus the bias, through the ReLU. The transforms work on 16 channels at a time
//! and are compiled for the CPU's instruction set through `pulp`. Rounding: the transforms
//! multiply by at most 8 (and the weights by 1/24 to 1/4), so results differ from the
//! direct convolution by a few units in the last place of the largest terms (the engine's
//! tests bound it).
//!
//! Maps whose sides are not multiples of 4 go to the other paths.

use std::cell::RefCell;

use rayon::prelude::*;

use super::isa::{Isa, engine_isa};
use super::kernels::{Conv, Nhwc, matmul, matmul_strided};

#[cfg(target_arch = "x86_64")]
use pulp::x86::{V3, V4};

/// Channels transformed together (one AVX-512 vector, two AVX2 vectors).
const L: usize = 16;
type Lane = [f32; L];

/// Tiles per chunk of the weight gradient, about: enough for its 36 products (each summing
/// over the chunk's tiles) to run at speed, with its transformed inputs and output gradients
/// (`36 x (cin + cout)` values a tile) not far beyond the caches.
const GRAD_CHUNK_TILES: usize = 256;

/// Tiles per task, about: enough rows for the 36 GEMMs to run at speed.
const TASK_TILES: usize = 64;

/// `G` of F(4x4, 3x3): the 3 weights of a kernel row or column to 6 transformed ones.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `BACSEG_CPU_WINOGRAD=0` turns the Winograd path off (for comparing the paths).
pub(crate) fn winograd_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("BACSEG_CPU_WINOGRAD").is_some_and(|v| v == "0"))
}

thread_local! {
    /// Per-thread transformed inputs and products of a task, reused between tasks.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The weight gradient's transformed sums and per-channel results, reused between calls.
    static GRAD_BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Output pixels of a training pass from which the training engine takes the Winograd path
/// (forward, input gradient and weight gradient). Its weights change every step, so each
/// pass also transforms them (about 200 multiply-adds per channel pair, against 13.5 saved
/// per pixel and pair), and on few tiles the products read transformed weights 4 times the
/// size of the direct ones. `bacseg bench --patch 256 --train-models unet` on a 2-core Zen 4,
/// UNet step at 128x128: batch 4 1.70x the speed without Winograd from 1024 pixels, 1.41x from
/// 4096; batch 8 slower from 256 pixels (its 1024-channel level at 8x8) than from 1024.
pub(crate) const TRAIN_MIN_PIXELS: usize = 1024;

/// Multiplications of one output pixel per channel pair on the Winograd path (36 per 16
/// pixels) against 9 directly: its GEMMs' FLOPs are this share of the direct convolution's.
pub const WINOGRAD_WORK_SHARE: f64 = 36.0 / (16.0 * 9.0);

impl Conv {
    /// Whether this convolution is one the Winograd path suits (before knowing the map size):
    /// a 3x3 kernel with at least 32 input and output channels, where the engine is bound by
    /// arithmetic; with AVX-512, 32 channels in and out stay on the direct convolution, which
    /// is as fast there (`bacseg bench --layers` measures each layer on every path; on a
    /// 2-core Zen 4, batch 4: 32->32 at 128x128 5.7 ms direct, 6.1 ms Winograd; 64->32 11.5
    /// and 10.6 ms; 128->64 at 64x64 13.7 and 7.2 ms).
    pub(crate) fn winograd_suits(&self) -> bool {
        let (cin, cout) = (self.cin(), self.cout);
        self.kernel == 3
            && cin >= 32
            && cout >= 32
            && (cin + cout > 64 || engine_isa() < Isa::Avx512)
    }

    /// Transform the weights for the Winograd path (`on`) where it suits this convolution, or
    /// drop them. Returns whether the path is now on. The weights must not change afterwards
    /// (the training engine uses [`refresh_winograd`](Self::refresh_winograd) instead).
    pub(crate) fn set_winograd(&mut self, on: bool) -> bool {
        self.winograd =
            (on && !winograd_disabled() && self.winograd_suits()).then(|| self.winograd_weights());
        self.winograd.is_some()
    }

    /// For the training engine, before a pass on `n` maps of `h x w` with weights that changed
    /// since the last one: transform them again (into the same buffer) where the Winograd path
    /// suits the layer and the map is large enough to pay for the transform at every step
    /// (`min_pixels`, [`TRAIN_MIN_PIXELS`] but in tests), or drop them. Returns whether the
    /// pass takes the path.
    pub(crate) fn refresh_winograd(
        &mut self,
        n: usize,
        h: usize,
        w: usize,
        min_pixels: usize,
    ) -> bool {
        let wanted = self.winograd_trains(n, h, w, min_pixels);
        if wanted {
            let mut u = self.winograd.take().unwrap_or_default();
            self.winograd_weights_into(&mut u);
            self.winograd = Some(u);
        } else {
            self.winograd = None;
        }
        wanted
    }

    /// Whether a training pass on `n` maps of `h x w` takes the Winograd path (forward and
    /// both gradients alike): the layer suits it, sides multiples of 4, at least `min_pixels`
    /// output pixels and at least the 8 tiles of [`winograd_runs`](Self::winograd_runs).
    fn winograd_trains(&self, n: usize, h: usize, w: usize, min_pixels: usize) -> bool {
        !winograd_disabled()
            && self.winograd_suits()
            && n * h * w >= min_pixels.max(8 * 16)
            && h.is_multiple_of(4)
            && w.is_multiple_of(4)
    }

    /// Whether a forward pass on `n` maps of `h x w` takes the Winograd path: sides multiples
    /// of 4, and at least 8 tiles (with fewer, reading the transformed weights, 4 times the
    /// size of the direct ones, takes longer than the direct convolution's arithmetic: 512
    /// channels at 8x8, batch 1).
    pub(crate) fn winograd_runs(&self, n: usize, h: usize, w: usize) -> bool {
        self.winograd.is_some() && h.is_multiple_of(4) && w.is_multiple_of(4) && n * h * w >= 8 * 16
    }

    /// `U[xi][ci][co]` (`xi = 6 a + b`) for every input channel `ci` of the concatenation.
    pub(crate) fn winograd_weights(&self) -> Vec<f32> {
        let mut u = Vec::new();
        self.winograd_weights_into(&mut u);
        u
    }

    /// [`winograd_weights`](Self::winograd_weights) into `u` (resized; its buffer reused): the
    /// training engine transforms its weights at every step. `G g G^T` in two steps, `G g`
    /// (3 rows) and then times `G^T` (6 rows), on whole rows of output channels at a time
    /// (the packed weights of one tap and input channel are contiguous over them), compiled
    /// for the CPU's vector instructions; one task per row `a` of `U` (its 6 `xi` are one
    /// contiguous block). In f32: each element is a sum of at most 9 products.
    pub(crate) fn winograd_weights_into(&self, u: &mut Vec<f32>) {
        let (cin, cout) = (self.cin(), self.cout);
        // The packed row of tap (ky, kx) of each global input channel is `ky * 3 cin +
        // first[ci] + kx * width[ci]` (`first = 3 ci0 + ci`, the split's offset and width).
        let located: Vec<(usize, usize)> = self
            .splits
            .iter()
            .scan(0, |ci0, &c| {
                let at = *ci0;
                *ci0 += c;
                Some((0..c).map(move |ci| (3 * at + ci, c)))
            })
            .flatten()
            .collect();
        u.resize(36 * cin * cout, 0.0);
        let g32: [[f32; 3]; 6] = G.map(|row| row.map(|v| v as f32));
        let isa = engine_isa();
        let weight = &self.weight;
        u.par_chunks_mut(6 * cin * cout)
            .enumerate()
            .for_each(|(a, block)| {
                with_isa(isa, || {
                    let mut gg = vec![0.0f32; 3 * cout];
                    for (ci, &(first, c)) in located.iter().enumerate() {
                        for (kx, dst) in gg.chunks_exact_mut(cout).enumerate() {
                            dst.fill(0.0);
                            for (ky, &k) in g32[a].iter().enumerate() {
                                if k != 0.0 {
                                    let row = ky * 3 * cin + first + kx * c;
                                    let src = &weight[row * cout..][..cout];
                                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += k * s);
                                }
                            }
                        }
                        let (g0, rest) = gg.split_at(cout);
                        let (g1, g2) = rest.split_at(cout);
                        for (b, k) in g32.iter().enumerate() {
                            let dst = &mut block[(b * cin + ci) * cout..][..cout];
                            for (((d, &x0), &x1), &x2) in dst.iter_mut().zip(g0).zip(g1).zip(g2) {
                                *d = k[0] * x0 + k[1] * x1 + k[2] * x2;
                            }
                        }
                    }
                });
            });
    }

    /// The Winograd path of [`forward`](Self::forward), into `out` (shaped already). Returns
    /// `false`, leaving `out` untouched, where it does not run (see
    /// [`winograd_runs`](Self::winograd_runs)).
    pub(crate) fn forward_winograd(&self, inputs: &[&Nhwc], out: &mut Nhwc) -> bool {
        let first = inputs[0];
        let (n, h, w) = (first.n, first.h, first.w);
        if !self.winograd_runs(n, h, w) {
            return false;
        }
        let Some(u) = &self.winograd else {
            return false;
        };
        let (cin, cout) = (self.cin(), self.cout);
        let tx = w / 4;
        let tile_rows = n * h / 4;
        let threads = rayon::current_num_threads().max(1);
        let rows_per_task = TASK_TILES
            .div_ceil(tx)
            .min(tile_rows.div_ceil(threads))
            .max(1);
        let isa = engine_isa();
        let all = tile_rows * tx;
        if all < threads * TASK_TILES {
            // Few tiles (the deep levels, small batches): the weights are the larger operand,
            // so each is read once: all tiles transformed, then the 36 products in parallel.
            // The buffers are taken out of the thread's slot while rayon runs (a task it
            // steals meanwhile may come back here).
            let (mut v, mut m) = BUFFERS.with_borrow_mut(std::mem::take);
            // Transformed inputs tile-major (`[tiles][36][cin]`), so that tile rows are
            // transformed in parallel; each product reads its matrix with a row stride.
            v.resize(36 * all * cin, 0.0);
            m.resize(36 * all * cout, 0.0);
            v.par_chunks_mut(tx * 36 * cin)
                .enumerate()
                .for_each(|(row, vr)| {
                    with_isa(isa, || {
                        self.input_transform(inputs, row, 1, vr, (cin, 36 * cin));
                    });
                });
            m.par_chunks_mut(all * cout)
                .enumerate()
                .for_each(|(xi, mx)| {
                    matmul(
                        mx,
                        cout,
                        &v[xi * cin..],
                        36 * cin,
                        &u[xi * cin * cout..][..cin * cout],
                        all,
                        cout,
                        cin,
                        1,
                    );
                });
            out.data
                .par_chunks_mut(4 * w * cout)
                .enumerate()
                .for_each(|(row, dst)| {
                    with_isa(isa, || {
                        self.output_transform(&m, (all, row * tx), tx, tx, w, dst);
                    });
                });
            BUFFERS.with_borrow_mut(|b| *b = (v, m));
            return true;
        }
        out.data
            .par_chunks_mut(rows_per_task * 4 * w * cout)
            .enumerate()
            .for_each(|(task, dst)| {
                let rows = dst.len() / (4 * w * cout);
                let tiles = rows * tx;
                // No rayon inside: the thread's buffers stay borrowed throughout.
                BUFFERS.with_borrow_mut(|(v, m)| {
                    v.resize(36 * tiles * cin, 0.0);
                    m.resize(36 * tiles * cout, 0.0);
                    with_isa(isa, || {
                        let strides = (tiles * cin, cin);
                        self.input_transform(inputs, task * rows_per_task, rows, v, strides);
                    });
                    for xi in 0..36 {
                        matmul(
                            &mut m[xi * tiles * cout..][..tiles * cout],
                            cout,
                            &v[xi * tiles * cin..][..tiles * cin],
                            cin,
                            &u[xi * cin * cout..][..cin * cout],
                            tiles,
                            cout,
                            cin,
                            1,
                        );
                    }
                    with_isa(isa, || {
                        self.output_transform(m, (tiles, 0), tiles, tx, w, dst)
                    });
                });
            });
        true
    }

    /// The gradient of this convolution's weights (packed like [`Conv::weight`]) on the
    /// Winograd path, for the training engine: `dz` is the gradient of its output for
    /// `inputs`. Each tile's input block becomes `V = B^T d B` and its output gradient `dM = A
    /// dY A^T`; the 36 products `dU[xi] = V[xi]^T dM[xi]`, summed over the tiles, go back
    /// through `dg = G^T dU G`. The tiles are taken in chunks of fixed size (whatever the
    /// thread count: a step's result does not depend on it) whose transforms run in parallel,
    /// then the 36 products in parallel. Returns `false`, leaving `grad` untouched, where the
    /// path does not run (as [`refresh_winograd`](Self::refresh_winograd) decides, from
    /// `min_pixels` output pixels).
    pub(crate) fn weight_grad_winograd(
        &self,
        inputs: &[&Nhwc],
        dz: &Nhwc,
        min_pixels: usize,
        grad: &mut [f32],
    ) -> bool {
        let (n, h, w) = (dz.n, dz.h, dz.w);
        if !self.winograd_trains(n, h, w, min_pixels) {
            return false;
        }
        let (cin, cout) = (self.cin(), self.cout);
        let tx = w / 4;
        let tile_rows = n * h / 4;
        let chunk_rows = GRAD_CHUNK_TILES.div_ceil(tx).clamp(1, tile_rows);
        let isa = engine_isa();
        // `dU` and the per-channel `dg` in buffers reused between calls (taken out of the
        // thread's slot while rayon runs). The first chunk's products overwrite `dU`.
        let (mut du, mut by_channel) = GRAD_BUFFERS.with_borrow_mut(std::mem::take);
        du.resize(36 * cin * cout, 0.0);
        let (mut v, mut m) = BUFFERS.with_borrow_mut(std::mem::take);
        let mut row0 = 0;
        while row0 < tile_rows {
            let rows = chunk_rows.min(tile_rows - row0);
            let tiles = rows * tx;
            // Tile-major (`[tiles][36][channels]`): tile rows transformed in parallel.
            v.resize(36 * tiles * cin, 0.0);
            m.resize(36 * tiles * cout, 0.0);
            v.par_chunks_mut(tx * 36 * cin)
                .enumerate()
                .for_each(|(r, vr)| {
                    with_isa(isa, || {
                        self.input_transform(inputs, row0 + r, 1, vr, (cin, 36 * cin));
                    });
                });
            m.par_chunks_mut(tx * 36 * cout)
                .enumerate()
                .for_each(|(r, mr)| {
                    with_isa(isa, || grad_output_transform(dz, row0 + r, mr));
                });
            let accumulate = row0 > 0;
            du.par_chunks_mut(cin * cout)
                .enumerate()
                .for_each(|(xi, dst)| {
                    matmul_strided(
                        dst,
                        cout,
                        &v[xi * cin..],
                        (1, 36 * cin),
                        &m[xi * cout..],
                        (36 * cout, 1),
                        (cin, cout, tiles),
                        accumulate,
                        1,
                    );
                });
            row0 += rows;
        }
        BUFFERS.with_borrow_mut(|b| *b = (v, m));
        // `dg = G^T dU G` per input channel (`[ci][ky][kx][co]`), then into the packed rows.
        let g32: [[f32; 3]; 6] = G.map(|row| row.map(|v| v as f32));
        by_channel.clear();
        by_channel.resize(cin * 9 * cout, 0.0);
        by_channel
            .par_chunks_mut(9 * cout)
            .enumerate()
            .for_each_init(Vec::new, |t, (ci, out)| {
                with_isa(isa, || {
                    // `t[a][kx] = sum_b dU[a][b] G[b][kx]`, then `dg[ky][kx] = sum_a G[a][ky]
                    // t[a][kx]`.
                    t.clear();
                    t.resize(18 * cout, 0.0);
                    for (a, ta) in t.chunks_exact_mut(3 * cout).enumerate() {
                        for (b, gb) in g32.iter().enumerate() {
                            let src = &du[((a * 6 + b) * cin + ci) * cout..][..cout];
                            for (kx, dst) in ta.chunks_exact_mut(cout).enumerate() {
                                let k = gb[kx];
                                if k != 0.0 {
                                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += k * s);
                                }
                            }
                        }
                    }
                    for (a, ga) in g32.iter().enumerate() {
                        for (ky, &k) in ga.iter().enumerate() {
                            if k == 0.0 {
                                continue;
                            }
                            for kx in 0..3 {
                                let src = &t[(a * 3 + kx) * cout..][..cout];
                                let dst = &mut out[(ky * 3 + kx) * cout..][..cout];
                                dst.iter_mut().zip(src).for_each(|(d, &s)| *d += k * s);
                            }
                        }
                    }
                });
            });
        let mut ci = 0;
        let mut ci0 = 0;
        for &c in &self.splits {
            for local in 0..c {
                for tap in 0..9 {
                    let (ky, kx) = (tap / 3, tap % 3);
                    let row = ky * 3 * cin + 3 * ci0 + kx * c + local;
                    grad[row * cout..][..cout]
                        .copy_from_slice(&by_channel[(ci * 9 + tap) * cout..][..cout]);
                }
                ci += 1;
            }
            ci0 += c;
        }
        GRAD_BUFFERS.with_borrow_mut(|b| *b = (du, by_channel));
        true
    }

    /// `V = B^T d B` of the tiles of tile rows `row0 .. row0 + rows` (image-major) into `v`:
    /// channel `ci` of element `xi` of the `t`-th of these tiles at `xi * strides.0 + t *
    /// strides.1 + ci`.
    #[inline(always)]
    fn input_transform(
        &self,
        inputs: &[&Nhwc],
        row0: usize,
        rows: usize,
        v: &mut [f32],
        (xs, ts): (usize, usize),
    ) {
        let (h, w) = (inputs[0].h, inputs[0].w);
        let (tx, th) = (w / 4, h / 4);
        for rr in 0..rows {
            let (img, ty) = ((row0 + rr) / th, (row0 + rr) % th);
            for t in 0..tx {
                let tile = rr * tx + t;
                let mut ci0 = 0;
                for (map, &c) in inputs.iter().zip(&self.splits) {
                    let mut cs = 0;
                    while cs < c {
                        let len = L.min(c - cs);
                        let mut d = [[0.0f32; L]; 36];
                        for (i, drow) in d.chunks_exact_mut(6).enumerate() {
                            let Some(y) = (ty * 4 + i).checked_sub(1).filter(|&y| y < h) else {
                                continue;
                            };
                            let row = &map.data[(img * h + y) * w * c..][..w * c];
                            for (j, dv) in drow.iter_mut().enumerate() {
                                if let Some(x) = (t * 4 + j).checked_sub(1).filter(|&x| x < w) {
                                    dv[..len].copy_from_slice(&row[x * c + cs..][..len]);
                                }
                            }
                        }
                        let vt = transform_input(&d);
                        for (xi, lane) in vt.iter().enumerate() {
                            v[xi * xs + tile * ts + ci0 + cs..][..len]
                                .copy_from_slice(&lane[..len]);
                        }
                        cs += len;
                    }
                    ci0 += c;
                }
            }
        }
    }

    /// `A^T M A` of `tiles` tiles plus the bias (and the ReLU) into their output rows `dst`;
    /// `M` holds `all` tiles (`[36][all][cout]`), these from `first` on.
    #[inline(always)]
    fn output_transform(
        &self,
        m: &[f32],
        (all, first): (usize, usize),
        tiles: usize,
        tx: usize,
        w: usize,
        dst: &mut [f32],
    ) {
        let cout = self.cout;
        for tile in 0..tiles {
            let (rr, t) = (tile / tx, tile % tx);
            let mut cs = 0;
            while cs < cout {
                let len = L.min(cout - cs);
                let mut x = [[0.0f32; L]; 36];
                for (xi, lane) in x.iter_mut().enumerate() {
                    lane[..len].copy_from_slice(&m[(xi * all + first + tile) * cout + cs..][..len]);
                }
                let mut y = transform_output(&x);
                let mut bias = [0.0f32; L];
                bias[..len].copy_from_slice(&self.bias[cs..cs + len]);
                for (k, lane) in y.iter_mut().enumerate() {
                    for (v, b) in lane.iter_mut().zip(&bias) {
                        *v += b;
                        if self.relu {
                            *v = v.max(0.0);
                        }
                    }
                    let (a, b) = (k / 4, k % 4);
                    dst[((rr * 4 + a) * w + t * 4 + b) * cout + cs..][..len]
                        .copy_from_slice(&lane[..len]);
                }
                cs += len;
            }
        }
    }
}

/// Run `f` compiled for `isa` (the transforms it inlines are vectorised for it).
fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512
            && let Some(s) = V4::try_new()
        {
            return s.vectorize(f);
        }
        if isa >= Isa::Avx2
            && let Some(s) = V3::try_new()
        {
            return s.vectorize(f);
        }
    }
    let _ = isa;
    f()
}

/// `B^T x` for one column or row of six channel vectors.
#[inline(always)]
fn bt(x: [&Lane; 6]) -> [Lane; 6] {
    let mut r = [[0.0f32; L]; 6];
    for l in 0..L {
        let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
        r[0][l] = 4.0 * x0 - 5.0 * x2 + x4;
        r[1][l] = (x3 + x4) - 4.0 * (x1 + x2);
        r[2][l] = (x4 - x3) + 4.0 * (x1 - x2);
        r[3][l] = (x4 - x2) + 2.0 * (x3 - x1);
        r[4][l] = (x4 - x2) - 2.0 * (x3 - x1);
        r[5][l] = 4.0 * x1 - 5.0 * x3 + x5;
    }
    r
}

/// `A^T x` for one column or row of six channel vectors.
#[inline(always)]
fn at(x: [&Lane; 6]) -> [Lane; 4] {
    let mut r = [[0.0f32; L]; 4];
    for l in 0..L {
        let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
        let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
        r[0][l] = x0 + s12 + s34;
        r[1][l] = d12 + 2.0 * d34;
        r[2][l] = s12 + 4.0 * s34;
        r[3][l] = d12 + 8.0 * d34 + x5;
    }
    r
}

/// `A x` for one column or row of four channel vectors (`A^T`'s transpose, for gradients).
#[inline(always)]
fn a(y: [&Lane; 4]) -> [Lane; 6] {
    let mut r = [[0.0f32; L]; 6];
    for l in 0..L {
        let (y0, y1, y2, y3) = (y[0][l], y[1][l], y[2][l], y[3][l]);
        let (s02, s13) = (y0 + y2, y1 + y3);
        let (e02, e13) = (y0 + 4.0 * y2, 2.0 * y1 + 8.0 * y3);
        r[0][l] = y0;
        r[1][l] = s02 + s13;
        r[2][l] = s02 - s13;
        r[3][l] = e02 + e13;
        r[4][l] = e02 - e13;
        r[5][l] = y3;
    }
    r
}

/// `dM = A dY A^T` of the tiles of tile row `row` of the output gradient `dz` into `dm`
/// (tile-major: channel `co` of element `xi` of tile `t` at `(t * 36 + xi) * cout + co`).
#[inline(always)]
fn grad_output_transform(dz: &Nhwc, row: usize, dm: &mut [f32]) {
    let (h, w, c) = (dz.h, dz.w, dz.c);
    let (tx, th) = (w / 4, h / 4);
    let (img, ty) = (row / th, row % th);
    for t in 0..tx {
        let mut cs = 0;
        while cs < c {
            let len = L.min(c - cs);
            let mut y = [[0.0f32; L]; 16];
            for (k, lane) in y.iter_mut().enumerate() {
                let (yy, xx) = (ty * 4 + k / 4, t * 4 + k % 4);
                lane[..len].copy_from_slice(&dz.data[((img * h + yy) * w + xx) * c + cs..][..len]);
            }
            // Columns, then rows.
            let mut cols = [[0.0f32; L]; 24];
            for j in 0..4 {
                let r = a([&y[j], &y[4 + j], &y[8 + j], &y[12 + j]]);
                for (i, lane) in r.into_iter().enumerate() {
                    cols[i * 4 + j] = lane;
                }
            }
            for i in 0..6 {
                let q = &cols[i * 4..i * 4 + 4];
                let r = a([&q[0], &q[1], &q[2], &q[3]]);
                for (j, lane) in r.iter().enumerate() {
                    dm[(t * 36 + i * 6 + j) * c + cs..][..len].copy_from_slice(&lane[..len]);
                }
            }
            cs += len;
        }
    }
}

/// `B^T d B` of a 6x6 block of channel vectors (row-major).
#[inline(always)]
fn transform_input(d: &[Lane; 36]) -> [Lane; 36] {
    let mut cols = [[0.0f32; L]; 36];
    for j in 0..6 {
        let r = bt([
            &d[j],
            &d[6 + j],
            &d[12 + j],
            &d[18 + j],
            &d[24 + j],
            &d[30 + j],
        ]);
        for (i, lane) in r.into_iter().enumerate() {
            cols[i * 6 + j] = lane;
        }
    }
    let mut v = [[0.0f32; L]; 36];
    for i in 0..6 {
        let c = &cols[i * 6..i * 6 + 6];
        let r = bt([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]);
        v[i * 6..i * 6 + 6].copy_from_slice(&r);
    }
    v
}

/// `A^T m A` of a 6x6 block of channel vectors: the 4x4 output tile (row-major).
#[inline(always)]
fn transform_output(m: &[Lane; 36]) -> [Lane; 16] {
    let mut cols = [[0.0f32; L]; 24];
    for j in 0..6 {
        let r = at([
            &m[j],
            &m[6 + j],
            &m[12 + j],
            &m[18 + j],
            &m[24 + j],
            &m[30 + j],
        ]);
        for (a, lane) in r.into_iter().enumerate() {
            cols[a * 6 + j] = lane;
        }
    }
    let mut y = [[0.0f32; L]; 16];
    for a in 0..4 {
        let c = &cols[a * 6..a * 6 + 6];
        let r = at([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]);
        y[a * 4..a * 4 + 4].copy_from_slice(&r);
    }
    y
}
