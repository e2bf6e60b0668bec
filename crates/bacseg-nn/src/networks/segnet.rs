//! SegNet (Badrinarayanan et al. 2017): a VGG16-BN encoder (13 convolutions in 5 stages, each
//! stage ending in a 2x2 max-pooling that keeps its argmax indices) and a mirrored decoder that
//! upsamples by max-unpooling with those indices, ending in a 3x3 convolution to one logit channel.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use crate::cost::{self, Hw};
use crate::error::NnError;
use crate::model::SegmentationModel;
use crate::networks::blocks::{ConvBn, ConvSpec};
use crate::networks::unpool::{max_pool2x2_with_indices, max_unpool2x2};
use crate::onnx::{GraphBuilder, INPUT, LOGITS, ints};

/// SegNet configuration; `SegNetConfig::new()` is VGG16-BN with 1 input channel.
#[derive(Config, Debug)]
pub struct SegNetConfig {
    #[config(default = 1)]
    pub in_channels: usize,
    /// Width of each encoder stage, full resolution first.
    #[config(default = "vec![64, 128, 256, 512, 512]")]
    pub widths: Vec<usize>,
    /// Number of 3x3 convolutions in each stage (the decoder mirrors them).
    #[config(default = "vec![2, 2, 3, 3, 3]")]
    pub convs: Vec<usize>,
}

impl SegNetConfig {
    /// Check that the configuration describes a network.
    pub fn validate(&self) -> Result<(), NnError> {
        let fail = |reason: &str| {
            Err(NnError::Config {
                model: "segnet",
                reason: reason.into(),
            })
        };
        if self.in_channels == 0 {
            return fail("in_channels must be at least 1");
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return fail("at least one stage, every width at least 1");
        }
        if self.convs.len() != self.widths.len() || self.convs.contains(&0) {
            return fail("convs needs one count (at least 1) per width");
        }
        Ok(())
    }

    /// Build the network with burn's default initialisation.
    pub fn init(&self, device: &Device) -> Result<SegNet, NnError> {
        self.validate()?;
        let (w, n) = (&self.widths, &self.convs);
        let spec = ConvSpec::new(3);
        let mut enc = Vec::with_capacity(w.len());
        let mut in_channels = self.in_channels;
        for (&width, &count) in w.iter().zip(n) {
            let layers = (0..count)
                .map(|k| {
                    let cin = if k == 0 { in_channels } else { width };
                    ConvBn::new(cin, width, spec, true, device)
                })
                .collect();
            enc.push(Stage { layers });
            in_channels = width;
        }
        // Deepest first. Each decoder stage ends at the width of the stage above; the first
        // stage gives its last convolution to the head, as in the paper's decoder.
        let dec = (0..w.len())
            .rev()
            .map(|s| {
                let count = if s > 0 { n[s] } else { n[s] - 1 };
                let out_last = if s > 0 { w[s - 1] } else { w[0] };
                let layers = (0..count)
                    .map(|k| {
                        let cout = if k + 1 == count { out_last } else { w[s] };
                        ConvBn::new(w[s], cout, spec, true, device)
                    })
                    .collect();
                Stage { layers }
            })
            .collect();
        let head = ConvSpec::new(3).bias(true).init(w[0], 1, device);
        Ok(SegNet { enc, dec, head })
    }
}

/// A run of convolution units at one resolution.
#[derive(Module, Debug)]
pub struct Stage {
    pub layers: Vec<ConvBn>,
}

impl Stage {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.layers.iter().fold(x, |x, layer| layer.forward(x))
    }

    fn flops(&self, hw: Hw) -> (u64, Hw) {
        self.layers.iter().fold((0, hw), |(total, hw), layer| {
            let (f, out) = layer.flops(hw);
            (total + f, out)
        })
    }
}

/// The SegNet network (build it with [`SegNetConfig::init`]).
#[derive(Module, Debug)]
pub struct SegNet {
    pub enc: Vec<Stage>,
    pub dec: Vec<Stage>,
    pub head: Conv2d,
}

impl SegNet {
    /// Each unit of the encoder stages and of the decoder stages (deepest first) through `f`,
    /// stage by stage: how the CPU engines compile the network.
    pub(crate) fn map_stages<T, E>(
        &self,
        mut f: impl FnMut(&ConvBn) -> Result<T, E>,
    ) -> Result<[Vec<Vec<T>>; 2], E> {
        let mut out = [Vec::new(), Vec::new()];
        for (stages, dst) in [&self.enc, &self.dec].into_iter().zip(&mut out) {
            for stage in stages {
                dst.push(
                    stage
                        .layers
                        .iter()
                        .map(&mut f)
                        .collect::<Result<Vec<_>, E>>()?,
                );
            }
        }
        Ok(out)
    }
}

impl SegmentationModel for SegNet {
    fn name(&self) -> &'static str {
        "segnet"
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut pools = Vec::with_capacity(self.enc.len());
        let mut x = x;
        for stage in &self.enc {
            let (pooled, indices) = max_pool2x2_with_indices(stage.forward(x));
            pools.push(indices);
            x = pooled;
        }
        for (stage, indices) in self.dec.iter().zip(pools.iter().rev()) {
            x = stage.forward(max_unpool2x2(x, indices));
        }
        self.head.forward(x)
    }

    fn onnx(&self) -> Option<Result<Vec<u8>, NnError>> {
        Some(onnx_graph(self))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn in_channels(&self) -> usize {
        self.enc
            .first()
            .and_then(|s| s.layers.first())
            .map_or(0, |l| l.conv.weight.lazy_shape().dims::<4>()[1])
    }

    fn input_multiple(&self) -> usize {
        1 << self.enc.len()
    }

    fn forward_flops(&self, hw: Hw) -> u64 {
        let mut flops = 0;
        let mut sizes = Vec::with_capacity(self.enc.len());
        let mut size = hw;
        for stage in &self.enc {
            let (f, out) = stage.flops(size);
            flops += f;
            sizes.push(out);
            size = out.map(|s| s / 2);
        }
        for (stage, unpooled) in self.dec.iter().zip(sizes.into_iter().rev()) {
            let (f, out) = stage.flops(unpooled);
            flops += f;
            size = out;
        }
        flops + cost::conv2d(&self.head, size).0
    }
}
/// The ONNX model of a SegNet.
pub(crate) fn onnx_graph(net: &SegNet) -> Result<Vec<u8>, NnError> {
    let mut b = GraphBuilder::new(net.name());
    let mut x = INPUT.to_string();
    let mut pools = Vec::with_capacity(net.enc.len());
    for stage in &net.enc {
        for layer in &stage.layers {
            x = layer.onnx(&mut b, x)?;
        }
        let shape = b.node("Shape", vec![x.clone()], vec![]);
        let [values, indices] = b.max_pool_with_indices(x);
        pools.push((indices, shape));
        x = values;
    }
    for (stage, (indices, shape)) in net.dec.iter().zip(pools.into_iter().rev()) {
        x = b.node(
            "MaxUnpool",
            vec![x, indices, shape],
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        );
        for layer in &stage.layers {
            x = layer.onnx(&mut b, x)?;
        }
    }
    let out = b.conv(x, &net.head)?;
    Ok(b.finish(&out, net.in_channels(), LOGITS.into()))
}
