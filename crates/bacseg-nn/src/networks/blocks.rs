//! Building blocks shared by the architectures: convolution + BatchNorm (+ ReLU) units and the
//! U-Net double convolution. Field names are the PyTorch attribute names of
//! `tools/torch_reference.py`, so weight files carry over by name.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::cost::{self, Hw};
use crate::error::NnError;
use crate::onnx::{GraphBuilder, INPUT, LOGITS, int, ints};

/// Shape of one convolution: kernel, stride, dilation, groups, bias. Padding is always
/// `dilation * (kernel - 1) / 2` on each side ("same" at stride 1), as in every model here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl ConvSpec {
    pub const fn new(kernel: usize) -> Self {
        Self {
            kernel,
            stride: 1,
            dilation: 1,
            groups: 1,
            bias: false,
        }
    }
    pub const fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    pub const fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }
    pub const fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    pub const fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    pub fn init(self, in_channels: usize, out_channels: usize, device: &Device) -> Conv2d {
        let pad = self.dilation * (self.kernel - 1) / 2;
        Conv2dConfig::new([in_channels, out_channels], [self.kernel, self.kernel])
            .with_stride([self.stride, self.stride])
            .with_dilation([self.dilation, self.dilation])
            .with_groups(self.groups)
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(self.bias)
            .init(device)
    }
}

/// Convolution, BatchNorm, then ReLU unless `relu` is false (a linear projection).
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    pub(crate) relu: bool,
}

impl ConvBn {
    pub(crate) fn new(
        in_channels: usize,
        out_channels: usize,
        spec: ConvSpec,
        relu: bool,
        device: &Device,
    ) -> Self {
        Self {
            conv: spec.init(in_channels, out_channels, device),
            bn: BatchNormConfig::new(out_channels).init(device),
            relu,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.bn.forward(self.conv.forward(x));
        if self.relu { relu(x) } else { x }
    }

    pub(crate) fn flops(&self, hw: Hw) -> (u64, Hw) {
        cost::conv2d(&self.conv, hw)
    }
}

/// Two [3x3 conv -> BatchNorm -> ReLU] at constant resolution: the unit of every U-Net level.
#[derive(Module, Debug)]
pub struct DoubleConv {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
}

impl DoubleConv {
    pub(crate) fn new(
        in_channels: usize,
        out_channels: usize,
        bias: bool,
        device: &Device,
    ) -> Self {
        let spec = ConvSpec::new(3).bias(bias);
        Self {
            conv1: spec.init(in_channels, out_channels, device),
            bn1: BatchNormConfig::new(out_channels).init(device),
            conv2: spec.init(out_channels, out_channels, device),
            bn2: BatchNormConfig::new(out_channels).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = relu(self.bn1.forward(self.conv1.forward(x)));
        relu(self.bn2.forward(self.conv2.forward(x)))
    }

    pub(crate) fn flops(&self, hw: Hw) -> (u64, Hw) {
        let (a, hw) = cost::conv2d(&self.conv1, hw);
        let (b, hw) = cost::conv2d(&self.conv2, hw);
        (a + b, hw)
    }
}

/// 2x2 max-pooling with stride 2 (floor), as `nn.MaxPool2d(2)`.
pub(crate) fn max_pool2x2(x: Tensor<4>) -> Tensor<4> {
    burn::tensor::module::max_pool2d(x, burn::tensor::ops::MaxPoolOptions::new([2, 2]))
}

/// Bilinear resize to `size`, as `F.interpolate(x, size=size, mode="bilinear",
/// align_corners=align_corners)`.
pub(crate) fn resize_bilinear(x: Tensor<4>, size: Hw, align_corners: bool) -> Tensor<4> {
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    burn::tensor::module::interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(align_corners)
            .with_output_size(size),
    )
}

/// The layers of a U-Net-shaped network (DT-UNet, UNet) in forward order, for what walks them
/// outside burn's `forward`: the CPU engine and the ONNX export. Encoder levels are max-pooled
/// before every block but the first; each decoder level upsamples, concatenates `[skip,
/// upsampled]` and applies its block; the head gives the logits.
#[derive(Debug)]
pub struct UnetParts<'a> {
    pub name: &'static str,
    pub down: &'a [DoubleConv],
    /// Deepest first: the learned 2x2 upsampling, or `None` for bilinear resizing to the
    /// skip's size with aligned corners; then the block.
    pub up: Vec<(Option<&'a ConvTranspose2d>, &'a DoubleConv)>,
    pub head: &'a Conv2d,
}

impl ConvBn {
    /// This unit in an ONNX graph: Conv, BatchNormalization and Relu when it has one.
    pub(crate) fn onnx(&self, b: &mut GraphBuilder, x: String) -> Result<String, NnError> {
        let y = b.conv(x, &self.conv)?;
        let y = b.batch_norm(y, &self.bn)?;
        Ok(if self.relu { b.relu(y) } else { y })
    }
}

impl DoubleConv {
    /// This block in an ONNX graph.
    pub(crate) fn onnx(&self, b: &mut GraphBuilder, x: String) -> Result<String, NnError> {
        let y = b.conv(x, &self.conv1)?;
        let y = b.batch_norm(y, &self.bn1)?;
        let y = b.relu(y);
        let y = b.conv(y, &self.conv2)?;
        let y = b.batch_norm(y, &self.bn2)?;
        Ok(b.relu(y))
    }
}

impl UnetParts<'_> {
    /// The ONNX model of this U-Net (see [`crate::onnx`]; use [`crate::SegmentationModel::onnx`]):
    /// Conv, BatchNormalization, Relu, MaxPool, ConvTranspose or Resize (bilinear, aligned
    /// corners, to the skip's size), Concat.
    pub fn onnx(&self) -> Result<Vec<u8>, NnError> {
        let UnetParts {
            name: model,
            down,
            up,
            head,
        } = self;
        let model = *model;
        let in_channels = down.first().map_or(0, |d| d.conv1.weight.dims()[1]);
        let mut b = GraphBuilder::new(model);
        let mut x = INPUT.to_string();
        let mut skips = Vec::new();
        for (i, block) in down.iter().enumerate() {
            if i > 0 {
                x = b.node(
                    "MaxPool",
                    vec![x],
                    vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
                );
            }
            x = block.onnx(&mut b, x)?;
            skips.push(x.clone());
        }
        skips.pop();
        for &(transposed, block) in up {
            let skip = skips.pop().ok_or_else(|| NnError::Config {
                model,
                reason: "more decoder than encoder levels".into(),
            })?;
            let upsampled = match transposed {
                Some(t) => b.conv_transpose(x, t)?,
                None => {
                    let sizes = b.spatial_size(&skip);
                    b.resize(x, sizes, true)
                }
            };
            let cat = b.node("Concat", vec![skip, upsampled], vec![int("axis", 1)]);
            x = block.onnx(&mut b, cat)?;
        }
        let out = b.conv(x, head)?;
        Ok(b.finish(&out, in_channels, LOGITS.into()))
    }
}
