//! Forward and training-step time per architecture (reference configurations), with the
//! achieved GFLOP/s against the machine's fp32 peak.
//!
//! `cargo bench -p bacseg-nn --bench models [-- FILTER] [--repeats N]`, e.g.
//! `cargo bench -p bacseg-nn --bench models -- dt-unet/forward`. FILTER matches `arch/phase`.
//! The peak is measured on this machine (an FMA loop on every thread, with the instruction set
//! the CPU engine uses), or set BACSEG_PEAK_GFLOPS. A training step is counted as 3x the
//! forward FLOPs (the backward pass computes gradients for inputs and weights: about 2x).
#![allow(clippy::unwrap_used)]

use bacseg_nn::bench::{peak_gflops, time_forward, time_train_step};
use bacseg_nn::{
    ContextNetConfig, DtUnetConfig, ScuNetConfig, SegNetConfig, SegmentationModel, UnetConfig,
};
use burn::tensor::Device;

struct Options {
    filter: Option<String>,
    repeats: usize,
}

fn options() -> Options {
    let mut filter = None;
    let mut repeats = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repeats" => repeats = args.next().and_then(|v| v.parse().ok()).unwrap_or(repeats),
            "--bench" => {}
            other if !other.starts_with('-') => filter = Some(other.to_string()),
            _ => {}
        }
    }
    Options {
        filter,
        repeats: repeats.max(1),
    }
}

fn bench_forward<M: SegmentationModel>(model: &M, side: usize, opts: &Options, peak: f64) {
    let shape = [1, model.in_channels(), side, side];
    let flops = model.forward_flops([side, side]) as f64;
    let seconds = time_forward(model, 1, side, opts.repeats);
    report(
        model.name(),
        "forward",
        &format!("{shape:?}"),
        seconds,
        flops,
        peak,
    );
}

fn bench_train<M: SegmentationModel>(
    build: impl Fn(&Device) -> M,
    side: usize,
    opts: &Options,
    peak: f64,
) {
    let batch = 4;
    let probe = build(&Device::default());
    let arch = probe.name();
    let shape = [batch, probe.in_channels(), side, side];
    let flops = 3.0 * batch as f64 * probe.forward_flops([side, side]) as f64;
    drop(probe);
    // Built on the autodiff device so that its parameters are tracked leaves.
    let seconds = time_train_step(
        build(&Device::default().autodiff()),
        batch,
        side,
        opts.repeats,
    )
    .total;
    let name = format!("{shape:?} Dice+AdamW");
    report(arch, "train", &name, seconds, flops, peak);
}

fn report(arch: &str, phase: &str, shape: &str, seconds: f64, flops: f64, peak: f64) {
    let gflops = flops / 1e9 / seconds;
    println!(
        "| {arch} | {phase} | {shape} | {seconds:.3} s | {:.2} | {gflops:.1} | {:.0}% |",
        flops / 1e9,
        (100.0 * gflops / peak).min(100.0)
    );
}

fn main() {
    let opts = options();
    let (peak, how) = peak_gflops();
    println!(
        "fp32 peak {peak:.0} GFLOP/s ({how}); median of {} runs",
        opts.repeats
    );
    println!("| model | phase | input | time | GFLOP | GFLOP/s | of peak |");
    println!("|---|---|---|---|---|---|---|");
    let wanted = |id: &str| opts.filter.as_deref().is_none_or(|f| id.contains(f));
    let device = Device::default();
    macro_rules! run {
        ($name:literal, $config:expr) => {
            let build = |d: &Device| $config.init(d).unwrap();
            if wanted(concat!($name, "/forward")) {
                bench_forward(&build(&device), 512, &opts, peak);
            }
            if wanted(concat!($name, "/train")) {
                bench_train(build, 256, &opts, peak);
            }
        };
    }
    run!("dt-unet", DtUnetConfig::new());
    run!("unet", UnetConfig::new());
    run!("segnet", SegNetConfig::new());
    run!("contextnet", ContextNetConfig::new());
    run!("scunet", ScuNetConfig::new());
}
