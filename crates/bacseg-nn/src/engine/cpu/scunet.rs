//! The published SCU-Net ([`crate::networks::scunet`]) compiled for the CPU engine, on the same
//! channels-last maps and kernels as the U-Nets: its 3x3 convolutions with their BatchNorm
//! folded in (the stride-1 ones on the engine's direct and GEMM paths, the three stride-2 ones
//! as a strided im2col + GEMM), PReLU as a pass over the map, the input injections' average
//! pooling, the context blocks' two depthwise convolutions (plain and dilated) written straight
//! into their concatenation with its BatchNorm and PReLU applied, the squeeze-and-excitation
//! gate, bilinear upsampling, and the 1x1 head computed at half resolution before the last
//! upsampling (bilinear weights sum to one, so the two orders give the same map; the head then
//! reads a quarter of the pixels and the 32-channel full-resolution map is never made).
//!
//! Its output equals burn's `ScuNet::forward` up to float rounding (see the tests, which also
//! compare with PyTorch's float64 output on a real crop).

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PRelu, PaddingConfig2d};
use rayon::prelude::*;

use super::kernels::{BLOCK_VALUES, Conv, Nhwc, conv3x3_stride2, resize_bilinear_aligned};
use super::{
    Buffers, batch_norm_affine, check_input, compile_conv, compile_stride2, unsupported, values,
};
use crate::error::NnError;
use crate::networks::scunet::{BnPrelu, ContextDown, ConvBnPrelu, DoubleConvPrelu, ScuNet};

const NAME: &str = "scunet";

/// A per-channel affine map followed by PReLU: `y = scale * x + shift`, then `y` where
/// positive, `slope * y` elsewhere (a BatchNorm and PReLU pair; scale 1 and shift 0 for a
/// PReLU alone).
#[derive(Debug, Clone)]
struct AffinePrelu {
    scale: Vec<f32>,
    shift: Vec<f32>,
    slope: Vec<f32>,
}

impl AffinePrelu {
    /// `channels` slopes from a PReLU of one or of `channels` parameters.
    fn slopes(act: &PRelu, channels: usize) -> Result<Vec<f32>, NnError> {
        let alpha = values(act.alpha.val(), NAME, "PReLU slopes")?;
        match alpha.len() {
            1 => Ok(vec![alpha[0]; channels]),
            n if n == channels => Ok(alpha),
            n => Err(unsupported(
                NAME,
                format!("a PReLU of {n} slopes after {channels} channels"),
            )),
        }
    }

    fn prelu(act: &PRelu, channels: usize) -> Result<Self, NnError> {
        Ok(Self {
            scale: vec![1.0; channels],
            shift: vec![0.0; channels],
            slope: Self::slopes(act, channels)?,
        })
    }

    fn bn_prelu(bn: &BatchNorm, act: &PRelu) -> Result<Self, NnError> {
        let (scale, shift) = batch_norm_affine(NAME, bn)?;
        let slope = Self::slopes(act, scale.len())?;
        Ok(Self {
            scale,
            shift,
            slope,
        })
    }

    #[inline(always)]
    fn apply(&self, px: &mut [f32]) {
        for (((v, &a), &b), &s) in px
            .iter_mut()
            .zip(&self.scale)
            .zip(&self.shift)
            .zip(&self.slope)
        {
            let y = a * *v + b;
            *v = if y > 0.0 { y } else { s * y };
        }
    }

    /// Apply to every pixel of `x` in place.
    fn apply_map(&self, x: &mut Nhwc) {
        let c = x.c;
        debug_assert_eq!(c, self.slope.len());
        x.data
            .par_chunks_mut((BLOCK_VALUES / c).max(1) * c)
            .for_each(|block| block.chunks_exact_mut(c).for_each(|px| self.apply(px)));
    }
}

/// A 3x3 stride-2 convolution with padding 1 (BatchNorm folded in), then PReLU.
#[derive(Debug, Clone)]
struct Stride2 {
    conv: Conv,
    act: AffinePrelu,
}

impl Stride2 {
    fn compile(layer: &ConvBnPrelu) -> Result<Self, NnError> {
        let folded = compile_stride2(NAME, &layer.conv, Some(&layer.bn), false)?;
        let act = AffinePrelu::prelu(&layer.act, folded.cout)?;
        Ok(Self { conv: folded, act })
    }

    fn forward(&self, x: &Nhwc, out: Vec<f32>) -> Nhwc {
        conv3x3_stride2(&self.conv, x, out, &|block| {
            for px in block.chunks_exact_mut(self.conv.cout) {
                self.act.apply(px);
            }
        })
    }
}

/// A stride-1 convolution (BatchNorm folded in), then PReLU.
#[derive(Debug, Clone)]
struct ConvPrelu {
    conv: Conv,
    act: AffinePrelu,
}

impl ConvPrelu {
    fn compile(
        conv: &Conv2d,
        bn: &BatchNorm,
        act: &PRelu,
        splits: Vec<usize>,
    ) -> Result<Self, NnError> {
        let conv = compile_conv(NAME, conv, Some(bn), splits, false)?;
        let act = AffinePrelu::prelu(act, conv.cout)?;
        Ok(Self { conv, act })
    }

    fn forward(&self, inputs: &[&Nhwc], out: Vec<f32>) -> Nhwc {
        let mut y = self.conv.forward(inputs, out);
        self.act.apply_map(&mut y);
        y
    }
}

/// Two depthwise 3x3 convolutions of the same map, the second dilated.
#[derive(Debug, Clone)]
struct DepthwisePair {
    /// `[9][c]` each: tap-major, so that one tap's weights for all channels are contiguous.
    local: Vec<f32>,
    surround: Vec<f32>,
    dilation: usize,
}

impl DepthwisePair {
    fn compile(local: &Conv2d, surround: &Conv2d, channels: usize) -> Result<Self, NnError> {
        let check = |conv: &Conv2d| {
            let d = conv.dilation[0];
            let ok = conv.kernel_size == [3, 3]
                && conv.stride == [1, 1]
                && conv.dilation == [d, d]
                && conv.groups == channels
                && conv.weight.dims() == [channels, 1, 3, 3]
                && conv.bias.is_none()
                && matches!(conv.padding, PaddingConfig2d::Explicit(a, b, e, f) if [a, b, e, f] == [d; 4]);
            if ok {
                Ok(d)
            } else {
                Err(unsupported(
                    NAME,
                    format!(
                        "a depthwise convolution {:?}, dilation {:?}, groups {}, padding {:?}",
                        conv.kernel_size, conv.dilation, conv.groups, conv.padding
                    ),
                ))
            }
        };
        if check(local)? != 1 {
            return Err(unsupported(NAME, "a dilated local convolution".into()));
        }
        let dilation = check(surround)?;
        let pack = |conv: &Conv2d| -> Result<Vec<f32>, NnError> {
            let w = values(conv.weight.val(), NAME, "depthwise weights")?;
            let mut packed = vec![0.0; 9 * channels];
            for ch in 0..channels {
                for tap in 0..9 {
                    packed[tap * channels + ch] = w[ch * 9 + tap];
                }
            }
            Ok(packed)
        };
        Ok(Self {
            local: pack(local)?,
            surround: pack(surround)?,
            dilation,
        })
    }

    /// `[local(x), surround(x)]` concatenated (`2c` channels) with `post` applied.
    fn forward(&self, x: &Nhwc, post: &AffinePrelu, out: Vec<f32>) -> Nhwc {
        let (h, w, c) = (x.h, x.w, x.c);
        let mut out = Nhwc::with_buffer(x.n, h, w, 2 * c, out);
        if out.data.is_empty() {
            return out;
        }
        out.data
            .par_chunks_mut(w * 2 * c)
            .enumerate()
            .for_each(|(r, dst)| {
                let (img, y) = (r / h, r % h);
                for (xo, px) in dst.chunks_exact_mut(2 * c).enumerate() {
                    let (loc, sur) = px.split_at_mut(c);
                    for (acc, weights, d) in
                        [(loc, &self.local, 1), (sur, &self.surround, self.dilation)]
                    {
                        acc.fill(0.0);
                        for ky in 0..3 {
                            let sy = (y + ky * d).wrapping_sub(d);
                            if sy >= h {
                                continue;
                            }
                            for kx in 0..3 {
                                let sx = (xo + kx * d).wrapping_sub(d);
                                if sx >= w {
                                    continue;
                                }
                                let src = &x.data[((img * h + sy) * w + sx) * c..][..c];
                                let tap = &weights[(ky * 3 + kx) * c..][..c];
                                for ((a, &v), &k) in acc.iter_mut().zip(src).zip(tap) {
                                    *a += v * k;
                                }
                            }
                        }
                    }
                    post.apply(px);
                }
            });
        out
    }
}

/// Squeeze-and-excitation: per image, the channel means through a linear layer, ReLU, a
/// second linear layer and a sigmoid scale the channels.
#[derive(Debug, Clone)]
struct Gate {
    /// `[c][hidden]` and `[hidden]`, then `[hidden][c]` and `[c]` (burn's `[in, out]` layout).
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    hidden: usize,
}

impl Gate {
    fn compile(fc1: &Linear, fc2: &Linear, channels: usize) -> Result<Self, NnError> {
        let [i1, hidden] = fc1.weight.dims();
        let [i2, o2] = fc2.weight.dims();
        if i1 != channels || i2 != hidden || o2 != channels {
            return Err(unsupported(
                NAME,
                format!("a gate {i1}x{hidden}, {i2}x{o2} after {channels} channels"),
            ));
        }
        let bias = |fc: &Linear, n: usize| -> Result<Vec<f32>, NnError> {
            fc.bias
                .as_ref()
                .map_or(Ok(vec![0.0; n]), |b| values(b.val(), NAME, "gate bias"))
        };
        Ok(Self {
            w1: values(fc1.weight.val(), NAME, "gate weights")?,
            b1: bias(fc1, hidden)?,
            w2: values(fc2.weight.val(), NAME, "gate weights")?,
            b2: bias(fc2, channels)?,
            hidden,
        })
    }

    fn apply(&self, x: &mut Nhwc) {
        let (c, hw) = (x.c, x.h * x.w);
        for image in x.data.chunks_exact_mut(hw * c) {
            // Channel sums in f64 (burn takes the mean in f32 over a quarter of a million
            // values at most; f64 keeps this side's rounding out of the comparison).
            let mut sum = vec![0.0f64; c];
            for px in image.chunks_exact(c) {
                for (s, &v) in sum.iter_mut().zip(px) {
                    *s += f64::from(v);
                }
            }
            let mean: Vec<f32> = sum.iter().map(|s| (s / hw as f64) as f32).collect();
            let hidden: Vec<f32> = (0..self.hidden)
                .map(|j| {
                    let z = self.b1[j]
                        + (0..c)
                            .map(|i| mean[i] * self.w1[i * self.hidden + j])
                            .sum::<f32>();
                    z.max(0.0)
                })
                .collect();
            let gate: Vec<f32> = (0..c)
                .map(|k| {
                    let z = self.b2[k]
                        + (0..self.hidden)
                            .map(|j| hidden[j] * self.w2[j * c + k])
                            .sum::<f32>();
                    1.0 / (1.0 + (-z).exp())
                })
                .collect();
            image
                .par_chunks_mut((BLOCK_VALUES / c).max(1) * c)
                .for_each(|block| {
                    for px in block.chunks_exact_mut(c) {
                        for (v, g) in px.iter_mut().zip(&gate) {
                            *v *= g;
                        }
                    }
                });
        }
    }
}

/// A context-guided down block.
#[derive(Debug, Clone)]
struct Context {
    down: Stride2,
    depthwise: DepthwisePair,
    joint: AffinePrelu,
    reduce: Conv,
    gate: Gate,
}

impl Context {
    fn compile(block: &ContextDown) -> Result<Self, NnError> {
        let down = Stride2::compile(&block.conv1x1)?;
        let c = down.conv.cout;
        let reduce = compile_conv(NAME, &block.reduce.conv, None, vec![2 * c], false)?;
        let gate = Gate::compile(&block.f_glo.fc1, &block.f_glo.fc2, reduce.cout)?;
        Ok(Self {
            depthwise: DepthwisePair::compile(&block.f_loc.conv, &block.f_sur.conv, c)?,
            joint: AffinePrelu::bn_prelu(&block.bn, &block.act)?,
            reduce,
            gate,
            down,
        })
    }

    fn forward(&self, x: &Nhwc, pool: &mut Buffers) -> Nhwc {
        let pixels = x.n * x.h.div_ceil(2) * x.w.div_ceil(2);
        let c = self.down.conv.cout;
        let y = self.down.forward(x, pool.take(pixels * c));
        let joint = self
            .depthwise
            .forward(&y, &self.joint, pool.take(pixels * 2 * c));
        pool.put(y.data);
        let mut out = self.reduce.forward(&[&joint], pool.take(pixels * c));
        pool.put(joint.data);
        self.gate.apply(&mut out);
        out
    }
}

/// 3x3 average pooling with stride 2 and padding 1, the padding counted (a ninth of each of
/// the nine values, zero outside the map).
fn avg_pool3x3s2(x: &Nhwc, out: Vec<f32>) -> Nhwc {
    let (h, w, c) = (x.h, x.w, x.c);
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = Nhwc::with_buffer(x.n, oh, ow, c, out);
    if out.data.is_empty() {
        return out;
    }
    out.data
        .par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(r, dst)| {
            let (img, y) = (r / oh, r % oh);
            for (xo, px) in dst.chunks_exact_mut(c).enumerate() {
                px.fill(0.0);
                for ky in 0..3 {
                    let sy = (2 * y + ky).wrapping_sub(1);
                    if sy >= h {
                        continue;
                    }
                    for kx in 0..3 {
                        let sx = (2 * xo + kx).wrapping_sub(1);
                        if sx < w {
                            let src = &x.data[((img * h + sy) * w + sx) * c..][..c];
                            px.iter_mut().zip(src).for_each(|(a, v)| *a += v);
                        }
                    }
                }
                px.iter_mut().for_each(|a| *a /= 9.0);
            }
        });
    out
}

/// The channel concatenation of `maps` with `post` applied (an injection's BatchNorm and PReLU).
fn concat_affine(maps: [&Nhwc; 2], post: &AffinePrelu, out: Vec<f32>) -> Nhwc {
    let [a, b] = maps;
    let c = a.c + b.c;
    let mut out = Nhwc::with_buffer(a.n, a.h, a.w, c, out);
    out.data
        .par_chunks_mut((BLOCK_VALUES / c).max(1) * c)
        .enumerate()
        .for_each(|(i, block)| {
            let first = i * (BLOCK_VALUES / c).max(1);
            for (p, px) in block.chunks_exact_mut(c).enumerate() {
                let q = first + p;
                px[..a.c].copy_from_slice(&a.data[q * a.c..][..a.c]);
                px[a.c..].copy_from_slice(&b.data[q * b.c..][..b.c]);
                post.apply(px);
            }
        });
    out
}

/// The decoder's two convolutions after the concatenation `[skip, upsampled]`.
#[derive(Debug, Clone)]
struct Decoder([ConvPrelu; 2]);

impl Decoder {
    fn compile(block: &DoubleConvPrelu, skip: usize, deep: usize) -> Result<Self, NnError> {
        let first = ConvPrelu::compile(&block.conv1, &block.bn1, &block.act1, vec![skip, deep])?;
        let cout = first.conv.cout;
        let second = ConvPrelu::compile(&block.conv2, &block.bn2, &block.act2, vec![cout])?;
        Ok(Self([first, second]))
    }

    fn forward(&self, deep: Nhwc, skip: &Nhwc, pool: &mut Buffers) -> Nhwc {
        let pixels = skip.pixels();
        let up = resize_bilinear_aligned(&deep, skip.h, skip.w, pool.take(pixels * deep.c));
        pool.put(deep.data);
        let [c1, c2] = &self.0;
        let mid = c1.forward(&[skip, &up], pool.take(pixels * c1.conv.cout));
        pool.put(up.data);
        let out = c2.forward(&[&mid], pool.take(pixels * c2.conv.cout));
        pool.put(mid.data);
        out
    }
}

/// SCU-Net compiled for the CPU engine (see the module documentation).
#[derive(Debug, Clone)]
pub struct ScuNetNet {
    in_channels: usize,
    /// The input normalisation `(x - mean) / std`.
    mean: f32,
    std: f32,
    stem: Stride2,
    stem_convs: [ConvPrelu; 2],
    inject1: AffinePrelu,
    level2: Context,
    inject2: AffinePrelu,
    level3: Context,
    up3: Decoder,
    up4: Decoder,
    head: Conv,
    pub(crate) pool: Buffers,
}

impl ScuNetNet {
    /// Compile `model` (f32 weights; BatchNorm layers use their running statistics).
    pub fn compile(model: &ScuNet) -> Result<Self, NnError> {
        let (mean, std) = model.input_normalisation();
        let in_channels = model.level1_0.conv.weight.dims()[1];
        let stem = Stride2::compile(&model.level1_0)?;
        let s = stem.conv.cout;
        let layer =
            |l: &ConvBnPrelu, cin: usize| ConvPrelu::compile(&l.conv, &l.bn, &l.act, vec![cin]);
        let stem_convs = [layer(&model.level1_1, s)?, layer(&model.level1_2, s)?];
        let stem_out = stem_convs[1].conv.cout;
        let injection = |b: &BnPrelu| AffinePrelu::bn_prelu(&b.bn, &b.act);
        let level2 = Context::compile(&model.level2_0)?;
        let level3 = Context::compile(&model.level3_0)?;
        let (c2, c3) = (level2.reduce.cout, level3.reduce.cout);
        let up3 = Decoder::compile(&model.up3.conv, c2, c3)?;
        let up3_out = up3.0[1].conv.cout;
        let up4 = Decoder::compile(&model.up4.conv, stem_out, up3_out)?;
        let head = compile_conv(NAME, &model.outc, None, vec![up4.0[1].conv.cout], false)?;
        let net = Self {
            in_channels,
            mean: mean as f32,
            std: std as f32,
            stem,
            stem_convs,
            inject1: injection(&model.b1)?,
            level2,
            inject2: injection(&model.b2)?,
            level3,
            up3,
            up4,
            head,
            pool: Buffers::default(),
        };
        let checks = [
            (
                net.inject1.slope.len(),
                stem_out + in_channels,
                "first injection",
            ),
            (
                net.level2.down.conv.cin(),
                stem_out + in_channels,
                "second level",
            ),
            (
                net.inject2.slope.len(),
                c2 + in_channels,
                "second injection",
            ),
            (net.level3.down.conv.cin(), c2 + in_channels, "third level"),
            (net.head.cout, 1, "head"),
        ];
        for (got, want, what) in checks {
            if got != want {
                return Err(unsupported(
                    NAME,
                    format!("the {what} has {got} channels where {want} were expected"),
                ));
            }
        }
        Ok(net)
    }

    /// Image channels the network takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// The convolutions that run through [`Conv::forward`] (not the stride-2 ones).
    pub(crate) fn convs_mut(&mut self) -> Vec<&mut Conv> {
        let [a, b] = &mut self.stem_convs;
        let [c, d] = &mut self.up3.0;
        let [e, f] = &mut self.up4.0;
        vec![
            &mut a.conv,
            &mut b.conv,
            &mut self.level2.reduce,
            &mut self.level3.reduce,
            &mut c.conv,
            &mut d.conv,
            &mut e.conv,
            &mut f.conv,
            &mut self.head,
        ]
    }

    /// The head's output `[n, h, w]` for channels-last images `[n, h, w, in_channels]` of [0, 1]
    /// grey values (normalised here, as `ScuNet::forward` does); sides must be multiples of 8.
    pub fn forward(&mut self, x: &Nhwc) -> Result<Vec<f32>, NnError> {
        check_input(NAME, x, self.in_channels, 8)?;
        let pool = &mut self.pool;
        let (mean, std) = (self.mean, self.std);
        let mut input = Nhwc::with_buffer(x.n, x.h, x.w, x.c, pool.take(x.data.len()));
        input
            .data
            .par_chunks_mut(BLOCK_VALUES)
            .zip(x.data.par_chunks(BLOCK_VALUES))
            .for_each(|(d, s)| {
                for (d, &v) in d.iter_mut().zip(s) {
                    *d = (v - mean) / std;
                }
            });
        let half = x.n * (x.h / 2) * (x.w / 2);
        let stem0 = self
            .stem
            .forward(&input, pool.take(half * self.stem.conv.cout));
        let [s1, s2] = &self.stem_convs;
        let stem1 = s1.forward(&[&stem0], pool.take(half * s1.conv.cout));
        pool.put(stem0.data);
        let stem = s2.forward(&[&stem1], pool.take(half * s2.conv.cout));
        pool.put(stem1.data);
        let down1 = avg_pool3x3s2(&input, pool.take(half * x.c));
        pool.put(input.data);
        let down2 = avg_pool3x3s2(&down1, pool.take(half / 4 * x.c));
        let joined = concat_affine(
            [&stem, &down1],
            &self.inject1,
            pool.take(half * (stem.c + x.c)),
        );
        pool.put(down1.data);
        let level2 = self.level2.forward(&joined, pool);
        pool.put(joined.data);
        let joined = concat_affine(
            [&level2, &down2],
            &self.inject2,
            pool.take(level2.pixels() * (level2.c + x.c)),
        );
        pool.put(down2.data);
        let level3 = self.level3.forward(&joined, pool);
        pool.put(joined.data);
        let up = self.up3.forward(level3, &level2, pool);
        pool.put(level2.data);
        let up = self.up4.forward(up, &stem, pool);
        pool.put(stem.data);
        let head = self.head.forward(&[&up], pool.take(up.pixels()));
        pool.put(up.data);
        let out = resize_bilinear_aligned(&head, x.h, x.w, Vec::new());
        pool.put(head.data);
        Ok(out.data)
    }
}
