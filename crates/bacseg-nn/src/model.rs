//! What every segmentation network here offers: a forward pass from a batch of images to
//! full-resolution logits, its input requirements, and its cost.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

use crate::cost::{Hw, trainable_parameters};
use crate::error::NnError;
use crate::networks::blocks::UnetParts;

/// How a network's output becomes a BAC probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputActivation {
    /// The output is a logit: probability = sigmoid(output). Every network bacseg trains.
    #[default]
    Sigmoid,
    /// The output is read as a probability directly, clamped to [0, 1]: the published SCU-Net
    /// weights, whose inference thresholds the raw output.
    Clamp,
}

impl OutputActivation {
    /// Probabilities from network outputs.
    pub fn apply<const D: usize>(self, output: Tensor<D>) -> Tensor<D> {
        match self {
            OutputActivation::Sigmoid => sigmoid(output),
            OutputActivation::Clamp => output.clamp(0.0, 1.0),
        }
    }

    /// The probability of one output value.
    pub fn apply_value(self, output: f32) -> f32 {
        match self {
            OutputActivation::Sigmoid => 1.0 / (1.0 + (-output).exp()),
            OutputActivation::Clamp => output.clamp(0.0, 1.0),
        }
    }
}

/// A network mapping `[batch, in_channels, height, width]` images (preprocessed grey values in
/// [0, 1], replicated over the channels) to `[batch, 1, height, width]` BAC outputs, logits
/// unless [`SegmentationModel::output_activation`] says otherwise.
pub trait SegmentationModel: Module {
    /// Command-line name of the architecture (`dt-unet`, `unet`, ...).
    fn name(&self) -> &'static str;

    /// Logits for a batch. BatchNorm uses batch statistics on an autodiff device for a module in
    /// training mode, running statistics otherwise (see `Module::valid`).
    fn forward(&self, x: Tensor<4>) -> Tensor<4>;

    /// How the output becomes a probability.
    fn output_activation(&self) -> OutputActivation {
        OutputActivation::Sigmoid
    }

    /// The network's layers when it is U-Net-shaped (`None` for the others): what the CPU
    /// engine and the ONNX export take.
    fn unet_parts(&self) -> Option<UnetParts<'_>> {
        None
    }

    /// The network itself, for an engine that compiles particular architectures to recognise
    /// the one it has (the CPU engine's SCU-Net); `None` for networks no engine looks for.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The network as an ONNX model (graph written with [`crate::onnx`]), for the architectures exported (`None`
    /// for the others).
    fn onnx(&self) -> Option<Result<Vec<u8>, NnError>> {
        self.unet_parts().map(|parts| parts.onnx())
    }

    /// Number of image channels the network expects.
    fn in_channels(&self) -> usize;

    /// Height and width must be multiples of this (one factor 2 per pooling).
    fn input_multiple(&self) -> usize;

    /// Forward FLOPs for one image of spatial size `hw` (see [`crate::cost`]).
    fn forward_flops(&self, hw: Hw) -> u64;

    /// Trainable parameters (BatchNorm running statistics excluded).
    fn trainable_parameters(&self) -> usize {
        trainable_parameters(self)
    }

    /// Reject a batch shape the network cannot process, before any computation.
    fn check_input(&self, shape: [usize; 4]) -> Result<(), NnError> {
        let [batch, channels, height, width] = shape;
        let fail = |reason: String| {
            Err(NnError::InputShape {
                model: self.name(),
                shape,
                reason,
            })
        };
        let m = self.input_multiple();
        if batch == 0 || height == 0 || width == 0 {
            return fail("empty batch or image".into());
        }
        if channels != self.in_channels() {
            return fail(format!("expected {} channel(s)", self.in_channels()));
        }
        if height % m != 0 || width % m != 0 {
            return fail(format!("height and width must be multiples of {m}"));
        }
        Ok(())
    }
}

/// The network outputs (logits unless [`SegmentationModel::output_activation`] says otherwise)
/// of a `shape` batch given as row-major values, as row-major values.
pub fn outputs_of<M: SegmentationModel>(
    model: &M,
    input: Vec<f32>,
    shape: [usize; 4],
) -> Result<Vec<f32>, NnError> {
    model.check_input(shape)?;
    let device = model.devices().first().cloned().unwrap_or_default();
    let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(input, shape), &device);
    model
        .forward(x)
        .into_data()
        .try_to_vec()
        .map_err(|e| NnError::Config {
            model: model.name(),
            reason: format!("reading the output: {e:?}"),
        })
}
