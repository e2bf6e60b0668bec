//! [`Network`], any of the networks, and [`Architecture`], their names: the only place that
//! matches on the architecture (with [`super::spec`], which builds one from its configuration).

use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor};
use burn::tensor::{Device, Tensor};

use super::blocks::UnetParts;
use super::contextnet::ContextNet;
use super::dt_unet::DtUnet;
use super::scunet::ScuNet;
use super::segnet::SegNet;
use super::unet::Unet;

use crate::cost::Hw;
use crate::error::NnError;
use crate::model::{OutputActivation, SegmentationModel};

/// One of the segmentation architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    DtUnet,
    Unet,
    SegNet,
    ContextNet,
    /// The published SCU-Net (pretrained weights: `bacseg weights fetch scunet`).
    ScuNet,
}

impl Architecture {
    /// Every architecture, in the order of the reference comparison.
    pub const ALL: [Architecture; 5] = [
        Architecture::DtUnet,
        Architecture::Unet,
        Architecture::SegNet,
        Architecture::ContextNet,
        Architecture::ScuNet,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::DtUnet => "dt-unet",
            Architecture::Unet => "unet",
            Architecture::SegNet => "segnet",
            Architecture::ContextNet => "contextnet",
            Architecture::ScuNet => "scunet",
        }
    }

    /// The architecture called `name` on the command line, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Any of bacseg's networks. It is a burn [`Module`] whose parameters carry exactly the names
/// of the network it holds (no variant prefix), so weights, checkpoints and optimizer records
/// are those of the architecture itself.
// One network per model handle, built once and moved rarely: boxing the large variants would
// buy nothing and cost an indirection on every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Network {
    DtUnet(DtUnet),
    Unet(Unet),
    SegNet(SegNet),
    ContextNet(ContextNet),
    ScuNet(ScuNet),
}

/// `$body` with `$m` bound to the network inside, whatever its architecture.
macro_rules! each {
    ($net:expr, $m:ident => $body:expr) => {
        match $net {
            Network::DtUnet($m) => $body,
            Network::Unet($m) => $body,
            Network::SegNet($m) => $body,
            Network::ContextNet($m) => $body,
            Network::ScuNet($m) => $body,
        }
    };
}

/// The same variant holding `$body` (a network of the same architecture).
macro_rules! each_into {
    ($net:expr, $m:ident => $body:expr) => {
        match $net {
            Network::DtUnet($m) => Network::DtUnet($body),
            Network::Unet($m) => Network::Unet($body),
            Network::SegNet($m) => Network::SegNet($body),
            Network::ContextNet($m) => Network::ContextNet($body),
            Network::ScuNet($m) => Network::ScuNet($body),
        }
    };
}

impl Network {
    /// The architecture of this network.
    pub fn architecture(&self) -> Architecture {
        match self {
            Network::DtUnet(_) => Architecture::DtUnet,
            Network::Unet(_) => Architecture::Unet,
            Network::SegNet(_) => Architecture::SegNet,
            Network::ContextNet(_) => Architecture::ContextNet,
            Network::ScuNet(_) => Architecture::ScuNet,
        }
    }
}

impl From<DtUnet> for Network {
    fn from(m: DtUnet) -> Self {
        Network::DtUnet(m)
    }
}
impl From<Unet> for Network {
    fn from(m: Unet) -> Self {
        Network::Unet(m)
    }
}
impl From<SegNet> for Network {
    fn from(m: SegNet) -> Self {
        Network::SegNet(m)
    }
}
impl From<ContextNet> for Network {
    fn from(m: ContextNet) -> Self {
        Network::ContextNet(m)
    }
}
impl From<ScuNet> for Network {
    fn from(m: ScuNet) -> Self {
        Network::ScuNet(m)
    }
}

impl Module for Network {
    fn collect_devices(&self, devices: Devices) -> Devices {
        each!(self, m => m.collect_devices(devices))
    }
    fn fork(self, device: &Device) -> Self {
        each_into!(self, m => m.fork(device))
    }
    fn to_device(self, device: &Device) -> Self {
        each_into!(self, m => m.to_device(device))
    }
    fn train(self) -> Self {
        each_into!(self, m => m.train())
    }
    fn valid(&self) -> Self {
        each_into!(self, m => m.valid())
    }
    fn materialize(self) -> Self {
        each_into!(self, m => m.materialize())
    }
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        each!(self, m => m.visit(visitor))
    }
    fn map<Mp: ModuleMapper>(self, mapper: &mut Mp) -> Self {
        each_into!(self, m => m.map(mapper))
    }
}

impl SegmentationModel for Network {
    fn name(&self) -> &'static str {
        each!(self, m => m.name())
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        each!(self, m => m.forward(x))
    }
    fn output_activation(&self) -> OutputActivation {
        each!(self, m => m.output_activation())
    }
    fn unet_parts(&self) -> Option<UnetParts<'_>> {
        each!(self, m => m.unet_parts())
    }
    fn onnx(&self) -> Option<Result<Vec<u8>, NnError>> {
        each!(self, m => m.onnx())
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        each!(self, m => m.as_any())
    }
    fn in_channels(&self) -> usize {
        each!(self, m => m.in_channels())
    }
    fn input_multiple(&self) -> usize {
        each!(self, m => m.input_multiple())
    }
    fn forward_flops(&self, hw: Hw) -> u64 {
        each!(self, m => m.forward_flops(hw))
    }
    fn trainable_parameters(&self) -> usize {
        each!(self, m => m.trainable_parameters())
    }
}
