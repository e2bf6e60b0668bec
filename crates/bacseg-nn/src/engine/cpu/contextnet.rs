//! ContextNet ([`crate::networks::contextnet`]) compiled for the CPU engine, on the same
//! channels-last maps as the other networks: every BatchNorm folded into the convolution
//! before it; the two stride-2 3x3 convolutions as a strided im2col + GEMM, the 1x1 (pointwise,
//! expansion, projection) and the 3x3 convolutions on the engine's GEMM and direct paths;
//! depthwise 3x3 convolutions (strided, dilated) by a kernel of their own that runs along the
//! channels of each pixel; the bottlenecks' residual sums and the fusion's sum and ReLU in
//! place; bilinear resizing with half-pixel centres (the input to a quarter, the deep features
//! up to the shallow branch's size, the logits up to the input's size).
//!
//! Its output equals burn's `ContextNet::forward` up to float rounding (see the tests).

use burn::nn::PaddingConfig2d;
use rayon::prelude::*;

use super::kernels::{Conv, Nhwc, conv3x3_stride2, resize_bilinear_half_pixel};
use super::{
    Buffers, batch_norm_affine, check_input, compile_conv, compile_stride2, unsupported, values,
};
use crate::error::NnError;
use crate::networks::blocks::ConvBn;
use crate::networks::contextnet::{Bottleneck, ContextNet, DsConv};

const NAME: &str = "contextnet";

/// A depthwise 3x3 convolution (one filter per channel) with its BatchNorm folded in, then
/// ReLU when it has one; padding equal to the dilation, as the network builds them.
#[derive(Debug, Clone)]
struct Depthwise {
    /// `[9][c]`: tap-major, so that one tap's weights for all channels are contiguous.
    taps: Vec<f32>,
    bias: Vec<f32>,
    stride: usize,
    dilation: usize,
    relu: bool,
}

impl Depthwise {
    fn compile(layer: &ConvBn) -> Result<Self, NnError> {
        let conv = &layer.conv;
        let [c, one, kh, kw] = conv.weight.dims();
        let (s, d) = (conv.stride[0], conv.dilation[0]);
        let ok = [kh, kw] == [3, 3]
            && one == 1
            && conv.groups == c
            && conv.stride == [s, s]
            && (s == 1 || s == 2)
            && conv.dilation == [d, d]
            && matches!(conv.padding, PaddingConfig2d::Explicit(a, b, e, f) if [a, b, e, f] == [d; 4]);
        if !ok {
            return Err(unsupported(
                NAME,
                format!(
                    "a depthwise convolution {:?}, stride {:?}, dilation {:?}, groups {}, \
                     padding {:?}",
                    conv.kernel_size, conv.stride, conv.dilation, conv.groups, conv.padding
                ),
            ));
        }
        let w = values(conv.weight.val(), NAME, "depthwise weights")?;
        let b = match &conv.bias {
            Some(b) => values(b.val(), NAME, "depthwise bias")?,
            None => vec![0.0; c],
        };
        let (scale, shift) = batch_norm_affine(NAME, &layer.bn)?;
        let mut taps = vec![0.0; 9 * c];
        for ch in 0..c {
            for tap in 0..9 {
                taps[tap * c + ch] = w[ch * 9 + tap] * scale[ch];
            }
        }
        let bias = (0..c).map(|ch| scale[ch] * b[ch] + shift[ch]).collect();
        Ok(Self {
            taps,
            bias,
            stride: s,
            dilation: d,
            relu: layer.relu,
        })
    }

    fn channels(&self) -> usize {
        self.bias.len()
    }

    /// Output height or width for an input side `n`.
    fn out_side(&self, n: usize) -> usize {
        (n - 1) / self.stride + 1
    }

    fn forward(&self, x: &Nhwc, out: Vec<f32>) -> Nhwc {
        let (h, w, c) = (x.h, x.w, x.c);
        let (s, d) = (self.stride, self.dilation);
        let (oh, ow) = (self.out_side(h), self.out_side(w));
        let mut out = Nhwc::with_buffer(x.n, oh, ow, c, out);
        if out.data.is_empty() {
            return out;
        }
        out.data
            .par_chunks_mut(ow * c)
            .enumerate()
            .for_each(|(r, dst)| {
                let (img, y) = (r / oh, r % oh);
                for (xo, acc) in dst.chunks_exact_mut(c).enumerate() {
                    acc.copy_from_slice(&self.bias);
                    for ky in 0..3 {
                        let sy = (s * y + ky * d).wrapping_sub(d);
                        if sy >= h {
                            continue;
                        }
                        for kx in 0..3 {
                            let sx = (s * xo + kx * d).wrapping_sub(d);
                            if sx >= w {
                                continue;
                            }
                            let src = &x.data[((img * h + sy) * w + sx) * c..][..c];
                            let tap = &self.taps[(ky * 3 + kx) * c..][..c];
                            for ((a, &v), &k) in acc.iter_mut().zip(src).zip(tap) {
                                *a += v * k;
                            }
                        }
                    }
                    if self.relu {
                        for a in acc.iter_mut() {
                            *a = a.max(0.0);
                        }
                    }
                }
            });
        out
    }
}

/// A 1x1 convolution unit (BatchNorm folded in, ReLU when it has one).
fn pointwise(layer: &ConvBn, cin: usize) -> Result<Conv, NnError> {
    compile_conv(NAME, &layer.conv, Some(&layer.bn), vec![cin], layer.relu)
}

/// A stride-2 3x3 convolution unit with padding 1 (BatchNorm folded in, ReLU).
fn stride2(layer: &ConvBn) -> Result<Conv, NnError> {
    compile_stride2(NAME, &layer.conv, Some(&layer.bn), layer.relu)
}

/// Depthwise, then pointwise.
#[derive(Debug, Clone)]
struct Separable {
    dw: Depthwise,
    pw: Conv,
}

impl Separable {
    fn compile(block: &DsConv) -> Result<Self, NnError> {
        let dw = Depthwise::compile(&block.dw)?;
        let pw = pointwise(&block.pw, dw.channels())?;
        Ok(Self { dw, pw })
    }

    fn forward(&self, x: &Nhwc, pool: &mut Buffers) -> Nhwc {
        let (oh, ow) = (self.dw.out_side(x.h), self.dw.out_side(x.w));
        let mid = self.dw.forward(x, pool.take(x.n * oh * ow * x.c));
        let out = self
            .pw
            .forward(&[&mid], pool.take(mid.pixels() * self.pw.cout));
        pool.put(mid.data);
        out
    }
}

/// MobileNetV2 inverted residual: optional 1x1 expansion, depthwise, linear 1x1 projection,
/// identity shortcut when the shape is kept.
#[derive(Debug, Clone)]
struct Inverted {
    expand: Option<Conv>,
    dw: Depthwise,
    project: Conv,
    residual: bool,
}

impl Inverted {
    fn compile(block: &Bottleneck, cin: usize) -> Result<Self, NnError> {
        let expand = block
            .expand
            .as_ref()
            .map(|e| pointwise(e, cin))
            .transpose()?;
        let dw = Depthwise::compile(&block.dw)?;
        let project = pointwise(&block.project, dw.channels())?;
        Ok(Self {
            expand,
            dw,
            project,
            residual: block.residual,
        })
    }

    fn forward(&self, x: Nhwc, pool: &mut Buffers) -> Nhwc {
        let expanded = self
            .expand
            .as_ref()
            .map(|e| e.forward(&[&x], pool.take(x.pixels() * e.cout)));
        let inner = expanded.as_ref().unwrap_or(&x);
        let (oh, ow) = (self.dw.out_side(x.h), self.dw.out_side(x.w));
        let mid = self.dw.forward(inner, pool.take(x.n * oh * ow * inner.c));
        if let Some(e) = expanded {
            pool.put(e.data);
        }
        let mut out = self
            .project
            .forward(&[&mid], pool.take(mid.pixels() * self.project.cout));
        pool.put(mid.data);
        if self.residual {
            add_into(&mut out.data, &x.data, false);
        }
        pool.put(x.data);
        out
    }
}

/// `dst += src` elementwise, then ReLU when `relu`.
fn add_into(dst: &mut [f32], src: &[f32], relu: bool) {
    const CHUNK: usize = 16 * 1024;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| {
            for (d, &s) in d.iter_mut().zip(s) {
                *d += s;
                if relu {
                    *d = d.max(0.0);
                }
            }
        });
}

/// A compiled ContextNet.
#[derive(Debug, Clone)]
pub struct ContextNetNet {
    in_channels: usize,
    shallow_conv: Conv,
    shallow: [Separable; 3],
    stem: Conv,
    blocks: Vec<Inverted>,
    deep_conv: Conv,
    fusion_dw: Depthwise,
    deep_proj: Conv,
    shallow_proj: Conv,
    classifier: [Separable; 2],
    head: Conv,
    pub(crate) pool: Buffers,
}

impl ContextNetNet {
    /// Compile `model` (its BatchNorm layers with their running statistics).
    pub fn compile(model: &ContextNet) -> Result<Self, NnError> {
        let s = &model.shallow;
        let shallow_conv = stride2(&s.conv)?;
        let shallow = [
            Separable::compile(&s.ds1)?,
            Separable::compile(&s.ds2)?,
            Separable::compile(&s.ds3)?,
        ];
        let d = &model.deep;
        let stem = stride2(&d.stem)?;
        let mut c = stem.cout;
        let mut blocks = Vec::with_capacity(d.blocks.len());
        for block in &d.blocks {
            let b = Inverted::compile(block, c)?;
            c = b.project.cout;
            blocks.push(b);
        }
        let deep_conv = compile_conv(NAME, &d.conv.conv, Some(&d.conv.bn), vec![c], d.conv.relu)?;
        let f = &model.fusion;
        let fusion_dw = Depthwise::compile(&f.dw)?;
        let deep_proj = pointwise(&f.deep_proj, fusion_dw.channels())?;
        let shallow_proj = pointwise(&f.shallow_proj, shallow[2].pw.cout)?;
        let cl = &model.classifier;
        let classifier = [Separable::compile(&cl.ds1)?, Separable::compile(&cl.ds2)?];
        let head_cin = cl.head.weight.dims()[1];
        let head = compile_conv(NAME, &cl.head, None, vec![head_cin], false)?;
        let checks = [
            (fusion_dw.channels(), deep_conv.cout, "fusion's depthwise"),
            (deep_proj.cout, shallow_proj.cout, "fusion's projections"),
            (classifier[0].dw.channels(), deep_proj.cout, "classifier"),
            (head.cout, 1, "head"),
        ];
        for (got, want, what) in checks {
            if got != want {
                return Err(unsupported(
                    NAME,
                    format!("the {what} has {got} channels where {want} were expected"),
                ));
            }
        }
        Ok(Self {
            in_channels: shallow_conv.cin(),
            shallow_conv,
            shallow,
            stem,
            blocks,
            deep_conv,
            fusion_dw,
            deep_proj,
            shallow_proj,
            classifier,
            head,
            pool: Buffers::default(),
        })
    }

    /// Image channels the network takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// The convolutions that run through [`Conv::forward`] (not the stride-2 ones).
    pub(crate) fn convs_mut(&mut self) -> Vec<&mut Conv> {
        let mut convs: Vec<&mut Conv> = Vec::new();
        for s in self.shallow.iter_mut().chain(self.classifier.iter_mut()) {
            convs.push(&mut s.pw);
        }
        for b in &mut self.blocks {
            if let Some(e) = &mut b.expand {
                convs.push(e);
            }
            convs.push(&mut b.project);
        }
        convs.extend([
            &mut self.deep_conv,
            &mut self.deep_proj,
            &mut self.shallow_proj,
            &mut self.head,
        ]);
        convs
    }

    /// Logits `[n, h, w]` (one channel) of channels-last images `[n, h, w, in_channels]`;
    /// height and width must be non-zero multiples of 32.
    pub fn forward(&mut self, x: &Nhwc) -> Result<Vec<f32>, NnError> {
        check_input(NAME, x, self.in_channels, 32)?;
        let pool = &mut self.pool;
        let (h, w) = (x.h, x.w);
        // Shallow branch: full resolution down to 1/8.
        let conv = &self.shallow_conv;
        let mut shallow = conv3x3_stride2(
            conv,
            x,
            pool.take(x.n * (h / 2) * (w / 2) * conv.cout),
            &|_| {},
        );
        for s in &self.shallow {
            let next = s.forward(&shallow, pool);
            pool.put(std::mem::replace(&mut shallow, next).data);
        }
        // Deep branch: the image at a quarter, down to 1/32.
        let small = resize_bilinear_half_pixel(x, h / 4, w / 4, pool.take(x.n * h * w / 16 * x.c));
        let stem = &self.stem;
        let mut deep = conv3x3_stride2(
            stem,
            &small,
            pool.take(small.pixels() / 4 * stem.cout),
            &|_| {},
        );
        pool.put(small.data);
        for b in &self.blocks {
            deep = b.forward(deep, pool);
        }
        let deep_out = self
            .deep_conv
            .forward(&[&deep], pool.take(deep.pixels() * self.deep_conv.cout));
        pool.put(deep.data);
        // Fusion at 1/8: relu(deep_proj(dw(up(deep))) + shallow_proj(shallow)).
        let (sh, sw) = (shallow.h, shallow.w);
        let up =
            resize_bilinear_half_pixel(&deep_out, sh, sw, pool.take(shallow.pixels() * deep_out.c));
        pool.put(deep_out.data);
        let dw = self.fusion_dw.forward(&up, pool.take(up.data.len()));
        pool.put(up.data);
        let mut fused = self
            .deep_proj
            .forward(&[&dw], pool.take(dw.pixels() * self.deep_proj.cout));
        pool.put(dw.data);
        let projected = self.shallow_proj.forward(
            &[&shallow],
            pool.take(shallow.pixels() * self.shallow_proj.cout),
        );
        pool.put(shallow.data);
        add_into(&mut fused.data, &projected.data, true);
        pool.put(projected.data);
        // Classifier at 1/8, logits resized to the input's size.
        for s in &self.classifier {
            let next = s.forward(&fused, pool);
            pool.put(std::mem::replace(&mut fused, next).data);
        }
        let logits = self.head.forward(&[&fused], pool.take(fused.pixels()));
        pool.put(fused.data);
        let out = resize_bilinear_half_pixel(&logits, h, w, Vec::new());
        pool.put(logits.data);
        Ok(out.data)
    }
}
