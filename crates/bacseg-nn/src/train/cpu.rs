//! The CPU training engine: a U-Net-shaped network (DT-UNet, UNet, any width and depth) or a
//! SegNet (any widths and stage lengths) trained on the CPU engine's channels-last kernels, with
//! its own backward passes and AdamW.
//!
//! Why an engine of our own rather than burn's autodiff on its CPU backend: a DT-UNet training
//! step there spends three quarters of its time in the backward pass (general NCHW im2col for
//! every gradient, a slow direct path for the weight gradients of small-channel convolutions at
//! batches of 4 or fewer, BatchNorm and ReLU as separate passes with their own buffers). Here
//! every convolution is one im2col + GEMM per gradient on the `gemm` crate (AVX-512 or AVX2
//! kernels chosen at run time), the input gradient of a 3x3 convolution is the CPU engine's own
//! forward convolution with the kernel flipped and transposed (on the wide 3x3 layers, where
//! the maps are large enough to pay for transforming the weights again at every step, the
//! forward pass and both gradients take the engine's Winograd path), BatchNorm and ReLU are fused
//! into one pass forward and one backward, the decoder's concatenation is read in place, and
//! every activation buffer is reused from one step to the next.
//!
//! The engine is built from a burn module ([`TrainNet::from_parts`]) and written back into it
//! ([`TrainNet::write_into`]), so runs keep burn's checkpoints and weight files; the AdamW state
//! converts to and from burn's optimizer record ([`TrainNet::optimizer_record`],
//! [`TrainNet::load_optimizer_record`]), so a run resumes on either engine. Its numbers follow
//! burn's conventions exactly: BatchNorm running averages `r = (1 - m) r + m s` with the biased
//! batch variance, AdamW with decoupled decay `p (1 - lr wd)`, bias-corrected moments and
//! `eps` added to the square root, gradient clipping by the norm of each parameter tensor.

use std::collections::HashMap;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::nn::BatchNorm;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::engine::cpu::kernels::{
    BLOCK_VALUES, COLUMNS, Conv, ConvTranspose2x2, Nhwc, aligned_coord as coord, matmul_strided,
    max_pool2x2, resize_bilinear_aligned,
};
use crate::engine::cpu::segnet::{max_pool2x2_argmax, max_unpool2x2};
use crate::engine::cpu::winograd::{TRAIN_MIN_PIXELS, winograd_disabled};
use crate::engine::cpu::{compile_conv, compile_transposed, unsupported, values};
use crate::error::NnError;
use crate::loss::LossKind;
use crate::networks::blocks::{DoubleConv, UnetParts};
use crate::networks::segnet::SegNet;

/// The instruction set of the engine's matrix products on this CPU (the `gemm` crate picks its
/// kernels at run time: AVX-512 where the CPU has it, else AVX2 with FMA, else portable code).
pub fn kernel_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2/FMA";
        }
    }
    "portable SIMD"
}

/// AdamW settings (burn's `AdamWConfig` defaults unless the run says otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// Clip each parameter tensor's gradient to this L2 norm.
    pub grad_clip: Option<f32>,
}

impl AdamW {
    /// burn's defaults (beta 0.9 / 0.999, epsilon 1e-5) with the given decay and clipping.
    pub fn new(weight_decay: f32, grad_clip: Option<f32>) -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay,
            grad_clip,
        }
    }
}

/// How a parameter's values are stored in the engine, against burn's layout.
#[derive(Debug, Clone, PartialEq)]
enum Layout {
    /// The same order as burn's tensor of this shape.
    Plain(Vec<usize>),
    /// A convolution's packed `[kernel * kernel * cin, cout]` (see [`Conv`]), burn's
    /// `[cout, cin, kernel, kernel]`.
    Conv {
        kernel: usize,
        splits: Vec<usize>,
        cout: usize,
    },
    /// A 2x2 transposed convolution's two packed kernel rows `[cin, 2 * cout]`, one after the
    /// other (see [`ConvTranspose2x2`]), burn's `[cin, cout, 2, 2]`.
    Transposed { cin: usize, cout: usize },
}

impl Layout {
    fn shape(&self) -> Vec<usize> {
        match self {
            Self::Plain(shape) => shape.clone(),
            Self::Conv {
                kernel,
                splits,
                cout,
            } => vec![*cout, splits.iter().sum(), *kernel, *kernel],
            Self::Transposed { cin, cout } => vec![*cin, *cout, 2, 2],
        }
    }

    fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Engine order to burn's.
    fn to_burn(&self, packed: &[f32]) -> Vec<f32> {
        match self {
            Self::Plain(_) => packed.to_vec(),
            Self::Conv {
                kernel: k,
                splits,
                cout,
            } => {
                let (k, cout) = (*k, *cout);
                let cin: usize = splits.iter().sum();
                let mut oihw = vec![0.0; packed.len()];
                for co in 0..cout {
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                oihw[((co * cin + ci) * k + ky) * k + kx] =
                                    packed[packed_row(k, splits, ky, kx, ci) * cout + co];
                            }
                        }
                    }
                }
                oihw
            }
            Self::Transposed { cin, cout } => {
                let (cin, cout) = (*cin, *cout);
                let half = cin * 2 * cout;
                let mut iohw = vec![0.0; packed.len()];
                for ci in 0..cin {
                    for co in 0..cout {
                        for i in 0..2 {
                            for j in 0..2 {
                                iohw[((ci * cout + co) * 2 + i) * 2 + j] =
                                    packed[i * half + ci * 2 * cout + j * cout + co];
                            }
                        }
                    }
                }
                iohw
            }
        }
    }

    /// burn's order to the engine's.
    fn packed_from_burn(&self, values: &[f32]) -> Vec<f32> {
        match self {
            Self::Plain(_) => values.to_vec(),
            Self::Conv {
                kernel,
                splits,
                cout,
            } => Conv::from_oihw(values, *kernel, splits.clone(), *cout, None, None, false).weight,
            Self::Transposed { cin, cout } => {
                let [a, b] = ConvTranspose2x2::from_iohw(values, *cin, *cout, None).weight;
                [a, b].concat()
            }
        }
    }
}

/// Gradient and AdamW moments of one parameter tensor (its value lives in the layer).
#[derive(Debug, Clone)]
struct Slot {
    id: ParamId,
    layout: Layout,
    grad: Vec<f32>,
    m1: Vec<f32>,
    m2: Vec<f32>,
    /// AdamW steps taken (burn's `time`); 0: no state yet.
    time: usize,
}

impl Slot {
    fn new(id: ParamId, layout: Layout) -> Self {
        let len = layout.len();
        Self {
            id,
            layout,
            grad: vec![0.0; len],
            m1: vec![0.0; len],
            m2: vec![0.0; len],
            time: 0,
        }
    }

    /// One AdamW step of `value` with this slot's gradient, as burn's `AdamW::step`.
    fn adamw(&mut self, value: &mut [f32], lr: f64, cfg: &AdamW) {
        self.adamw_parts(&mut [value], lr, cfg);
    }

    /// [`Slot::adamw`] for a value stored in pieces (their concatenation is the tensor).
    fn adamw_parts(&mut self, parts: &mut [&mut [f32]], lr: f64, cfg: &AdamW) {
        if let Some(max_norm) = cfg.grad_clip {
            let norm = self
                .grad
                .iter()
                .map(|&g| f64::from(g) * f64::from(g))
                .sum::<f64>()
                .sqrt() as f32;
            let coef = (max_norm / (norm + f32::MIN_POSITIVE)).min(1.0);
            if coef < 1.0 {
                self.grad.iter_mut().for_each(|g| *g *= coef);
            }
        }
        self.time += 1;
        let t = self.time as i32;
        let (b1, b2) = (cfg.beta_1, cfg.beta_2);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        let lr32 = lr as f32;
        let decay = (1.0 - lr * f64::from(cfg.weight_decay)) as f32;
        let first = t == 1;
        let eps = cfg.epsilon;
        let chunk = 16 * 1024;
        let mut offset = 0;
        for value in parts.iter_mut() {
            let len = value.len();
            let r = offset..offset + len;
            offset += len;
            value
                .par_chunks_mut(chunk)
                .zip(self.grad[r.clone()].par_chunks(chunk))
                .zip(self.m1[r.clone()].par_chunks_mut(chunk))
                .zip(self.m2[r].par_chunks_mut(chunk))
                .for_each(|(((p, g), m1), m2)| {
                    // burn's first step sets the moments from the gradient alone.
                    let (k1, k2) = if first { (0.0, 0.0) } else { (b1, b2) };
                    for (((p, &g), m1), m2) in p.iter_mut().zip(g).zip(m1).zip(m2) {
                        *m1 = *m1 * k1 + g * f1;
                        *m2 = *m2 * k2 + g * g * f2;
                        let delta = (*m1 / c1) / ((*m2 / c2).sqrt() + eps);
                        *p = *p * decay - delta * lr32;
                    }
                });
        }
        assert_eq!(offset, self.grad.len(), "parameter pieces");
    }
}

/// Row of packed weight `(ky, kx, ci)` of a convolution whose input channels come from maps of
/// `splits` channels (the im2col order of [`Conv`]: kernel row, map, kernel column, channel).
fn packed_row(k: usize, splits: &[usize], ky: usize, kx: usize, ci: usize) -> usize {
    let cin: usize = splits.iter().sum();
    let mut before = 0;
    for &c in splits {
        if ci < before + c {
            return ky * k * cin + before * k + kx * c + (ci - before);
        }
        before += c;
    }
    unreachable!("channel {ci} beyond {cin}")
}

/// Convolution (stride 1, "same" padding), BatchNorm with batch statistics, ReLU.
#[derive(Debug, Clone)]
struct ConvBnRelu {
    /// The convolution without activation; its bias is the convolution's own (zero if none).
    conv: Conv,
    weight: Slot,
    bias: Option<Slot>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    gamma_slot: Slot,
    beta_slot: Slot,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    momentum: f64,
    epsilon: f64,
    /// Saved by the forward pass: the convolution's output, the block's output, the batch
    /// mean and `1 / sqrt(var + eps)` per channel.
    z: Nhwc,
    y: Nhwc,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// Buffer of the flipped kernel of the input gradient, reused between steps.
    flipped: Vec<f32>,
    /// The flipped kernel's Winograd transform, where the input gradient takes that path.
    flipped_winograd: Option<Vec<f32>>,
    /// From how many output pixels the convolutions take the Winograd path, if at all
    /// ([`TrainNet::set_winograd`]).
    winograd: Option<usize>,
}

impl ConvBnRelu {
    fn new(
        model: &'static str,
        conv: &Conv2d,
        bn: &BatchNorm,
        splits: Vec<usize>,
    ) -> Result<Self, NnError> {
        // The convolution alone (its own bias, no BatchNorm folded, no ReLU).
        let compiled = compile_conv(model, conv, None, splits, false)?;
        let (kh, cout) = (compiled.kernel, compiled.cout);
        let gamma = values(bn.gamma.val(), model, "BatchNorm gamma")?;
        let beta = values(bn.beta.val(), model, "BatchNorm beta")?;
        Ok(Self {
            weight: Slot::new(
                conv.weight.id,
                Layout::Conv {
                    kernel: kh,
                    splits: compiled.splits.clone(),
                    cout,
                },
            ),
            bias: conv
                .bias
                .as_ref()
                .map(|b| Slot::new(b.id, Layout::Plain(vec![cout]))),
            conv: compiled,
            gamma_slot: Slot::new(bn.gamma.id, Layout::Plain(vec![cout])),
            beta_slot: Slot::new(bn.beta.id, Layout::Plain(vec![cout])),
            gamma,
            beta,
            running_mean: values(bn.running_mean.value(), model, "BatchNorm mean")?,
            running_var: values(bn.running_var.value(), model, "BatchNorm variance")?,
            momentum: bn.momentum,
            epsilon: bn.epsilon,
            z: Nhwc::default(),
            y: Nhwc::default(),
            mean: vec![0.0; cout],
            inv_std: vec![0.0; cout],
            flipped: Vec::new(),
            flipped_winograd: None,
            winograd: Some(TRAIN_MIN_PIXELS),
        })
    }

    fn cout(&self) -> usize {
        self.conv.cout
    }

    /// Forward in training mode: saves what the backward pass needs and updates the running
    /// statistics.
    fn forward(&mut self, inputs: &[&Nhwc], pool: &mut Pool) {
        let c = self.cout();
        let x = inputs[0];
        if let Some(min) = self.winograd {
            self.conv.refresh_winograd(x.n, x.h, x.w, min);
        } else {
            self.conv.winograd = None;
        }
        let z = self.conv.forward(
            inputs,
            pool.take(
                std::mem::take(&mut self.z.data),
                inputs[0].pixels() * self.conv.cout,
            ),
        );
        let count = z.pixels();
        // Per-channel mean and biased variance: sums of the values shifted by the first
        // pixel's (no cancellation when the mean is large against the spread), in f32 per block
        // of a few thousand pixels, then in f64.
        let origin: Vec<f32> = z.data[..c].to_vec();
        let sums = z
            .data
            .par_chunks(BLOCK_VALUES / c * c)
            .map(|block| {
                let mut s1 = vec![0.0f32; c];
                let mut s2 = vec![0.0f32; c];
                for px in block.chunks_exact(c) {
                    for (((a, b), &v), &o) in s1.iter_mut().zip(s2.iter_mut()).zip(px).zip(&origin)
                    {
                        let d = v - o;
                        *a += d;
                        *b += d * d;
                    }
                }
                s1.into_iter()
                    .chain(s2)
                    .map(f64::from)
                    .collect::<Vec<f64>>()
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(vec![0.0f64; 2 * c], add_vecs);
        let n = count.max(1) as f64;
        let mut scale = vec![0.0f32; c];
        let mut shift = vec![0.0f32; c];
        for ch in 0..c {
            let d = sums[ch] / n;
            let mean = f64::from(origin[ch]) + d;
            let var = (sums[c + ch] / n - d * d).max(0.0);
            let inv_std = 1.0 / (var + self.epsilon).sqrt();
            self.mean[ch] = mean as f32;
            self.inv_std[ch] = inv_std as f32;
            let s = f64::from(self.gamma[ch]) * inv_std;
            scale[ch] = s as f32;
            shift[ch] = (f64::from(self.beta[ch]) - mean * s) as f32;
            let m = self.momentum as f32;
            self.running_mean[ch] = self.running_mean[ch] * (1.0 - m) + (mean as f32) * m;
            self.running_var[ch] = self.running_var[ch] * (1.0 - m) + (var as f32) * m;
        }
        let mut y = Nhwc::with_buffer(
            z.n,
            z.h,
            z.w,
            c,
            pool.take(std::mem::take(&mut self.y.data), z.data.len()),
        );
        y.data
            .par_chunks_mut(BLOCK_VALUES / c * c)
            .zip(z.data.par_chunks(BLOCK_VALUES / c * c))
            .for_each(|(dst, src)| {
                for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                    for (((d, &s), &a), &b) in d.iter_mut().zip(s).zip(&scale).zip(&shift) {
                        *d = (s * a + b).max(0.0);
                    }
                }
            });
        self.z = z;
        self.y = y;
    }

    /// Backward: `dy` (gradient of the block's output, consumed) gives the parameter gradients
    /// and, when `input_grad`, the gradient of the channel concatenation of `inputs`.
    fn backward(
        &mut self,
        mut dy: Nhwc,
        inputs: &[&Nhwc],
        input_grad: bool,
        pool: &mut Pool,
    ) -> Option<Nhwc> {
        let c = self.cout();
        let count = dy.pixels().max(1) as f64;
        let block = BLOCK_VALUES / c * c;
        // ReLU mask, then the sums of g and g * xhat per channel (f32 per block, then f64).
        let (mean, inv_std) = (&self.mean, &self.inv_std);
        let sums = dy
            .data
            .par_chunks_mut(block)
            .zip(self.y.data.par_chunks(block))
            .zip(self.z.data.par_chunks(block))
            .map(|((g, y), z)| {
                let mut s1 = vec![0.0f32; c];
                let mut s2 = vec![0.0f32; c];
                for ((g, y), z) in g
                    .chunks_exact_mut(c)
                    .zip(y.chunks_exact(c))
                    .zip(z.chunks_exact(c))
                {
                    for (((((g, &y), &z), &m), &is), (a, b)) in g
                        .iter_mut()
                        .zip(y)
                        .zip(z)
                        .zip(mean)
                        .zip(inv_std)
                        .zip(s1.iter_mut().zip(s2.iter_mut()))
                    {
                        let v = if y > 0.0 { *g } else { 0.0 };
                        *g = v;
                        *a += v;
                        *b += v * ((z - m) * is);
                    }
                }
                s1.into_iter()
                    .chain(s2)
                    .map(f64::from)
                    .collect::<Vec<f64>>()
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(vec![0.0f64; 2 * c], add_vecs);
        for ch in 0..c {
            self.beta_slot.grad[ch] = sums[ch] as f32;
            self.gamma_slot.grad[ch] = sums[c + ch] as f32;
        }
        // dz = gamma inv_std (g - sum(g) / M - xhat sum(g xhat) / M), in place.
        let a: Vec<f32> = (0..c).map(|ch| self.gamma[ch] * inv_std[ch]).collect();
        let mg: Vec<f32> = (0..c).map(|ch| (sums[ch] / count) as f32).collect();
        let mgx: Vec<f32> = (0..c).map(|ch| (sums[c + ch] / count) as f32).collect();
        dy.data
            .par_chunks_mut(block)
            .zip(self.z.data.par_chunks(block))
            .for_each(|(g, z)| {
                for (g, z) in g.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
                    for (((((g, &z), &m), &is), &a), (&mg, &mgx)) in g
                        .iter_mut()
                        .zip(z)
                        .zip(mean)
                        .zip(inv_std)
                        .zip(&a)
                        .zip(mg.iter().zip(&mgx))
                    {
                        *g = a * (*g - mg - (z - m) * is * mgx);
                    }
                }
            });
        let dz = dy;
        if let Some(bias) = &mut self.bias {
            channel_sums(&dz, &mut bias.grad);
        }
        let winograd = self.winograd.is_some_and(|min| {
            self.conv
                .weight_grad_winograd(inputs, &dz, min, &mut self.weight.grad)
        });
        if !winograd {
            conv_weight_grad(&self.conv, inputs, &dz, &mut self.weight.grad);
        }
        let dx = input_grad.then(|| {
            if dz.pixels() < 2 * c {
                // Few pixels, many weights (the deep levels): dz W^T, then col2im, rather
                // than rebuilding the flipped kernel.
                conv_input_grad_col2im(&self.conv, &dz, pool)
            } else {
                let mut flipped = flipped_conv(&self.conv, std::mem::take(&mut self.flipped));
                flipped.winograd = self.flipped_winograd.take();
                if let Some(min) = self.winograd {
                    flipped.refresh_winograd(dz.n, dz.h, dz.w, min);
                } else {
                    flipped.winograd = None;
                }
                let dx = flipped.forward(&[&dz], pool.take(Vec::new(), dz.pixels() * flipped.cout));
                self.flipped = flipped.weight;
                self.flipped_winograd = flipped.winograd;
                dx
            }
        });
        pool.give(dz.data);
        dx
    }

    fn write_running(&self, bn: &BatchNorm, device: &burn::tensor::Device) {
        let c = self.cout();
        bn.running_mean.update(Tensor::from_data(
            TensorData::new(self.running_mean.clone(), [c]),
            device,
        ));
        bn.running_var.update(Tensor::from_data(
            TensorData::new(self.running_var.clone(), [c]),
            device,
        ));
    }

    fn each_slot(&self, f: &mut dyn FnMut(&Slot, &[f32])) {
        f(&self.weight, &self.conv.weight);
        if let Some(b) = &self.bias {
            f(b, &self.conv.bias);
        }
        f(&self.gamma_slot, &self.gamma);
        f(&self.beta_slot, &self.beta);
    }

    fn slots(&mut self, f: &mut dyn FnMut(&mut [f32], &mut Slot)) {
        f(&mut self.conv.weight, &mut self.weight);
        if let Some(b) = &mut self.bias {
            f(&mut self.conv.bias, b);
        }
        f(&mut self.gamma, &mut self.gamma_slot);
        f(&mut self.beta, &mut self.beta_slot);
    }
}

/// Groups of blocks whose weight-gradient partial sums are computed in parallel: a fixed
/// number, so that the sums do not depend on the thread count.
const PARTIAL_GROUPS: usize = 8;

const SEGNET: &str = "segnet";

/// `a + b`. Per-block partial sums are collected in block order and added in that order, so
/// that a step's result does not depend on how rayon split the work (runs are reproducible,
/// and a resumed run repeats an uninterrupted one).
fn add_vecs(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// Per-channel sums of a map into `out`.
fn channel_sums(x: &Nhwc, out: &mut [f32]) {
    let c = x.c;
    let sums = x
        .data
        .par_chunks(BLOCK_VALUES / c * c)
        .map(|block| {
            let mut s = vec![0.0f64; c];
            for px in block.chunks_exact(c) {
                for (acc, &v) in s.iter_mut().zip(px) {
                    *acc += f64::from(v);
                }
            }
            s
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0f64; c], add_vecs);
    for (o, s) in out.iter_mut().zip(sums) {
        *o = s as f32;
    }
}

/// The input gradient of a stride-1 "same" convolution as a forward convolution of the output
/// gradient: kernel flipped in both directions, input and output channels swapped.
fn flipped_conv(conv: &Conv, buffer: Vec<f32>) -> Conv {
    let (k, cout) = (conv.kernel, conv.cout);
    let cin = conv.cin();
    // Packed `[k * k * cout, cin]`: row (ky, kx, co) holds W[co, :, k-1-ky, k-1-kx].
    let mut weight = buffer;
    weight.resize(conv.weight.len(), 0.0);
    for ky in 0..k {
        for kx in 0..k {
            for ci in 0..cin {
                let src = packed_row(k, &conv.splits, k - 1 - ky, k - 1 - kx, ci) * cout;
                for co in 0..cout {
                    weight[((ky * k + kx) * cout + co) * cin + ci] = conv.weight[src + co];
                }
            }
        }
    }
    Conv {
        kernel: k,
        splits: vec![cout],
        cout: cin,
        weight,
        bias: vec![0.0; cin],
        relu: false,
        bf16: None,
        winograd: None,
    }
}

/// The input gradient of a stride-1 "same" convolution as `col2im(dz W^T)`: the gradient of
/// each im2col entry, added back to the input pixel it was copied from.
fn conv_input_grad_col2im(conv: &Conv, dz: &Nhwc, pool: &mut Pool) -> Nhwc {
    let (n, h, w) = (dz.n, dz.h, dz.w);
    let (k, cout) = (conv.kernel, conv.cout);
    let cin = conv.cin();
    let kk = k * k * cin;
    let m = dz.pixels();
    let threads = rayon::current_num_threads();
    let mut cols = pool.take(Vec::new(), m * kk);
    cols.resize(m * kk, 0.0);
    matmul_strided(
        &mut cols,
        kk,
        &dz.data,
        (cout, 1),
        &conv.weight,
        (1, cout),
        (m, kk, cout),
        false,
        threads,
    );
    let mut dx = Nhwc::with_buffer(n, h, w, cin, pool.take(Vec::new(), m * cin));
    dx.data.fill(0.0);
    let pad = k / 2;
    for img in 0..n {
        for y in 0..h {
            for x in 0..w {
                let row = &cols[((img * h + y) * w + x) * kk..][..kk];
                let mut o = 0;
                for ky in 0..k {
                    let sy = (y + ky).wrapping_sub(pad);
                    let mut before = 0;
                    for &c in &conv.splits {
                        for kx in 0..k {
                            let sx = (x + kx).wrapping_sub(pad);
                            if sy < h && sx < w {
                                let dst =
                                    &mut dx.data[((img * h + sy) * w + sx) * cin + before..][..c];
                                for (d, &v) in dst.iter_mut().zip(&row[o..o + c]) {
                                    *d += v;
                                }
                            }
                            o += c;
                        }
                        before += c;
                    }
                }
            }
        }
    }
    pool.give(cols);
    dx
}

/// `grad = im2col(inputs)^T dz`, the weight gradient of `conv` in its packed layout.
fn conv_weight_grad(conv: &Conv, inputs: &[&Nhwc], dz: &Nhwc, grad: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if conv.cout == 8
        && conv.kernel > 1
        && !crate::engine::cpu::direct::direct_disabled()
        && let Some(simd) = pulp::x86::V3::try_new()
    {
        weight_grad_direct8(simd, conv, inputs, dz, grad);
        return;
    }
    let (n, h, w) = (dz.n, dz.h, dz.w);
    let cout = conv.cout;
    let kk = conv.kernel * conv.kernel * conv.cin();
    let rows = n * h;
    let threads = rayon::current_num_threads();
    // `dst (+)= im2col(rows)^T dz(rows)` for a range of image rows.
    let products = |rows: std::ops::Range<usize>, dst: &mut [f32], accumulate: bool, threads| {
        let m = rows.len() * w;
        let dzb = &dz.data[rows.start * w * cout..][..m * cout];
        COLUMNS.with_borrow_mut(|cols| {
            cols.resize(m * kk, 0.0);
            conv.im2col(inputs, rows, &mut cols[..m * kk]);
            let dims = (kk, cout, m);
            matmul_strided(
                dst,
                cout,
                cols,
                (1, kk),
                dzb,
                (cout, 1),
                dims,
                accumulate,
                threads,
            );
        });
    };
    // Blocks of pixels whose im2col fits the core's L2 cache, but at least this many pixels
    // (each group of blocks sums a partial gradient over them).
    const MIN_BLOCK_PIXELS: usize = 128;
    let block_rows = (BLOCK_VALUES / (w * kk))
        .max(MIN_BLOCK_PIXELS.div_ceil(w))
        .max(1);
    let blocks = rows.div_ceil(block_rows);
    if blocks >= 2 * threads {
        // Many pixel blocks: a fixed number of contiguous groups of blocks (whatever the
        // thread count) sum their products in parallel; the group sums are added in order.
        let groups = blocks.min(PARTIAL_GROUPS);
        let per_group = blocks.div_ceil(groups);
        let partial = (0..groups)
            .into_par_iter()
            .map(|g| {
                let mut acc = vec![0.0f32; kk * cout];
                for b in g * per_group..((g + 1) * per_group).min(blocks) {
                    let start = b * block_rows;
                    products(start..(start + block_rows).min(rows), &mut acc, true, 1);
                }
                acc
            })
            .collect::<Vec<_>>()
            .into_iter()
            .reduce(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            })
            .unwrap_or_else(|| vec![0.0; kk * cout]);
        grad.copy_from_slice(&partial);
    } else {
        // Few pixels, large weights: one im2col, one GEMM split over the threads.
        products(0..rows, grad, false, threads);
    }
}

/// The weight gradient of a convolution with 8 output channels (DT-UNet's full-resolution
/// level) without im2col or GEMM: each weight row (one AVX register: its 8 output channels)
/// accumulates, over a row of output pixels, the input value under it times the pixel's output
/// gradient, four rows at a time sharing each gradient load, from the same zero-padded input
/// rows as the direct convolution; the partial sums of fixed groups of rows are added in order. A GEMM of 8
/// columns uses its kernels poorly.
#[cfg(target_arch = "x86_64")]
fn weight_grad_direct8(
    simd: pulp::x86::V3,
    conv: &Conv,
    inputs: &[&Nhwc],
    dz: &Nhwc,
    grad: &mut [f32],
) {
    use pulp::f32x8;
    let (h, w) = (dz.h, dz.w);
    let k = conv.kernel;
    let padded_w = w + 2 * (k / 2);
    let kk = k * k * conv.cin();
    let rows = dz.n * h;
    let scratch = padded_w * k * conv.cin();
    let dzv: &[f32x8] = pulp::bytemuck::cast_slice(&dz.data);
    let zero = simd.splat_f32x8(0.0);
    // A fixed number of contiguous groups of rows, summed in order (see `add_vecs`).
    let groups = rows.clamp(1, PARTIAL_GROUPS);
    let per_group = rows.div_ceil(groups);
    let total = (0..groups)
        .into_par_iter()
        .map(|g| {
            let mut acc = vec![zero; kk];
            let mut buf = vec![0.0f32; scratch];
            for r in g * per_group..((g + 1) * per_group).min(rows) {
                // Padding columns stay zero: only the inner columns are written.
                conv.padded_input_rows(inputs, r / h, r % h, 1, &mut buf);
                let d = &dzv[r * w..(r + 1) * w];
                simd.vectorize(|| accumulate_weight_rows(simd, conv, &buf, d, w, &mut acc));
            }
            acc
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![zero; kk], |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                *x = simd.add_f32x8(*x, y);
            }
            a
        });
    grad.copy_from_slice(pulp::bytemuck::cast_slice(&total));
}

/// One output row's contribution to every weight row of [`weight_grad_direct8`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn accumulate_weight_rows(
    simd: pulp::x86::V3,
    conv: &Conv,
    rows: &[f32],
    d: &[pulp::f32x8],
    w: usize,
    acc: &mut [pulp::f32x8],
) {
    let k = conv.kernel;
    let padded_w = w + 2 * (k / 2);
    // Weight rows in im2col order: kernel row, map, kernel column, channel.
    let mut idx = 0;
    let mut o = 0;
    for _ky in 0..k {
        for &c in &conv.splits {
            let seg = &rows[o..o + padded_w * c];
            o += padded_w * c;
            for kx in 0..k {
                let taps = &seg[kx * c..kx * c + w * c];
                let mut ci = 0;
                while ci + 4 <= c {
                    let mut a = [acc[idx], acc[idx + 1], acc[idx + 2], acc[idx + 3]];
                    for (px, &dv) in taps.chunks_exact(c).zip(d) {
                        let t = &px[ci..ci + 4];
                        a[0] = simd.mul_add_f32x8(simd.splat_f32x8(t[0]), dv, a[0]);
                        a[1] = simd.mul_add_f32x8(simd.splat_f32x8(t[1]), dv, a[1]);
                        a[2] = simd.mul_add_f32x8(simd.splat_f32x8(t[2]), dv, a[2]);
                        a[3] = simd.mul_add_f32x8(simd.splat_f32x8(t[3]), dv, a[3]);
                    }
                    acc[idx..idx + 4].copy_from_slice(&a);
                    idx += 4;
                    ci += 4;
                }
                while ci < c {
                    let mut a = acc[idx];
                    for (px, &dv) in taps.chunks_exact(c).zip(d) {
                        a = simd.mul_add_f32x8(simd.splat_f32x8(px[ci]), dv, a);
                    }
                    acc[idx] = a;
                    idx += 1;
                    ci += 1;
                }
            }
        }
    }
}

/// Backward of 2x2 max-pooling: the gradient of each pooled value goes to the largest of its
/// four inputs (the first in row order on ties; a tie of positive ReLU outputs is measure
/// zero and zeros are masked by the ReLU before them), added to `dx`.
fn max_pool2x2_backward(x: &Nhwc, dp: &Nhwc, dx: &mut Nhwc) {
    let (h2, w2, c) = (dp.h, dp.w, dp.c);
    let (w, h) = (x.w, x.h);
    assert!(
        h == 2 * h2 && w == 2 * w2,
        "max-pooling backward needs even sides"
    );
    if dp.data.is_empty() {
        return;
    }
    // Each pooled row touches two input rows: one contiguous chunk of dx.
    dx.data
        .par_chunks_mut(2 * w * c)
        .enumerate()
        .for_each(|(r, dst)| {
            let (img, y) = (r / h2, r % h2);
            let src = &x.data[(img * h + 2 * y) * w * c..][..2 * w * c];
            let g = &dp.data[(img * h2 + y) * w2 * c..][..w2 * c];
            for xo in 0..w2 {
                for ch in 0..c {
                    let at = [
                        2 * xo * c + ch,
                        (2 * xo + 1) * c + ch,
                        w * c + 2 * xo * c + ch,
                        w * c + (2 * xo + 1) * c + ch,
                    ];
                    let mut best = at[0];
                    for &i in &at[1..] {
                        if src[i] > src[best] {
                            best = i;
                        }
                    }
                    dst[best] += g[xo * c + ch];
                }
            }
        });
}

/// Backward of bilinear resizing with aligned corners: `dy` spread back onto `dx` (zeroed
/// here) with the forward pass's weights.
fn resize_bilinear_aligned_backward(dy: &Nhwc, dx: &mut Nhwc) {
    let (oh, ow, c) = (dy.h, dy.w, dy.c);
    let (ih, iw) = (dx.h, dx.w);
    dx.data.fill(0.0);
    let cols: Vec<_> = (0..ow).map(|o| coord(o, ow, iw)).collect();
    dx.data
        .par_chunks_mut((ih * iw * c).max(1))
        .enumerate()
        .for_each(|(img, dst)| {
            for y in 0..oh {
                let (y0, y1, fy) = coord(y, oh, ih);
                let g = &dy.data[(img * oh + y) * ow * c..][..ow * c];
                for (x, &(x0, x1, fx)) in cols.iter().enumerate() {
                    for ch in 0..c {
                        let v = g[x * c + ch];
                        let top = v * (1.0 - fy);
                        let bottom = v * fy;
                        dst[(y0 * iw + x0) * c + ch] += top * (1.0 - fx);
                        dst[(y0 * iw + x1) * c + ch] += top * fx;
                        dst[(y1 * iw + x0) * c + ch] += bottom * (1.0 - fx);
                        dst[(y1 * iw + x1) * c + ch] += bottom * fx;
                    }
                }
            }
        });
}

/// The learned 2x2 stride-2 upsampling and its gradient slots. The weight's gradient and
/// moments are kept as the concatenation of the two packed kernel rows.
#[derive(Debug, Clone)]
struct Transposed {
    t: ConvTranspose2x2,
    weight: Slot,
    bias: Option<Slot>,
}

impl Transposed {
    fn new(model: &'static str, up: &ConvTranspose2d) -> Result<Self, NnError> {
        let t = compile_transposed(model, up)?;
        let (cin, cout) = (t.cin, t.cout);
        Ok(Self {
            weight: Slot::new(up.weight.id, Layout::Transposed { cin, cout }),
            bias: up
                .bias
                .as_ref()
                .map(|b| Slot::new(b.id, Layout::Plain(vec![cout]))),
            t,
        })
    }

    /// Gradients of the weights and bias, and the input gradient, from the output gradient.
    fn backward(&mut self, x: &Nhwc, dy: &Nhwc, pool: &mut Pool) -> Nhwc {
        let (cin, cout) = (self.t.cin, self.t.cout);
        let (w, c2) = (x.w, 2 * cout);
        let rows = x.n * x.h;
        let p = rows * w;
        let threads = rayon::current_num_threads();
        let mut dx = Nhwc::with_buffer(x.n, x.h, x.w, cin, pool.take(Vec::new(), p * cin));
        // The output rows of kernel row i, gathered: [p, 2 cout].
        let mut half = pool.take(Vec::new(), p * c2);
        half.resize(p * c2, 0.0);
        let (g0, g1) = self.weight.grad.split_at_mut(cin * c2);
        for (i, grad) in [g0, g1].into_iter().enumerate() {
            half.par_chunks_mut(w * c2)
                .enumerate()
                .for_each(|(r, dst)| {
                    dst.copy_from_slice(&dy.data[(2 * r + i) * w * c2..][..w * c2])
                });
            // dW_i = x^T half, dx (+)= half W_i^T.
            matmul_strided(
                grad,
                c2,
                &x.data,
                (1, cin),
                &half,
                (c2, 1),
                (cin, c2, p),
                false,
                threads,
            );
            matmul_strided(
                &mut dx.data,
                cin,
                &half,
                (c2, 1),
                &self.t.weight[i],
                (1, c2),
                (p, cin, c2),
                i == 1,
                threads,
            );
        }
        pool.give(half);
        if let Some(b) = &mut self.bias {
            channel_sums(dy, &mut b.grad);
        }
        dx
    }

    fn each_slot(&self, f: &mut dyn FnMut(&Slot, &[f32])) {
        f(
            &self.weight,
            &[self.t.weight[0].as_slice(), &self.t.weight[1]].concat(),
        );
        if let Some(b) = &self.bias {
            f(b, &self.t.bias[..self.t.cout]);
        }
    }

    fn adamw(&mut self, lr: f64, cfg: &AdamW) {
        let [w0, w1] = &mut self.t.weight;
        self.weight.adamw_parts(&mut [w0, w1], lr, cfg);
        if let Some(b) = &mut self.bias {
            let cout = self.t.cout;
            let (b0, b1) = self.t.bias.split_at_mut(cout);
            b.adamw(b0, lr, cfg);
            b1.copy_from_slice(b0);
        }
    }
}

#[derive(Debug, Clone)]
enum Upsampling {
    Transposed(Box<Transposed>),
    Bilinear,
}

#[derive(Debug, Clone)]
struct DecoderLevel {
    upsample: Upsampling,
    convs: [ConvBnRelu; 2],
    /// The upsampled map saved by the forward pass.
    upsampled: Nhwc,
}

/// The 1x1 head to one logit channel.
#[derive(Debug, Clone)]
struct Head {
    conv: Conv,
    weight: Slot,
    bias: Option<Slot>,
}

/// SegNet's layers in training ([`crate::networks::segnet`]): encoder stages of convolution
/// units, each ending in a 2x2 max-pooling that records which of its four inputs won, and
/// decoder stages (deepest first) that max-unpool with those records and convolve; the head is
/// [`TrainNet`]'s, a 3x3 convolution to one logit here.
#[derive(Debug, Clone)]
struct SegBody {
    enc: Vec<Vec<ConvBnRelu>>,
    /// Deepest first.
    dec: Vec<Vec<ConvBnRelu>>,
    /// Each encoder stage's pooled output and, per pooled value, the window position (0-3,
    /// row order; the first on ties) it came from (the inference engine's pooling).
    pooled: Vec<Nhwc>,
    argmax: Vec<Vec<u8>>,
    /// Each decoder stage's unpooled input.
    unpooled: Vec<Nhwc>,
}

/// The adjoint of max-unpooling ([`max_unpool2x2`]): each pooled value's gradient read from
/// `big` (the unpooled map's gradient) at the position of its window that `which` names.
fn unpool_gather(big: &Nhwc, which: &[u8], small: &mut Nhwc) {
    let (w2, c) = (small.w, small.c);
    let w = big.w;
    if small.data.is_empty() {
        return;
    }
    // Pooled row r (over the whole batch) reads full-size rows 2r and 2r + 1: one chunk.
    small
        .data
        .par_chunks_mut(w2 * c)
        .zip(big.data.par_chunks(2 * w * c))
        .zip(which.par_chunks(w2 * c))
        .for_each(|((dst, src), idx)| {
            for xo in 0..w2 {
                for ch in 0..c {
                    let k = usize::from(idx[xo * c + ch]);
                    dst[xo * c + ch] = src[((k / 2) * w + 2 * xo + k % 2) * c + ch];
                }
            }
        });
}

impl SegBody {
    fn new(model: &SegNet) -> Result<Self, NnError> {
        let [enc, dec] = model.map_stages(|l| {
            if !l.relu {
                return Err(unsupported(SEGNET, "a unit without ReLU".into()));
            }
            let cin = l.conv.weight.dims()[1];
            ConvBnRelu::new(SEGNET, &l.conv, &l.bn, vec![cin])
        })?;
        if enc.is_empty() || enc.len() != dec.len() || enc.iter().chain(&dec).any(Vec::is_empty) {
            return Err(unsupported(
                SEGNET,
                "stages without a convolution, or unlike numbers of encoder and decoder stages"
                    .into(),
            ));
        }
        let levels = enc.len();
        Ok(Self {
            enc,
            dec,
            pooled: vec![Nhwc::default(); levels],
            argmax: vec![Vec::new(); levels],
            unpooled: vec![Nhwc::default(); levels],
        })
    }

    fn in_channels(&self) -> usize {
        self.enc[0][0].conv.cin()
    }

    fn last_channels(&self) -> usize {
        self.dec[self.dec.len() - 1]
            .last()
            .expect("checked at construction")
            .cout()
    }

    /// The last decoder stage's output (the head's input).
    fn last(&self) -> &Nhwc {
        &self.dec[self.dec.len() - 1]
            .last()
            .expect("checked at construction")
            .y
    }

    /// Units in order (encoder, then decoder).
    fn units_mut(&mut self) -> impl Iterator<Item = &mut ConvBnRelu> {
        self.enc.iter_mut().chain(self.dec.iter_mut()).flatten()
    }

    fn units(&self) -> impl Iterator<Item = &ConvBnRelu> {
        self.enc.iter().chain(self.dec.iter()).flatten()
    }

    /// Training-mode forward pass from `input` up to the head's input.
    fn forward(&mut self, input: &Nhwc, pool: &mut Pool) {
        let levels = self.enc.len();
        for s in 0..levels {
            let (before, _) = self.pooled.split_at_mut(s);
            let first: &Nhwc = match before.last() {
                None => input,
                Some(p) => p,
            };
            run_stage(&mut self.enc[s], first, pool);
            let y = &self.enc[s].last().expect("checked at construction").y;
            let buf = pool.take(std::mem::take(&mut self.pooled[s].data), y.data.len() / 4);
            self.argmax[s].resize(y.data.len() / 4, 0);
            self.pooled[s] = max_pool2x2_argmax(y, buf, &mut self.argmax[s]);
        }
        for j in 0..levels {
            let s = levels - 1 - j;
            let small = match j {
                0 => &self.pooled[levels - 1],
                _ => &self.dec[j - 1].last().expect("checked").y,
            };
            let buf = pool.take(
                std::mem::take(&mut self.unpooled[j].data),
                4 * small.data.len(),
            );
            self.unpooled[j] = max_unpool2x2(small, &self.argmax[s], buf);
            run_stage(&mut self.dec[j], &self.unpooled[j], pool);
        }
    }

    /// Backward pass from the gradient of the head's input, consumed.
    fn backward(&mut self, mut d: Nhwc, input: &Nhwc, pool: &mut Pool) {
        let levels = self.enc.len();
        for j in (0..levels).rev() {
            let s = levels - 1 - j;
            let du = stage_backward(&mut self.dec[j], &self.unpooled[j], d, true, pool)
                .expect("input gradient requested");
            // Unpooling's adjoint: each pooled value's gradient is read at its position.
            let small_shape = match j {
                0 => &self.pooled[levels - 1],
                _ => &self.dec[j - 1].last().expect("checked").y,
            };
            let (n, h, w, c) = (small_shape.n, small_shape.h, small_shape.w, small_shape.c);
            let mut dsmall = Nhwc::with_buffer(n, h, w, c, pool.take(Vec::new(), n * h * w * c));
            unpool_gather(&du, &self.argmax[s], &mut dsmall);
            pool.give(du.data);
            d = dsmall;
        }
        // `d` is the gradient of the deepest pooled map.
        for s in (0..levels).rev() {
            // Max-pooling's backward pass: each gradient to the position its maximum came from.
            let dy = max_unpool2x2(&d, &self.argmax[s], pool.take(Vec::new(), 4 * d.data.len()));
            pool.give(d.data);
            let (before, _) = self.pooled.split_at(s);
            let first: &Nhwc = match before.last() {
                None => input,
                Some(p) => p,
            };
            match stage_backward(&mut self.enc[s], first, dy, s > 0, pool) {
                Some(dx) => d = dx,
                None => return,
            }
        }
    }

    fn write_running(&self, model: &SegNet, device: &burn::tensor::Device) {
        let burn_units = model
            .enc
            .iter()
            .chain(&model.dec)
            .flat_map(|s| s.layers.iter());
        for (unit, layer) in self.units().zip(burn_units) {
            unit.write_running(&layer.bn, device);
        }
    }
}

/// A stage's units in training mode, the first on `first`.
fn run_stage(units: &mut [ConvBnRelu], first: &Nhwc, pool: &mut Pool) {
    for k in 0..units.len() {
        let (before, rest) = units.split_at_mut(k);
        match before.last() {
            None => rest[0].forward(&[first], pool),
            Some(prev) => rest[0].forward(&[&prev.y], pool),
        }
    }
}

/// A stage's backward pass from the gradient of its output; returns the gradient of `first`
/// when `input_grad`.
fn stage_backward(
    units: &mut [ConvBnRelu],
    first: &Nhwc,
    mut d: Nhwc,
    input_grad: bool,
    pool: &mut Pool,
) -> Option<Nhwc> {
    for k in (0..units.len()).rev() {
        let (before, rest) = units.split_at_mut(k);
        let (input, wants): (&Nhwc, bool) = match before.last() {
            None => (first, input_grad),
            Some(prev) => (&prev.y, true),
        };
        match rest[0].backward(d, &[input], wants, pool) {
            Some(dx) => d = dx,
            None => return None,
        }
    }
    Some(d)
}

/// Buffers reused between passes and steps.
#[derive(Debug, Default, Clone)]
struct Pool(Vec<Vec<f32>>);

impl Pool {
    /// A buffer for `len` values: `hint` if it has room, else the pool's buffer whose length
    /// fits best (the shortest that holds `len`, else the longest), so that resizing it to
    /// `len` rarely has to zero new memory.
    fn take(&mut self, hint: Vec<f32>, len: usize) -> Vec<f32> {
        if hint.len() >= len {
            return hint;
        }
        self.give(hint);
        let fits = (0..self.0.len())
            .filter(|&i| self.0[i].len() >= len)
            .min_by_key(|&i| self.0[i].len());
        let pick = fits.or_else(|| (0..self.0.len()).max_by_key(|&i| self.0[i].len()));
        pick.map(|i| self.0.swap_remove(i)).unwrap_or_default()
    }

    fn give(&mut self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.0.push(v);
        }
    }
}

/// Loss value and gradient with respect to the logits.
pub fn loss_and_grad(
    kind: LossKind,
    logits: &[f32],
    target: &[f32],
    smooth: f32,
    grad: &mut Vec<f32>,
) -> f64 {
    let count = logits.len();
    grad.resize(count, 0.0);
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    let (mut inter, mut psum, mut tsum) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &t) in logits.iter().zip(target) {
        let p = f64::from(sig(x));
        inter += p * f64::from(t);
        psum += p;
        tsum += f64::from(t);
    }
    let s = f64::from(smooth);
    let num = 2.0 * inter + s;
    let den = psum + tsum + s;
    let dice = 1.0 - num / den;
    // d dice / d p = -(2 t den - num) / den^2; d p / d x = p (1 - p).
    let mut bce_sum = 0.0f64;
    let bce = kind == LossKind::DiceBce;
    for ((g, &x), &t) in grad.iter_mut().zip(logits).zip(target) {
        let p = f64::from(sig(x));
        let tt = f64::from(t);
        let mut d = -(2.0 * tt * den - num) / (den * den) * p * (1.0 - p);
        if bce {
            let xd = f64::from(x);
            bce_sum += xd.max(0.0) - xd * tt + (1.0 + (-xd.abs()).exp()).ln();
            d += (p - tt) / count as f64;
        }
        *g = d as f32;
    }
    if bce {
        dice + bce_sum / count as f64
    } else {
        dice
    }
}

/// A U-Net in training: parameters, their gradients and AdamW moments, and the activations of
/// the last forward pass.
#[derive(Debug, Clone)]
pub struct TrainNet {
    name: &'static str,
    in_channels: usize,
    down: Vec<[ConvBnRelu; 2]>,
    /// Inputs of encoder levels 1.. (max-pooled skips).
    pooled: Vec<Nhwc>,
    /// Deepest first.
    up: Vec<DecoderLevel>,
    head: Head,
    /// SegNet's layers (then `down` and `up` are empty and the head is a 3x3 convolution).
    segnet: Option<Box<SegBody>>,
    input: Nhwc,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    pool: Pool,
}

fn double(
    model: &'static str,
    block: &DoubleConv,
    splits: Vec<usize>,
) -> Result<[ConvBnRelu; 2], NnError> {
    let first = ConvBnRelu::new(model, &block.conv1, &block.bn1, splits)?;
    let second = ConvBnRelu::new(model, &block.conv2, &block.bn2, vec![first.cout()])?;
    Ok([first, second])
}

impl TrainNet {
    /// The engine for a U-Net's layers (use [`crate::SegmentationModel::unet_parts`]), with no
    /// optimiser state.
    pub fn from_parts(parts: &UnetParts<'_>) -> Result<Self, NnError> {
        let name = parts.name;
        let in_channels = parts
            .down
            .first()
            .map(|d| d.conv1.weight.dims()[1])
            .ok_or_else(|| unsupported(name, "no encoder level".into()))?;
        let mut channels = in_channels;
        let mut down = Vec::new();
        let mut skips = Vec::new();
        for block in parts.down {
            let convs = double(name, block, vec![channels])?;
            channels = convs[1].cout();
            skips.push(channels);
            down.push(convs);
        }
        skips.pop();
        let mut up = Vec::new();
        for &(transposed, block) in &parts.up {
            let skip = skips
                .pop()
                .ok_or_else(|| unsupported(name, "more decoder than encoder levels".into()))?;
            let upsample = match transposed {
                Some(t) => {
                    let t = Transposed::new(name, t)?;
                    channels = t.t.cout;
                    Upsampling::Transposed(Box::new(t))
                }
                None => Upsampling::Bilinear,
            };
            let convs = double(name, block, vec![skip, channels])?;
            channels = convs[1].cout();
            up.push(DecoderLevel {
                upsample,
                convs,
                upsampled: Nhwc::default(),
            });
        }
        let head = parts.head;
        let [hout, hin, hk, _] = head.weight.dims();
        if hk != 1 || hout != 1 || hin != channels {
            return Err(unsupported(
                name,
                format!("head {hout}x{hin}x{hk}: a 1x1 convolution to one channel is needed"),
            ));
        }
        let conv = compile_conv(name, head, None, vec![channels], false)?;
        Ok(Self {
            name,
            in_channels,
            pooled: vec![Nhwc::default(); down.len().saturating_sub(1)],
            down,
            up,
            head: Head {
                weight: Slot::new(head.weight.id, Layout::Plain(vec![1, channels, 1, 1])),
                bias: head
                    .bias
                    .as_ref()
                    .map(|b| Slot::new(b.id, Layout::Plain(vec![1]))),
                conv,
            },
            segnet: None,
            input: Nhwc::default(),
            logits: Vec::new(),
            dlogits: Vec::new(),
            pool: Pool::default(),
        })
    }

    /// The engine for `model` where it trains the architecture (DT-UNet, UNet and SegNet, any
    /// width and depth), with no optimiser state; `None` for the others.
    pub fn for_model<M: crate::SegmentationModel>(model: &M) -> Option<Result<Self, NnError>> {
        if let Some(parts) = model.unet_parts() {
            return Some(Self::from_parts(&parts));
        }
        let segnet = model.as_any()?.downcast_ref::<SegNet>()?;
        Some(Self::from_segnet(segnet))
    }

    /// Whether [`for_model`](Self::for_model) takes `model`'s architecture.
    pub fn trains<M: crate::SegmentationModel>(model: &M) -> bool {
        model.unet_parts().is_some()
            || model
                .as_any()
                .is_some_and(|a| a.downcast_ref::<SegNet>().is_some())
    }

    /// The engine for a SegNet.
    fn from_segnet(model: &SegNet) -> Result<Self, NnError> {
        let body = SegBody::new(model)?;
        let head = &model.head;
        let [hout, hin, hk, _] = head.weight.dims();
        let channels = body.last_channels();
        if hk != 3 || hout != 1 || hin != channels {
            return Err(unsupported(
                SEGNET,
                format!("head {hout}x{hin}x{hk}: a 3x3 convolution to one channel is needed"),
            ));
        }
        let conv = compile_conv(SEGNET, head, None, vec![channels], false)?;
        Ok(Self {
            name: SEGNET,
            in_channels: body.in_channels(),
            down: Vec::new(),
            pooled: Vec::new(),
            up: Vec::new(),
            head: Head {
                weight: Slot::new(
                    head.weight.id,
                    Layout::Conv {
                        kernel: 3,
                        splits: vec![channels],
                        cout: 1,
                    },
                ),
                bias: head
                    .bias
                    .as_ref()
                    .map(|b| Slot::new(b.id, Layout::Plain(vec![1]))),
                conv,
            },
            segnet: Some(Box::new(body)),
            input: Nhwc::default(),
            logits: Vec::new(),
            dlogits: Vec::new(),
            pool: Pool::default(),
        })
    }

    /// [`backward`](Self::backward) of a SegNet: the 3x3 head's gradients (weights as im2col x
    /// GEMM, input as the flipped convolution), then the body's.
    fn segnet_backward(&mut self, dlogits: &[f32]) {
        let Some(body) = self.segnet.as_mut() else {
            return;
        };
        let pool = &mut self.pool;
        let last = body.last();
        let (n, h, w) = (last.n, last.h, last.w);
        let mut dl = Nhwc::with_buffer(n, h, w, 1, pool.take(Vec::new(), dlogits.len()));
        dl.data.copy_from_slice(dlogits);
        conv_weight_grad(&self.head.conv, &[last], &dl, &mut self.head.weight.grad);
        if let Some(b) = &mut self.head.bias {
            let mut sum = [0.0f32];
            channel_sums(&dl, &mut sum);
            b.grad[0] = sum[0];
        }
        let flipped = flipped_conv(&self.head.conv, Vec::new());
        let dlast = flipped.forward(&[&dl], pool.take(Vec::new(), last.data.len()));
        pool.give(dl.data);
        body.backward(dlast, &self.input, pool);
    }

    /// Let the wide 3x3 convolutions take the Winograd path (the default; `BACSEG_CPU_WINOGRAD=0`
    /// turns it off for every network) or keep every convolution on the direct and im2col +
    /// GEMM paths (for comparing them). Returns how many convolutions suit the path (on maps
    /// large enough), whether or not it is now on; 0 when `BACSEG_CPU_WINOGRAD=0`.
    pub fn set_winograd(&mut self, on: bool) -> usize {
        self.set_winograd_from(on.then_some(TRAIN_MIN_PIXELS))
    }

    /// [`set_winograd`](Self::set_winograd) from `min_pixels` output pixels (tests take the
    /// path on small maps).
    pub(crate) fn set_winograd_from(&mut self, min_pixels: Option<usize>) -> usize {
        let units = self
            .down
            .iter_mut()
            .chain(self.up.iter_mut().map(|l| &mut l.convs))
            .flat_map(|level| level.iter_mut())
            .chain(self.segnet.iter_mut().flat_map(|body| body.units_mut()));
        let mut count = 0;
        for unit in units {
            unit.winograd = min_pixels;
            count += usize::from(unit.conv.winograd_suits() && !winograd_disabled());
        }
        count
    }

    /// Architecture name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Image channels the network takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Sides must be non-zero multiples of this.
    pub fn input_multiple(&self) -> usize {
        match &self.segnet {
            Some(body) => 1 << body.enc.len(),
            None => 1 << self.up.len(),
        }
    }

    /// Logits `[n, h, w]` of the last forward pass.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Forward pass in training mode on channels-last images `[n, h, w, in_channels]`
    /// (BatchNorm on batch statistics, running statistics updated), keeping what the backward
    /// pass needs. Returns the logits `[n, h, w]`.
    pub fn forward(&mut self, x: Nhwc) -> Result<&[f32], NnError> {
        let m = self.input_multiple();
        if x.c != self.in_channels
            || !x.h.is_multiple_of(m)
            || !x.w.is_multiple_of(m)
            || x.pixels() == 0
        {
            return Err(NnError::InputShape {
                model: self.name,
                shape: [x.n, x.c, x.h, x.w],
                reason: format!(
                    "the CPU training engine needs {} channel(s) and sides that are non-zero multiples of {m}",
                    self.in_channels
                ),
            });
        }
        let old = std::mem::replace(&mut self.input, x);
        self.pool.give(old.data);
        let pool = &mut self.pool;
        if let Some(body) = self.segnet.as_mut() {
            body.forward(&self.input, pool);
            let out = self
                .head
                .conv
                .forward(&[body.last()], std::mem::take(&mut self.logits));
            self.logits = out.data;
            return Ok(&self.logits);
        }
        for i in 0..self.down.len() {
            let (before, rest) = self.down.split_at_mut(i);
            let [c1, c2] = &mut rest[0];
            match before.last() {
                None => c1.forward(&[&self.input], pool),
                Some(prev) => {
                    let p = &mut self.pooled[i - 1];
                    let buf = pool.take(std::mem::take(&mut p.data), prev[1].y.data.len() / 4);
                    *p = max_pool2x2(&prev[1].y, buf);
                    c1.forward(&[p], pool);
                }
            }
            c2.forward(&[&c1.y], pool);
        }
        let levels = self.down.len();
        for j in 0..self.up.len() {
            let skip = &self.down[levels - 2 - j][1].y;
            let (done, rest) = self.up.split_at_mut(j);
            let deep = match done.last() {
                None => &self.down[levels - 1][1].y,
                Some(prev) => &prev.convs[1].y,
            };
            let level = &mut rest[0];
            let buf = pool.take(
                std::mem::take(&mut level.upsampled.data),
                skip.pixels() * deep.c,
            );
            level.upsampled = match &level.upsample {
                Upsampling::Transposed(t) => t.t.forward(deep, buf),
                Upsampling::Bilinear => resize_bilinear_aligned(deep, skip.h, skip.w, buf),
            };
            let [c1, c2] = &mut level.convs;
            c1.forward(&[skip, &level.upsampled], pool);
            c2.forward(&[&c1.y], pool);
        }
        let last = match self.up.last() {
            Some(l) => &l.convs[1].y,
            None => &self.down[levels - 1][1].y,
        };
        let out = self
            .head
            .conv
            .forward(&[last], std::mem::take(&mut self.logits));
        self.logits = out.data;
        Ok(&self.logits)
    }

    /// Backward pass from the gradient of the loss with respect to the last forward pass's
    /// logits: every parameter's gradient.
    pub fn backward(&mut self, dlogits: &[f32]) {
        assert_eq!(dlogits.len(), self.logits.len(), "one gradient per logit");
        if self.segnet.is_some() {
            self.segnet_backward(dlogits);
            return;
        }
        let levels = self.down.len();
        let pool = &mut self.pool;
        // Head: d(last) = dlogits w^T, dw = last^T dlogits, db = sum(dlogits).
        let last = match self.up.last() {
            Some(l) => &l.convs[1].y,
            None => &self.down[levels - 1][1].y,
        };
        let c = last.c;
        let hw = self.head.conv.weight.clone();
        let mut dlast = Nhwc::with_buffer(
            last.n,
            last.h,
            last.w,
            c,
            pool.take(Vec::new(), last.data.len()),
        );
        dlast
            .data
            .par_chunks_mut(BLOCK_VALUES / c * c)
            .zip(dlogits.par_chunks(BLOCK_VALUES / c))
            .for_each(|(d, g)| {
                for (px, &g) in d.chunks_exact_mut(c).zip(g) {
                    for (v, &w) in px.iter_mut().zip(&hw) {
                        *v = g * w;
                    }
                }
            });
        let sums = last
            .data
            .par_chunks(BLOCK_VALUES / c * c)
            .zip(dlogits.par_chunks(BLOCK_VALUES / c))
            .map(|(x, g)| {
                let mut s = vec![0.0f64; c + 1];
                for (px, &g) in x.chunks_exact(c).zip(g) {
                    for ch in 0..c {
                        s[ch] += f64::from(px[ch] * g);
                    }
                    s[c] += f64::from(g);
                }
                s
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(vec![0.0f64; c + 1], add_vecs);
        for (g, &v) in self.head.weight.grad.iter_mut().zip(&sums[..c]) {
            *g = v as f32;
        }
        if let Some(b) = &mut self.head.bias {
            b.grad[0] = sums[c] as f32;
        }

        // Decoder, shallowest first. Each level's skip gradient is kept for the encoder.
        let mut dskips: Vec<Option<Nhwc>> = vec![None; levels];
        let mut d = dlast;
        for j in (0..self.up.len()).rev() {
            let skip_level = levels - 2 - j;
            let skip = &self.down[skip_level][1].y;
            let (done, rest) = self.up.split_at_mut(j);
            let deep = match done.last() {
                None => &self.down[levels - 1][1].y,
                Some(prev) => &prev.convs[1].y,
            };
            let level = &mut rest[0];
            let [c1, c2] = &mut level.convs;
            let dmid = c2
                .backward(d, &[&c1.y], true, pool)
                .expect("input gradient requested");
            let dcat = c1
                .backward(dmid, &[skip, &level.upsampled], true, pool)
                .expect("input gradient requested");
            // Split [skip, upsampled] channels.
            let (cs, cu) = (skip.c, level.upsampled.c);
            let mut dskip = Nhwc::with_buffer(
                skip.n,
                skip.h,
                skip.w,
                cs,
                pool.take(Vec::new(), skip.pixels() * cs),
            );
            let mut dup = Nhwc::with_buffer(
                skip.n,
                skip.h,
                skip.w,
                cu,
                pool.take(Vec::new(), skip.pixels() * cu),
            );
            dskip
                .data
                .par_chunks_mut(cs * 256)
                .zip(dup.data.par_chunks_mut(cu * 256))
                .zip(dcat.data.par_chunks((cs + cu) * 256))
                .for_each(|((a, b), src)| {
                    for ((a, b), s) in a
                        .chunks_exact_mut(cs)
                        .zip(b.chunks_exact_mut(cu))
                        .zip(src.chunks_exact(cs + cu))
                    {
                        a.copy_from_slice(&s[..cs]);
                        b.copy_from_slice(&s[cs..]);
                    }
                });
            pool.give(dcat.data);
            dskips[skip_level] = Some(dskip);
            d = match &mut level.upsample {
                Upsampling::Transposed(t) => t.backward(deep, &dup, pool),
                Upsampling::Bilinear => {
                    let mut dx = Nhwc::with_buffer(
                        deep.n,
                        deep.h,
                        deep.w,
                        deep.c,
                        pool.take(Vec::new(), deep.data.len()),
                    );
                    resize_bilinear_aligned_backward(&dup, &mut dx);
                    dx
                }
            };
            pool.give(dup.data);
        }

        // Encoder, deepest first: d is the bottleneck's output gradient.
        for i in (0..levels).rev() {
            let (before, rest) = self.down.split_at_mut(i);
            let [c1, c2] = &mut rest[0];
            let dmid = c2
                .backward(d, &[&c1.y], true, pool)
                .expect("input gradient requested");
            if i == 0 {
                c1.backward(dmid, &[&self.input], false, pool);
                break;
            }
            let pooled = &self.pooled[i - 1];
            let dpooled = c1
                .backward(dmid, &[pooled], true, pool)
                .expect("input gradient requested");
            let skip = &before[i - 1][1].y;
            let mut dskip = dskips[i - 1].take().unwrap_or_else(|| {
                let mut z = Nhwc::with_buffer(
                    skip.n,
                    skip.h,
                    skip.w,
                    skip.c,
                    pool.take(Vec::new(), skip.data.len()),
                );
                z.data.fill(0.0);
                z
            });
            max_pool2x2_backward(skip, &dpooled, &mut dskip);
            pool.give(dpooled.data);
            d = dskip;
        }
    }

    /// One AdamW step of every parameter with the gradients of the last backward pass.
    pub fn adamw_step(&mut self, lr: f64, cfg: &AdamW) {
        let mut step = |value: &mut [f32], slot: &mut Slot| slot.adamw(value, lr, cfg);
        for [a, b] in &mut self.down {
            a.slots(&mut step);
            b.slots(&mut step);
        }
        for level in &mut self.up {
            if let Upsampling::Transposed(t) = &mut level.upsample {
                t.adamw(lr, cfg);
            }
            let [a, b] = &mut level.convs;
            a.slots(&mut step);
            b.slots(&mut step);
        }
        if let Some(body) = self.segnet.as_mut() {
            for unit in body.units_mut() {
                unit.slots(&mut step);
            }
        }
        let head = &mut self.head;
        step(&mut head.conv.weight, &mut head.weight);
        if let Some(b) = &mut head.bias {
            step(&mut head.conv.bias, b);
        }
    }

    /// One training step: forward, loss, backward, AdamW. Returns the loss before the update.
    pub fn step(
        &mut self,
        x: Nhwc,
        target: &[f32],
        loss: LossKind,
        smooth: f32,
        lr: f64,
        cfg: &AdamW,
    ) -> Result<f64, NnError> {
        self.forward(x)?;
        let mut grad = std::mem::take(&mut self.dlogits);
        let value = loss_and_grad(loss, &self.logits, target, smooth, &mut grad);
        self.backward(&grad);
        self.dlogits = grad;
        self.adamw_step(lr, cfg);
        Ok(value)
    }

    /// Every parameter slot with its current value (engine layout).
    fn each_slot(&self, f: &mut dyn FnMut(&Slot, &[f32])) {
        for [a, b] in &self.down {
            a.each_slot(f);
            b.each_slot(f);
        }
        for level in &self.up {
            if let Upsampling::Transposed(t) = &level.upsample {
                t.each_slot(f);
            }
            level.convs[0].each_slot(f);
            level.convs[1].each_slot(f);
        }
        if let Some(body) = &self.segnet {
            for unit in body.units() {
                unit.each_slot(f);
            }
        }
        f(&self.head.weight, &self.head.conv.weight);
        if let Some(b) = &self.head.bias {
            f(b, &self.head.conv.bias);
        }
    }

    /// Every parameter slot, mutable (its value stays in the layer).
    fn each_slot_mut(&mut self, f: &mut dyn FnMut(&mut Slot)) {
        let mut g = |_: &mut [f32], s: &mut Slot| f(s);
        for [a, b] in &mut self.down {
            a.slots(&mut g);
            b.slots(&mut g);
        }
        for level in &mut self.up {
            if let Upsampling::Transposed(t) = &mut level.upsample {
                g(&mut [], &mut t.weight);
                if let Some(b) = &mut t.bias {
                    g(&mut [], b);
                }
            }
            let [a, b] = &mut level.convs;
            a.slots(&mut g);
            b.slots(&mut g);
        }
        if let Some(body) = self.segnet.as_mut() {
            for unit in body.units_mut() {
                unit.slots(&mut g);
            }
        }
        g(&mut [], &mut self.head.weight);
        if let Some(b) = &mut self.head.bias {
            g(&mut [], b);
        }
    }

    /// Every parameter's current value in burn's layout, by burn parameter id.
    fn parameter_values(&self) -> HashMap<ParamId, (Vec<f32>, Vec<usize>)> {
        let mut out = HashMap::new();
        self.each_slot(&mut |slot, value| {
            out.insert(slot.id, (slot.layout.to_burn(value), slot.layout.shape()));
        });
        out
    }

    /// Gradients of the last backward pass in burn's layout, by burn parameter id (for
    /// checking against burn's autodiff).
    pub fn gradients(&self) -> HashMap<ParamId, Vec<f32>> {
        let mut out = HashMap::new();
        self.each_slot(&mut |slot, _| {
            out.insert(slot.id, slot.layout.to_burn(&slot.grad));
        });
        out
    }

    /// The AdamW state as burn's optimizer record (the burnpack bytes of
    /// `ModuleOptimizer::to_record` for an `AdamW` optimizer): per parameter that has taken a
    /// step, `{id}.momentum.moment_1`, `{id}.momentum.moment_2`, `{id}.momentum.time` and
    /// `{id}.__rank`.
    pub fn optimizer_record(&self) -> Result<Vec<u8>, NnError> {
        let mut tensors = Vec::new();
        let mut scalars = Vec::new();
        self.each_slot(&mut |slot, _| {
            if slot.time == 0 {
                return;
            }
            let id = slot.id.val();
            let shape = slot.layout.shape();
            for (field, m) in [("moment_1", &slot.m1), ("moment_2", &slot.m2)] {
                let data = TensorData::new(slot.layout.to_burn(m), shape.clone());
                let (bytes, shape, dtype) = data.into_parts();
                tensors.push(burn_pack::Tensor::new(
                    format!("{id}.momentum.{field}"),
                    dtype,
                    shape,
                    Some(id),
                    bytes,
                ));
            }
            scalars.push((format!("{id}.__rank"), shape.len() as u64));
            scalars.push((format!("{id}.momentum.time"), slot.time as u64));
        });
        let mut writer = burn_pack::Writer::new(tensors);
        for (key, value) in scalars {
            writer = writer.with_scalar(&key, burn_pack::Scalar::UInt(value));
        }
        let bytes = writer.into_bytes().map_err(|e| NnError::Config {
            model: self.name,
            reason: format!("writing the optimizer state: {e}"),
        })?;
        Ok(bytes.to_vec())
    }

    /// Take the AdamW state from burn's optimizer record (see
    /// [`TrainNet::optimizer_record`]); parameters it does not hold start without state, as
    /// in burn.
    pub fn load_optimizer_record(&mut self, bytes: Vec<u8>) -> Result<(), NnError> {
        let name = self.name;
        let fail = |e: String| NnError::Config {
            model: name,
            reason: format!("reading the optimizer state: {e}"),
        };
        let reader = burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| fail(e.to_string()))?;
        let scalars = reader.scalars().clone();
        let mut moments: HashMap<String, Vec<f32>> = HashMap::new();
        for t in reader.into_tensors().map_err(|e| fail(e.to_string()))? {
            let (name, dtype, shape, _, bytes) = t.into_parts().map_err(|e| fail(e.to_string()))?;
            let values = TensorData::from_bytes(bytes, shape, dtype)
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| fail(format!("{name}: {e:?}")))?;
            moments.insert(name, values);
        }
        let mut error = None;
        self.each_slot_mut(&mut |slot| {
            let id = slot.id.val();
            let time = scalars
                .get(&format!("{id}.momentum.time"))
                .and_then(|s| u64::try_from(*s).ok());
            let m1 = moments.remove(&format!("{id}.momentum.moment_1"));
            let m2 = moments.remove(&format!("{id}.momentum.moment_2"));
            match (time, m1, m2) {
                (Some(time), Some(m1), Some(m2)) => {
                    let len = slot.layout.len();
                    if m1.len() != len || m2.len() != len {
                        error = Some(format!(
                            "parameter {id}: moments of {} values, {len} expected",
                            m1.len()
                        ));
                        return;
                    }
                    slot.m1 = slot.layout.packed_from_burn(&m1);
                    slot.m2 = slot.layout.packed_from_burn(&m2);
                    slot.time = time as usize;
                }
                _ => {
                    slot.time = 0;
                    slot.m1.fill(0.0);
                    slot.m2.fill(0.0);
                }
            }
        });
        match error {
            Some(e) => Err(fail(e)),
            None => Ok(()),
        }
    }

    /// Write the engine's parameters and BatchNorm running statistics into the burn module it
    /// was built from (same parameter ids), on the module's device.
    pub fn write_into<M: crate::SegmentationModel>(&self, model: M) -> M {
        let mut mapper = WriteParams {
            values: self.parameter_values(),
        };
        let model = model.map(&mut mapper);
        if let Some(parts) = model.unet_parts() {
            let device = model.devices().first().cloned().unwrap_or_default();
            for (block, [a, b]) in parts.down.iter().zip(&self.down) {
                a.write_running(&block.bn1, &device);
                b.write_running(&block.bn2, &device);
            }
            for ((_, block), level) in parts.up.iter().zip(&self.up) {
                level.convs[0].write_running(&block.bn1, &device);
                level.convs[1].write_running(&block.bn2, &device);
            }
        }
        if let Some(body) = &self.segnet
            && let Some(segnet) = model.as_any().and_then(|a| a.downcast_ref::<SegNet>())
        {
            let device = model.devices().first().cloned().unwrap_or_default();
            body.write_running(segnet, &device);
        }
        model
    }
}

/// Replaces parameters by id with the engine's values.
struct WriteParams {
    values: HashMap<ParamId, (Vec<f32>, Vec<usize>)>,
}

impl ModuleMapper for WriteParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((values, shape)) = self.values.remove(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let device = tensor.device();
        let grad = tensor.is_require_grad();
        let dims: [usize; D] = shape.try_into().expect("parameter rank");
        let mut t = Tensor::<D>::from_data(TensorData::new(values, dims), &device);
        if grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod tests;
