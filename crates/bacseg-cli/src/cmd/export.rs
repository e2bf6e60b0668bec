//! `bacseg export`: flags to [`bacseg::export::export_onnx`].

use std::path::PathBuf;

use anyhow::Result;
use bacseg::Model;
use bacseg::export::export_onnx;
use bacseg_nn::onnx::{IR_VERSION, OPSET};

use crate::cmd::predict::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The network (any architecture, or the published SCU-Net checkpoint `scunet:PATH.pt`).
    #[command(flatten)]
    net: ModelArgs,
    /// Output format.
    #[arg(long, value_parser = ["onnx"], default_value = "onnx")]
    format: String,
    /// The model file to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write `input.npy` (a seeded `[1, channels, side, side]` test input) and
    /// `output.npy` (burn's raw network outputs for it) into this directory.
    #[arg(long)]
    reference_io: Option<PathBuf>,
    /// Side of the reference input (a multiple of the network's input multiple).
    #[arg(long, default_value_t = 64)]
    reference_side: usize,
}

pub fn run(args: Args) -> Result<()> {
    let model = Model::load(&args.net.source()?)?;
    let reference = args
        .reference_io
        .as_deref()
        .map(|d| (d, args.reference_side));
    let done = export_onnx(&model, &args.out, reference)?;
    eprintln!(
        "bacseg: wrote {} ({}, ONNX IR {IR_VERSION}, opset {OPSET}, {:.1} MB; input \
         [batch, {}, height, width], output {} [batch, 1, height, width])",
        done.path.display(),
        model.architecture().name(),
        done.bytes as f64 / 1e6,
        done.in_channels,
        done.outputs
    );
    if let Some((input, output)) = &done.reference {
        eprintln!(
            "bacseg: wrote {} and {} (the library's raw outputs)",
            input.display(),
            output.display()
        );
    }
    Ok(())
}
