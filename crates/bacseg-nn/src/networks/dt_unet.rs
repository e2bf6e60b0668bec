//! DT-UNet, the reference BAC segmentation network: a U-Net whose widths double from 8 over seven
//! resolution levels (six 2x2 max-poolings), bias-free 3x3 convolutions with BatchNorm, learned
//! 2x2 transposed-convolution upsampling and a 1x1 head to one logit channel. The reference
//! configuration has exactly 7,782,281 trainable parameters.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, ConvTranspose2d, ConvTranspose2dConfig};
use burn::tensor::{Device, Tensor};

use crate::cost::{self, Hw};
use crate::error::NnError;
use crate::model::SegmentationModel;
use crate::networks::blocks::{ConvSpec, DoubleConv, UnetParts, max_pool2x2};

/// DT-UNet configuration; `DtUnetConfig::new()` is the published reference.
#[derive(Config, Debug)]
pub struct DtUnetConfig {
    /// Image channels (1: grey mammogram).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Width of each resolution level, full resolution first; one pooling between levels.
    #[config(default = "vec![8, 16, 32, 64, 128, 256, 512]")]
    pub widths: Vec<usize>,
}

impl DtUnetConfig {
    /// A standard doubling ladder: `levels` widths starting at `base` (e.g. base 16, 6 levels).
    pub fn with_base_width(self, base: usize, levels: usize) -> Self {
        self.with_widths((0..levels).map(|i| base << i).collect())
    }

    /// Check that the configuration describes a network.
    pub fn validate(&self) -> Result<(), NnError> {
        let fail = |reason: &str| {
            Err(NnError::Config {
                model: "dt-unet",
                reason: reason.into(),
            })
        };
        if self.in_channels == 0 {
            return fail("in_channels must be at least 1");
        }
        if self.widths.len() < 2 {
            return fail("at least two levels (one pooling) are needed");
        }
        if self.widths.contains(&0) {
            return fail("every width must be at least 1");
        }
        Ok(())
    }

    /// Build the network with burn's default initialisation.
    pub fn init(&self, device: &Device) -> Result<DtUnet, NnError> {
        self.validate()?;
        let w = &self.widths;
        let mut down = Vec::with_capacity(w.len());
        let mut in_channels = self.in_channels;
        for &width in w {
            down.push(DoubleConv::new(in_channels, width, false, device));
            in_channels = width;
        }
        // Deepest first: up[0] takes the bottleneck back to the second-deepest level.
        let up = (1..w.len())
            .rev()
            .map(|i| UpBlock {
                up: ConvTranspose2dConfig::new([w[i], w[i - 1]], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                conv: DoubleConv::new(2 * w[i - 1], w[i - 1], false, device),
            })
            .collect();
        let head = ConvSpec::new(1).bias(true).init(w[0], 1, device);
        Ok(DtUnet { down, up, head })
    }
}

/// One decoder level: learned 2x upsampling, concatenation with the skip, double convolution.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub up: ConvTranspose2d,
    pub conv: DoubleConv,
}

/// The DT-UNet network (build it with [`DtUnetConfig::init`]).
#[derive(Module, Debug)]
pub struct DtUnet {
    pub down: Vec<DoubleConv>,
    pub up: Vec<UpBlock>,
    pub head: Conv2d,
}

impl SegmentationModel for DtUnet {
    fn name(&self) -> &'static str {
        "dt-unet"
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
        // The bottleneck is not a skip; the others are consumed deepest first.
        skips.pop();
        for (block, skip) in self.up.iter().zip(skips.into_iter().rev()) {
            let up = block.up.forward(x);
            x = block.conv.forward(Tensor::cat(vec![skip, up], 1));
        }
        self.head.forward(x)
    }

    fn unet_parts(&self) -> Option<UnetParts<'_>> {
        Some(UnetParts {
            name: self.name(),
            down: &self.down,
            up: self.up.iter().map(|u| (Some(&u.up), &u.conv)).collect(),
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
        let mut size = hw;
        for (i, level) in self.down.iter().enumerate() {
            if i > 0 {
                size = size.map(|s| s / 2);
            }
            let (f, out) = level.flops(size);
            flops += f;
            size = out;
        }
        for block in &self.up {
            let (f, out) = cost::conv_transpose2d(&block.up, size);
            let (g, out) = block.conv.flops(out);
            flops += f + g;
            size = out;
        }
        flops + cost::conv2d(&self.head, size).0
    }
}
