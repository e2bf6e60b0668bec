//! `bacseg bench`: flags to [`bacseg::bench::run_bench`], whose measurements are printed as a
//! Markdown table as they come (forward passes, training step, whole mammogram, and PyTorch
//! beside them with `--torch-python`).

use std::path::PathBuf;

use anyhow::Result;
use bacseg::bench::{BenchEvent, BenchOptions, Measurement, run_bench};
use bacseg_nn::Architecture;

use crate::exit::usage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architectures whose forward pass is timed, comma-separated.
    #[arg(long, default_value = "dt-unet,unet,segnet,contextnet,scunet")]
    models: String,
    /// Batch sizes of the forward passes, comma-separated (the whole mammogram runs at
    /// predict's default batch, 4).
    #[arg(long, default_value = "1,4")]
    batches: String,
    /// Patch side.
    #[arg(long, default_value_t = 512)]
    patch: usize,
    /// Timed runs per measurement (median reported, after one warm-up).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Width and depth of the networks instead of the reference, for a quick check (ContextNet
    /// takes only the width, SCU-Net neither; PyTorch is then not run).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    depth: Option<usize>,
    /// Skip the training steps.
    #[arg(long)]
    no_train: bool,
    /// Architectures whose training step is timed, comma-separated (the CPU training engine
    /// at batches 1, 2, 4, 8 where it trains the architecture, and without Winograd at batch 4;
    /// burn at batch 4).
    #[arg(long, default_value = "dt-unet")]
    train_models: String,
    /// Skip the whole-mammogram predictions.
    #[arg(long)]
    no_whole: bool,
    /// Also time each convolution of the CPU engine's networks on every path this CPU runs
    /// (im2col + GEMM, the direct convolution of each instruction set).
    #[arg(long)]
    layers: bool,
    /// The mammogram predicted whole (default: a synthetic 3328x4096 image at 0.07 mm, seed 0).
    #[arg(long)]
    image: Option<PathBuf>,
    /// A Python with torch, safetensors and opencv-python-headless: also time PyTorch eager on
    /// the same DT-UNet, weights and patches, and print the ratios.
    #[arg(long)]
    torch_python: Option<PathBuf>,
    /// Where tools/torch_reference.py is.
    #[arg(long, default_value = "tools")]
    tools: PathBuf,
    /// A published SCU-Net checkpoint (.pt; `bacseg weights fetch scunet` downloads one): also
    /// predict the whole mammogram with the published preset on the default engine and on burn.
    #[arg(long, value_name = "PT")]
    scunet: Option<PathBuf>,
}

fn list<T: std::str::FromStr>(what: &str, text: &str) -> Result<Vec<T>> {
    text.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| usage(format!("--{what}: {v:?} is not valid")))
        })
        .collect()
}

fn architectures(flag: &str, text: &str) -> Result<Vec<Architecture>> {
    text.split(',')
        .map(|m| {
            Architecture::from_name(m.trim()).ok_or_else(|| {
                usage(format!(
                    "unknown model {m:?} in --{flag} (known: dt-unet, unet, segnet, contextnet, \
                     scunet)"
                ))
            })
        })
        .collect()
}

impl Args {
    fn options(self) -> Result<BenchOptions> {
        let models = architectures("models", &self.models)?;
        let train_models = architectures("train-models", &self.train_models)?;
        Ok(BenchOptions {
            models,
            batches: list("batches", &self.batches)?,
            patch: self.patch,
            repeats: self.repeats,
            width: self.width,
            depth: self.depth,
            train: !self.no_train,
            train_models,
            whole: !self.no_whole,
            layers: self.layers,
            image: self.image,
            torch_python: self.torch_python,
            tools: self.tools,
            scunet: self.scunet,
        })
    }
}

/// One printed measurement.
fn row(m: &Measurement, peak: f64, bf16_peak: Option<f64>) {
    let rate = m.gflops().map_or("-".into(), |r| format!("{r:.1}"));
    // bf16 work is a share of the bf16 peak.
    let peak = if m.bf16 {
        bf16_peak.unwrap_or(f64::NAN)
    } else {
        peak
    };
    let share = m
        .share_of_peak(peak)
        .map_or("-".into(), |s| format!("{s:.0}%"));
    // Milliseconds matter for single layers: four decimals below a tenth of a second.
    let time = if m.seconds < 0.1 {
        format!("{:.4} s", m.seconds)
    } else {
        format!("{:.3} s", m.seconds)
    };
    println!(
        "| {} | {} | {time} | {rate} | {share} | {} |",
        m.what, m.engine, m.note
    );
}

pub fn run(args: Args) -> Result<()> {
    let options = args.options()?;
    // The machine's peak, from the header, for the share of it each measurement reached.
    let mut peak = f64::NAN;
    let mut bf16_peak = None;
    run_bench(&options, &mut |event: BenchEvent| match event {
        BenchEvent::Header(h) => {
            peak = h.peak_gflops;
            bf16_peak = h.bf16_peak_gflops;
            let bf16 = bf16_peak.map_or(String::new(), |p| {
                format!("; bf16 peak {p:.0} GFLOP/s (measured, VDPBF16PS loop)")
            });
            println!(
                "bacseg {} ({:?}) on {}; CPU engine kernels: {}; fp32 peak {peak:.0} GFLOP/s ({}){bf16}; median of {} runs",
                h.version,
                h.device,
                if h.cpu.is_empty() {
                    "an unknown CPU"
                } else {
                    &h.cpu
                },
                h.isa,
                h.peak_source,
                h.repeats
            );
            println!(
                "GFLOP/s count each network's direct-convolution work; the CPU engine's \
                 Winograd layers (3x3, 32+ channels) do a quarter of those multiplications, so \
                 its rate can pass the peak (then no share is given)."
            );
            println!("| measurement | engine | time | GFLOP/s | of peak | note |");
            println!("|---|---|---|---|---|---|");
        }
        BenchEvent::Section(_) => {}
        BenchEvent::Measurement(m) => row(&m, peak, bf16_peak),
        BenchEvent::Ratio(r) => {
            println!(
                "| {} | {} | {:.2}x | | | |",
                r.what,
                r.kind.as_str(),
                r.value
            );
        }
        BenchEvent::PeakMemory(rss) => println!(
            "| peak resident memory (whole run) | | | | | {} |",
            rss.unwrap_or_else(|| "unknown".into())
        ),
        BenchEvent::Notice(text) => eprintln!("bacseg: {text}"),
    })?;
    Ok(())
}
