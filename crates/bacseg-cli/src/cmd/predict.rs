//! `bacseg predict`: flags to a [`bacseg::Predictor`] and [`bacseg::batch::predict_files`],
//! with a progress bar. Schema of the outputs: docs/cli.md#predict.

use std::path::PathBuf;

use anyhow::Result;
use bacseg::batch::{BatchOptions, Shard, Status};
use bacseg::{Error, Model, ModelSource, Pipeline, PredictConfig, Predictor};
use bacseg_core::postprocess::MinComponentArea;
use bacseg_core::stitch::BlendMode;
use bacseg_nn::Precision;
use bacseg_nn::engine::Engine;

use crate::cmd::preprocess::PreprocessArgs;
use crate::progress::PredictProgress;

/// The network of a command: `--model` and, for a bare weights file, its architecture and
/// shape (shared by `predict`, `export` and `compare`).
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

impl ModelArgs {
    /// Where `--model` points (f32).
    pub fn source(&self) -> bacseg::Result<ModelSource> {
        self.source_in(Precision::F32)
    }

    pub fn source_in(&self, precision: Precision) -> bacseg::Result<ModelSource> {
        ModelSource::parse(&self.model, &self.arch, self.width, self.depth, precision)
    }
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
    /// What runs the forward passes: `cpu` (bacseg's CPU engine: every architecture, f32
    /// weights), `burn`
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
    /// Mammograms (DICOM, PNG, TIFF, JPEG) and directories of them.
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
    /// Reduced precision, chosen knowingly: the CPU engine's convolutions in bf16 with f32
    /// accumulation (CPUs with AVX512_BF16 only; see docs/cli.md for the speed and the masks'
    /// agreement with f32).
    #[arg(long)]
    bf16: bool,
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
    /// Pixel spacing in mm for images that do not record one (PNG, TIFF, JPEG, some DICOM), so
    /// that areas and lengths are reported in mm.
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
    /// This worker's share of the inputs, 0-based (default: from $BACSEG_SHARD_INDEX, a Slurm
    /// array task or a Kubernetes indexed job; see docs/cli.md#predict).
    #[arg(long, requires = "shard_count")]
    shard_index: Option<usize>,
    /// Number of workers sharing the inputs.
    #[arg(long, requires = "shard_index")]
    shard_count: Option<usize>,
    /// Predict images whose outputs already exist again (outputs made from another file or
    /// with another model or settings are predicted again anyway).
    #[arg(long)]
    overwrite: bool,
    /// Name inputs in every output (summary.csv, bac.json, messages) by a keyed hash of their
    /// path instead of the path, for archives whose paths carry patient identifiers. The key:
    /// $BACSEG_ANONYMIZE_KEY, else one made and kept in OUT/.bacseg-anonymize-key.
    #[arg(long)]
    anonymize_paths: bool,
    /// Decode each image only when its turn comes, instead of while the image before it is
    /// predicted (saves one decoded image's memory; see docs/cli.md#predict).
    #[arg(long)]
    no_decode_ahead: bool,
    /// Use these preprocessing options instead of the training run's.
    #[arg(long)]
    override_preprocess: bool,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// The flags' own values, checked before anything is loaded.
fn parsed_flags(args: &Args) -> bacseg::Result<(Engine, Option<BlendMode>)> {
    let engine = args.engine.parse::<Engine>().map_err(bad)?;
    if let Some(o) = args.overlap
        && !(0.0..1.0).contains(&o)
    {
        return Err(bad(format!("--overlap must be in [0, 1), got {o}")));
    }
    let blend = match &args.blend {
        Some(name) => Some(
            BlendMode::ALL
                .into_iter()
                .find(|b| b.as_str() == name)
                .ok_or_else(|| {
                    bad(format!(
                        "unknown --blend {name:?} (known: gaussian, mean, max, crop)"
                    ))
                })?,
        ),
        None => None,
    };
    Ok((engine, blend))
}

/// The pipeline settings the flags ask for, on top of the model's defaults.
fn config(args: &Args, model: &Model) -> bacseg::Result<PredictConfig> {
    let (engine, blend) = parsed_flags(args)?;
    let preset = args.preset.is_some();
    let mut c = if preset {
        PredictConfig::published_scunet()
    } else {
        PredictConfig::for_model(model)
    };
    c.infer.engine = engine;
    c.infer.batch = args.batch;
    if !preset {
        if let Some(p) = args.patch {
            c.infer.patch = p;
            c.infer.stride = (p / 2).max(1);
        }
        match (args.stride, args.overlap) {
            (Some(s), _) => c.infer.stride = s,
            (None, Some(o)) => {
                c.infer.stride = ((c.infer.patch as f64 * (1.0 - o)).round() as usize).max(1)
            }
            (None, None) => {}
        }
        if let Some(b) = blend {
            c.infer.blend = b;
        }
        c.infer.tta = args.tta;
        if let Some(f) = args.min_breast_fraction {
            c.infer.min_breast_fraction = f;
        }
        c.scale = args.scale.unwrap_or(1.0);
    }
    if model.run_defaults().is_none() || args.override_preprocess || preset {
        c.preprocess = args.preprocess.to_config()?;
    }
    c.infer.bf16 = args.bf16;
    if let Some(t) = args.threshold {
        c.postprocess.threshold = t;
    }
    c.postprocess.min_area = MinComponentArea {
        mm2: args.min_area_mm2,
        px: args.min_area_px,
    };
    c.default_spacing_mm = args.spacing;
    Ok(c)
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(bacseg::ErrorKind::Config, message)
}

pub fn run(args: Args) -> Result<()> {
    let precision = match args.precision.as_str() {
        "f64" => Precision::F64,
        _ => Precision::F32,
    };
    let source = args.net.source_in(precision)?;
    let (engine, _) = parsed_flags(&args)?;
    let pipeline = match args.preset {
        Some(_) => Pipeline::PublishedScuNet,
        None => Pipeline::Bacseg,
    };
    bacseg::predict::check_source(&source, pipeline, engine)
        .map_err(|e| e.context(args.net.model.display().to_string()))?;
    let model = Model::load(&source)?;
    let config = config(&args, &model)?;
    let shard = match (args.shard_index, args.shard_count) {
        (Some(i), Some(n)) => Shard::new(i, n)?,
        _ => Shard::from_env()?.unwrap_or(Shard::ALL),
    };
    let mut predictor = Predictor::new(&model, config)?;
    let inputs = bacseg::collect_inputs(&args.inputs, args.manifest.as_deref())?;
    for w in &inputs.warnings {
        eprintln!("bacseg: warning: {w}");
    }
    let anonymize_key = match args.anonymize_paths {
        true => Some(bacseg::batch::anonymize_key(&args.out)?),
        false => None,
    };
    let options = BatchOptions {
        out: args.out.clone(),
        overwrite: args.overwrite,
        overlay_size: args.overlay_size,
        shard,
        anonymize_key,
        decode_ahead: !args.no_decode_ahead,
    };
    let mut progress = PredictProgress::new(&predictor);
    let summary = bacseg::predict_files(&mut predictor, &inputs.files, &options, &mut progress)?;
    let (done, skipped, failed) = (
        summary.count(Status::Ok),
        summary.count(Status::Skipped),
        summary.count(Status::Failed),
    );
    println!(
        "{done} predicted, {skipped} skipped, {failed} failed; summary: {}",
        summary.summary_csv.display()
    );
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} image(s) failed (see {})",
            summary.rows.len(),
            summary.summary_csv.display()
        );
    }
    Ok(())
}
