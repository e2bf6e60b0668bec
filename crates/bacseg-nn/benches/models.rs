//! Forward and training-step time per architecture (reference configurations), with the
//! achieved GFLOP/s against the machine's fp32 peak.
//!
//! `cargo bench -p bacseg-nn --bench models [-- FILTER] [--repeats N]`, e.g.
//! `cargo bench -p bacseg-nn --bench models -- dt-unet/forward`. FILTER matches `arch/phase`.
//! Peak = cores x 32 FLOP/cycle (two 8-lane FMA units) x clock; the clock is the largest
//! `cpu MHz` of /proc/cpuinfo, or set BACSEG_PEAK_GFLOPS. A training step is counted as 3x the
//! forward FLOPs (the backward pass computes gradients for inputs and weights: about 2x).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bacseg_nn::loss::soft_dice;
use bacseg_nn::{ContextNetConfig, DtUnetConfig, SegNetConfig, SegmentationModel, UnetConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};

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

fn peak_gflops() -> (f64, String) {
    if let Some(p) = std::env::var("BACSEG_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return (p, "BACSEG_PEAK_GFLOPS".into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .fold(0.0, f64::max);
    let ghz = if mhz > 0.0 { mhz / 1000.0 } else { 1.0 };
    (
        cores as f64 * 32.0 * ghz,
        format!("{cores} cores x 32 FLOP/cycle x {ghz:.3} GHz"),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_forward<M: SegmentationModel>(model: &M, side: usize, opts: &Options, peak: f64) {
    let device = Device::default();
    let shape = [1, model.in_channels(), side, side];
    let x = Tensor::<4>::random(shape, Distribution::Default, &device);
    let flops = model.forward_flops([side, side]) as f64;
    let _ = model.forward(x.clone()).into_data(); // warm-up: allocations, kernel selection
    let times = (0..opts.repeats)
        .map(|_| {
            let start = Instant::now();
            let _ = model.forward(x.clone()).into_data();
            start.elapsed().as_secs_f64()
        })
        .collect();
    report(
        M::NAME,
        "forward",
        &format!("{shape:?}"),
        median(times),
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
    // Built on the autodiff device so that its parameters are tracked leaves.
    let device = Device::default().autodiff();
    let model = build(&device);
    let batch = 4;
    let shape = [batch, model.in_channels(), side, side];
    let x = Tensor::<4>::random(shape, Distribution::Default, &device);
    let y = Tensor::<4>::random(
        [batch, 1, side, side],
        Distribution::Bernoulli(0.05),
        &device,
    );
    let flops = 3.0 * batch as f64 * model.forward_flops([side, side]) as f64;
    let mut optim = AdamWConfig::new().init();
    let mut model = model;
    let mut times = Vec::new();
    for i in 0..=opts.repeats {
        let start = Instant::now();
        let loss = soft_dice(model.forward(x.clone()), y.clone(), 1.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let _ = loss.into_data();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64()); // step 0 is the warm-up
        }
    }
    let name = format!("{shape:?} Dice+AdamW");
    report(M::NAME, "train", &name, median(times), flops, peak);
}

fn report(arch: &str, phase: &str, shape: &str, seconds: f64, flops: f64, peak: f64) {
    let gflops = flops / 1e9 / seconds;
    println!(
        "| {arch} | {phase} | {shape} | {seconds:.3} s | {:.2} | {gflops:.1} | {:.0}% |",
        flops / 1e9,
        100.0 * gflops / peak
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
}
