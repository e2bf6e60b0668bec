//! ContextNet (Poudel et al. 2018, "ContextNet: Exploring Context and Detail for Semantic
//! Segmentation in Real-time"): a shallow branch sees the full-resolution image (one convolution
//! and three depthwise-separable convolutions, down to 1/8), a deep branch sees the image resized
//! to 1/4 and runs MobileNetV2 bottlenecks (down to 1/32); the deep features are upsampled, passed
//! through a dilated depthwise convolution, and fused with the shallow ones by addition. A small
//! classifier gives 1/8-resolution logits, bilinearly resized to the full resolution.
//!
//! Channels scale with `base_width` (32 in the paper: 32, 32, 48, 64, 96, 128 in the bottlenecks).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::cost::{self, Hw};
use crate::error::NnError;
use crate::model::SegmentationModel;
use crate::networks::blocks::{ConvBn, ConvSpec, resize_bilinear};
use crate::onnx::{GraphBuilder, INPUT, LOGITS};

/// ContextNet configuration; `ContextNetConfig::new()` is the paper's network with 1 channel in.
#[derive(Config, Debug)]
pub struct ContextNetConfig {
    #[config(default = 1)]
    pub in_channels: usize,
    /// First-layer width; every other width is a fixed multiple of it (even, at least 2).
    #[config(default = 32)]
    pub base_width: usize,
    /// Expansion factor t of the bottlenecks (the first bottleneck always uses 1).
    #[config(default = 6)]
    pub expansion: usize,
}

impl ContextNetConfig {
    /// (expansion, output channels, repeats, first stride) of each bottleneck group (Table 1).
    fn bottlenecks(&self) -> [(usize, usize, usize, usize); 6] {
        let (b, t) = (self.base_width, self.expansion);
        [
            (1, b, 1, 1),
            (t, b, 1, 1),
            (t, b * 3 / 2, 3, 2),
            (t, 2 * b, 3, 2),
            (t, 3 * b, 2, 1),
            (t, 4 * b, 2, 1),
        ]
    }

    /// Check that the configuration describes a network.
    pub fn validate(&self) -> Result<(), NnError> {
        let fail = |reason: &str| {
            Err(NnError::Config {
                model: "contextnet",
                reason: reason.into(),
            })
        };
        if self.in_channels == 0 || self.expansion == 0 {
            return fail("in_channels and expansion must be at least 1");
        }
        if self.base_width < 2 || !self.base_width.is_multiple_of(2) {
            return fail("base_width must be even and at least 2");
        }
        Ok(())
    }

    /// Build the network with burn's default initialisation.
    pub fn init(&self, device: &Device) -> Result<ContextNet, NnError> {
        self.validate()?;
        let (cin, b) = (self.in_channels, self.base_width);
        let shallow = ShallowBranch {
            conv: ConvBn::new(cin, b, ConvSpec::new(3).stride(2), true, device),
            ds1: DsConv::new(b, 2 * b, 2, device),
            ds2: DsConv::new(2 * b, 4 * b, 2, device),
            ds3: DsConv::new(4 * b, 4 * b, 1, device),
        };
        let mut blocks = Vec::new();
        let mut c = b;
        for (t, cout, repeats, stride) in self.bottlenecks() {
            for k in 0..repeats {
                blocks.push(Bottleneck::new(
                    c,
                    cout,
                    t,
                    if k == 0 { stride } else { 1 },
                    device,
                ));
                c = cout;
            }
        }
        let deep = DeepBranch {
            stem: ConvBn::new(cin, b, ConvSpec::new(3).stride(2), true, device),
            blocks,
            conv: ConvBn::new(c, 4 * b, ConvSpec::new(3), true, device),
        };
        let f = 4 * b;
        let fusion = Fusion {
            dw: ConvBn::new(f, f, ConvSpec::new(3).dilation(4).groups(f), true, device),
            deep_proj: ConvBn::new(f, f, ConvSpec::new(1).bias(true), false, device),
            shallow_proj: ConvBn::new(f, f, ConvSpec::new(1).bias(true), false, device),
        };
        let classifier = Classifier {
            ds1: DsConv::new(f, f, 1, device),
            ds2: DsConv::new(f, f, 1, device),
            head: ConvSpec::new(1).bias(true).init(f, 1, device),
        };
        Ok(ContextNet {
            shallow,
            deep,
            fusion,
            classifier,
        })
    }
}

/// Depthwise-separable convolution: 3x3 depthwise (with stride), then 1x1 pointwise.
#[derive(Module, Debug)]
pub struct DsConv {
    pub dw: ConvBn,
    pub pw: ConvBn,
}

impl DsConv {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        Self {
            dw: ConvBn::new(
                cin,
                cin,
                ConvSpec::new(3).stride(stride).groups(cin),
                true,
                device,
            ),
            pw: ConvBn::new(cin, cout, ConvSpec::new(1), true, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pw.forward(self.dw.forward(x))
    }

    fn flops(&self, hw: Hw) -> (u64, Hw) {
        let (a, hw) = self.dw.flops(hw);
        let (b, hw) = self.pw.flops(hw);
        (a + b, hw)
    }
}

/// MobileNetV2 inverted residual: 1x1 expansion (absent when t = 1), 3x3 depthwise, linear 1x1
/// projection, identity shortcut when shape is kept.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub expand: Option<ConvBn>,
    pub dw: ConvBn,
    pub project: ConvBn,
    pub(crate) residual: bool,
}

impl Bottleneck {
    fn new(cin: usize, cout: usize, expansion: usize, stride: usize, device: &Device) -> Self {
        let hidden = cin * expansion;
        Self {
            expand: (expansion != 1)
                .then(|| ConvBn::new(cin, hidden, ConvSpec::new(1), true, device)),
            dw: ConvBn::new(
                hidden,
                hidden,
                ConvSpec::new(3).stride(stride).groups(hidden),
                true,
                device,
            ),
            project: ConvBn::new(hidden, cout, ConvSpec::new(1), false, device),
            residual: stride == 1 && cin == cout,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.project.forward(self.dw.forward(y));
        if self.residual { x + y } else { y }
    }

    fn flops(&self, hw: Hw) -> (u64, Hw) {
        let (e, hw) = self.expand.as_ref().map_or((0, hw), |c| c.flops(hw));
        let (d, hw) = self.dw.flops(hw);
        let (p, hw) = self.project.flops(hw);
        (e + d + p, hw)
    }
}

/// Full-resolution detail branch (output at 1/8).
#[derive(Module, Debug)]
pub struct ShallowBranch {
    pub conv: ConvBn,
    pub ds1: DsConv,
    pub ds2: DsConv,
    pub ds3: DsConv,
}

/// Context branch on the 1/4-resolution image (output at 1/32 of the full image).
#[derive(Module, Debug)]
pub struct DeepBranch {
    pub stem: ConvBn,
    pub blocks: Vec<Bottleneck>,
    pub conv: ConvBn,
}

/// Feature fusion: upsampled deep features through a dilated depthwise convolution, both
/// branches projected by 1x1 convolutions, added, ReLU.
#[derive(Module, Debug)]
pub struct Fusion {
    pub dw: ConvBn,
    pub deep_proj: ConvBn,
    pub shallow_proj: ConvBn,
}

/// Two depthwise-separable convolutions and a 1x1 convolution to one logit channel.
#[derive(Module, Debug)]
pub struct Classifier {
    pub ds1: DsConv,
    pub ds2: DsConv,
    pub head: Conv2d,
}

/// The ContextNet network (build it with [`ContextNetConfig::init`]).
#[derive(Module, Debug)]
pub struct ContextNet {
    pub shallow: ShallowBranch,
    pub deep: DeepBranch,
    pub fusion: Fusion,
    pub classifier: Classifier,
}

impl SegmentationModel for ContextNet {
    fn name(&self) -> &'static str {
        "contextnet"
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let small = resize_bilinear(x.clone(), [h / 4, w / 4], false);

        let s = &self.shallow;
        let shallow = s
            .ds3
            .forward(s.ds2.forward(s.ds1.forward(s.conv.forward(x))));
        let d = &self.deep;
        let deep = d
            .blocks
            .iter()
            .fold(d.stem.forward(small), |x, block| block.forward(x));
        let deep = d.conv.forward(deep);

        let [_, _, sh, sw] = shallow.dims();
        let deep = resize_bilinear(deep, [sh, sw], false);
        let deep = self.fusion.deep_proj.forward(self.fusion.dw.forward(deep));
        let fused = relu(deep + self.fusion.shallow_proj.forward(shallow));

        let c = &self.classifier;
        let logits = c.head.forward(c.ds2.forward(c.ds1.forward(fused)));
        resize_bilinear(logits, [h, w], false)
    }

    fn onnx(&self) -> Option<Result<Vec<u8>, NnError>> {
        Some(onnx_graph(self))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn in_channels(&self) -> usize {
        self.shallow.conv.conv.weight.lazy_shape().dims::<4>()[1]
    }

    /// Three stride-2 stages after the 1/4 resize: 32 keeps every map an exact fraction.
    fn input_multiple(&self) -> usize {
        32
    }

    fn forward_flops(&self, hw: Hw) -> u64 {
        let s = &self.shallow;
        let (a, out) = s.conv.flops(hw);
        let (b, out) = s.ds1.flops(out);
        let (c, out) = s.ds2.flops(out);
        let (d, shallow_hw) = s.ds3.flops(out);
        let mut flops = a + b + c + d;

        let (e, mut deep_hw) = self.deep.stem.flops(hw.map(|v| v / 4));
        flops += e;
        for block in &self.deep.blocks {
            let (f, out) = block.flops(deep_hw);
            flops += f;
            deep_hw = out;
        }
        flops += self.deep.conv.flops(deep_hw).0;

        let (g, out) = self.fusion.dw.flops(shallow_hw);
        flops +=
            g + self.fusion.deep_proj.flops(out).0 + self.fusion.shallow_proj.flops(shallow_hw).0;

        let cl = &self.classifier;
        let (h1, out) = cl.ds1.flops(shallow_hw);
        let (h2, out) = cl.ds2.flops(out);
        flops + h1 + h2 + cost::conv2d(&cl.head, out).0
    }
}
impl DsConv {
    fn onnx(&self, b: &mut GraphBuilder, x: String) -> Result<String, NnError> {
        let y = self.dw.onnx(b, x)?;
        self.pw.onnx(b, y)
    }
}

impl Bottleneck {
    fn onnx(&self, b: &mut GraphBuilder, x: String) -> Result<String, NnError> {
        let y = match &self.expand {
            Some(expand) => expand.onnx(b, x.clone())?,
            None => x.clone(),
        };
        let y = self.dw.onnx(b, y)?;
        let y = self.project.onnx(b, y)?;
        Ok(if self.residual {
            b.node("Add", vec![x, y], vec![])
        } else {
            y
        })
    }
}

/// The ONNX model of a ContextNet.
pub(crate) fn onnx_graph(net: &ContextNet) -> Result<Vec<u8>, NnError> {
    let mut b = GraphBuilder::new(net.name());
    let full = b.spatial_size(INPUT);
    let four = b.int64s(&[4, 4]);
    let quarter = b.node("Div", vec![full.clone(), four], vec![]);
    let small = b.resize(INPUT.into(), quarter, false);

    let s = &net.shallow;
    let shallow = s.conv.onnx(&mut b, INPUT.into())?;
    let shallow = s.ds1.onnx(&mut b, shallow)?;
    let shallow = s.ds2.onnx(&mut b, shallow)?;
    let shallow = s.ds3.onnx(&mut b, shallow)?;

    let d = &net.deep;
    let mut deep = d.stem.onnx(&mut b, small)?;
    for block in &d.blocks {
        deep = block.onnx(&mut b, deep)?;
    }
    let deep = d.conv.onnx(&mut b, deep)?;
    let shallow_size = b.spatial_size(&shallow);
    let deep = b.resize(deep, shallow_size, false);
    let deep = net.fusion.dw.onnx(&mut b, deep)?;
    let deep = net.fusion.deep_proj.onnx(&mut b, deep)?;
    let shallow = net.fusion.shallow_proj.onnx(&mut b, shallow)?;
    let sum = b.node("Add", vec![deep, shallow], vec![]);
    let fused = b.relu(sum);

    let c = &net.classifier;
    let y = c.ds1.onnx(&mut b, fused)?;
    let y = c.ds2.onnx(&mut b, y)?;
    let logits = b.conv(y, &c.head)?;
    let out = b.resize(logits, full, false);
    Ok(b.finish(&out, net.in_channels(), LOGITS.into()))
}
