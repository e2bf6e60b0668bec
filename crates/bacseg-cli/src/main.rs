//! `bacseg`: find and measure breast arterial calcifications on mammograms.
//!
//! Thin binary: parse arguments, call the `bacseg` library, print. Exit codes: 0 success,
//! 1 failure of the work itself, 2 bad input (unreadable file, invalid option).

mod cmd;
mod exit;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bacseg",
    version,
    about = "Find and measure breast arterial calcifications (BAC) on full-field digital mammograms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job on built-in defaults: synthetic data, a few minutes of DT-UNet training,
    /// prediction on held-out images, whole-image metrics and overlays.
    Demo(cmd::demo::Args),
    /// Describe a mammogram file (DICOM, PNG, TIFF) without patient identifiers.
    Info(cmd::info::Args),
    /// Decode a mammogram to a 16-bit grey PNG or TIFF (optionally preprocessed).
    Convert(cmd::convert::Args),
    /// Preprocess a mammogram: denoise, normalise, breast mask; optional overlay and timings.
    Preprocess(cmd::preprocess::Args),
    /// Compare predicted BAC masks with ground truth: patch and whole-image metrics.
    Evaluate(cmd::evaluate::Args),
    /// Measure the BAC burden of masks: area, vessel length, segments, grade.
    Quantify(cmd::quantify::Args),
    /// List the segmentation architectures: parameters, GFLOP per 512x512 patch, configuration.
    Models(cmd::models::Args),
    /// Write synthetic mammograms with exact BAC masks (or insert BAC into real images).
    Synth(cmd::synth::Args),
    /// Predict BAC on whole mammograms with a trained model or the published SCU-Net: masks,
    /// probabilities, overlays, burden.
    Predict(Box<cmd::predict::Args>),
    /// Train a segmentation network on annotated mammograms (resumable run directory).
    Train(Box<cmd::train::Args>),
    /// Train several architectures on the same data, split, seed and time budget and compare
    /// them on the held-out images: patch and whole-image metric table, figures.
    Compare(Box<cmd::compare::Args>),
    /// Published pretrained weights: download into the user's cache with SHA-256 verification
    /// (`fetch scunet`), list them.
    Weights(cmd::weights::Args),
    /// Inference and training speed of this build: forward per architecture and batch size,
    /// the training step, a whole mammogram with and without breast skipping; PyTorch beside
    /// it with --torch-python.
    Bench(Box<cmd::bench::Args>),
    /// A trained DT-UNet or UNet as a standard ONNX model (opset 18) for other runtimes,
    /// optionally with a reference input and output to check it (tools/onnx_check.py).
    Export(Box<cmd::export::Args>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Preprocess(a) => cmd::preprocess::run(a),
        Command::Evaluate(a) => cmd::evaluate::run(a),
        Command::Quantify(a) => cmd::quantify::run(a),
        Command::Models(a) => cmd::models::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Train(a) => cmd::train::run(*a),
        Command::Predict(a) => cmd::predict::run(*a),
        Command::Compare(a) => cmd::compare::run(*a),
        Command::Weights(a) => cmd::weights::run(a),
        Command::Bench(a) => cmd::bench::run(*a),
        Command::Export(a) => cmd::export::run(*a),
    };
    exit::report(result)
}
