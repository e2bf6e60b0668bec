//! SCU-Net (Guo et al., "SCU-Net: A deep learning method for segmentation and quantification of
//! breast arterial calcifications on mammograms", Medical Physics 2021), the only BAC
//! segmentation network whose trained weights are public (MIT, Emory HITI).
//!
//! The network, for a 3-channel input of size H x W (multiples of 8):
//! - stem at 1/2: a stride-2 3x3 convolution to 16 channels and two more 3x3 convolutions, each
//!   followed by BatchNorm (eps 1e-3) and a per-channel PReLU;
//! - input injection: the image average-pooled (3x3, stride 2, padding 1, padding counted) to
//!   1/2 and 1/4 is concatenated to the stem (19 channels) and to the next level (35 channels),
//!   each concatenation followed by BatchNorm + PReLU (dropout in training);
//! - two context-guided down blocks (1/4 with 32 channels, then 1/8 with 64): a stride-2 3x3
//!   convolution, a depthwise 3x3 "local" and a depthwise dilated 3x3 "surrounding" convolution
//!   concatenated, BatchNorm + PReLU, a 1x1 reduction, and a squeeze-and-excitation gate
//!   (global mean, two linear layers, sigmoid);
//! - decoder: twice, bilinear upsampling by 2 (corners aligned), concatenation with the skip of
//!   that resolution, and two 3x3 convolutions with bias, BatchNorm (eps 1e-5) and a single-slope
//!   PReLU; a last bilinear upsampling by 2 to full size and a 1x1 head with bias.
//!
//! The head's output is returned as is. The published checkpoints were trained with a sigmoid
//! applied to that output in the loss, but their inference reads the raw output as a probability
//! and thresholds it at 0.65 (see `bacseg predict --preset scunet`); bacseg's own pipeline applies
//! a sigmoid like for any other network.
//!
//! The published model also holds a third down block and two transposed convolutions that its
//! forward pass never uses; their tensors are in the checkpoints and are skipped when loading
//! (see [`load_scunet_checkpoint`]).

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PRelu, PReluConfig};
use burn::store::{ModuleSnapshot, PytorchStore};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, FloatDType, Tensor};

use crate::cost::{self, Hw};
use crate::error::NnError;
use crate::model::{OutputActivation, SegmentationModel};
use crate::networks::blocks::{ConvSpec, resize_bilinear};
use crate::onnx::{GraphBuilder, INPUT, LOGITS, int, ints};

/// SCU-Net configuration; `ScuNetConfig::new()` is the published network with logit outputs
/// (for training); [`load_scunet_checkpoint`] sets the published weights' `clamp` outputs.
#[derive(Config, Debug)]
pub struct ScuNetConfig {
    /// Image channels: 3 in the published model (the grey image replicated).
    #[config(default = 3)]
    pub in_channels: usize,
    /// The input normalisation `(x - input_mean) / input_std` applied to [0, 1] grey values
    /// before the network (the published values).
    #[config(default = 0.2813)]
    pub input_mean: f64,
    #[config(default = 0.1256)]
    pub input_std: f64,
    /// How the head's output becomes a probability.
    #[config(default = "OutputActivation::Sigmoid")]
    pub output: OutputActivation,
}

/// Convolution (no bias), BatchNorm (eps 1e-3), per-channel PReLU.
#[derive(Module, Debug)]
pub struct ConvBnPrelu {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    pub act: PRelu,
}

impl ConvBnPrelu {
    fn new(cin: usize, cout: usize, spec: ConvSpec, device: &Device) -> Self {
        Self {
            conv: spec.init(cin, cout, device),
            bn: bn(cout, 1e-3, device),
            act: PReluConfig::new().with_num_parameters(cout).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.act.forward(self.bn.forward(self.conv.forward(x)))
    }
}

/// BatchNorm (eps 1e-3) and per-channel PReLU (the published module also has a dropout, which
/// only acts in training; bacseg does not train SCU-Net).
#[derive(Module, Debug)]
pub struct BnPrelu {
    pub bn: BatchNorm,
    pub act: PRelu,
}

impl BnPrelu {
    fn new(channels: usize, device: &Device) -> Self {
        Self {
            bn: bn(channels, 1e-3, device),
            act: PReluConfig::new()
                .with_num_parameters(channels)
                .init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.act.forward(self.bn.forward(x))
    }
}

/// A bias-free convolution on its own (the published `Conv` wrapper: tensors `<name>.conv.*`).
#[derive(Module, Debug)]
pub struct PlainConv {
    pub conv: Conv2d,
}

/// Squeeze-and-excitation gate: global mean per channel, linear, ReLU, linear, sigmoid, scale.
#[derive(Module, Debug)]
pub struct GlobalGate {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl GlobalGate {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, _, _] = x.dims();
        let mean = x.clone().mean_dim(3).mean_dim(2).reshape([b, c]);
        let gate = sigmoid(self.fc2.forward(relu(self.fc1.forward(mean))));
        x * gate.reshape([b, c, 1, 1])
    }
}

/// Context-guided down block: halves the resolution, `cin -> cout` channels.
#[derive(Module, Debug)]
pub struct ContextDown {
    pub conv1x1: ConvBnPrelu,
    pub f_loc: PlainConv,
    pub f_sur: PlainConv,
    pub bn: BatchNorm,
    pub act: PRelu,
    pub reduce: PlainConv,
    pub f_glo: GlobalGate,
}

impl ContextDown {
    fn new(cin: usize, cout: usize, dilation: usize, reduction: usize, device: &Device) -> Self {
        let depthwise = ConvSpec::new(3).groups(cout);
        Self {
            conv1x1: ConvBnPrelu::new(cin, cout, ConvSpec::new(3).stride(2), device),
            f_loc: PlainConv {
                conv: depthwise.init(cout, cout, device),
            },
            f_sur: PlainConv {
                conv: depthwise.dilation(dilation).init(cout, cout, device),
            },
            bn: bn(2 * cout, 1e-3, device),
            act: PReluConfig::new()
                .with_num_parameters(2 * cout)
                .init(device),
            reduce: PlainConv {
                conv: ConvSpec::new(1).init(2 * cout, cout, device),
            },
            f_glo: GlobalGate {
                fc1: LinearConfig::new(cout, cout / reduction).init(device),
                fc2: LinearConfig::new(cout / reduction, cout).init(device),
            },
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv1x1.forward(x);
        let joint = Tensor::cat(
            vec![
                self.f_loc.conv.forward(x.clone()),
                self.f_sur.conv.forward(x),
            ],
            1,
        );
        let joint = self.act.forward(self.bn.forward(joint));
        self.f_glo.forward(self.reduce.conv.forward(joint))
    }

    fn flops(&self, hw: Hw) -> (u64, Hw) {
        let (a, hw) = cost::conv2d(&self.conv1x1.conv, hw);
        let (b, _) = cost::conv2d(&self.f_loc.conv, hw);
        let (c, _) = cost::conv2d(&self.f_sur.conv, hw);
        let (d, hw) = cost::conv2d(&self.reduce.conv, hw);
        (a + b + c + d, hw)
    }
}

/// Two [3x3 convolution with bias, BatchNorm (eps 1e-5), single-slope PReLU].
#[derive(Module, Debug)]
pub struct DoubleConvPrelu {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub act1: PRelu,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub act2: PRelu,
}

impl DoubleConvPrelu {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        let spec = ConvSpec::new(3).bias(true);
        Self {
            conv1: spec.init(cin, cout, device),
            bn1: bn(cout, 1e-5, device),
            act1: PReluConfig::new().init(device),
            conv2: spec.init(cout, cout, device),
            bn2: bn(cout, 1e-5, device),
            act2: PReluConfig::new().init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.act1.forward(self.bn1.forward(self.conv1.forward(x)));
        self.act2.forward(self.bn2.forward(self.conv2.forward(x)))
    }

    fn flops(&self, hw: Hw) -> (u64, Hw) {
        let (a, hw) = cost::conv2d(&self.conv1, hw);
        let (b, hw) = cost::conv2d(&self.conv2, hw);
        (a + b, hw)
    }
}

/// Decoder step: bilinear x2 upsampling of the deeper map, concatenated after the skip.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub conv: DoubleConvPrelu,
}

impl UpBlock {
    fn forward(&self, deep: Tensor<4>, skip: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = skip.dims();
        let up = resize_bilinear(deep, [h, w], true);
        self.conv.forward(Tensor::cat(vec![skip, up], 1))
    }
}

/// The SCU-Net network (see the module documentation).
#[derive(Module, Debug)]
pub struct ScuNet {
    input_mean: f64,
    input_std: f64,
    clamp_output: bool,
    pub level1_0: ConvBnPrelu,
    pub level1_1: ConvBnPrelu,
    pub level1_2: ConvBnPrelu,
    pub b1: BnPrelu,
    pub level2_0: ContextDown,
    pub b2: BnPrelu,
    pub level3_0: ContextDown,
    pub up3: UpBlock,
    pub up4: UpBlock,
    pub outc: Conv2d,
}

fn bn(channels: usize, epsilon: f64, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_epsilon(epsilon)
        .init(device)
}

/// 3x3 average pooling with stride 2 and padding 1, padding counted in the mean
/// (`nn.AvgPool2d(3, stride=2, padding=1)`).
fn inject(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(
        x,
        AvgPoolOptions::new([3, 3])
            .with_stride([2, 2])
            .with_padding([1, 1])
            .with_count_include_pad(true),
    )
}

impl ScuNetConfig {
    /// Build the network with burn's default initialisation (load a checkpoint to use it).
    pub fn init(&self, device: &Device) -> Result<ScuNet, NnError> {
        if self.in_channels == 0 {
            return Err(NnError::Config {
                model: "scunet",
                reason: "in_channels must be at least 1".into(),
            });
        }
        if !(self.input_std > 0.0 && self.input_mean.is_finite()) {
            return Err(NnError::Config {
                model: "scunet",
                reason: "input_std must be > 0 and input_mean finite".into(),
            });
        }
        let c = self.in_channels;
        let stride2 = ConvSpec::new(3).stride(2);
        Ok(ScuNet {
            input_mean: self.input_mean,
            input_std: self.input_std,
            clamp_output: self.output == OutputActivation::Clamp,
            level1_0: ConvBnPrelu::new(c, 16, stride2, device),
            level1_1: ConvBnPrelu::new(16, 16, ConvSpec::new(3), device),
            level1_2: ConvBnPrelu::new(16, 16, ConvSpec::new(3), device),
            b1: BnPrelu::new(16 + c, device),
            level2_0: ContextDown::new(16 + c, 32, 2, 8, device),
            b2: BnPrelu::new(32 + c, device),
            level3_0: ContextDown::new(32 + c, 64, 4, 16, device),
            up3: UpBlock {
                conv: DoubleConvPrelu::new(32 + 64, 64, device),
            },
            up4: UpBlock {
                conv: DoubleConvPrelu::new(16 + 64, 32, device),
            },
            outc: ConvSpec::new(1).bias(true).init(32, 1, device),
        })
    }
}

impl SegmentationModel for ScuNet {
    fn name(&self) -> &'static str {
        "scunet"
    }

    /// Normalises the [0, 1] input and runs [`ScuNet::forward_network`].
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = x.cast(self.dtype());
        self.forward_network(x.sub_scalar(self.input_mean).div_scalar(self.input_std))
    }

    fn output_activation(&self) -> OutputActivation {
        if self.clamp_output {
            OutputActivation::Clamp
        } else {
            OutputActivation::Sigmoid
        }
    }

    fn onnx(&self) -> Option<Result<Vec<u8>, NnError>> {
        Some(onnx_graph(self))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn in_channels(&self) -> usize {
        self.level1_0.conv.weight.lazy_shape().dims::<4>()[1]
    }

    fn input_multiple(&self) -> usize {
        8
    }

    fn forward_flops(&self, hw: Hw) -> u64 {
        let (stem0, half) = cost::conv2d(&self.level1_0.conv, hw);
        let (stem1, _) = cost::conv2d(&self.level1_1.conv, half);
        let (stem2, _) = cost::conv2d(&self.level1_2.conv, half);
        let (l2, quarter) = self.level2_0.flops(half);
        let (l3, _) = self.level3_0.flops(quarter);
        let (u3, _) = self.up3.conv.flops(quarter);
        let (u4, _) = self.up4.conv.flops(half);
        let (head, _) = cost::conv2d(&self.outc, hw);
        stem0 + stem1 + stem2 + l2 + l3 + u3 + u4 + head
    }
}

impl ScuNet {
    /// The input normalisation `(x - mean) / std` applied by [`SegmentationModel::forward`].
    pub fn input_normalisation(&self) -> (f64, f64) {
        (self.input_mean, self.input_std)
    }

    /// Precision of the weights.
    pub fn precision(&self) -> Precision {
        match self.dtype() {
            FloatDType::F64 => Precision::F64,
            _ => Precision::F32,
        }
    }

    /// Precision of the weights.
    fn dtype(&self) -> FloatDType {
        FloatDType::from(self.level1_0.conv.weight.val().dtype())
    }

    /// The published network on already normalised input: the head's output, computed in the
    /// precision of the weights (see [`ScuNet::with_precision`]) and returned as f32.
    pub fn forward_network(&self, x: Tensor<4>) -> Tensor<4> {
        let x = x.cast(self.dtype());
        let stem = self.level1_0.forward(x.clone());
        let stem = self.level1_2.forward(self.level1_1.forward(stem));
        let down1 = inject(x);
        let down2 = inject(down1.clone());
        let stem_cat = self.b1.forward(Tensor::cat(vec![stem.clone(), down1], 1));
        let level2 = self.level2_0.forward(stem_cat);
        let level2_cat = self.b2.forward(Tensor::cat(vec![level2.clone(), down2], 1));
        let level3 = self.level3_0.forward(level2_cat);
        let up = self.up3.forward(level3, level2);
        let up = self.up4.forward(up, stem);
        let [_, _, h, w] = up.dims();
        let up = resize_bilinear(up, [2 * h, 2 * w], true);
        self.outc.forward(up).cast(FloatDType::F32)
    }
}

/// Floating-point precision of a network's weights and computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F64,
}

struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

impl ScuNet {
    /// The same network with weights (and so computation) in `precision`.
    pub fn with_precision(self, precision: Precision) -> Self {
        let dtype = match precision {
            Precision::F32 => FloatDType::F32,
            Precision::F64 => FloatDType::F64,
        };
        self.map(&mut CastParams(dtype))
    }
}

/// Published tensor names -> ours (regular expression, replacement): no DataParallel prefix,
/// snake-case context modules, the SE gate's Sequential indices, PReLU `weight` -> `alpha`,
/// the decoder Sequential's indices, the bare head convolution.
const PUBLISHED_NAMES: [(&str, &str); 13] = [
    (r"^module\.", ""),
    (r"\.F_loc\.", ".f_loc."),
    (r"\.F_sur\.", ".f_sur."),
    (r"\.F_glo\.fc\.0\.", ".f_glo.fc1."),
    (r"\.F_glo\.fc\.2\.", ".f_glo.fc2."),
    (r"\.act\.weight$", ".act.alpha"),
    (r"\.conv\.conv\.0\.", ".conv.conv1."),
    (r"\.conv\.conv\.1\.", ".conv.bn1."),
    (r"\.conv\.conv\.2\.weight$", ".conv.act1.alpha"),
    (r"\.conv\.conv\.3\.", ".conv.conv2."),
    (r"\.conv\.conv\.4\.", ".conv.bn2."),
    (r"\.conv\.conv\.5\.weight$", ".conv.act2.alpha"),
    (r"^outc\.conv\.", "outc."),
];

/// Tensors of the published checkpoints that the forward pass never uses.
const UNUSED_PUBLISHED: [&str; 3] = ["level3_1.", "up3.up.", "up4.up."];

/// Load a published SCU-Net checkpoint (a PyTorch `.pt` file holding a dict whose
/// `model_state_dict` is the `DataParallel` state dict, float64) into a new network on `device`,
/// in `precision`. Every tensor the network uses must be in the file with the right shape; the
/// file may hold only those plus the published model's unused modules and BatchNorm counters.
pub fn load_scunet_checkpoint(
    path: &Path,
    precision: Precision,
    device: &Device,
) -> Result<ScuNet, NnError> {
    let fail = |message: String| NnError::Weights {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let mut model = ScuNetConfig::new()
        .with_output(OutputActivation::Clamp)
        .init(device)?;
    let mut store = PUBLISHED_NAMES
        .iter()
        .fold(
            PytorchStore::from_file(path).with_top_level_key("model_state_dict"),
            |store, &(from, to)| store.with_key_remapping(from, to),
        )
        .validate(true)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| fail(e.to_string()))?;
    crate::weights::check_applied(path, result, |name| {
        name.ends_with("num_batches_tracked")
            || UNUSED_PUBLISHED.iter().any(|p| name.starts_with(p))
    })?;
    Ok(model.with_precision(precision))
}

/// The SCU-Net blocks' ONNX nodes (private to this network's graph).
trait ScuGraph {
    fn conv_bn_prelu(&mut self, x: String, unit: &ConvBnPrelu) -> Result<String, NnError>;
    fn bn_prelu(&mut self, x: String, unit: &BnPrelu) -> Result<String, NnError>;
    fn double_prelu(&mut self, x: String, block: &DoubleConvPrelu) -> Result<String, NnError>;
    fn inject(&mut self, x: String) -> String;
    fn context_down(&mut self, x: String, block: &ContextDown) -> Result<String, NnError>;
}

impl ScuGraph for GraphBuilder {
    fn conv_bn_prelu(&mut self, x: String, unit: &ConvBnPrelu) -> Result<String, NnError> {
        let y = self.conv(x, &unit.conv)?;
        let y = self.batch_norm(y, &unit.bn)?;
        self.prelu(y, &unit.act)
    }

    fn bn_prelu(&mut self, x: String, unit: &BnPrelu) -> Result<String, NnError> {
        let y = self.batch_norm(x, &unit.bn)?;
        self.prelu(y, &unit.act)
    }

    fn double_prelu(&mut self, x: String, block: &DoubleConvPrelu) -> Result<String, NnError> {
        let y = self.conv(x, &block.conv1)?;
        let y = self.batch_norm(y, &block.bn1)?;
        let y = self.prelu(y, &block.act1)?;
        let y = self.conv(y, &block.conv2)?;
        let y = self.batch_norm(y, &block.bn2)?;
        self.prelu(y, &block.act2)
    }

    /// 3x3 average pooling, stride 2, padding 1 counted in the mean.
    fn inject(&mut self, x: String) -> String {
        self.node(
            "AveragePool",
            vec![x],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("count_include_pad", 1),
            ],
        )
    }

    fn context_down(&mut self, x: String, block: &ContextDown) -> Result<String, NnError> {
        let x = self.conv_bn_prelu(x, &block.conv1x1)?;
        let local = self.conv(x.clone(), &block.f_loc.conv)?;
        let surround = self.conv(x, &block.f_sur.conv)?;
        let joint = self.node("Concat", vec![local, surround], vec![int("axis", 1)]);
        let joint = self.batch_norm(joint, &block.bn)?;
        let joint = self.prelu(joint, &block.act)?;
        let y = self.conv(joint, &block.reduce.conv)?;
        // Squeeze and excitation.
        let mean = self.node("GlobalAveragePool", vec![y.clone()], vec![]);
        let mean = self.node("Flatten", vec![mean], vec![int("axis", 1)]);
        let g = self.linear(mean, &block.f_glo.fc1)?;
        let g = self.relu(g);
        let g = self.linear(g, &block.f_glo.fc2)?;
        let g = self.node("Sigmoid", vec![g], vec![]);
        let axes = self.int64s(&[2, 3]);
        let g = self.node("Unsqueeze", vec![g, axes], vec![]);
        Ok(self.node("Mul", vec![y, g], vec![]))
    }
}

/// The ONNX model of a SCU-Net, in f32 whatever the precision of its weights; its input is the
/// [0, 1] image (the network's normalisation is in the graph).
pub(crate) fn onnx_graph(net: &ScuNet) -> Result<Vec<u8>, NnError> {
    let mut b = GraphBuilder::new(net.name());
    let (mean, std) = net.input_normalisation();
    let mean = b.scalar(mean as f32);
    let std = b.scalar(std as f32);
    let x = b.node("Sub", vec![INPUT.into(), mean], vec![]);
    let x = b.node("Div", vec![x, std], vec![]);

    let stem = b.conv_bn_prelu(x.clone(), &net.level1_0)?;
    let stem = b.conv_bn_prelu(stem, &net.level1_1)?;
    let stem = b.conv_bn_prelu(stem, &net.level1_2)?;
    let down1 = b.inject(x);
    let down2 = b.inject(down1.clone());
    let cat = b.node("Concat", vec![stem.clone(), down1], vec![int("axis", 1)]);
    let stem_cat = b.bn_prelu(cat, &net.b1)?;
    let level2 = b.context_down(stem_cat, &net.level2_0)?;
    let cat = b.node("Concat", vec![level2.clone(), down2], vec![int("axis", 1)]);
    let level2_cat = b.bn_prelu(cat, &net.b2)?;
    let level3 = b.context_down(level2_cat, &net.level3_0)?;
    let mut up = level3;
    for (block, skip) in [(&net.up3, level2), (&net.up4, stem)] {
        let sizes = b.spatial_size(&skip);
        let upsampled = b.resize(up, sizes, true);
        let cat = b.node("Concat", vec![skip, upsampled], vec![int("axis", 1)]);
        up = b.double_prelu(cat, &block.conv)?;
    }
    let half = b.spatial_size(&up);
    let two = b.int64s(&[2, 2]);
    let sizes = b.node("Mul", vec![half, two], vec![]);
    let up = b.resize(up, sizes, true);
    let out = b.conv(up, &net.outc)?;
    let doc = match net.output_activation() {
        OutputActivation::Sigmoid => LOGITS,
        OutputActivation::Clamp => "probabilities as published (clamp to [0, 1])",
    };
    Ok(b.finish(&out, net.in_channels(), doc.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parameters_and_cost() {
        let device = Device::default();
        let model = ScuNetConfig::new().init(&device).unwrap();
        let y = model.forward(Tensor::zeros([2, 3, 32, 48], &device));
        assert_eq!(y.dims(), [2, 1, 32, 48]);
        // The published checkpoint's tensors that the forward pass uses, BatchNorm running
        // statistics and counters excluded (counted from SCUNet_dice_512_512_best.pt).
        assert_eq!(model.trainable_parameters(), SCUNET_TRAINABLE);
        assert_eq!(model.input_multiple(), 8);
        assert!(model.check_input([1, 3, 36, 48]).is_err());
        let f64_model = model.with_precision(Precision::F64);
        let y = f64_model.forward(Tensor::zeros([1, 3, 16, 16], &device));
        assert_eq!(y.dtype(), burn::tensor::DType::F32);
    }

    const SCUNET_TRAINABLE: usize = 169_711;
}
