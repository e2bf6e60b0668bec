//! `bacseg bench`: inference and training speed of this build, in one run on the same inputs:
//! the forward pass of each architecture at each batch size, the DT-UNet training step, and a
//! whole mammogram predicted with and without breast skipping; optionally PyTorch eager on the
//! same DT-UNet, weights and patches (`--torch-python`, through tools/torch_reference.py).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use bacseg_core::io::{self, write_mask_png, write_unit_png16};
use bacseg_core::mammogram::{Mammogram, PixelSpacing, SpacingSource};
use bacseg_core::preprocess::{Preprocess, Preprocessed, preprocess};
use bacseg_core::raster::{Mask, Raster};
use bacseg_core::stitch::BlendMode;
use bacseg_core::synth::{self, SynthConfig};
use bacseg_nn::bench::{
    TrainStepTiming, peak_gflops, time_forward, time_forward_cpu, time_train_step,
    time_train_step_cpu,
};
use bacseg_nn::engine::{Engine, InferConfig, predict_image};
use bacseg_nn::networks::{ModelSpec, Network};
use bacseg_nn::train::cpu::TrainNet;
use bacseg_nn::{Architecture, Device, Module, SegmentationModel, save_pytorch_safetensors};

use crate::exit::InputError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architectures whose forward pass is timed, comma-separated.
    #[arg(long, default_value = "dt-unet,unet,segnet,contextnet,scunet")]
    models: String,
    /// Batch sizes of the forward passes, comma-separated; the smallest is used for the whole
    /// mammogram.
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
    /// Skip the DT-UNet training step.
    #[arg(long)]
    no_train: bool,
    /// Skip the whole-mammogram predictions.
    #[arg(long)]
    no_whole: bool,
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
}

fn list<T: std::str::FromStr>(what: &str, text: &str) -> Result<Vec<T>> {
    text.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| InputError(format!("--{what}: {v:?} is not valid")).into())
        })
        .collect()
}

/// One printed measurement.
fn row(what: &str, engine: &str, seconds: f64, gflop: Option<f64>, peak: f64, note: &str) {
    let (rate, share) = match gflop {
        Some(g) if seconds > 0.0 => (
            format!("{:.1}", g / seconds),
            format!("{:.0}%", 100.0 * g / seconds / peak),
        ),
        _ => ("-".into(), "-".into()),
    };
    println!("| {what} | {engine} | {seconds:.3} s | {rate} | {share} | {note} |");
}

pub fn run(args: Args) -> Result<()> {
    let models: Vec<Architecture> = args
        .models
        .split(',')
        .map(|m| {
            Architecture::from_name(m.trim()).ok_or_else(|| {
                InputError(format!(
                    "unknown model {m:?} in --models (known: dt-unet, unet, segnet, contextnet, \
                     scunet)"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut batches: Vec<usize> = list("batches", &args.batches)?;
    batches.sort_unstable();
    if batches.first().is_none_or(|&b| b == 0) || args.patch == 0 || args.repeats == 0 {
        return Err(InputError("--batches, --patch and --repeats must be >= 1".into()).into());
    }
    let reference = args.width.is_none() && args.depth.is_none();
    if args.torch_python.is_some() && !reference {
        return Err(InputError(
            "--torch-python compares the reference networks: drop --width and --depth".into(),
        )
        .into());
    }
    let spec = |arch: Architecture| -> Result<ModelSpec> {
        let s = ModelSpec::reference(arch);
        // SCU-Net's shape is fixed; ContextNet's depth is.
        let (width, depth) = match arch {
            Architecture::ScuNet => (None, None),
            Architecture::ContextNet => (args.width, None),
            _ => (args.width, args.depth),
        };
        s.with_overrides(width, depth)
            .map_err(|e| InputError(e.to_string()).into())
    };
    let device = Device::default();
    let (peak, how) = peak_gflops();
    println!(
        "bacseg {} ({:?}), fp32 peak {peak:.0} GFLOP/s ({how}); median of {} runs",
        env!("CARGO_PKG_VERSION"),
        device,
        args.repeats
    );
    println!("| measurement | engine | time | GFLOP/s | of peak | note |");
    println!("|---|---|---|---|---|---|");
    let n = args.patch;
    // With a Python, ONNX Runtime also runs the DT-UNet the forward pass timed (same weights).
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let onnx_path = scratch.path().join("dt-unet.onnx");
    let torch_wanted = args.torch_python.is_some();
    // DT-UNet 1x512: the default engine's time, with its name.
    let mut default_forward_1: Option<(f64, &str)> = None;
    for &arch in &models {
        for &b in &batches {
            let timing = spec(arch)?
                .build(&device)
                .map(|model| {
                    Forward {
                        b,
                        n,
                        repeats: args.repeats,
                        onnx: (arch == Architecture::DtUnet && b == 1 && torch_wanted)
                            .then_some(onnx_path.as_path()),
                    }
                    .visit(model)
                })
                .map_err(|e| InputError(e.to_string()))??;
            let what = format!("{} forward {b}x{n}x{n}", arch.name());
            let per_patch = |s: f64| format!("{:.3} s per patch", s / b as f64);
            row(
                &what,
                "burn",
                timing.burn,
                Some(timing.gflop),
                peak,
                &per_patch(timing.burn),
            );
            if let Some(cpu) = timing.cpu {
                row(
                    &what,
                    "cpu",
                    cpu,
                    Some(timing.gflop),
                    peak,
                    &format!("{}, {:.2}x burn's speed", per_patch(cpu), timing.burn / cpu),
                );
            }
            if let Some(ort) = timing.ort {
                row(
                    &what,
                    "ort (ONNX Runtime)",
                    ort,
                    Some(timing.gflop),
                    peak,
                    &format!("{}, {:.2}x burn's speed", per_patch(ort), timing.burn / ort),
                );
            }
            if arch == Architecture::DtUnet && b == 1 && n == 512 && reference {
                default_forward_1 = Some(match timing.cpu {
                    Some(cpu) => (cpu, "cpu"),
                    None => (timing.burn, "burn"),
                });
            }
        }
    }
    let mut burn_train = None;
    let mut cpu_train = None;
    if !args.no_train {
        let side = (n / 2).max(1);
        // The CPU training engine at batches 1, 2, 4 and 8 (time per patch at each); burn at
        // batch 4 (the default and PyTorch's comparison), from the same initial weights.
        for batch in [1, 2, 4, 8] {
            let (burn, cpu, gflop) = spec(Architecture::DtUnet)?
                .build(&device.clone().autodiff())
                .map(|model| {
                    Train {
                        batch,
                        side,
                        repeats: args.repeats,
                        burn: batch == 4,
                    }
                    .visit(model)
                })
                .map_err(|e| InputError(e.to_string()))??;
            let what = format!("dt-unet train step {batch}x{side}x{side}, Dice + AdamW");
            let parts = |step: &TrainStepTiming| {
                format!(
                    "{:.3} s per patch; forward + loss {:.3} s, backward {:.3} s, AdamW {:.3} s",
                    step.total / batch as f64,
                    step.forward,
                    step.backward,
                    step.optimizer
                )
            };
            if let Some(step) = &burn {
                burn_train = Some(step.total);
                row(&what, "burn", step.total, Some(gflop), peak, &parts(step));
            }
            if let Some(step) = &cpu {
                let mut note = parts(step);
                if let Some(b) = &burn {
                    note.push_str(&format!(", {:.2}x burn's speed", b.total / step.total));
                }
                if batch == 4 {
                    cpu_train = Some(step.total);
                }
                row(&what, "cpu", step.total, Some(gflop), peak, &note);
            }
        }
    }
    let torch = args.torch_python.as_deref().map(|py| Torch {
        python: py,
        tools: &args.tools,
    });
    if let Some(t) = &torch {
        let (forward, train) = t.bench(args.repeats)?;
        row(
            "dt-unet forward 1x512x512",
            "PyTorch eager",
            forward,
            Some(8.900313088),
            peak,
            "",
        );
        if let Some((seconds, engine)) = default_forward_1 {
            println!(
                "| PyTorch eager / {engine}, dt-unet forward 1x512x512 | speed ratio | {:.2}x | | | |",
                forward / seconds
            );
        }
        if onnx_path.is_file() {
            match t.onnxruntime(&onnx_path, 512, args.repeats) {
                Ok(ort) => {
                    row(
                        "dt-unet forward 1x512x512",
                        "ONNX Runtime",
                        ort,
                        Some(8.900313088),
                        peak,
                        "same weights (bacseg export)",
                    );
                    if let Some((seconds, engine)) = default_forward_1 {
                        println!(
                            "| ONNX Runtime / {engine}, dt-unet forward 1x512x512 | speed ratio | {:.2}x | | | |",
                            ort / seconds
                        );
                    }
                }
                Err(e) => eprintln!("bacseg: ONNX Runtime not timed: {e:#}"),
            }
        }
        if let Some(train) = train {
            row(
                "dt-unet train step 4x256x256",
                "PyTorch eager",
                train,
                None,
                peak,
                "",
            );
            if let Some(b) = burn_train {
                println!(
                    "| burn / PyTorch, dt-unet train step | time ratio | {:.2}x | | | |",
                    b / train
                );
            }
            if let Some(c) = cpu_train {
                println!(
                    "| PyTorch eager / cpu, dt-unet train step | speed ratio | {:.2}x | | | |",
                    train / c
                );
            }
        }
    }
    if !args.no_whole {
        let m = match &args.image {
            Some(path) => io::load(path)?,
            None => synthetic_mammogram(),
        };
        let pre = preprocess(&m, &Preprocess::default());
        let b = batches[0];
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let weights = dir.path().join("dt-unet.safetensors");
        let whole = spec(Architecture::DtUnet)?
            .build(&device)
            .map(|model| {
                Whole {
                    pre: &pre,
                    patch: n,
                    batch: b,
                    weights: &weights,
                }
                .visit(model)
            })
            .map_err(|e| InputError(e.to_string()))??;
        for (skip, (seconds, forward, patches, grid, engine)) in [("on", whole.0), ("off", whole.1)]
        {
            row(
                &format!(
                    "dt-unet whole {}x{} mammogram, breast skipping {skip}, batch {b}",
                    m.width(),
                    m.height()
                ),
                engine,
                seconds,
                None,
                peak,
                &format!("{patches} of {grid} patches, forward {forward:.1} s"),
            );
        }
        println!(
            "| peak resident memory (whole run) | | | | | {} |",
            peak_rss().unwrap_or_else(|| "unknown".into())
        );
        if let Some(t) = &torch {
            let image = dir.path().join("pre.png");
            let breast = dir.path().join("breast.png");
            write_unit_png16(&image, &pre.image)?;
            write_mask_png(&breast, &pre.breast)?;
            let forward = t.whole(&image, &breast, &weights, n, b)?;
            row(
                "dt-unet whole mammogram forward, breast skipping on",
                "PyTorch eager",
                forward,
                None,
                peak,
                "same patches and weights",
            );
            println!(
                "| PyTorch eager / {}, whole-mammogram forward | speed ratio | {:.2}x | | | |",
                whole.0.4,
                forward / whole.0.1
            );
        }
    }
    Ok(())
}

/// A default-size synthetic mammogram (seed 0, first image).
fn synthetic_mammogram() -> Mammogram {
    let config = SynthConfig {
        count: 1,
        ..SynthConfig::default()
    };
    let sample = synth::generate(&config, 0);
    let bits = u16::from(sample.params.bits_stored);
    Mammogram {
        pixels: sample.image.map(|&v| f32::from(v)),
        spacing: Some(PixelSpacing {
            row_mm: sample.spacing_mm,
            col_mm: sample.spacing_mm,
            source: SpacingSource::User,
        }),
        laterality: None,
        view: None,
        bits_stored: bits,
        value_range: (0.0, ((1u32 << bits) - 1) as f32),
        notes: Vec::new(),
    }
}

/// VmHWM of this process (Linux).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_string())
}

struct Forward<'a> {
    b: usize,
    n: usize,
    repeats: usize,
    /// Where to write the model as ONNX (for ONNX Runtime on the same weights).
    onnx: Option<&'a Path>,
}

/// Forward-pass seconds of each engine and the GFLOP of one pass.
struct ForwardTiming {
    burn: f64,
    /// For the architectures the CPU engine runs.
    cpu: Option<f64>,
    /// The `ort` engine, in a build that has it, for the architectures it runs, when ONNX
    /// Runtime loads.
    ort: Option<f64>,
    gflop: f64,
}

/// The `ort` engine's forward time on the exported model `onnx` taking `channels`; `None`
/// (with a notice) where it cannot run.
#[cfg(feature = "ort")]
fn time_ort(onnx: &[u8], channels: usize, b: usize, n: usize, repeats: usize) -> Option<f64> {
    bacseg_nn::engine::ort::OrtNet::new(onnx, channels)
        .and_then(|mut net| bacseg_nn::bench::time_forward_ort(&mut net, b, n, repeats))
        .inspect_err(|e| eprintln!("bacseg: ort engine not timed: {e}"))
        .ok()
}

#[cfg(not(feature = "ort"))]
fn time_ort(_: &[u8], _: usize, _: usize, _: usize, _: usize) -> Option<f64> {
    None
}

impl Forward<'_> {
    fn visit(self, model: Network) -> Result<ForwardTiming> {
        let model = model.valid();
        model.check_input([self.b, model.in_channels(), self.n, self.n])?;
        // Exported once, for the file ONNX Runtime from Python reads and for the ort engine.
        let onnx = match self.onnx.is_some() || cfg!(feature = "ort") {
            true => model.onnx().transpose()?,
            false => None,
        };
        if let (Some(path), Some(bytes)) = (self.onnx, &onnx) {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        let burn = time_forward(&model, self.b, self.n, self.repeats);
        let cpu = match bacseg_nn::engine::cpu::Net::for_model(&model) {
            Some(net) => Some(time_forward_cpu(&mut net?, self.b, self.n, self.repeats)?),
            None => None,
        };
        let gflop = self.b as f64 * model.forward_flops([self.n, self.n]) as f64 / 1e9;
        Ok(ForwardTiming {
            burn,
            cpu,
            ort: onnx.and_then(|bytes| {
                time_ort(&bytes, model.in_channels(), self.b, self.n, self.repeats)
            }),
            gflop,
        })
    }
}

struct Train {
    batch: usize,
    side: usize,
    repeats: usize,
    /// Also time burn's autodiff step.
    burn: bool,
}

impl Train {
    fn visit(
        self,
        model: Network,
    ) -> Result<(Option<TrainStepTiming>, Option<TrainStepTiming>, f64)> {
        model.check_input([self.batch, model.in_channels(), self.side, self.side])?;
        let gflop =
            3.0 * self.batch as f64 * model.forward_flops([self.side, self.side]) as f64 / 1e9;
        let cpu = match model.unet_parts() {
            Some(parts) => {
                let mut net = TrainNet::from_parts(&parts)?;
                Some(time_train_step_cpu(
                    &mut net,
                    self.batch,
                    self.side,
                    self.repeats,
                )?)
            }
            None => None,
        };
        let burn = self
            .burn
            .then(|| time_train_step(model, self.batch, self.side, self.repeats));
        Ok((burn, cpu, gflop))
    }
}

/// (total seconds, forward seconds, patches predicted, patches in the grid, engine).
type WholeTiming = (f64, f64, usize, usize, &'static str);

struct Whole<'a> {
    pre: &'a Preprocessed,
    patch: usize,
    batch: usize,
    weights: &'a Path,
}

impl Whole<'_> {
    fn visit(self, model: Network) -> Result<(WholeTiming, WholeTiming)> {
        // The weights PyTorch loads for the same comparison.
        save_pytorch_safetensors(&model, self.weights)?;
        let model = model.valid();
        // Without skipping, every patch of the grid is predicted: the breast is the whole image.
        let everything = Raster::filled(self.pre.image.width(), self.pre.image.height(), true);
        let run = |breast: &Mask, min_breast_fraction: f64| -> Result<WholeTiming> {
            let cfg = InferConfig {
                patch: self.patch,
                stride: (self.patch / 2).max(1),
                batch: self.batch,
                blend: BlendMode::Gaussian,
                tta: false,
                min_breast_fraction,
                engine: Engine::Auto,
            };
            let start = Instant::now();
            let pred = predict_image(&model, &self.pre.image, breast, &cfg)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((
                start.elapsed().as_secs_f64(),
                pred.forward_s,
                pred.patches,
                pred.grid_patches,
                pred.engine.name(),
            ))
        };
        Ok((run(&self.pre.breast, 0.05)?, run(&everything, 0.0)?))
    }
}

/// PyTorch eager through tools/torch_reference.py.
struct Torch<'a> {
    python: &'a Path,
    tools: &'a Path,
}

impl Torch<'_> {
    fn script(&self) -> Result<PathBuf> {
        let script = self.tools.join("torch_reference.py");
        if !script.is_file() {
            return Err(InputError(format!(
                "{}: not found (give --tools, the repository's tools/ directory)",
                script.display()
            ))
            .into());
        }
        Ok(script)
    }

    fn call(&self, args: &[&str]) -> Result<String> {
        let script = self.script()?;
        let out = Command::new(self.python)
            .arg(&script)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.python.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "{} {} {}: {}",
                self.python.display(),
                script.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Median seconds of the reference DT-UNet forward (1x1x512x512) and training step.
    fn bench(&self, repeats: usize) -> Result<(f64, Option<f64>)> {
        let text = self.call(&["bench", "--repeats", &repeats.to_string()])?;
        let seconds_after = |marker: &str| -> Option<f64> {
            let line = text.lines().find(|l| l.contains(marker))?;
            let rest = &line[line.find("median ")? + "median ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        };
        let forward = seconds_after("forward")
            .ok_or_else(|| anyhow::anyhow!("no forward time in the PyTorch output:\n{text}"))?;
        Ok((forward, seconds_after("training step")))
    }

    /// Median seconds of ONNX Runtime's forward pass of `model` on one `side x side` patch
    /// (tools/onnx_check.py; needs onnx and onnxruntime in that Python).
    fn onnxruntime(&self, model: &Path, side: usize, repeats: usize) -> Result<f64> {
        let script = self.tools.join("onnx_check.py");
        let out = Command::new(self.python)
            .arg(&script)
            .arg(model)
            .args([
                "--bench",
                "--side",
                &side.to_string(),
                "--repeats",
                &repeats.to_string(),
            ])
            .output()
            .with_context(|| format!("running {}", self.python.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            anyhow::bail!(
                "{}: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        text.split("median ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no time in the ONNX Runtime output:\n{text}"))
    }

    /// Seconds of PyTorch's forward passes over the in-breast patches of one mammogram.
    fn whole(
        &self,
        image: &Path,
        breast: &Path,
        weights: &Path,
        patch: usize,
        batch: usize,
    ) -> Result<f64> {
        let s = |p: &Path| p.display().to_string();
        let text = self.call(&[
            "predict-time",
            "--image",
            &s(image),
            "--breast",
            &s(breast),
            "--weights",
            &s(weights),
            "--patch",
            &patch.to_string(),
            "--stride",
            &(patch / 2).max(1).to_string(),
            "--batch",
            &batch.to_string(),
        ])?;
        text.split("forward ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no forward time in the PyTorch output:\n{text}"))
    }
}
