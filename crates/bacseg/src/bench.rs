//! Speed of this build, measured in one run on the same inputs: the forward pass of each
//! architecture at each batch size and engine, the training step, and a whole mammogram
//! predicted with and without breast skipping; optionally PyTorch eager and ONNX Runtime (from
//! a Python, through `tools/torch_reference.py` and `tools/onnx_check.py`) on the same DT-UNet,
//! weights and patches.
//!
//! [`run_bench`] reports everything as [`BenchEvent`]s, each measurement as soon as it is
//! measured (the command line prints them as a table).
//!
//! ```no_run
//! use bacseg::bench::{BenchEvent, BenchOptions, run_bench};
//!
//! fn main() -> bacseg::Result<()> {
//!     let options = BenchOptions {
//!         repeats: 1,
//!         whole: false,
//!         ..BenchOptions::default()
//!     };
//!     run_bench(&options, &mut |event: BenchEvent| {
//!         if let BenchEvent::Measurement(m) = event {
//!             println!("{} ({}): {:.3} s", m.what, m.engine, m.seconds);
//!         }
//!     })
//! }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bacseg_core::io::{write_mask_png, write_unit_png16};
use bacseg_core::mammogram::{Mammogram, PixelSpacing, SpacingSource};
use bacseg_core::metrics::{ConfusionCounts, EmptyPolicy};
use bacseg_core::preprocess::{Preprocess, Preprocessed, preprocess};
use bacseg_core::raster::{Mask, Raster};
use bacseg_core::stitch::BlendMode;
use bacseg_core::synth::{self, SynthConfig};
use bacseg_nn::bench::{
    TrainStepTiming, peak_gflops, time_forward, time_forward_cpu, time_train_step,
    time_train_step_cpu,
};
use bacseg_nn::engine::{Engine, InferConfig, predict_image};
use bacseg_nn::train::cpu::TrainNet;
use bacseg_nn::{
    Architecture, Device, ModelSpec, Network, NnError, SegmentationModel, save_pytorch_safetensors,
};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Model, ModelSource};
use crate::predict::{PredictConfig, Predictor};

/// GFLOP of one reference DT-UNet forward pass on a 512x512 patch (what PyTorch and ONNX
/// Runtime are timed on).
const REFERENCE_DT_UNET_512_GFLOP: f64 = 8.900313088;

/// What to measure. The default is the reference comparison: every architecture at batches 1
/// and 4 on 512x512 patches, the training step and the whole mammogram, median of 3 runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Architectures whose forward pass is timed.
    pub models: Vec<Architecture>,
    /// Batch sizes of the forward passes (the whole mammogram runs at `predict`'s default
    /// batch, [`bacseg_nn::engine::InferConfig`]'s).
    pub batches: Vec<usize>,
    /// Patch side.
    pub patch: usize,
    /// Timed runs per measurement (the median is reported, after one warm-up).
    pub repeats: usize,
    /// Width of the networks instead of the reference (ContextNet takes only the width,
    /// SCU-Net neither; PyTorch is then not run).
    pub width: Option<usize>,
    /// Depth of the networks instead of the reference (not ContextNet's nor SCU-Net's).
    pub depth: Option<usize>,
    /// Time the training step.
    pub train: bool,
    /// Architectures whose training step is timed (with `train`): the CPU training engine at
    /// batches 1, 2, 4 and 8 where it trains the architecture (at batch 4 also with its
    /// convolutions kept off the Winograd path), burn at batch 4. PyTorch's comparison is
    /// DT-UNet's.
    pub train_models: Vec<Architecture>,
    /// Time whole-mammogram predictions.
    pub whole: bool,
    /// Time each convolution of the CPU engine's networks on every path this CPU runs
    /// (im2col + GEMM, the direct convolution of each instruction set), at the smallest batch.
    pub layers: bool,
    /// The mammogram predicted whole (`None`: a synthetic 3328x4096 image at 0.07 mm, seed 0).
    pub image: Option<PathBuf>,
    /// A Python with torch, safetensors and opencv-python-headless: also time PyTorch eager
    /// (and ONNX Runtime, where that Python has onnx and onnxruntime) on the same DT-UNet,
    /// weights and patches. Needs the reference networks.
    pub torch_python: Option<PathBuf>,
    /// Where `torch_reference.py` and `onnx_check.py` are (the repository's `tools/`).
    pub tools: PathBuf,
    /// A published SCU-Net checkpoint (`.pt`): the whole mammogram is also predicted with the
    /// published preset end to end (preprocessing, tiles, forward passes, postprocessing) on
    /// the default engine and on burn, and the two masks compared.
    pub scunet: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            models: Architecture::ALL.to_vec(),
            batches: vec![1, 4],
            patch: 512,
            repeats: 3,
            width: None,
            depth: None,
            train: true,
            train_models: vec![Architecture::DtUnet],
            whole: true,
            layers: false,
            image: None,
            torch_python: None,
            tools: PathBuf::from("tools"),
            scunet: None,
        }
    }
}

impl BenchOptions {
    /// Check the settings: at least one batch size, every size, the patch side and the repeats
    /// at least 1; PyTorch only with the reference networks.
    pub fn validate(&self) -> Result<()> {
        let sizes = !self.batches.is_empty() && !self.batches.contains(&0);
        if !sizes || self.patch == 0 || self.repeats == 0 {
            return Err(Error::config(
                "the batch sizes, the patch side and the repeats must be >= 1",
            ));
        }
        if self.torch_python.is_some() && !self.is_reference() {
            return Err(Error::config(
                "PyTorch is compared on the reference networks: no width or depth",
            ));
        }
        Ok(())
    }

    /// Whether the networks are the reference ones (no width or depth given).
    pub fn is_reference(&self) -> bool {
        self.width.is_none() && self.depth.is_none()
    }

    /// The network measured for `architecture`: its reference, with the width and depth where
    /// they apply (SCU-Net's shape is fixed; ContextNet's depth is).
    pub fn spec(&self, architecture: Architecture) -> Result<ModelSpec> {
        let (width, depth) = match architecture {
            Architecture::ScuNet => (None, None),
            Architecture::ContextNet => (self.width, None),
            _ => (self.width, self.depth),
        };
        Ok(ModelSpec::reference(architecture).with_overrides(width, depth)?)
    }
}

/// What a bench run reports, in order.
#[derive(Debug, Clone)]
pub enum BenchEvent {
    /// First, before anything is measured: the build and the machine.
    Header(Header),
    /// A group of measurements begins.
    Section(Section),
    /// One measurement, as soon as it is measured.
    Measurement(Measurement),
    /// Two measurements compared.
    Ratio(Ratio),
    /// The peak resident memory of the whole run so far (after the whole-mammogram
    /// predictions), as the system writes it (`None` where unknown: it is read on Linux).
    PeakMemory(Option<String>),
    /// Something that was not measured, and why; the run goes on.
    Notice(String),
}

/// The build and the machine a run measures.
#[derive(Debug, Clone)]
pub struct Header {
    /// bacseg's version.
    pub version: &'static str,
    /// The device the networks run on.
    pub device: Device,
    /// The machine's fp32 peak in GFLOP/s.
    pub peak_gflops: f64,
    /// How the peak was obtained (`BACSEG_PEAK_GFLOPS`, or measured on this machine with the
    /// instruction set the CPU engine uses).
    pub peak_source: String,
    /// The bf16 dot-product peak in GFLOP/s, measured on this machine where the CPU engine
    /// runs bf16 (AVX512_BF16); the bf16 measurements' shares are of it.
    pub bf16_peak_gflops: Option<f64>,
    /// The CPU (`model name` of /proc/cpuinfo; empty where unknown).
    pub cpu: String,
    /// The instruction set of the CPU engine's own kernels in this run (`AVX-512`, `AVX2/FMA`).
    pub isa: &'static str,
    /// Timed runs per measurement (median reported).
    pub repeats: usize,
}

/// The groups of measurements, in the order they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The forward pass of each architecture at each batch size.
    Forward,
    /// The training steps.
    Train,
    /// PyTorch eager and ONNX Runtime from Python.
    PyTorch,
    /// Whole-mammogram predictions.
    Whole,
    /// The CPU engine's convolutions one by one, on each path.
    Layers,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// What was measured (`dt-unet forward 1x512x512`).
    pub what: String,
    /// What ran it (`burn`, `cpu`, `PyTorch eager`, ...).
    pub engine: String,
    /// Median seconds.
    pub seconds: f64,
    /// The work done, where known.
    pub gflop: Option<f64>,
    /// Details (per-patch time, parts of a step, comparisons); may be empty.
    pub note: String,
    /// Computed in bf16: its share is of the bf16 peak ([`Header::bf16_peak_gflops`]).
    pub bf16: bool,
}

impl Measurement {
    /// GFLOP/s, where the work is known.
    pub fn gflops(&self) -> Option<f64> {
        self.gflop
            .filter(|_| self.seconds > 0.0)
            .map(|g| g / self.seconds)
    }

    /// The share of `peak` GFLOP/s reached, in percent, at most 100: the peak is measured on
    /// the same machine (an FMA loop no kernel can beat), so up to 5% above it is measurement
    /// noise of the two and is reported as 100. `None` further above: the work counted is a
    /// direct convolution's, and the CPU engine's Winograd layers do a quarter of its
    /// multiplications, so a network's rate can pass the peak and no share of it means
    /// anything (the wide networks, UNet and SegNet).
    pub fn share_of_peak(&self, peak: f64) -> Option<f64> {
        self.gflops()
            .filter(|&r| peak > 0.0 && r <= 1.05 * peak)
            .map(|r| (100.0 * r / peak).min(100.0))
    }
}

/// The CPU's model name from /proc/cpuinfo (empty where unknown).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_string())
        .unwrap_or_default()
}

/// How a [`Ratio`] compares two measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatioKind {
    /// The other one's time over bacseg's: how many times faster bacseg is.
    Speed,
    /// bacseg's time over the other one's.
    Time,
}

impl RatioKind {
    /// `speed ratio` or `time ratio`.
    pub fn as_str(self) -> &'static str {
        match self {
            RatioKind::Speed => "speed ratio",
            RatioKind::Time => "time ratio",
        }
    }
}

/// Two measurements compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// Which two (`PyTorch eager / cpu, dt-unet forward 1x512x512`).
    pub what: String,
    /// Which way round.
    pub kind: RatioKind,
    /// The ratio (`1.42` for 1.42x).
    pub value: f64,
}

fn measurement(
    what: impl Into<String>,
    engine: impl Into<String>,
    seconds: f64,
    gflop: Option<f64>,
    note: impl Into<String>,
) -> BenchEvent {
    BenchEvent::Measurement(Measurement {
        what: what.into(),
        engine: engine.into(),
        seconds,
        gflop,
        note: note.into(),
        bf16: false,
    })
}

fn ratio(what: impl Into<String>, kind: RatioKind, value: f64) -> BenchEvent {
    BenchEvent::Ratio(Ratio {
        what: what.into(),
        kind,
        value,
    })
}

fn temp_dir() -> Result<tempfile::TempDir> {
    tempfile::tempdir()
        .map_err(|e| Error::with_source(ErrorKind::Io, "creating a temporary directory", e))
}

/// Measure what `options` asks for, reporting each result to `report` as it comes.
pub fn run_bench(options: &BenchOptions, report: &mut dyn FnMut(BenchEvent)) -> Result<()> {
    options.validate()?;
    let mut batches = options.batches.clone();
    batches.sort_unstable();
    let device = Device::default();
    let (peak, how) = peak_gflops();
    report(BenchEvent::Header(Header {
        version: env!("CARGO_PKG_VERSION"),
        device: device.clone(),
        peak_gflops: peak,
        peak_source: how,
        bf16_peak_gflops: bacseg_nn::engine::cpu::bf16::measure_peak(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            0.25,
        ),
        cpu: cpu_model(),
        isa: bacseg_nn::engine::cpu::isa::engine_isa().name(),
        repeats: options.repeats,
    }));
    // With a Python, ONNX Runtime also runs the DT-UNet the forward pass timed (same weights).
    let scratch = temp_dir()?;
    let onnx_path = scratch.path().join("dt-unet.onnx");
    report(BenchEvent::Section(Section::Forward));
    let (default_forward_1, reference_net) =
        forward_section(options, &batches, &device, &onnx_path, report)?;
    if options.layers {
        report(BenchEvent::Section(Section::Layers));
        layers_section(options, batches[0], &device, report)?;
    }
    let (burn_train, cpu_train) = if options.train {
        report(BenchEvent::Section(Section::Train));
        train_section(options, &device, report)?
    } else {
        (None, None)
    };
    let torch = options.torch_python.as_deref().map(|python| Torch {
        python,
        tools: &options.tools,
    });
    if let Some(t) = &torch {
        report(BenchEvent::Section(Section::PyTorch));
        let ours = Ours {
            forward: default_forward_1,
            reference_net,
            burn_train,
            cpu_train,
        };
        torch_section(t, options, &onnx_path, ours, report)?;
    }
    if options.whole {
        report(BenchEvent::Section(Section::Whole));
        let batch = bacseg_nn::engine::InferConfig::default().batch;
        whole_section(options, batch, &device, torch.as_ref(), report)?;
    }
    Ok(())
}

/// bacseg's times the others are compared with.
struct Ours {
    /// The default engine's DT-UNet 1x512x512 forward time and name (of the reference network).
    forward: Option<(f64, &'static str)>,
    /// That network on the CPU engine, timed again beside the references.
    reference_net: Option<bacseg_nn::engine::cpu::Net>,
    /// burn's and the CPU engine's DT-UNet training step at batch 4.
    burn_train: Option<f64>,
    cpu_train: Option<f64>,
}

/// PyTorch eager (and ONNX Runtime from Python, on the model written to `onnx_path` if it
/// was) on the reference DT-UNet, compared with `ours`.
fn torch_section(
    t: &Torch<'_>,
    options: &BenchOptions,
    onnx_path: &Path,
    ours: Ours,
    report: &mut dyn FnMut(BenchEvent),
) -> Result<()> {
    let repeats = options.repeats;
    let what = "dt-unet forward 1x512x512";
    let gflop = Some(REFERENCE_DT_UNET_512_GFLOP);
    // The engine is timed again right before and after the references, and the ratios use
    // the mean of the two: on a shared machine the speed drifts by 10-20% within minutes,
    // more than the differences measured.
    let mut ours = ours;
    let mut beside = Vec::new();
    if let Some(net) = ours.reference_net.as_mut() {
        beside.push(time_forward_cpu(net, 1, 512, repeats)?);
    }
    let dt_unet_train = options.train && options.train_models.contains(&Architecture::DtUnet);
    let (forward, train) = t.bench(repeats, dt_unet_train)?;
    let ort = onnx_path
        .is_file()
        .then(|| t.onnxruntime(onnx_path, 512, repeats));
    if let Some(net) = ours.reference_net.as_mut() {
        beside.push(time_forward_cpu(net, 1, 512, repeats)?);
        let mean = beside.iter().sum::<f64>() / beside.len() as f64;
        report(measurement(
            what,
            "cpu",
            mean,
            gflop,
            format!(
                "timed again beside the references: {:.4} s before, {:.4} s after; the ratios \
                 below use the mean",
                beside[0], beside[1]
            ),
        ));
        ours.forward = Some((mean, "cpu"));
    }
    report(measurement(what, "PyTorch eager", forward, gflop, ""));
    if let Some((seconds, engine)) = ours.forward {
        report(ratio(
            format!("PyTorch eager / {engine}, {what}"),
            RatioKind::Speed,
            forward / seconds,
        ));
    }
    if let Some(ort) = ort {
        match ort {
            Ok(ort) => {
                report(measurement(
                    what,
                    "ONNX Runtime",
                    ort,
                    gflop,
                    "same weights (bacseg export)",
                ));
                if let Some((seconds, engine)) = ours.forward {
                    report(ratio(
                        format!("ONNX Runtime / {engine}, {what}"),
                        RatioKind::Speed,
                        ort / seconds,
                    ));
                }
            }
            Err(e) => report(BenchEvent::Notice(format!(
                "ONNX Runtime not timed: {}",
                e.chain_message()
            ))),
        }
    }
    if let Some(train) = train {
        report(measurement(
            "dt-unet train step 4x256x256",
            "PyTorch eager",
            train,
            None,
            "",
        ));
        if let Some(b) = ours.burn_train {
            report(ratio(
                "burn / PyTorch, dt-unet train step",
                RatioKind::Time,
                b / train,
            ));
        }
        if let Some(c) = ours.cpu_train {
            report(ratio(
                "PyTorch eager / cpu, dt-unet train step",
                RatioKind::Speed,
                train / c,
            ));
        }
    }
    Ok(())
}

/// The forward passes; returns the default engine's time and name for DT-UNet 1x512x512 (of
/// the reference network), for the comparisons, and that network on the CPU engine.
#[allow(clippy::type_complexity)]
fn forward_section(
    options: &BenchOptions,
    batches: &[usize],
    device: &Device,
    onnx_path: &Path,
    report: &mut dyn FnMut(BenchEvent),
) -> Result<(
    Option<(f64, &'static str)>,
    Option<bacseg_nn::engine::cpu::Net>,
)> {
    let n = options.patch;
    let mut default_forward_1 = None;
    let mut reference_net = None;
    for &arch in &options.models {
        for &b in batches {
            let spec = options.spec(arch)?;
            let network = spec.build(device)?;
            // A fresh network, not read from any file.
            let model = Model::from_network(spec, network, PathBuf::new());
            let onnx = (arch == Architecture::DtUnet && b == 1 && options.torch_python.is_some())
                .then_some(onnx_path);
            let timing = time_forwards(&model, b, n, options.repeats, onnx, report)?;
            let what = format!("{} forward {b}x{n}x{n}", arch.name());
            let per_patch = |s: f64| format!("{:.3} s per patch", s / b as f64);
            let gflop = Some(timing.gflop);
            report(measurement(
                what.as_str(),
                "burn",
                timing.burn,
                gflop,
                per_patch(timing.burn),
            ));
            for (engine, seconds) in [
                ("cpu", timing.cpu),
                ("cpu bf16", timing.cpu_bf16),
                ("ort (ONNX Runtime)", timing.ort),
            ] {
                if let Some(s) = seconds {
                    let note = format!("{}, {:.2}x burn's speed", per_patch(s), timing.burn / s);
                    let mut m = measurement(what.as_str(), engine, s, gflop, note);
                    if let BenchEvent::Measurement(m) = &mut m {
                        m.bf16 = engine == "cpu bf16";
                    }
                    report(m);
                }
            }
            if arch == Architecture::DtUnet && b == 1 && n == 512 && options.is_reference() {
                default_forward_1 = Some(match timing.cpu {
                    Some(cpu) => (cpu, "cpu"),
                    None => (timing.burn, "burn"),
                });
                reference_net =
                    bacseg_nn::engine::cpu::Net::for_model(model.network()).transpose()?;
            }
        }
    }
    Ok((default_forward_1, reference_net))
}

/// Each convolution of the CPU engine's networks on every path this CPU runs: one measurement
/// per layer and path, the note saying which path the engine takes.
fn layers_section(
    options: &BenchOptions,
    batch: usize,
    device: &Device,
    report: &mut dyn FnMut(BenchEvent),
) -> Result<()> {
    let n = options.patch;
    for &arch in &options.models {
        let network = options.spec(arch)?.build(device)?;
        use bacseg_nn::engine::cpu::{WINOGRAD, WINOGRAD_WORK_SHARE};
        let Some(net) = bacseg_nn::engine::cpu::Net::for_model(&network) else {
            report(BenchEvent::Notice(format!(
                "{}: not on the CPU engine, no layer profile",
                arch.name()
            )));
            continue;
        };
        let net = net?;
        for layer in net.layer_profile(batch, n, options.repeats) {
            for (path, seconds) in &layer.paths {
                let chosen = *path == layer.chosen;
                // Winograd's GEMMs do 36 of the direct convolution's 144 multiplications per
                // tile: its share of the peak is of the work it does.
                let (gflop, note) = match path.as_str() {
                    WINOGRAD => (
                        layer.gflop * WINOGRAD_WORK_SHARE,
                        if chosen {
                            "engine's choice; GFLOP/s of its GEMMs' work (1/4 of direct)"
                        } else {
                            "GFLOP/s of its GEMMs' work (1/4 of direct)"
                        },
                    ),
                    _ => (layer.gflop, if chosen { "engine's choice" } else { "" }),
                };
                report(measurement(
                    format!("{} {} (batch {batch})", arch.name(), layer.layer),
                    path.as_str(),
                    *seconds,
                    Some(gflop).filter(|g| *g > 0.0),
                    note,
                ));
            }
        }
    }
    Ok(())
}

/// The training steps of each of `options.train_models`; returns the seconds of burn's
/// DT-UNet step and of the CPU engine's at batch 4, for the comparisons with PyTorch.
fn train_section(
    options: &BenchOptions,
    device: &Device,
    report: &mut dyn FnMut(BenchEvent),
) -> Result<(Option<f64>, Option<f64>)> {
    let side = (options.patch / 2).max(1);
    let (mut burn_train, mut cpu_train) = (None, None);
    for &arch in &options.train_models {
        let name = arch.name();
        // The CPU training engine at batches 1, 2, 4 and 8 (time per patch at each); burn at
        // batch 4 (the default and PyTorch's comparison), from the same initial weights.
        for batch in [1, 2, 4, 8] {
            let network = options.spec(arch)?.build(&device.clone().autodiff())?;
            let timing = time_train(network, batch, side, options.repeats, batch == 4)?;
            let what = format!("{name} train step {batch}x{side}x{side}, Dice + AdamW");
            let parts = |step: &TrainStepTiming| {
                format!(
                    "{:.3} s per patch; forward + loss {:.3} s, backward {:.3} s, AdamW {:.3} s",
                    step.total / batch as f64,
                    step.forward,
                    step.backward,
                    step.optimizer
                )
            };
            let gflop = Some(timing.gflop);
            if let Some(step) = &timing.burn {
                if arch == Architecture::DtUnet {
                    burn_train = Some(step.total);
                }
                report(measurement(
                    what.as_str(),
                    "burn",
                    step.total,
                    gflop,
                    parts(step),
                ));
            }
            if let Some(step) = &timing.cpu {
                let mut note = parts(step);
                if let Some(b) = &timing.burn {
                    note.push_str(&format!(", {:.2}x burn's speed", b.total / step.total));
                }
                if let Some(d) = &timing.cpu_direct {
                    note.push_str(&format!(
                        ", {:.2}x its speed without Winograd",
                        d.total / step.total
                    ));
                }
                if batch == 4 && arch == Architecture::DtUnet {
                    cpu_train = Some(step.total);
                }
                report(measurement(what.as_str(), "cpu", step.total, gflop, note));
            }
            if let Some(step) = &timing.cpu_direct {
                report(measurement(
                    what.as_str(),
                    "cpu, no Winograd",
                    step.total,
                    gflop,
                    parts(step),
                ));
            }
        }
    }
    Ok((burn_train, cpu_train))
}

/// A whole mammogram (the given one or a synthetic one) predicted with and without breast
/// skipping at `batch`, and by PyTorch when `torch` is given.
fn whole_section(
    options: &BenchOptions,
    batch: usize,
    device: &Device,
    torch: Option<&Torch<'_>>,
    report: &mut dyn FnMut(BenchEvent),
) -> Result<()> {
    let n = options.patch;
    let m = match &options.image {
        Some(path) => crate::load_image(path)?,
        None => synthetic_mammogram(),
    };
    for note in &m.notes {
        let path = options.image.as_deref().unwrap_or(Path::new("image"));
        report(BenchEvent::Notice(format!("{}: {note}", path.display())));
    }
    let pre = preprocess(&m, &Preprocess::default());
    let dir = temp_dir()?;
    let weights = dir.path().join("dt-unet.safetensors");
    let spec = options.spec(Architecture::DtUnet)?;
    let network = spec.build(device)?;
    // The weights PyTorch loads for the same comparison.
    save_pytorch_safetensors(&network, &weights)?;
    let model = Model::from_network(spec, network, weights.clone());
    let (on, off, bf16) = time_whole(&model, &pre, n, batch)?;
    let runs = [
        ("on", Some(&on), ""),
        ("off", Some(&off), ""),
        ("on", bf16.as_ref(), " bf16"),
    ];
    for (skip, t, precision) in runs {
        let Some(t) = t else { continue };
        report(measurement(
            format!(
                "dt-unet whole {}x{} mammogram, breast skipping {skip}, batch {batch}",
                m.width(),
                m.height()
            ),
            format!("{}{precision}", t.engine),
            t.seconds,
            None,
            format!(
                "{} of {} patches, forward {:.1} s",
                t.patches, t.grid, t.forward
            ),
        ));
    }
    if let Some(path) = &options.scunet {
        scunet_whole(&m, path, report)?;
    }
    report(BenchEvent::PeakMemory(peak_rss()));
    if let Some(t) = torch {
        let image = dir.path().join("pre.png");
        let breast = dir.path().join("breast.png");
        write_unit_png16(&image, &pre.image)?;
        write_mask_png(&breast, &pre.breast)?;
        let forward = t.whole(&image, &breast, &weights, n, batch)?;
        report(measurement(
            "dt-unet whole mammogram forward, breast skipping on",
            "PyTorch eager",
            forward,
            None,
            "same patches and weights",
        ));
        report(ratio(
            format!("PyTorch eager / {}, whole-mammogram forward", on.engine),
            RatioKind::Speed,
            forward / on.forward,
        ));
    }
    Ok(())
}

/// The published SCU-Net preset on mammogram `m` with the checkpoint at `path`, end to end: on
/// the default engine, on burn (when the default is not burn already) and, on a CPU with
/// AVX512_BF16, on the CPU engine in bf16; each mask compared with the default engine's.
fn scunet_whole(m: &Mammogram, path: &Path, report: &mut dyn FnMut(BenchEvent)) -> Result<()> {
    let model = Model::load(&ModelSource::published_scunet(Some(path.to_path_buf())))?;
    let config = |engine: Engine, bf16: bool| {
        let mut c = PredictConfig::published_scunet();
        c.infer.engine = engine;
        c.infer.bf16 = bf16;
        c
    };
    let mut runs = vec![Predictor::new(&model, config(Engine::Auto, false))?];
    if runs[0].engine() != Engine::Burn {
        runs.push(Predictor::new(&model, config(Engine::Burn, false))?);
    }
    if runs[0].engine() == Engine::Cpu && bacseg_nn::engine::cpu::bf16::available() {
        runs.push(Predictor::new(&model, config(Engine::Cpu, true))?);
    }
    let mut first: Option<Mask> = None;
    for predictor in &mut runs {
        let start = Instant::now();
        let pred = predictor.predict(m)?;
        let seconds = start.elapsed().as_secs_f64();
        let t = &pred.timings;
        let agreement = match &first {
            Some(mask) => {
                let counts = ConfusionCounts::from_masks(&pred.mask, mask)
                    .map_err(|e| Error::new(ErrorKind::Runtime, e.to_string()))?;
                let dice = counts.metrics(EmptyPolicy::One).f1.unwrap_or(1.0);
                format!(
                    ", mask Dice {dice:.4} against the default engine's ({} of {} pixels differ)",
                    counts.fp + counts.fn_,
                    counts.total()
                )
            }
            None => String::new(),
        };
        let bf16 = predictor.config().infer.bf16;
        report(measurement(
            format!(
                "scunet published preset, whole {}x{} mammogram",
                m.width(),
                m.height()
            ),
            if bf16 { "cpu bf16" } else { t.engine },
            seconds,
            None,
            format!(
                "{} of {} tiles, forward {:.1} s, {} mask pixels{agreement}",
                t.patches, t.grid_patches, t.forward_s, pred.burden.area_px
            ),
        ));
        first.get_or_insert(pred.mask);
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

/// Forward-pass seconds of each engine and the GFLOP of one pass.
struct ForwardTiming {
    burn: f64,
    /// For the architectures the CPU engine runs.
    cpu: Option<f64>,
    /// The CPU engine with its convolutions in bf16, on a CPU with AVX512_BF16.
    cpu_bf16: Option<f64>,
    /// The `ort` engine, in a build that has it, for the architectures it runs, when ONNX
    /// Runtime loads.
    ort: Option<f64>,
    gflop: f64,
}

/// The forward passes of `model` on `b` patches of `n x n` by each engine; with `onnx_path`,
/// the model is also written there as ONNX (for ONNX Runtime from Python, same weights).
fn time_forwards(
    model: &Model,
    b: usize,
    n: usize,
    repeats: usize,
    onnx_path: Option<&Path>,
    report: &mut dyn FnMut(BenchEvent),
) -> Result<ForwardTiming> {
    let net = model.network();
    net.check_input([b, net.in_channels(), n, n])?;
    // Exported once, for the file ONNX Runtime from Python reads and for the ort engine.
    let onnx = if onnx_path.is_some() || cfg!(feature = "ort") {
        net.onnx().transpose()?
    } else {
        None
    };
    if let (Some(path), Some(bytes)) = (onnx_path, &onnx) {
        std::fs::write(path, bytes).map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("writing {}", path.display()), e)
        })?;
    }
    let burn = time_forward(net, b, n, repeats);
    let (mut cpu, mut cpu_bf16) = (None, None);
    if let Some(compiled) = bacseg_nn::engine::cpu::Net::for_model(net) {
        let mut compiled = compiled?;
        cpu = Some(time_forward_cpu(&mut compiled, b, n, repeats)?);
        if compiled.set_bf16(true) > 0 {
            cpu_bf16 = Some(time_forward_cpu(&mut compiled, b, n, repeats)?);
        }
    }
    let gflop = b as f64 * net.forward_flops([n, n]) as f64 / 1e9;
    let ort = match onnx.and_then(|bytes| time_ort(&bytes, net.in_channels(), b, n, repeats)) {
        Some(Ok(seconds)) => Some(seconds),
        Some(Err(e)) => {
            report(BenchEvent::Notice(format!("ort engine not timed: {e}")));
            None
        }
        None => None,
    };
    Ok(ForwardTiming {
        burn,
        cpu,
        cpu_bf16,
        ort,
        gflop,
    })
}

/// The `ort` engine's forward time on the exported model `onnx` taking `channels` (`None` in
/// a build without it).
#[cfg(feature = "ort")]
fn time_ort(
    onnx: &[u8],
    channels: usize,
    b: usize,
    n: usize,
    repeats: usize,
) -> Option<Result<f64, NnError>> {
    Some(
        bacseg_nn::engine::ort::OrtNet::new(onnx, channels)
            .and_then(|mut net| bacseg_nn::bench::time_forward_ort(&mut net, b, n, repeats)),
    )
}

#[cfg(not(feature = "ort"))]
fn time_ort(_: &[u8], _: usize, _: usize, _: usize, _: usize) -> Option<Result<f64, NnError>> {
    None
}

/// Training-step timings of each engine and the GFLOP of one step.
struct TrainTiming {
    /// burn's autodiff step, when asked for.
    burn: Option<TrainStepTiming>,
    /// The CPU training engine, for the U-Net-shaped networks.
    cpu: Option<TrainStepTiming>,
    /// The CPU training engine with every convolution off the Winograd path, beside burn's
    /// step, where some convolution may take it.
    cpu_direct: Option<TrainStepTiming>,
    gflop: f64,
}

/// Training steps of `network` (on an autodiff device) on `batch` patches of `side x side`;
/// burn's too with `with_burn`, and then the CPU engine's without Winograd as well.
fn time_train(
    network: Network,
    batch: usize,
    side: usize,
    repeats: usize,
    with_burn: bool,
) -> Result<TrainTiming> {
    network.check_input([batch, network.in_channels(), side, side])?;
    let gflop = 3.0 * batch as f64 * network.forward_flops([side, side]) as f64 / 1e9;
    let (mut cpu, mut cpu_direct) = (None, None);
    if let Some(net) = TrainNet::for_model(&network) {
        let net = net?;
        if with_burn {
            let mut direct = net.clone();
            if direct.set_winograd(false) > 0 {
                cpu_direct = Some(time_train_step_cpu(&mut direct, batch, side, repeats)?);
            }
        }
        let mut net = net;
        cpu = Some(time_train_step_cpu(&mut net, batch, side, repeats)?);
    }
    let burn = with_burn.then(|| time_train_step(network, batch, side, repeats));
    Ok(TrainTiming {
        burn,
        cpu,
        cpu_direct,
        gflop,
    })
}

/// One whole-mammogram prediction.
struct WholeTiming {
    /// Seconds, all included.
    seconds: f64,
    /// Seconds in forward passes.
    forward: f64,
    /// Patches predicted.
    patches: usize,
    /// Patches in the grid.
    grid: usize,
    engine: &'static str,
}

/// The preprocessed mammogram predicted by `model` with breast skipping and without it (every
/// patch of the grid predicted), and with skipping in bf16 where the default engine is the CPU
/// engine on a CPU with AVX512_BF16.
fn time_whole(
    model: &Model,
    pre: &Preprocessed,
    patch: usize,
    batch: usize,
) -> Result<(WholeTiming, WholeTiming, Option<WholeTiming>)> {
    // Without skipping, every patch of the grid is predicted: the breast is the whole image.
    let everything: Mask = Raster::filled(pre.image.width(), pre.image.height(), true);
    let run = |breast: &Mask, min_breast_fraction: f64, bf16: bool| -> Result<WholeTiming> {
        let cfg = InferConfig {
            patch,
            stride: (patch / 2).max(1),
            batch,
            blend: BlendMode::Gaussian,
            tta: false,
            min_breast_fraction,
            engine: Engine::Auto,
            bf16,
        };
        let start = Instant::now();
        let pred = predict_image(model.network(), &pre.image, breast, &cfg)?;
        Ok(WholeTiming {
            seconds: start.elapsed().as_secs_f64(),
            forward: pred.forward_s,
            patches: pred.patches,
            grid: pred.grid_patches,
            engine: pred.engine.name(),
        })
    };
    let on = run(&pre.breast, 0.05, false)?;
    let off = run(&everything, 0.0, false)?;
    let bf16 = (on.engine == Engine::Cpu.name() && bacseg_nn::engine::cpu::bf16::available())
        .then(|| run(&pre.breast, 0.05, true))
        .transpose()?;
    Ok((on, off, bf16))
}

/// PyTorch eager (and ONNX Runtime) through the repository's Python tools.
struct Torch<'a> {
    python: &'a Path,
    tools: &'a Path,
}

impl Torch<'_> {
    fn running(&self, e: std::io::Error) -> Error {
        // A Python that does not exist is the user's path; anything else failed to run.
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => ErrorKind::Input,
            _ => ErrorKind::Runtime,
        };
        Error::with_source(kind, format!("running {}", self.python.display()), e)
    }

    fn call(&self, args: &[&str]) -> Result<String> {
        let script = self.tools.join("torch_reference.py");
        if !script.is_file() {
            return Err(Error::input(format!(
                "{}: not found (the tools directory must be the repository's tools/)",
                script.display()
            )));
        }
        let out = Command::new(self.python)
            .arg(&script)
            .args(args)
            .output()
            .map_err(|e| self.running(e))?;
        if !out.status.success() {
            return Err(Error::runtime(format!(
                "{} {} {}: {}",
                self.python.display(),
                script.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Median seconds of the reference DT-UNet forward (1x1x512x512) and, with `train`, its
    /// training step.
    fn bench(&self, repeats: usize, train: bool) -> Result<(f64, Option<f64>)> {
        let repeats = repeats.to_string();
        let mut args = vec!["bench", "--repeats", &repeats];
        if !train {
            args.push("--no-train");
        }
        let text = self.call(&args)?;
        let seconds_after = |marker: &str| -> Option<f64> {
            let line = text.lines().find(|l| l.contains(marker))?;
            let rest = &line[line.find("median ")? + "median ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        };
        let forward = seconds_after("forward").ok_or_else(|| {
            Error::runtime(format!("no forward time in the PyTorch output:\n{text}"))
        })?;
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
            .map_err(|e| self.running(e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(Error::runtime(format!(
                "{}: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        text.split("median ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| Error::runtime(format!("no time in the ONNX Runtime output:\n{text}")))
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
            .ok_or_else(|| {
                Error::runtime(format!("no forward time in the PyTorch output:\n{text}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_of_peak_is_capped_and_left_out_above_noise() {
        let m = |seconds: f64| Measurement {
            what: "x".into(),
            engine: "cpu".into(),
            seconds,
            gflop: Some(100.0),
            note: String::new(),
            bf16: false,
        };
        // 100 GFLOP in 1 s against a 200 GFLOP/s peak: half.
        assert_eq!(m(1.0).share_of_peak(200.0), Some(50.0));
        // 204 GFLOP/s: noise, reported as the peak.
        assert_eq!(m(100.0 / 204.0).share_of_peak(200.0), Some(100.0));
        // 300 GFLOP/s of direct-equivalent work (Winograd): no share.
        assert_eq!(m(100.0 / 300.0).share_of_peak(200.0), None);
        assert_eq!(m(1.0).share_of_peak(0.0), None);
    }

    #[test]
    fn options_are_checked_before_anything_runs() {
        let defaults = BenchOptions::default();
        assert!(defaults.validate().is_ok());
        assert_eq!(defaults.models.len(), 5);
        for bad in [
            BenchOptions {
                batches: vec![4, 0],
                ..BenchOptions::default()
            },
            BenchOptions {
                batches: Vec::new(),
                ..BenchOptions::default()
            },
            BenchOptions {
                repeats: 0,
                ..BenchOptions::default()
            },
            BenchOptions {
                width: Some(4),
                torch_python: Some("python3".into()),
                ..BenchOptions::default()
            },
        ] {
            let mut events = 0;
            let e = run_bench(&bad, &mut |_: BenchEvent| events += 1)
                .err()
                .map(|e| e.kind());
            assert_eq!(e, Some(ErrorKind::Config));
            assert_eq!(events, 0);
        }
    }
}
