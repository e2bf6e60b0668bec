//! The CPU inference engine: a trained network (the U-Net-shaped DT-UNet and UNet here;
//! SegNet, ContextNet and SCU-Net in their own modules) compiled for inference on
//! channels-last buffers, with every BatchNorm folded into the convolution before
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

pub mod bf16;
pub mod contextnet;
pub(crate) mod direct;
pub mod isa;
pub mod kernels;
pub mod scunet;
pub mod segnet;
pub(crate) mod winograd;
pub use winograd::WINOGRAD_WORK_SHARE;

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;

pub use kernels::Nhwc;
use kernels::{Conv, ConvTranspose2x2, max_pool2x2, resize_bilinear_aligned};

pub use contextnet::ContextNetNet;
pub use scunet::ScuNetNet;
pub use segnet::SegNetNet;

use crate::error::NnError;
use crate::model::SegmentationModel;
use crate::networks::blocks::{DoubleConv, UnetParts};
use crate::networks::contextnet::ContextNet;
use crate::networks::scunet::{Precision, ScuNet};
use crate::networks::segnet::SegNet;

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

/// The Winograd path's name in [`LayerTiming`].
pub const WINOGRAD: &str = "winograd F(4x4,3x3)";

/// One convolution's time on each path ([`Net::layer_profile`]).
#[derive(Debug, Clone)]
pub struct LayerTiming {
    /// Layer, channels, kernel and map size (`down0.conv2 8->8 3x3 at 512x512`).
    pub layer: String,
    /// Its work.
    pub gflop: f64,
    /// The path the engine takes for it in this process.
    pub chosen: String,
    /// Median seconds per path.
    pub paths: Vec<(String, f64)>,
}

/// A network compiled for the CPU engine.
#[derive(Debug, Clone)]
pub enum Net {
    /// DT-UNet, UNet.
    Unet(Box<UnetNet>),
    /// The published SCU-Net (f32 weights).
    ScuNet(Box<ScuNetNet>),
    /// SegNet.
    SegNet(Box<SegNetNet>),
    /// ContextNet.
    ContextNet(Box<ContextNetNet>),
}

impl Net {
    /// `model` compiled for this engine, for the architectures it runs (U-Net-shaped ones,
    /// SegNet, ContextNet, and SCU-Net with f32 weights: `None` for the others). BatchNorm
    /// layers use their running statistics.
    pub fn for_model<M: SegmentationModel>(model: &M) -> Option<Result<Self, NnError>> {
        Self::for_model_f32(model).map(|net| {
            net.map(|mut net| {
                net.set_winograd(true);
                net
            })
        })
    }

    fn for_model_f32<M: SegmentationModel>(model: &M) -> Option<Result<Self, NnError>> {
        if let Some(parts) = model.unet_parts() {
            return Some(UnetNet::compile(&parts).map(|n| Net::Unet(Box::new(n))));
        }
        let any = model.as_any()?;
        if let Some(s) = any.downcast_ref::<SegNet>() {
            return Some(SegNetNet::compile(s).map(|n| Net::SegNet(Box::new(n))));
        }
        if let Some(c) = any.downcast_ref::<ContextNet>() {
            return Some(ContextNetNet::compile(c).map(|n| Net::ContextNet(Box::new(n))));
        }
        any.downcast_ref::<ScuNet>()
            .filter(|s| s.precision() == Precision::F32)
            .map(|s| ScuNetNet::compile(s).map(|n| Net::ScuNet(Box::new(n))))
    }

    /// Compile a U-Net from its layers.
    pub fn compile(parts: &UnetParts<'_>) -> Result<Self, NnError> {
        let mut net = Net::Unet(Box::new(UnetNet::compile(parts)?));
        net.set_winograd(true);
        Ok(net)
    }

    /// Architecture name.
    pub fn name(&self) -> &'static str {
        match self {
            Net::Unet(n) => n.name(),
            Net::ScuNet(_) => "scunet",
            Net::SegNet(_) => "segnet",
            Net::ContextNet(_) => "contextnet",
        }
    }

    /// Image channels the network takes.
    pub fn in_channels(&self) -> usize {
        match self {
            Net::Unet(n) => n.in_channels(),
            Net::ScuNet(n) => n.in_channels(),
            Net::SegNet(n) => n.in_channels(),
            Net::ContextNet(n) => n.in_channels(),
        }
    }

    /// Free the buffers kept for the next forward pass (they are made again when needed).
    pub fn release_buffers(&mut self) {
        match self {
            Net::Unet(n) => n.pool = Buffers::default(),
            Net::ScuNet(n) => n.pool = Buffers::default(),
            Net::SegNet(n) => n.pool = Buffers::default(),
            Net::ContextNet(n) => n.pool = Buffers::default(),
        }
    }

    /// The network's output (logits for bacseg's networks, the raw head output for SCU-Net)
    /// `[n, h, w]` (one channel) for channels-last images `[n, h, w, in_channels]` on the
    /// network's input scale ([0, 1] grey values).
    pub fn forward(&mut self, x: &Nhwc) -> Result<Vec<f32>, NnError> {
        match self {
            Net::Unet(n) => n.forward(x),
            Net::ScuNet(n) => n.forward(x),
            Net::SegNet(n) => n.forward(x),
            Net::ContextNet(n) => n.forward(x),
        }
    }

    /// Run the convolutions in bf16 (`on`: weights and activations rounded to bf16, products
    /// accumulated in f32; see [`bf16`]) where the CPU has AVX512_BF16 and a layer's shape
    /// allows it (output channels a multiple of 16, input maps of even channel counts), or all
    /// in f32 again. Returns the number of convolutions that run in bf16 (0 on a CPU without
    /// AVX512_BF16).
    pub fn set_bf16(&mut self, on: bool) -> usize {
        self.convs_mut()
            .into_iter()
            .filter_map(|c| c.set_bf16(on).then_some(()))
            .count()
    }

    /// Run the wide 3x3 convolutions (32 or more channels in and out) with Winograd's
    /// F(4x4, 3x3) (`on`, the default of [`Net::for_model`] and [`Net::compile`]; see
    /// [`winograd`]), or all on the direct and im2col + GEMM paths. `BACSEG_CPU_WINOGRAD=0`
    /// keeps it off. Returns the number of convolutions that take it.
    pub fn set_winograd(&mut self, on: bool) -> usize {
        self.convs_mut()
            .into_iter()
            .filter_map(|c| c.set_winograd(on).then_some(()))
            .count()
    }

    fn convs_mut(&mut self) -> Vec<&mut Conv> {
        match self {
            Net::Unet(n) => n
                .down
                .iter_mut()
                .flatten()
                .chain(n.up.iter_mut().flat_map(|l| l.convs.iter_mut()))
                .chain(std::iter::once(&mut n.head))
                .collect(),
            Net::ScuNet(n) => n.convs_mut(),
            Net::SegNet(n) => n.convs_mut(),
            Net::ContextNet(n) => n.convs_mut(),
        }
    }

    /// Per-layer timings of a `batch x side x side` forward pass on every path this CPU runs
    /// ([`UnetNet::layer_profile`]; empty for the other architectures).
    pub fn layer_profile(&self, batch: usize, side: usize, repeats: usize) -> Vec<LayerTiming> {
        match self {
            Net::Unet(n) => n.layer_profile(batch, side, repeats),
            Net::ScuNet(_) | Net::SegNet(_) | Net::ContextNet(_) => Vec::new(),
        }
    }
}

/// Buffers of the previous forward pass, reused by the next.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buffers(Vec<Vec<f32>>);

impl Buffers {
    /// A buffer from the previous pass for `len` values: the smallest that holds them, else
    /// the largest (grown by the kernel), else a new one.
    pub(crate) fn take(&mut self, len: usize) -> Vec<f32> {
        let pool = &mut self.0;
        let fits = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity());
        let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
    }

    /// Give a buffer back for the next [`take`](Self::take).
    pub(crate) fn put(&mut self, buffer: Vec<f32>) {
        self.0.push(buffer);
    }
}

/// A compiled U-Net: max-pooled encoder levels of two convolutions, decoder levels that
/// upsample, concatenate `[skip, upsampled]` and convolve twice, and a 1x1 head.
#[derive(Debug, Clone)]
pub struct UnetNet {
    name: &'static str,
    in_channels: usize,
    down: Vec<[Conv; 2]>,
    /// Deepest first.
    up: Vec<UpLevel>,
    head: Conv,
    pool: Buffers,
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

/// `Ok` when `x` has `in_channels` channels and non-zero sides that are multiples of `multiple`,
/// else the error naming `model`, the shape and what the engine needs.
pub(crate) fn check_input(
    model: &'static str,
    x: &Nhwc,
    in_channels: usize,
    multiple: usize,
) -> Result<(), NnError> {
    if x.c == in_channels
        && x.h.is_multiple_of(multiple)
        && x.w.is_multiple_of(multiple)
        && x.pixels() > 0
    {
        return Ok(());
    }
    Err(NnError::InputShape {
        model,
        shape: [x.n, x.c, x.h, x.w],
        reason: format!(
            "the CPU engine needs {in_channels} channel(s) and sides that are non-zero multiples \
             of {multiple}"
        ),
    })
}

/// A burn 3x3 convolution with stride 2 and padding 1 (no dilation, one group) with an
/// optional BatchNorm after it, for [`kernels::conv3x3_stride2`].
pub(crate) fn compile_stride2(
    model: &'static str,
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
    relu: bool,
) -> Result<Conv, NnError> {
    if conv.kernel_size != [3, 3]
        || conv.stride != [2, 2]
        || conv.dilation != [1, 1]
        || conv.groups != 1
        || !matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
    {
        return Err(unsupported(
            model,
            format!(
                "a down-sampling convolution {:?}, stride {:?}, padding {:?}",
                conv.kernel_size, conv.stride, conv.padding
            ),
        ));
    }
    let cin = conv.weight.dims()[1];
    fold_conv(model, conv, bn, vec![cin], relu)
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
    fold_conv(model, conv, bn, splits, relu)
}

/// A BatchNorm in inference mode as the per-channel `(scale, shift)` of
/// `y = scale * x + shift`, computed in f64.
pub(crate) fn batch_norm_affine(
    model: &'static str,
    bn: &BatchNorm,
) -> Result<(Vec<f32>, Vec<f32>), NnError> {
    let gamma = values(bn.gamma.val(), model, "BatchNorm gamma")?;
    let beta = values(bn.beta.val(), model, "BatchNorm beta")?;
    let mean = values(bn.running_mean.value(), model, "BatchNorm mean")?;
    let var = values(bn.running_var.value(), model, "BatchNorm variance")?;
    // y = gamma * (z - mean) / sqrt(var + eps) + beta = scale * z + shift.
    Ok((0..gamma.len())
        .map(|i| {
            let s = f64::from(gamma[i]) / (f64::from(var[i]) + bn.epsilon).sqrt();
            (
                s as f32,
                (f64::from(beta[i]) - s * f64::from(mean[i])) as f32,
            )
        })
        .unzip())
}

/// A burn convolution's weights and bias with an optional BatchNorm after it folded in, as an
/// engine convolution of the same kernel (its stride, padding, dilation and groups are the
/// caller's to check and to run).
pub(crate) fn fold_conv(
    model: &'static str,
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
    splits: Vec<usize>,
    relu: bool,
) -> Result<Conv, NnError> {
    let [kh, _] = conv.kernel_size;
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
    let affine = bn.map(|bn| batch_norm_affine(model, bn)).transpose()?;
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

impl UnetNet {
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
            pool: Buffers::default(),
        })
    }

    /// Architecture name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every convolution of the network with the side of the map it runs on for a
    /// `side x side` input: `(name, convolution, map side)`, encoder first.
    fn convolutions(&self, side: usize) -> Vec<(String, &Conv, usize)> {
        let mut out = Vec::new();
        for (i, convs) in self.down.iter().enumerate() {
            for (j, c) in convs.iter().enumerate() {
                out.push((format!("down{i}.conv{}", j + 1), c, side >> i));
            }
        }
        let depth = self.up.len();
        for (i, level) in self.up.iter().enumerate() {
            let l = depth - 1 - i;
            for (j, c) in level.convs.iter().enumerate() {
                out.push((format!("up{l}.conv{}", j + 1), c, side >> l));
            }
        }
        out.push(("head".into(), &self.head, side));
        out
    }

    /// Median seconds of each convolution of a `batch x side x side` forward pass on every
    /// path this CPU runs (the im2col + GEMM path and each direct-convolution blocking of the
    /// instruction sets it has), on fixed inputs, for finding where a forward pass spends its
    /// time and which path is faster for which layer.
    pub fn layer_profile(&self, batch: usize, side: usize, repeats: usize) -> Vec<LayerTiming> {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut timings: Vec<LayerTiming> = self
            .convolutions(side)
            .into_iter()
            .map(|(name, conv, s)| {
                let maps: Vec<Nhwc> = conv
                    .splits
                    .iter()
                    .map(|&c| {
                        let len = batch * s * s * c;
                        let v = (0..len)
                            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                            .collect();
                        Nhwc::new(batch, s, s, c, v)
                    })
                    .collect();
                let refs: Vec<&Nhwc> = maps.iter().collect();
                let mut out = Nhwc::with_buffer(batch, s, s, conv.cout, Vec::new());
                let mut time = |f: &mut dyn FnMut(&mut Nhwc)| {
                    f(&mut out);
                    median(
                        (0..repeats.max(1))
                            .map(|_| {
                                let start = std::time::Instant::now();
                                f(&mut out);
                                start.elapsed().as_secs_f64()
                            })
                            .collect(),
                    )
                };
                let mut paths = vec![(
                    "im2col+GEMM".to_string(),
                    time(&mut |o| conv.forward_gemm(&refs, o)),
                )];
                if conv.kernel == 1 && conv.cout == 1 {
                    let mut ran = false;
                    let t = time(&mut |o| ran = conv.forward_head(refs[0], o));
                    if ran {
                        paths.push(("head AVX-512".to_string(), t));
                    }
                }
                if conv.kernel > 1 {
                    for isa in isa::Isa::supported() {
                        if let Some(b) = direct::blocking(isa, conv.cout) {
                            let t = time(&mut |o| {
                                conv.forward_direct(b, &refs, o);
                            });
                            paths.push((format!("direct {b:?}"), t));
                        }
                    }
                }
                if conv.winograd_runs(batch, s, s) {
                    let t = time(&mut |o| {
                        conv.forward_winograd(&refs, o);
                    });
                    paths.push((WINOGRAD.to_string(), t));
                }
                let cin = conv.cin();
                LayerTiming {
                    layer: format!(
                        "{name} {cin}->{} {k}x{k} at {s}x{s}",
                        conv.cout,
                        k = conv.kernel
                    ),
                    gflop: 2.0
                        * (batch * s * s * conv.kernel * conv.kernel * cin * conv.cout) as f64
                        / 1e9,
                    chosen: match conv.direct_blocking() {
                        _ if conv.winograd_runs(batch, s, s) => WINOGRAD.into(),
                        Some(b) if conv.kernel > 1 => format!("direct {b:?}"),
                        _ if paths.iter().any(|(p, _)| p == "head AVX-512") => {
                            "head AVX-512".into()
                        }
                        _ => "im2col+GEMM".into(),
                    },
                    paths,
                }
            })
            .collect();
        // The other layers: pooling and upsampling of each level.
        let map = |s: usize, c: usize| {
            let v = (0..batch * s * s * c)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                .collect();
            Nhwc::new(batch, s, s, c, v)
        };
        let time = |f: &mut dyn FnMut()| {
            f();
            median(
                (0..repeats.max(1))
                    .map(|_| {
                        let start = std::time::Instant::now();
                        f();
                        start.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        for (i, convs) in self.down.iter().enumerate().skip(1) {
            let (s, c) = (side >> (i - 1), convs[0].cin());
            let x = map(s, c);
            let mut buf = Vec::new();
            let t = time(&mut || buf = max_pool2x2(&x, std::mem::take(&mut buf)).data);
            timings.push(LayerTiming {
                layer: format!("pool{i} {c} channels at {s}x{s}"),
                gflop: 0.0,
                chosen: "max-pool".into(),
                paths: vec![("max-pool".into(), t)],
            });
        }
        let depth = self.up.len();
        for (i, level) in self.up.iter().enumerate() {
            let l = depth - 1 - i;
            let s = side >> (l + 1);
            let (name, path, t, gflop) = match &level.upsample {
                Upsample::Transposed(tc) => {
                    let x = map(s, tc.cin);
                    let mut buf = Vec::new();
                    let t = time(&mut || buf = tc.forward(&x, std::mem::take(&mut buf)).data);
                    let gflop = 2.0 * (batch * s * s * tc.cin * tc.cout * 4) as f64 / 1e9;
                    let name = format!("up{l}.transposed {}->{} 2x2 at {s}x{s}", tc.cin, tc.cout);
                    (name, "GEMM per row", t, gflop)
                }
                Upsample::Bilinear => {
                    let c = level.convs[0].splits[1];
                    let x = map(s, c);
                    let mut buf = Vec::new();
                    let t = time(&mut || {
                        buf =
                            resize_bilinear_aligned(&x, 2 * s, 2 * s, std::mem::take(&mut buf)).data
                    });
                    (
                        format!("up{l}.bilinear {c} channels at {s}x{s}"),
                        "resize",
                        t,
                        0.0,
                    )
                }
            };
            timings.push(LayerTiming {
                layer: name,
                gflop,
                chosen: path.into(),
                paths: vec![(path.into(), t)],
            });
        }
        timings
    }

    /// Image channels the network takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Logits `[n, h, w]` (one channel) of channels-last images `[n, h, w, in_channels]`; height
    /// and width must be multiples of 2^(levels - 1).
    pub fn forward(&mut self, x: &Nhwc) -> Result<Vec<f32>, NnError> {
        let m = 1 << self.up.len();
        check_input(self.name, x, self.in_channels, m)?;
        let down = std::mem::take(&mut self.down);
        let up = std::mem::take(&mut self.up);
        let mut skips: Vec<Nhwc> = Vec::with_capacity(down.len());
        let mut pixels = x.pixels();
        for [c1, c2] in &down {
            let mid = match skips.last() {
                None => c1.forward(&[x], self.pool.take(pixels * c1.cout)),
                Some(prev) => {
                    pixels /= 4;
                    let pooled = max_pool2x2(prev, self.pool.take(pixels * prev.c));
                    let mid = c1.forward(&[&pooled], self.pool.take(pixels * c1.cout));
                    self.pool.put(pooled.data);
                    mid
                }
            };
            let out = c2.forward(&[&mid], self.pool.take(pixels * c2.cout));
            self.pool.put(mid.data);
            skips.push(out);
        }
        let mut deep = skips.pop().expect("at least one level");
        for level in &up {
            let skip = skips.pop().expect("one skip per decoder level");
            let pixels = skip.pixels();
            let upsampled = match &level.upsample {
                Upsample::Transposed(t) => t.forward(&deep, self.pool.take(pixels * t.cout)),
                Upsample::Bilinear => {
                    resize_bilinear_aligned(&deep, skip.h, skip.w, self.pool.take(pixels * deep.c))
                }
            };
            self.pool.put(std::mem::take(&mut deep.data));
            let [c1, c2] = &level.convs;
            let mid = c1.forward(&[&skip, &upsampled], self.pool.take(pixels * c1.cout));
            self.pool.put(upsampled.data);
            self.pool.put(skip.data);
            deep = c2.forward(&[&mid], self.pool.take(pixels * c2.cout));
            self.pool.put(mid.data);
        }
        let out = self.head.forward(&[&deep], Vec::new());
        self.pool.put(deep.data);
        self.down = down;
        self.up = up;
        Ok(out.data)
    }
}

#[cfg(test)]
mod tests;
