//! `bacseg predict`: a trained model over whole mammograms (files, directories or a manifest),
//! one image at a time with patches streaming through the model and the blender, writing a
//! mask, a probability map, an overlay and a JSON record per image and `summary.csv`.
//! Schema: docs/cli.md#predict.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use bacseg_core::io::{self, write_atomic, write_mask_png, write_png_rgb8, write_unit_png16};
use bacseg_core::mammogram::{Mammogram, PixelSpacing, SpacingSource};
use bacseg_core::overlay;
use bacseg_core::postprocess::{MinComponentArea, Postprocess};
use bacseg_core::preprocess::{
    Preprocess, Preprocessed, median_filter, preprocess, preprocess_denoised,
};
use bacseg_core::quantify::{BacBurden, Grading, measure};
use bacseg_core::raster::{ProbMap, Raster};
use bacseg_core::resample::resize;
use bacseg_core::stitch::BlendMode;
use bacseg_nn::engine::{
    Engine, InferConfig, PUBLISHED_SCUNET_STRIDE, PUBLISHED_SCUNET_TILE, Prediction, Runner,
    predict_image_with, predict_published_scunet,
};
use bacseg_nn::networks::{ModelSpec, Network};
use bacseg_nn::train::RunDir;
use bacseg_nn::{
    Architecture, Device, OutputActivation, Precision, ScuNetConfig, SegmentationModel,
    load_pytorch_safetensors, load_scunet_checkpoint,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cmd::preprocess::PreprocessArgs;
use crate::exit::InputError;

/// The network of a command: `--model` and, for a bare weights file, its architecture and
/// shape (shared by `predict` and `export`).
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// A training run directory (config.json + best.safetensors), a .safetensors weights
    /// file (PyTorch tensor names) of the --arch reference configuration, or a published
    /// SCU-Net checkpoint as `scunet:PATH.pt` (`scunet:` alone: the one that
    /// `bacseg weights fetch scunet` cached).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture of a bare weights file: dt-unet, unet, segnet, contextnet or scunet.
    #[arg(long, default_value = "dt-unet")]
    pub arch: String,
    /// Width and depth of a bare weights file's network, when not the reference.
    #[arg(long)]
    pub width: Option<usize>,
    #[arg(long)]
    pub depth: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    net: ModelArgs,
    /// Run a published inference pipeline instead of bacseg's: `scunet` (8-bit grey input,
    /// 5x5 median, 512 tiles at stride 480, the published tile-skip rule, maximum merge,
    /// threshold 0.65). Patch, blending and resampling options do not apply.
    #[arg(long, value_parser = ["scunet"], conflicts_with_all = ["patch", "stride", "overlap", "blend", "tta", "scale", "min_breast_fraction"])]
    preset: Option<String>,
    /// What runs the forward passes: `cpu` (bacseg's CPU engine: DT-UNet and UNet), `burn`
    /// (any architecture, on burn's device: the GPU in a wgpu or cuda build), `ort` (ONNX
    /// Runtime on the exported model, any architecture: a build with `--features ort` and an
    /// installed libonnxruntime, found through ORT_DYLIB_PATH), or `auto` (cpu where it applies
    /// on a CPU build, else burn).
    #[arg(long, value_parser = ["auto", "burn", "cpu", "ort"], default_value = "auto")]
    engine: String,
    /// Precision of a published SCU-Net checkpoint's computation: f32 or f64.
    #[arg(long, value_parser = ["f32", "f64"], default_value = "f32")]
    precision: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Mammograms (DICOM, PNG, TIFF) and directories of them.
    inputs: Vec<PathBuf>,
    /// A CSV file whose first column lists input paths (header optional; relative paths are
    /// relative to the CSV's directory).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Patch side (default: the run's).
    #[arg(long)]
    patch: Option<usize>,
    /// Distance between patch origins (default: the run's, or half a patch).
    #[arg(long, conflicts_with = "overlap")]
    stride: Option<usize>,
    /// Overlap between neighbouring patches as a fraction of the patch (e.g. 0.5).
    #[arg(long)]
    overlap: Option<f64>,
    /// Patches per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// How overlapping patch predictions are combined: gaussian, mean, max or crop
    /// (default gaussian).
    #[arg(long)]
    blend: Option<String>,
    /// Test-time augmentation: also predict the mirrored patches and average.
    #[arg(long)]
    tta: bool,
    /// Probability above which a pixel is BAC (default 0.5; 0.65 with --preset scunet).
    #[arg(long)]
    threshold: Option<f32>,
    /// Remove BAC components smaller than this many mm^2 (when the pixel spacing is known).
    #[arg(long, default_value_t = 0.0)]
    min_area_mm2: f64,
    /// Remove BAC components smaller than this many pixels (when the spacing is unknown).
    #[arg(long, default_value_t = 0)]
    min_area_px: usize,
    /// Patches with less breast than this fraction are not predicted.
    #[arg(long)]
    min_breast_fraction: Option<f64>,
    /// Pixel spacing in mm for images that do not record one (PNG, TIFF, some DICOM), so that
    /// areas and lengths are reported in mm.
    #[arg(long)]
    spacing: Option<f64>,
    /// Resample each image by this factor before preprocessing and inference (e.g. 0.35 to
    /// run a model trained at 0.2 mm pixels on 0.07 mm mammograms); outputs stay at the
    /// input's size.
    #[arg(long)]
    scale: Option<f64>,
    /// Longest side of the overlay PNG.
    #[arg(long, default_value_t = 1024)]
    overlay_size: usize,
    /// This worker's share of the inputs (default: $JOB_COMPLETION_INDEX or
    /// $SLURM_ARRAY_TASK_ID, else 0).
    #[arg(long)]
    shard_index: Option<usize>,
    /// Number of workers sharing the inputs (default: $BACSEG_SHARD_COUNT or
    /// $SLURM_ARRAY_TASK_COUNT, else 1).
    #[arg(long)]
    shard_count: Option<usize>,
    /// Predict images whose outputs already exist again.
    #[arg(long)]
    overwrite: bool,
    /// Use these preprocessing options instead of the training run's.
    #[arg(long)]
    override_preprocess: bool,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// What a model file resolved to.
pub(crate) struct Loaded {
    pub(crate) spec: ModelSpec,
    pub(crate) weights: PathBuf,
    /// A published SCU-Net `.pt` checkpoint rather than safetensors.
    pub(crate) scunet_checkpoint: bool,
    preprocess: Option<Preprocess>,
    patch: Option<(usize, usize)>,
    min_breast_fraction: Option<f64>,
}

impl ModelArgs {
    /// The network of `--model`: a training run directory (its best weights), a bare
    /// `.safetensors` file of architecture `--arch` (reference shape unless `--width`/`--depth`),
    /// or a published SCU-Net checkpoint (`scunet:PATH`, `scunet:`, or a `.pt` file with `--arch
    /// scunet`).
    pub(crate) fn resolve(&self) -> Result<Loaded> {
        resolve_model(&self.model, &self.arch, self.width, self.depth)
    }
}

fn resolve_model(
    m: &Path,
    arch: &str,
    width: Option<usize>,
    depth: Option<usize>,
) -> Result<Loaded> {
    let text = m.to_string_lossy();
    if let Some(path) = text.strip_prefix("scunet:") {
        if path.is_empty() {
            // The published reference checkpoint, from the weights cache.
            let cache = crate::cmd::weights::cache_dir(None)?;
            let weights = crate::cmd::weights::published("scunet")
                .ok_or_else(|| anyhow::anyhow!("no published scunet weights entry"))?;
            return scunet_checkpoint(&crate::cmd::weights::cached_path(&cache, weights));
        }
        return scunet_checkpoint(Path::new(path));
    }
    let is_pt = m
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pt") || e.eq_ignore_ascii_case("pth"));
    if is_pt {
        if arch != "scunet" {
            return Err(InputError(format!(
                "{}: PyTorch .pt checkpoints are read for the published SCU-Net only (use \
                 --model scunet:{0} or --arch scunet); other networks take .safetensors",
                m.display()
            ))
            .into());
        }
        return scunet_checkpoint(m);
    }
    if m.is_dir() {
        let run = RunDir::new(m);
        let config = run
            .read_config()
            .map_err(|e| InputError(format!("--model: {e}")))?;
        let weights = run.best_weights();
        if !weights.is_file() {
            return Err(InputError(format!(
                "{}: no best.safetensors (has the run finished an epoch?)",
                m.display()
            ))
            .into());
        }
        return Ok(Loaded {
            spec: config.model,
            weights,
            scunet_checkpoint: false,
            preprocess: Some(config.patches.preprocess),
            patch: Some((config.patches.patch, config.patches.stride)),
            min_breast_fraction: Some(config.patches.min_breast_fraction),
        });
    }
    if !m.is_file() {
        return Err(InputError(format!(
            "{}: no such run directory or weights file",
            m.display()
        ))
        .into());
    }
    let arch = Architecture::from_name(arch).ok_or_else(|| {
        InputError(format!(
            "unknown --arch {arch:?} (known: dt-unet, unet, segnet, contextnet, scunet)"
        ))
    })?;
    let spec = ModelSpec::reference(arch)
        .with_overrides(width, depth)
        .map_err(|e| InputError(e.to_string()))?;
    Ok(Loaded {
        spec,
        weights: m.to_path_buf(),
        scunet_checkpoint: false,
        preprocess: None,
        patch: None,
        min_breast_fraction: None,
    })
}

fn scunet_checkpoint(path: &Path) -> Result<Loaded> {
    if !path.is_file() {
        return Err(InputError(format!(
            "{}: no such SCU-Net checkpoint (`bacseg weights fetch scunet` downloads the \
             published one)",
            path.display()
        ))
        .into());
    }
    let config = ScuNetConfig::new().with_output(OutputActivation::Clamp);
    Ok(Loaded {
        spec: ModelSpec {
            architecture: Architecture::ScuNet.name().into(),
            config: serde_json::to_value(&config)?,
        },
        weights: path.to_path_buf(),
        scunet_checkpoint: true,
        preprocess: None,
        patch: None,
        min_breast_fraction: None,
    })
}

fn is_image_name(p: &Path) -> bool {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) => matches!(e.as_str(), "dcm" | "dicom" | "png" | "tif" | "tiff"),
        // PACS exports often have no extension: such a file is taken when its content starts
        // like DICOM, PNG or TIFF (so a LICENSE or README beside the images is not).
        None => looks_like_image(p),
    }
}

fn looks_like_image(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    let Ok(mut file) = std::fs::File::open(p) else {
        return false;
    };
    let n = file.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    head.starts_with(b"\x89PNG")
        || head.starts_with(b"II*\0")
        || head.starts_with(b"MM\0*")
        || head.get(128..132) == Some(b"DICM")
}

fn collect_inputs(args: &Args) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in &args.inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> =
                walk(p)?.into_iter().filter(|f| is_image_name(f)).collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    if let Some(csv) = &args.manifest {
        let text = std::fs::read_to_string(csv)
            .map_err(|e| InputError(format!("{}: {e}", csv.display())))?;
        let base = csv.parent().unwrap_or(Path::new("."));
        for (i, line) in text.lines().enumerate() {
            let first = line
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if first.is_empty()
                || (i == 0 && !Path::new(first).exists() && !base.join(first).exists())
            {
                continue; // blank line or header
            }
            let p = PathBuf::from(first);
            out.push(if p.is_absolute() { p } else { base.join(p) });
        }
    }
    if out.is_empty() {
        return Err(
            InputError("no input images (give files, directories or --manifest)".into()).into(),
        );
    }
    Ok(out)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| InputError(format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            files.extend(walk(&p)?);
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            files.push(p);
        }
    }
    Ok(files)
}

fn env_usize(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().and_then(|v| v.trim().parse().ok()))
}

/// Stable assignment of an input to a shard: SHA-256 of its path, modulo the shard count.
fn shard_of(path: &Path, count: usize) -> usize {
    let digest = Sha256::digest(path.to_string_lossy().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(first) % count as u64) as usize
}

/// Output stem of an input: its file stem, made unique by a numbered suffix when two inputs
/// share one.
fn stems(inputs: &[PathBuf]) -> Vec<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    inputs
        .iter()
        .map(|p| {
            let base = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            let k = seen.entry(base.clone()).or_insert(0);
            *k += 1;
            if *k == 1 { base } else { format!("{base}-{k}") }
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct Record<'a> {
    format: &'static str,
    stem: &'a str,
    width: usize,
    height: usize,
    spacing: Option<PixelSpacing>,
    laterality: Option<String>,
    view: Option<String>,
    burden: &'a BacBurden,
    model: ModelRecord<'a>,
    settings: &'a Settings,
    timings: Timings,
}

#[derive(Debug, Serialize)]
struct ModelRecord<'a> {
    architecture: &'a str,
    config: &'a serde_json::Value,
    weights: String,
    backend: String,
    bacseg_version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct Settings {
    /// The published pipeline run instead of bacseg's (`scunet`), if any.
    preset: Option<String>,
    /// Precision of the computation.
    precision: Precision,
    /// Resampling factor applied before preprocessing.
    scale: f64,
    preprocess: Preprocess,
    infer: InferConfig,
    postprocess: Postprocess,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Timings {
    load_s: f64,
    preprocess_s: f64,
    forward_s: f64,
    blend_s: f64,
    postprocess_s: f64,
    write_s: f64,
    total_s: f64,
    patches: usize,
    grid_patches: usize,
    /// The engine that ran the forward passes.
    engine: &'static str,
}

impl Timings {
    /// Forward and blending times and patch counts of a whole-image prediction.
    fn add_prediction(&mut self, pred: &Prediction) {
        self.forward_s = pred.forward_s;
        self.blend_s = pred.blend_s;
        self.patches = pred.patches;
        self.grid_patches = pred.grid_patches;
        self.engine = pred.engine.name();
    }
}

pub fn run(args: Args) -> Result<()> {
    let loaded = args.net.resolve()?;
    let preset = args.preset.is_some();
    if preset && loaded.spec.architecture != Architecture::ScuNet.name() {
        return Err(InputError(format!(
            "--preset scunet runs the published SCU-Net pipeline; {} is a {} model",
            args.net.model.display(),
            loaded.spec.architecture
        ))
        .into());
    }
    let precision = if args.precision == "f64" {
        Precision::F64
    } else {
        Precision::F32
    };
    if precision == Precision::F64 && !loaded.scunet_checkpoint {
        return Err(InputError(
            "--precision f64 applies to published SCU-Net checkpoints only".into(),
        )
        .into());
    }
    let engine: Engine = args.engine.parse().map_err(InputError)?;
    if engine == Engine::Cpu
        && (loaded.scunet_checkpoint || !loaded.spec.kind().is_ok_and(|a| a.has_cpu_engine()))
    {
        return Err(InputError(format!(
            "--engine cpu runs dt-unet and unet models; {} is a {} model (use --engine burn \
             or ort)",
            args.net.model.display(),
            loaded.spec.architecture
        ))
        .into());
    }
    if engine == Engine::Ort && (preset || precision == Precision::F64) {
        return Err(InputError(
            "--engine ort runs bacseg's pipeline in f32: not with --preset or --precision f64"
                .into(),
        )
        .into());
    }
    let (run_patch, run_stride) = if preset {
        (PUBLISHED_SCUNET_TILE, PUBLISHED_SCUNET_STRIDE)
    } else {
        loaded.patch.unwrap_or((512, 256))
    };
    let patch = args.patch.unwrap_or(run_patch);
    let stride = match (args.stride, args.overlap) {
        (Some(s), _) => s,
        (None, Some(o)) => {
            if !(0.0..1.0).contains(&o) {
                return Err(InputError(format!("--overlap must be in [0, 1), got {o}")).into());
            }
            ((patch as f64 * (1.0 - o)).round() as usize).max(1)
        }
        (None, None) if args.patch.is_some() => (patch / 2).max(1),
        (None, None) => run_stride,
    };
    let blend_name = args
        .blend
        .as_deref()
        .unwrap_or(if preset { "max" } else { "gaussian" });
    let blend = BlendMode::ALL
        .into_iter()
        .find(|b| b.as_str() == blend_name)
        .ok_or_else(|| {
            InputError(format!(
                "unknown --blend {blend_name:?} (known: gaussian, mean, max, crop)"
            ))
        })?;
    let preprocess = match (&loaded.preprocess, args.override_preprocess) {
        (Some(p), false) => p.clone(),
        _ => args.preprocess.to_config()?,
    };
    let postprocess = Postprocess {
        threshold: args.threshold.unwrap_or(if preset { 0.65 } else { 0.5 }),
        min_area: MinComponentArea {
            mm2: args.min_area_mm2,
            px: args.min_area_px,
        },
    };
    postprocess
        .validate()
        .map_err(|e| InputError(e.to_string()))?;
    if let Some(mm) = args.spacing
        && !(mm > 0.0 && mm < 5.0)
    {
        return Err(InputError(format!("--spacing must be in (0, 5) mm, got {mm}")).into());
    }
    let scale = args.scale.unwrap_or(1.0);
    if !(scale > 0.0 && scale <= 4.0) {
        return Err(InputError(format!("--scale must be in (0, 4], got {scale}")).into());
    }
    let settings = Settings {
        preset: args.preset.clone(),
        precision,
        scale,
        preprocess,
        infer: InferConfig {
            patch,
            stride,
            batch: args.batch,
            blend,
            tta: args.tta,
            min_breast_fraction: args
                .min_breast_fraction
                .or(loaded.min_breast_fraction)
                .unwrap_or(0.05),
            engine,
        },
        postprocess,
    };
    if settings.infer.batch == 0 || stride == 0 || stride > patch {
        return Err(InputError(format!(
            "need --batch >= 1 and 0 < stride ({stride}) <= patch ({patch})"
        ))
        .into());
    }

    let count = args
        .shard_count
        .or_else(|| env_usize(&["BACSEG_SHARD_COUNT", "SLURM_ARRAY_TASK_COUNT"]))
        .unwrap_or(1);
    let index = args
        .shard_index
        .or_else(|| env_usize(&["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"]))
        .unwrap_or(0);
    if count == 0 || index >= count {
        return Err(InputError(format!(
            "shard index {index} must be below shard count {count}"
        ))
        .into());
    }
    let all = collect_inputs(&args)?;
    let all_stems = stems(&all);
    let mine: Vec<(PathBuf, String)> = all
        .into_iter()
        .zip(all_stems)
        .filter(|(p, _)| count == 1 || shard_of(p, count) == index)
        .collect();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let device = Device::default();
    let job = Job {
        images: &mine,
        settings: &settings,
        out: &args.out,
        overwrite: args.overwrite,
        overlay_size: args.overlay_size,
        spec: &loaded.spec,
        weights: &loaded.weights,
        shard: (index, count),
        spacing: args.spacing,
    };
    if loaded.scunet_checkpoint {
        let model = load_scunet_checkpoint(&loaded.weights, precision, &device)
            .map_err(|e| InputError(e.to_string()))?;
        return job.process(model);
    }
    loaded
        .spec
        .build(&device)
        .map(|model| job.visit(model))
        .map_err(|e| InputError(e.to_string()))?
}

struct Job<'a> {
    images: &'a [(PathBuf, String)],
    settings: &'a Settings,
    out: &'a Path,
    overwrite: bool,
    overlay_size: usize,
    spec: &'a ModelSpec,
    weights: &'a Path,
    shard: (usize, usize),
    spacing: Option<f64>,
}

/// One row of summary.csv.
struct Row {
    stem: String,
    input: String,
    status: &'static str,
    message: String,
    burden: Option<BacBurden>,
    seconds: f64,
}

impl Job<'_> {
    fn visit(self, model: Network) -> Result<()> {
        let model =
            load_pytorch_safetensors(model, self.weights).map_err(|e| InputError(e.to_string()))?;
        self.process(model)
    }
}

impl Job<'_> {
    fn process<M: SegmentationModel>(self, model: M) -> Result<()> {
        let model = model.valid();
        // The engine is set up once for all images (compiled network, ONNX Runtime session),
        // and before the first image, so that an engine that cannot run fails up front.
        let mut runner = match self.settings.preset {
            Some(_) => None,
            None => Some(
                Runner::new(&model, self.settings.infer.engine)
                    .map_err(|e| InputError(e.to_string()))?,
            ),
        };
        let total = self.images.len();
        let (si, sc) = self.shard;
        eprintln!(
            "bacseg: {} image(s){}, {}{} {}x{} patches at stride {}, {} blending",
            total,
            if sc > 1 {
                format!(" (shard {si} of {sc})")
            } else {
                String::new()
            },
            self.spec.architecture,
            if self.settings.preset.is_some() {
                " (published pipeline)"
            } else {
                ""
            },
            self.settings.infer.patch,
            self.settings.infer.patch,
            self.settings.infer.stride,
            self.settings.infer.blend.as_str()
        );
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "predict [{bar:30}] {pos}/{len} {msg} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        let mut rows = Vec::with_capacity(total);
        for (i, (input, stem)) in self.images.iter().enumerate() {
            let json = self.out.join(format!("{stem}.bac.json"));
            let row = if json.is_file() && !self.overwrite {
                Row {
                    stem: stem.clone(),
                    input: input.display().to_string(),
                    status: "skipped",
                    message: "outputs exist (use --overwrite)".into(),
                    burden: std::fs::read_to_string(&json)
                        .ok()
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                        .and_then(|v| serde_json::from_value(v["burden"].clone()).ok()),
                    seconds: 0.0,
                }
            } else {
                let t0 = Instant::now();
                match self.one(&model, runner.as_mut(), input, stem) {
                    Ok(burden) => Row {
                        stem: stem.clone(),
                        input: input.display().to_string(),
                        status: "ok",
                        message: String::new(),
                        burden: Some(burden),
                        seconds: t0.elapsed().as_secs_f64(),
                    },
                    Err(e) => {
                        let msg = format!("{e:#}");
                        match &bar {
                            Some(b) => b.println(format!("bacseg: {}: {msg}", input.display())),
                            None => eprintln!("bacseg: {}: {msg}", input.display()),
                        }
                        Row {
                            stem: stem.clone(),
                            input: input.display().to_string(),
                            status: "failed",
                            message: msg,
                            burden: None,
                            seconds: t0.elapsed().as_secs_f64(),
                        }
                    }
                }
            };
            match &bar {
                Some(b) => {
                    b.set_position(i as u64 + 1);
                    b.set_message(stem.clone());
                }
                None => eprintln!(
                    "bacseg: {}/{total} {stem}: {} ({:.1} s)",
                    i + 1,
                    row.status,
                    row.seconds
                ),
            }
            rows.push(row);
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let summary = self.out.join(if sc > 1 {
            format!("summary-{si}-of-{sc}.csv")
        } else {
            "summary.csv".into()
        });
        write_summary(&summary, &rows)?;
        let failed = rows.iter().filter(|r| r.status == "failed").count();
        let done = rows.iter().filter(|r| r.status == "ok").count();
        let skipped = rows.len() - failed - done;
        println!(
            "{done} predicted, {skipped} skipped, {failed} failed; summary: {}",
            summary.display()
        );
        if failed > 0 {
            anyhow::bail!(
                "{failed} of {} image(s) failed (see {})",
                rows.len(),
                summary.display()
            );
        }
        Ok(())
    }
}

impl Job<'_> {
    fn one<M: SegmentationModel>(
        &self,
        model: &M,
        runner: Option<&mut Runner<'_, M>>,
        input: &Path,
        stem: &str,
    ) -> Result<BacBurden> {
        let mut t = Timings::default();
        let start = Instant::now();
        let mut m = io::load(input)?;
        if m.spacing.is_none()
            && let Some(mm) = self.spacing
        {
            m.spacing = Some(PixelSpacing {
                row_mm: mm,
                col_mm: mm,
                source: SpacingSource::User,
            });
        }
        t.load_s = start.elapsed().as_secs_f64();
        self.settings
            .preprocess
            .validate()
            .map_err(|e| InputError(e.to_string()))?;
        let (prob, pre) = match runner {
            Some(runner) => self.bacseg_pipeline(model, runner, &m, &mut t)?,
            None => self.published_scunet(model, &m, &mut t)?,
        };
        let s = Instant::now();
        let mask = self.settings.postprocess.apply(&prob, m.spacing);
        let burden = measure(
            &mask,
            Some(&prob),
            m.spacing,
            Some(&pre.breast),
            &Grading::default(),
        );
        t.postprocess_s = s.elapsed().as_secs_f64();
        let s = Instant::now();
        let path = |kind: &str| self.out.join(format!("{stem}.{kind}"));
        write_mask_png(&path("mask.png"), &mask)?;
        write_unit_png16(&path("prob.png"), &prob)?;
        let ov = overlay::render(
            &pre.image,
            Some(&pre.breast),
            Some(&mask),
            self.overlay_size,
        );
        write_png_rgb8(&path("overlay.png"), ov.width, ov.height, &ov.data)?;
        t.write_s = s.elapsed().as_secs_f64();
        t.total_s = start.elapsed().as_secs_f64();
        let record = Record {
            format: "bacseg-prediction/1",
            stem,
            width: m.width(),
            height: m.height(),
            spacing: m.spacing,
            laterality: m.laterality.map(|l| format!("{l:?}")),
            view: m.view.clone().map(String::from),
            burden: &burden,
            model: ModelRecord {
                architecture: &self.spec.architecture,
                config: &self.spec.config,
                weights: self.weights.display().to_string(),
                backend: format!("{:?}", Device::default()),
                bacseg_version: env!("CARGO_PKG_VERSION"),
            },
            settings: self.settings,
            timings: t,
        };
        // Written last: its presence marks the image as done.
        write_atomic(&path("bac.json"), |w| {
            serde_json::to_writer_pretty(&mut *w, &record).map_err(|e| e.to_string())
        })?;
        Ok(burden)
    }

    /// bacseg's pipeline: optional resampling, preprocessing, in-breast patches, blending; the
    /// probability map and the preprocessed image, both at the input's size.
    fn bacseg_pipeline<M: SegmentationModel>(
        &self,
        model: &M,
        runner: &mut Runner<'_, M>,
        m: &Mammogram,
        t: &mut Timings,
    ) -> Result<(ProbMap, Preprocessed)> {
        let s = Instant::now();
        let (w, h) = (m.width(), m.height());
        let f = self.settings.scale;
        let scaled;
        let work = if f == 1.0 {
            m
        } else {
            let (sw, sh) = (
                ((w as f64 * f).round() as usize).max(1),
                ((h as f64 * f).round() as usize).max(1),
            );
            scaled = Mammogram {
                pixels: resize(&m.pixels, sw, sh),
                spacing: m.spacing.map(|p| PixelSpacing {
                    row_mm: p.row_mm * h as f64 / sh as f64,
                    col_mm: p.col_mm * w as f64 / sw as f64,
                    ..p
                }),
                laterality: m.laterality,
                view: m.view.clone(),
                bits_stored: m.bits_stored,
                value_range: m.value_range,
                notes: Vec::new(),
            };
            &scaled
        };
        let mut pre = preprocess(work, &self.settings.preprocess);
        t.preprocess_s = s.elapsed().as_secs_f64();
        let mut pred =
            predict_image_with(model, runner, &pre.image, &pre.breast, &self.settings.infer)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        t.add_prediction(&pred);
        if f != 1.0 {
            // Back to the input's pixel grid: outputs and measures are at full resolution.
            pred.prob = resize(&pred.prob, w, h).map(|p| p.clamp(0.0, 1.0));
            pre.breast =
                resize(&pre.breast.map(|&b| f32::from(u8::from(b))), w, h).map(|&v| v >= 0.5);
            pre.image = resize(&pre.image, w, h);
        }
        Ok((pred.prob, pre))
    }

    /// The published SCU-Net pipeline ([`predict_published_scunet`]) on the image's 8-bit grey
    /// values after a 5x5 median; the breast mask and the display image (for the overlay and
    /// the burden's breast fraction) come from that same median-filtered image.
    fn published_scunet<M: SegmentationModel>(
        &self,
        model: &M,
        m: &Mammogram,
        t: &mut Timings,
    ) -> Result<(ProbMap, Preprocessed)> {
        let s = Instant::now();
        let grey = median_filter(&grey8(m), 2);
        let pre = preprocess_denoised(&grey, &self.settings.preprocess);
        t.preprocess_s = s.elapsed().as_secs_f64();
        let pred = predict_published_scunet(model, &grey, self.settings.infer.batch)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        t.add_prediction(&pred);
        Ok((pred.prob, pre))
    }
}

/// 8-bit grey values (0-255) of a mammogram, as the published SCU-Net pipeline reads its PNGs:
/// 8-bit sources unchanged; deeper ones mapped linearly from their value range to 0-255 and
/// rounded (OpenCV, which the published code reads with, divides 16-bit PNG values by 256: within
/// one grey level of this).
fn grey8(m: &Mammogram) -> Raster<f32> {
    let (lo, hi) = m.value_range;
    if m.bits_stored <= 8 && lo == 0.0 && hi == 255.0 {
        return m.pixels.map(|v| v.round().clamp(0.0, 255.0));
    }
    let span = (hi - lo).max(f32::MIN_POSITIVE);
    m.pixels
        .map(|v| ((v - lo) / span * 255.0).round().clamp(0.0, 255.0))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_summary(path: &Path, rows: &[Row]) -> Result<()> {
    let mut s = String::from(
        "stem,input,status,area_px,area_mm2,length_mm,segments,grade,prob_sum,seconds,message\n",
    );
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for r in rows {
        let b = r.burden.as_ref();
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{:.2},{}\n",
            csv_field(&r.stem),
            csv_field(&r.input),
            r.status,
            b.map_or(String::new(), |b| b.area_px.to_string()),
            num(b.and_then(|b| b.area_mm2)),
            num(b.and_then(|b| b.length_mm)),
            b.map_or(String::new(), |b| b.segments.to_string()),
            b.and_then(|b| b.grade).map_or("", |g| g.as_str()),
            num(b.and_then(|b| b.prob.map(|p| p.sum))),
            r.seconds,
            csv_field(&r.message)
        ));
    }
    write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(s.as_bytes()).map_err(|e| e.to_string())
    })?;
    Ok(())
}
