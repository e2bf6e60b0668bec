//! UNet (Ronneberger et al. 2015) in the configuration the BAC literature compares against:
//! widths 64..512 with a 512-wide bottleneck after four poolings, 3x3 convolutions with bias and
//! BatchNorm, parameter-free bilinear 2x upsampling (align_corners), and a 1x1 head. With 3 input
//! channels (grey replicated) it has exactly 13,395,329 trainable parameters, 13,394,177 with 1.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use crate::cost::{self, Hw};
use crate::error::NnError;
use crate::model::SegmentationModel;
use crate::networks::blocks::{ConvSpec, DoubleConv, UnetParts, max_pool2x2, resize_bilinear};

/// UNet configuration; `UnetConfig::new()` is the published reference.
#[derive(Config, Debug)]
pub struct UnetConfig {
    /// Image channels; the reference replicates the grey image into 3.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Encoder widths, full resolution first; the bottleneck (after the last pooling) keeps the
    /// last width, and each decoder level outputs the width of the level above it.
    #[config(default = "vec![64, 128, 256, 512]")]
    pub widths: Vec<usize>,
}

impl UnetConfig {
    /// Check that the configuration describes a network.
    pub fn validate(&self) -> Result<(), NnError> {
        let fail = |reason: &str| {
            Err(NnError::Config {
                model: "unet",
                reason: reason.into(),
            })
        };
        if self.in_channels == 0 {
            return fail("in_channels must be at least 1");
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return fail("at least one level, every width at least 1");
        }
        Ok(())
    }

    /// Build the network with burn's default initialisation.
    pub fn init(&self, device: &Device) -> Result<Unet, NnError> {
        self.validate()?;
        let w = &self.widths;
        let mut levels = w.clone();
        levels.extend(w.last().copied());
        let mut down = Vec::with_capacity(levels.len());
        let mut in_channels = self.in_channels;
        for &width in &levels {
            down.push(DoubleConv::new(in_channels, width, true, device));
            in_channels = width;
        }
        let mut up = Vec::with_capacity(w.len());
        let mut previous = in_channels;
        for j in (0..w.len()).rev() {
            let out = if j > 0 { w[j - 1] } else { w[0] };
            up.push(DoubleConv::new(previous + w[j], out, true, device));
            previous = out;
        }
        let head = ConvSpec::new(1).bias(true).init(w[0], 1, device);
        Ok(Unet { down, up, head })
    }
}

/// The UNet network (build it with [`UnetConfig::init`]).
#[derive(Module, Debug)]
pub struct Unet {
    pub down: Vec<DoubleConv>,
    pub up: Vec<DoubleConv>,
    pub head: Conv2d,
}

impl SegmentationModel for Unet {
    fn name(&self) -> &'static str {
        "unet"
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut skips = Vec::with_capacity(self.down.len());
        let mut x = x;
        for (i, level) in self.down.iter().enumerate() {
            if i > 0 {
                x = max_pool2x2(x);
            }
            x = level.forward(x);
            skips.push(x.clone());
        }
        skips.pop();
        for (block, skip) in self.up.iter().zip(skips.into_iter().rev()) {
            let [_, _, h, w] = skip.dims();
            let up = resize_bilinear(x, [h, w], true);
            x = block.forward(Tensor::cat(vec![skip, up], 1));
        }
        self.head.forward(x)
    }

    fn unet_parts(&self) -> Option<UnetParts<'_>> {
        Some(UnetParts {
            name: self.name(),
            down: &self.down,
            up: self.up.iter().map(|block| (None, block)).collect(),
            head: &self.head,
        })
    }

    fn in_channels(&self) -> usize {
        self.down
            .first()
            .map_or(0, |d| d.conv1.weight.lazy_shape().dims::<4>()[1])
    }

    fn input_multiple(&self) -> usize {
        1 << self.up.len()
    }

    fn forward_flops(&self, hw: Hw) -> u64 {
        let mut flops = 0;
        let mut sizes = Vec::with_capacity(self.down.len());
        let mut size = hw;
        for (i, level) in self.down.iter().enumerate() {
            if i > 0 {
                size = size.map(|s| s / 2);
            }
            let (f, out) = level.flops(size);
            flops += f;
            size = out;
            sizes.push(out);
        }
        sizes.pop();
        for (block, skip_size) in self.up.iter().zip(sizes.into_iter().rev()) {
            let (f, out) = block.flops(skip_size);
            flops += f;
            size = out;
        }
        flops + cost::conv2d(&self.head, size).0
    }
}
