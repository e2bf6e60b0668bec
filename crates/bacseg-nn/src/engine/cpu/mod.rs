//! The CPU inference engine: a trained U-Net-shaped network (DT-UNet, UNet) compiled for
//! inference on channels-last buffers, with every BatchNorm folded into the convolution before
//! it, bias and ReLU applied in the convolution's epilogue, the decoder's concatenation read in
//! place, and buffers reused between forward passes. Its output equals the burn model's
//! `forward` in validation mode up to float rounding (see the tests).
//!
//! Why an engine of our own rather than burn's CPU backend: burn's conv2d on its CPU backend is
//! a general NCHW im2col that dominated the profile (45% in the im2col loops, 25% in the GEMM),
//! BatchNorm and ReLU are separate passes over memory, and max-pooling also computes indices.
//! Here the im2col works on cache-sized blocks of channels-last rows, where one kernel row of
//! taps is a single contiguous copy, and the same GEMM crate does the arithmetic.
//!
//! [`crate::train::cpu`] is the training engine on the same kernels (forward with saved
//! activations, backward passes, AdamW).

pub mod kernels;

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;

pub use kernels::Nhwc;
use kernels::{Conv, ConvTranspose2x2, max_pool2x2, resize_bilinear_aligned};

use crate::error::NnError;
use crate::model::SegmentationModel;
use crate::networks::blocks::{DoubleConv, UnetParts};

/// How a decoder level doubles its input's resolution.
#[derive(Debug, Clone)]
enum Upsample {
    /// Learned 2x2 transposed convolution (DT-UNet).
    Transposed(ConvTranspose2x2),
    /// Bilinear with aligned corners to the skip's size (UNet).
    Bilinear,
}

#[derive(Debug, Clone)]
struct UpLevel {
    upsample: Upsample,
    convs: [Conv; 2],
}

/// A compiled U-Net: max-pooled encoder levels of two convolutions, decoder levels that
/// upsample, concatenate `[skip, upsampled]` and convolve twice, and a 1x1 head.
#[derive(Debug, Clone)]
pub struct Net {
    name: &'static str,
    in_channels: usize,
    down: Vec<[Conv; 2]>,
    /// Deepest first.
    up: Vec<UpLevel>,
    head: Conv,
    /// Buffers of the previous forward pass, reused by the next.
    pool: Vec<Vec<f32>>,
}

pub(crate) fn values<const D: usize>(
    t: Tensor<D>,
    model: &'static str,
    what: &str,
) -> Result<Vec<f32>, NnError> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| NnError::Config {
            model,
            reason: format!("reading {what}: {e:?}"),
        })
}

pub(crate) fn unsupported(model: &'static str, reason: String) -> NnError {
    NnError::Config {
        model,
        reason: format!("not supported by the CPU engine: {reason}"),
    }
}

/// A burn convolution (stride 1, no dilation, one group, "same" padding) with an optional
/// BatchNorm after it, as an engine convolution reading maps of `splits` channels.
pub(crate) fn compile_conv(
    model: &'static str,
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
    splits: Vec<usize>,
    relu: bool,
) -> Result<Conv, NnError> {
    let [kh, kw] = conv.kernel_size;
    let pad = kh / 2;
    let same_padding = match conv.padding {
        PaddingConfig2d::Same => true,
        PaddingConfig2d::Explicit(a, b, c, d) => [a, b, c, d] == [pad; 4],
        PaddingConfig2d::Valid => pad == 0,
    };
    if kh != kw
        || kh % 2 == 0
        || conv.stride != [1, 1]
        || conv.dilation != [1, 1]
        || conv.groups != 1
        || !same_padding
    {
        return Err(unsupported(
            model,
            format!(
                "convolution {kh}x{kw}, stride {:?}, dilation {:?}, groups {}, padding {:?}",
                conv.stride, conv.dilation, conv.groups, conv.padding
            ),
        ));
    }
    let [cout, cin, _, _] = conv.weight.dims();
    if cin != splits.iter().sum::<usize>() {
        return Err(unsupported(
            model,
            format!("a convolution takes {cin} channels, its inputs have {splits:?}"),
        ));
    }
    let weight = values(conv.weight.val(), model, "convolution weights")?;
    let bias = conv
        .bias
        .as_ref()
        .map(|b| values(b.val(), model, "convolution bias"))
        .transpose()?;
    let affine = bn
        .map(|bn| -> Result<(Vec<f32>, Vec<f32>), NnError> {
            let gamma = values(bn.gamma.val(), model, "BatchNorm gamma")?;
            let beta = values(bn.beta.val(), model, "BatchNorm beta")?;
            let mean = values(bn.running_mean.value(), model, "BatchNorm mean")?;
            let var = values(bn.running_var.value(), model, "BatchNorm variance")?;
            // y = gamma * (z - mean) / sqrt(var + eps) + beta = scale * z + shift, in f64.
            let (scale, shift) = (0..gamma.len())
                .map(|i| {
                    let s = f64::from(gamma[i]) / (f64::from(var[i]) + bn.epsilon).sqrt();
                    (
                        s as f32,
                        (f64::from(beta[i]) - s * f64::from(mean[i])) as f32,
                    )
                })
                .unzip();
            Ok((scale, shift))
        })
        .transpose()?;
    Ok(Conv::from_oihw(
        &weight,
        kh,
        splits,
        cout,
        bias.as_deref(),
        affine.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice())),
        relu,
    ))
}

fn compile_double(
    model: &'static str,
    block: &DoubleConv,
    splits: Vec<usize>,
) -> Result<[Conv; 2], NnError> {
    let first = compile_conv(model, &block.conv1, Some(&block.bn1), splits, true)?;
    let second = compile_conv(
        model,
        &block.conv2,
        Some(&block.bn2),
        vec![first.cout],
        true,
    )?;
    Ok([first, second])
}

pub(crate) fn compile_transposed(
    model: &'static str,
    up: &ConvTranspose2d,
) -> Result<ConvTranspose2x2, NnError> {
    if up.kernel_size != [2, 2]
        || up.stride != [2, 2]
        || up.dilation != [1, 1]
        || up.groups != 1
        || up.padding != [0, 0]
        || up.padding_out != [0, 0]
    {
        return Err(unsupported(
            model,
            format!(
                "transposed convolution {:?} stride {:?} padding {:?}",
                up.kernel_size, up.stride, up.padding
            ),
        ));
    }
    let [cin, cout, _, _] = up.weight.dims();
    let weight = values(up.weight.val(), model, "transposed convolution weights")?;
    let bias = up
        .bias
        .as_ref()
        .map(|b| values(b.val(), model, "transposed convolution bias"))
        .transpose()?;
    Ok(ConvTranspose2x2::from_iohw(
        &weight,
        cin,
        cout,
        bias.as_deref(),
    ))
}

impl Net {
    /// `model` compiled for this engine, for the architectures it runs (U-Net-shaped ones:
    /// `None` for the others). BatchNorm layers use their running statistics.
    pub fn for_model<M: SegmentationModel>(model: &M) -> Option<Result<Self, NnError>> {
        model.unet_parts().map(|parts| Self::compile(&parts))
    }

    /// Compile a U-Net from its layers.
    pub fn compile(parts: &UnetParts<'_>) -> Result<Self, NnError> {
        let UnetParts {
            name,
            down,
            up,
            head,
        } = parts;
        let name = *name;
        let in_channels = down
            .first()
            .map(|d| d.conv1.weight.dims()[1])
            .ok_or_else(|| unsupported(name, "no encoder level".into()))?;
        let mut channels = in_channels;
        let mut compiled_down = Vec::with_capacity(down.len());
        let mut skips = Vec::with_capacity(down.len());
        for block in down.iter() {
            let convs = compile_double(name, block, vec![channels])?;
            channels = convs[1].cout;
            skips.push(channels);
            compiled_down.push(convs);
        }
        skips.pop();
        let mut compiled_up = Vec::new();
        for &(transposed, block) in up {
            let skip = skips
                .pop()
                .ok_or_else(|| unsupported(name, "more decoder than encoder levels".into()))?;
            let upsample = match transposed {
                Some(t) => {
                    let t = compile_transposed(name, t)?;
                    channels = t.cout;
                    Upsample::Transposed(t)
                }
                None => Upsample::Bilinear,
            };
            let convs = compile_double(name, block, vec![skip, channels])?;
            channels = convs[1].cout;
            compiled_up.push(UpLevel { upsample, convs });
        }
        let head = compile_conv(name, head, None, vec![channels], false)?;
        Ok(Self {
            name,
            in_channels,
            down: compiled_down,
            up: compiled_up,
            head,
            pool: Vec::new(),
        })
    }

    /// Architecture name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Free the buffers kept for the next forward pass (they are made again when needed).
    pub fn release_buffers(&mut self) {
        self.pool = Vec::new();
    }

    /// Image channels the network takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// A buffer from the previous pass for `len` values: the smallest that holds them, else
    /// the largest (grown by the kernel), else a new one.
    fn buffer(&mut self, len: usize) -> Vec<f32> {
        let fits = (0..self.pool.len())
            .filter(|&i| self.pool[i].capacity() >= len)
            .min_by_key(|&i| self.pool[i].capacity());
        let pick = fits.or_else(|| (0..self.pool.len()).max_by_key(|&i| self.pool[i].capacity()));
        pick.map(|i| self.pool.swap_remove(i)).unwrap_or_default()
    }

    /// Logits `[n, h, w]` (one channel) of channels-last images `[n, h, w, in_channels]`; height
    /// and width must be multiples of 2^(levels - 1).
    pub fn forward(&mut self, x: &Nhwc) -> Result<Vec<f32>, NnError> {
        let m = 1 << self.up.len();
        if x.c != self.in_channels || x.h % m != 0 || x.w % m != 0 || x.pixels() == 0 {
            return Err(NnError::InputShape {
                model: self.name,
                shape: [x.n, x.c, x.h, x.w],
                reason: format!(
                    "the CPU engine needs {} channel(s) and sides that are non-zero multiples of {m}",
                    self.in_channels
                ),
            });
        }
        let down = std::mem::take(&mut self.down);
        let up = std::mem::take(&mut self.up);
        let mut skips: Vec<Nhwc> = Vec::with_capacity(down.len());
        let mut pixels = x.pixels();
        for [c1, c2] in &down {
            let mid = match skips.last() {
                None => c1.forward(&[x], self.buffer(pixels * c1.cout)),
                Some(prev) => {
                    pixels /= 4;
                    let pooled = max_pool2x2(prev, self.buffer(pixels * prev.c));
                    let mid = c1.forward(&[&pooled], self.buffer(pixels * c1.cout));
                    self.pool.push(pooled.data);
                    mid
                }
            };
            let out = c2.forward(&[&mid], self.buffer(pixels * c2.cout));
            self.pool.push(mid.data);
            skips.push(out);
        }
        let mut deep = skips.pop().expect("at least one level");
        for level in &up {
            let skip = skips.pop().expect("one skip per decoder level");
            let pixels = skip.pixels();
            let upsampled = match &level.upsample {
                Upsample::Transposed(t) => t.forward(&deep, self.buffer(pixels * t.cout)),
                Upsample::Bilinear => {
                    resize_bilinear_aligned(&deep, skip.h, skip.w, self.buffer(pixels * deep.c))
                }
            };
            self.pool.push(std::mem::take(&mut deep.data));
            let [c1, c2] = &level.convs;
            let mid = c1.forward(&[&skip, &upsampled], self.buffer(pixels * c1.cout));
            self.pool.push(upsampled.data);
            self.pool.push(skip.data);
            deep = c2.forward(&[&mid], self.buffer(pixels * c2.cout));
            self.pool.push(mid.data);
        }
        let out = self.head.forward(&[&deep], Vec::new());
        self.pool.push(deep.data);
        self.down = down;
        self.up = up;
        Ok(out.data)
    }
}

#[cfg(test)]
mod tests;
