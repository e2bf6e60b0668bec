//! Model size and cost: trainable parameter counts and forward FLOPs, both derived from the
//! layers actually built, so a configuration change can never leave a hard-coded number behind.
//!
//! FLOPs count the multiply-adds of convolutions and transposed convolutions (2 FLOP each), the
//! convention of the published figures (reference DT-UNet: 8.90 GFLOP per 1x512x512 patch).
//! BatchNorm, ReLU, pooling, interpolation and additions are a few percent at most and omitted.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::Tensor;

/// Number of trainable parameters: every float parameter except BatchNorm running statistics,
/// which burn's `num_params` counts but which are state, not parameters (PyTorch buffers).
pub fn trainable_parameters<M: Module>(module: &M) -> usize {
    let mut counter = TrainableCounter::default();
    module.visit(&mut counter);
    counter.count
}

#[derive(Default)]
struct TrainableCounter {
    path: Vec<String>,
    count: usize,
}

impl ModuleVisitor for TrainableCounter {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let is_running_stat = matches!(
            self.path.last().map(String::as_str),
            Some("running_mean" | "running_var")
        );
        if !is_running_stat {
            // lazy_shape: counting must not allocate a 13M-parameter model's weights.
            self.count += param.lazy_shape().num_elements();
        }
    }
}

/// Spatial size of a feature map, `[height, width]`.
pub type Hw = [usize; 2];

/// Forward FLOPs of a convolution on an input of spatial size `hw`, and its output size.
pub(crate) fn conv2d(conv: &Conv2d, hw: Hw) -> (u64, Hw) {
    let dims = conv.weight.lazy_shape().dims::<4>();
    let [out_channels, in_per_group, kh, kw] = dims;
    let (pad_h, pad_w) = match conv.padding {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
        // "Same" keeps the size at stride 1 and rounds up otherwise, whatever the kernel.
        PaddingConfig2d::Same => {
            let out = [0, 1].map(|i| hw[i].div_ceil(conv.stride[i]));
            return (conv_flops(out_channels, in_per_group, kh * kw, out), out);
        }
    };
    let out_size = |len: usize, pad: (usize, usize), k: usize, i: usize| {
        let span = conv.dilation[i] * (k - 1) + 1;
        (len + pad.0 + pad.1).saturating_sub(span) / conv.stride[i] + 1
    };
    let out = [out_size(hw[0], pad_h, kh, 0), out_size(hw[1], pad_w, kw, 1)];
    (conv_flops(out_channels, in_per_group, kh * kw, out), out)
}

/// Forward FLOPs of a transposed convolution on an input of spatial size `hw`, and its output size.
pub(crate) fn conv_transpose2d(conv: &ConvTranspose2d, hw: Hw) -> (u64, Hw) {
    let [in_channels, out_per_group, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    let k = [kh, kw];
    let out = [0, 1].map(|i| {
        ((hw[i] - 1) * conv.stride[i] + conv.dilation[i] * (k[i] - 1) + conv.padding_out[i] + 1)
            .saturating_sub(2 * conv.padding[i])
    });
    // Every input pixel is multiplied into a kernel-sized patch of every output channel.
    let macs = (in_channels * out_per_group * kh * kw * hw[0] * hw[1]) as u64;
    (2 * macs, out)
}

fn conv_flops(out_channels: usize, in_per_group: usize, kernel_area: usize, out: Hw) -> u64 {
    2 * (out_channels * in_per_group * kernel_area * out[0] * out[1]) as u64
}
