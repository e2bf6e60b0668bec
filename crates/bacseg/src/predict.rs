//! Whole-mammogram prediction: a [`Predictor`] built once from a [`Model`] and a
//! [`PredictConfig`] (bacseg's pipeline or the published SCU-Net one), then
//! [`Predictor::predict`] per image: probability map, mask, breast mask, burden and timings.
//!
//! ```no_run
//! # fn main() -> bacseg::Result<()> {
//! use bacseg::{Model, ModelSource, PredictConfig, Predictor};
//! let model = Model::load(&ModelSource::RunDir("runs/dt-unet".into()))?;
//! let mut predictor = Predictor::new(&model, PredictConfig::for_model(&model))?;
//! let image = bacseg::load_image("mammogram.dcm".as_ref())?;
//! let result = predictor.predict(&image)?;
//! println!("{} calcified pixels", result.burden.area_px);
//! # Ok(()) }
//! ```
//!
//! bacseg's pipeline: optional resampling, preprocessing (denoise, normalise, breast mask),
//! in-breast patches through the engine, blending, probabilities outside the breast set to zero
//! (the model is never asked about the background, burned-in labels or markers), threshold
//! and small-component removal, burden. The published SCU-Net pipeline is run exactly as
//! published (8-bit grey input, 5x5 median, 512 tiles at stride 480, its tile-skip rule,
//! maximum merge, threshold 0.65), without the breast restriction.

use std::time::Instant;

use bacseg_core::mammogram::{Mammogram, PixelSpacing};
use bacseg_core::postprocess::{MinComponentArea, Postprocess};
use bacseg_core::preprocess::{
    Preprocess, median_filter, preprocess, preprocess_denoised, preprocess_pixels,
};
use bacseg_core::quantify::{BacBurden, Grading, measure};
use bacseg_core::raster::{Mask, ProbMap, Raster, UnitValue, unit_to_u16};
use bacseg_core::resample::resize;
use bacseg_core::stitch::BlendMode;
use bacseg_nn::engine::{
    Engine, InferConfig, PUBLISHED_SCUNET_STRIDE, PUBLISHED_SCUNET_TILE, Prediction, Runner,
    predict_image_with, predict_published_scunet_with,
};
use bacseg_nn::{Architecture, Network, Precision};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Model, ModelSource};

/// Which inference pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// bacseg's: preprocessing, in-breast patches, blending (see the module documentation).
    Bacseg,
    /// The published SCU-Net pipeline, unchanged.
    #[serde(rename = "scunet")]
    PublishedScuNet,
}

/// How images are predicted: everything but the model. Recorded in each image's bac.json.
#[derive(Debug, Clone, Serialize)]
pub struct PredictConfig {
    /// The published pipeline run instead of bacseg's (`scunet`), if any.
    #[serde(rename = "preset", serialize_with = "preset_name")]
    pub pipeline: Pipeline,
    /// Resampling factor applied before preprocessing (outputs stay at the input's size).
    pub scale: f64,
    pub preprocess: Preprocess,
    pub infer: InferConfig,
    pub postprocess: Postprocess,
    /// Pixel spacing (mm) assumed for images that record none.
    pub default_spacing_mm: Option<f64>,
}

fn preset_name<S: serde::Serializer>(p: &Pipeline, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Pipeline::Bacseg => s.serialize_none(),
        Pipeline::PublishedScuNet => s.serialize_some("scunet"),
    }
}

impl PredictConfig {
    /// bacseg's pipeline with the settings `model` was trained with (patch, stride,
    /// preprocessing, breast fraction) where its run recorded them, else the defaults: 512
    /// patches at stride 256, gaussian blending, threshold 0.5, batch 4, the fastest engine.
    pub fn for_model(model: &Model) -> Self {
        let run = model.run_defaults();
        Self {
            pipeline: Pipeline::Bacseg,
            scale: 1.0,
            preprocess: run.map(|r| r.preprocess.clone()).unwrap_or_default(),
            infer: InferConfig {
                patch: run.map_or(512, |r| r.patch),
                stride: run.map_or(256, |r| r.stride),
                min_breast_fraction: run.map_or(0.05, |r| r.min_breast_fraction),
                ..InferConfig::default()
            },
            postprocess: Postprocess::default(),
            default_spacing_mm: None,
        }
    }

    /// The published SCU-Net pipeline exactly as published.
    pub fn published_scunet() -> Self {
        Self {
            pipeline: Pipeline::PublishedScuNet,
            scale: 1.0,
            preprocess: Preprocess::default(),
            infer: InferConfig {
                patch: PUBLISHED_SCUNET_TILE,
                stride: PUBLISHED_SCUNET_STRIDE,
                blend: BlendMode::Max,
                ..InferConfig::default()
            },
            postprocess: Postprocess {
                threshold: 0.65,
                min_area: MinComponentArea::default(),
            },
            default_spacing_mm: None,
        }
    }

    /// Check the settings against each other and against `model`.
    pub fn validate(&self, model: &Model) -> Result<()> {
        let preset = self.pipeline == Pipeline::PublishedScuNet;
        let engine = self.infer.engine;
        check_pairing(
            Some(model.architecture()),
            model.precision(),
            self.pipeline,
            engine,
        )?;
        if engine == Engine::Ort && (preset || model.precision() == Precision::F64) {
            return Err(Error::config(
                "the ort engine runs bacseg's pipeline in f32: not the published pipeline or f64",
            ));
        }
        let (patch, stride) = (self.infer.patch, self.infer.stride);
        if self.infer.batch == 0 || stride == 0 || stride > patch {
            return Err(Error::config(format!(
                "need batch >= 1 and 0 < stride ({stride}) <= patch ({patch})"
            )));
        }
        if !(self.scale > 0.0 && self.scale <= 4.0) {
            return Err(Error::config(format!(
                "scale must be in (0, 4], got {}",
                self.scale
            )));
        }
        if let Some(mm) = self.default_spacing_mm
            && !(mm > 0.0 && mm < 5.0)
        {
            return Err(Error::config(format!(
                "pixel spacing must be in (0, 5) mm, got {mm}"
            )));
        }
        self.preprocess
            .validate()
            .map_err(|e| Error::config(format!("preprocessing: {e}")))?;
        self.postprocess
            .validate()
            .map_err(|e| Error::config(format!("postprocessing: {e}")))?;
        Ok(())
    }
}

/// Whether `pipeline` and `engine` can run the model `source` names, checked before its weights
/// are read (the architecture of a run directory is known only once loaded: then
/// [`PredictConfig::validate`] checks it).
pub fn check_source(source: &ModelSource, pipeline: Pipeline, engine: Engine) -> Result<()> {
    let precision = match source {
        ModelSource::PublishedScuNet { precision, .. } => *precision,
        _ => Precision::F32,
    };
    check_pairing(source.architecture(), precision, pipeline, engine)
}

fn check_pairing(
    arch: Option<Architecture>,
    precision: Precision,
    pipeline: Pipeline,
    engine: Engine,
) -> Result<()> {
    let name = arch.map_or("other", |a| a.name());
    if pipeline == Pipeline::PublishedScuNet && arch.is_some_and(|a| a != Architecture::ScuNet) {
        return Err(Error::config(format!(
            "the published SCU-Net pipeline runs SCU-Net models; this is a {name} model"
        )));
    }
    if engine == Engine::Cpu && precision == Precision::F64 {
        return Err(Error::config(
            "the cpu engine runs f32 weights: use the burn engine for f64",
        ));
    }
    Ok(())
}

/// Wall time of each step for one image, seconds, and the patches run.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Timings {
    /// Decoding the input.
    pub load_s: f64,
    /// In a batch: how long the image's prediction waited for its decoding and
    /// preprocessing, `load_s + preprocess_s` when they ran in turn, less when they ran while
    /// the previous image was predicted ([`crate::batch::BatchOptions::decode_ahead`]).
    pub waited_s: f64,
    pub preprocess_s: f64,
    pub forward_s: f64,
    pub blend_s: f64,
    pub postprocess_s: f64,
    pub write_s: f64,
    pub total_s: f64,
    pub patches: usize,
    pub grid_patches: usize,
    /// The engine that ran the forward passes.
    pub engine: &'static str,
}

impl Timings {
    fn add_prediction(&mut self, pred: &Prediction) {
        self.forward_s = pred.forward_s;
        self.blend_s = pred.blend_s;
        self.patches = pred.patches;
        self.grid_patches = pred.grid_patches;
        self.engine = pred.engine.name();
    }
}

/// What [`Predictor::predict`] finds on one mammogram, all at the input's pixel grid.
#[derive(Debug, Clone)]
pub struct ImagePrediction {
    /// BAC probability per pixel.
    pub prob: ProbMap,
    /// BAC mask (threshold and small-component removal applied).
    pub mask: Mask,
    /// Breast mask.
    pub breast: Mask,
    /// The preprocessed image in 8-bit grey (0-255, for overlays; the full-precision image
    /// is freed after the forward passes).
    pub display: Raster<u8>,
    /// Area, length, segments and grade of the mask.
    pub burden: BacBurden,
    /// The pixel spacing the burden was measured with (the image's, else the configured
    /// default).
    pub spacing: Option<PixelSpacing>,
    pub timings: Timings,
}

/// A model and a pipeline configuration, ready to predict image after image (the engine is
/// set up once: compiled network, ONNX Runtime session).
#[derive(Debug)]
pub struct Predictor<'m> {
    model: &'m Model,
    config: PredictConfig,
    runner: Runner<'m, Network>,
}

impl<'m> Predictor<'m> {
    /// Validate `config` against `model` and set up the engine, so that an engine that cannot
    /// run fails here rather than on the first image.
    pub fn new(model: &'m Model, config: PredictConfig) -> Result<Self> {
        config.validate(model)?;
        let mut runner = Runner::new(model.network(), config.infer.engine).map_err(|e| {
            // An engine this build or machine does not have is a configuration problem.
            let e = Error::from(e);
            let kind = match config.infer.engine {
                Engine::Ort => crate::error::ErrorKind::Config,
                _ => e.kind(),
            };
            Error::with_source(
                kind,
                format!("the {} engine", config.infer.engine.name()),
                e,
            )
        })?;
        if config.infer.bf16 {
            runner
                .set_bf16()
                .map_err(|e| Error::with_source(crate::error::ErrorKind::Config, "bf16", e))?;
        }
        Ok(Self {
            model,
            config,
            runner,
        })
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    pub fn config(&self) -> &PredictConfig {
        &self.config
    }

    /// The engine that runs the forward passes.
    pub fn engine(&self) -> Engine {
        self.runner.engine()
    }

    /// Predict BAC on one mammogram.
    pub fn predict(&mut self, image: &Mammogram) -> Result<ImagePrediction> {
        self.predict_inner(Input::Borrowed(image))
    }

    /// [`predict`](Self::predict) taking the mammogram, for the lowest peak memory on large
    /// images: its pixels are freed as soon as preprocessing no longer needs them. A whole
    /// `predict_files` image then peaks at about 8 bytes per pixel beside the model and the
    /// engine's buffers (docs/architecture.md, "Memory", has the measured figures).
    pub fn predict_owned(&mut self, image: Mammogram) -> Result<ImagePrediction> {
        self.predict_inner(Input::Owned(image))
    }

    /// Predict BAC on an image [`PredictConfig::prepare`] preprocessed with this predictor's
    /// configuration (its pipeline, scale and preprocessing; anything else is a configuration
    /// error). `timings.preprocess_s` is the preparation's.
    pub fn predict_prepared(&mut self, prepared: Prepared) -> Result<ImagePrediction> {
        if !prepared.made_with(&self.config) {
            return Err(Error::config(
                "the image was prepared with another pipeline, scale or preprocessing than \
                 this predictor's",
            ));
        }
        let start = Instant::now();
        let mut t = Timings {
            preprocess_s: prepared.preprocess_s,
            ..Timings::default()
        };
        let spacing = prepared
            .spacing
            .or(self.config.default_spacing_mm.map(|mm| PixelSpacing {
                row_mm: mm,
                col_mm: mm,
                source: bacseg_core::mammogram::SpacingSource::User,
            }));
        let runner = &mut self.runner;
        let (prob, breast, display) = match prepared.stage {
            Stage::Bacseg { image, breast } => bacseg_pipeline(
                self.model,
                runner,
                &self.config,
                image,
                breast,
                (prepared.width, prepared.height),
                &mut t,
            )?,
            Stage::Published {
                grey,
                breast,
                display,
            } => {
                let pred = predict_published_scunet_with(
                    self.model.network(),
                    runner,
                    &grey,
                    self.config.infer.batch,
                )?;
                runner.release_buffers();
                t.add_prediction(&pred);
                (pred.prob, breast, display)
            }
        };
        let s = Instant::now();
        let mask = self.config.postprocess.apply(&prob, spacing);
        let burden = measure(
            &mask,
            Some(&prob),
            spacing,
            Some(&breast),
            &Grading::default(),
        );
        t.postprocess_s = s.elapsed().as_secs_f64();
        t.total_s = t.preprocess_s + start.elapsed().as_secs_f64();
        Ok(ImagePrediction {
            prob,
            mask,
            breast,
            display,
            burden,
            spacing,
            timings: t,
        })
    }

    fn predict_inner(&mut self, image: Input<'_>) -> Result<ImagePrediction> {
        let prepared = prepare(&self.config, image)?;
        self.predict_prepared(prepared)
    }
}

/// A mammogram preprocessed for a pipeline ([`PredictConfig::prepare`]), ready for
/// [`Predictor::predict_prepared`]. Preparing needs only the configuration, not the engine,
/// so a batch prepares the next image on another thread while the current one is predicted.
#[derive(Debug)]
pub struct Prepared {
    stage: Stage,
    /// The input's pixel spacing, if it records one.
    spacing: Option<PixelSpacing>,
    /// The input's size: outputs are at this size.
    width: usize,
    height: usize,
    /// What it was made with, checked by [`Predictor::predict_prepared`].
    pipeline: Pipeline,
    scale: f64,
    preprocess: Preprocess,
    /// Seconds the preparation took.
    pub preprocess_s: f64,
}

impl Prepared {
    fn made_with(&self, config: &PredictConfig) -> bool {
        self.pipeline == config.pipeline
            && self.scale == config.scale
            && self.preprocess == config.preprocess
    }
}

#[derive(Debug)]
enum Stage {
    /// bacseg's pipeline: the preprocessed image in 16 bits, as the training cache holds it
    /// (the values the network was trained on), at the configured scale, and its breast mask.
    Bacseg { image: Raster<u16>, breast: Mask },
    /// The published SCU-Net pipeline: 8-bit grey values after the 5x5 median, and the breast
    /// mask and display image from that same filtered image.
    Published {
        grey: Raster<f32>,
        breast: Mask,
        display: Raster<u8>,
    },
}

impl PredictConfig {
    /// Preprocess `image` for this configuration's pipeline (its pixels are freed as soon as
    /// preprocessing no longer needs them): the first half of [`Predictor::predict`], for
    /// [`Predictor::predict_prepared`] to finish. Thread-safe and engine-free.
    pub fn prepare(&self, image: Mammogram) -> Result<Prepared> {
        prepare(self, Input::Owned(image))
    }
}

/// The mammogram a prediction starts from: the caller's, or one whose pixels can be freed.
enum Input<'a> {
    Borrowed(&'a Mammogram),
    Owned(Mammogram),
}

impl Input<'_> {
    fn get(&self) -> &Mammogram {
        match self {
            Input::Borrowed(m) => m,
            Input::Owned(m) => m,
        }
    }
}

/// The probability map, the breast mask and the 8-bit display image, all at the input's size.
type Found = (ProbMap, Mask, Raster<u8>);

fn grey_display<T: UnitValue>(image: &Raster<T>) -> Raster<u8> {
    image.map(|&v| (v.unit().clamp(0.0, 1.0) * 255.0).round() as u8)
}

/// Preprocess `input` for `config`'s pipeline (its pixels freed after preprocessing when it
/// is owned).
fn prepare(config: &PredictConfig, input: Input<'_>) -> Result<Prepared> {
    let s = Instant::now();
    let m = input.get();
    let (width, height, spacing) = (m.width(), m.height(), m.spacing);
    let stage = match config.pipeline {
        Pipeline::Bacseg => {
            let f = config.scale;
            let pre = if f == 1.0 {
                match input {
                    Input::Borrowed(m) => preprocess(m, &config.preprocess),
                    Input::Owned(m) => preprocess_pixels(m.pixels, &config.preprocess),
                }
            } else {
                let (sw, sh) = (
                    ((width as f64 * f).round() as usize).max(1),
                    ((height as f64 * f).round() as usize).max(1),
                );
                // Preprocessing reads pixels only (the spacing is the input's, used at full
                // size).
                let scaled = resize(&m.pixels, sw, sh);
                drop(input);
                preprocess_pixels(scaled, &config.preprocess)
            };
            Stage::Bacseg {
                image: unit_to_u16(&pre.image),
                breast: pre.breast,
            }
        }
        Pipeline::PublishedScuNet => {
            let grey = median_filter(&grey8(m), 2);
            drop(input);
            let pre = preprocess_denoised(&grey, &config.preprocess);
            Stage::Published {
                display: grey_display(&pre.image),
                breast: pre.breast,
                grey,
            }
        }
    };
    Ok(Prepared {
        stage,
        spacing,
        width,
        height,
        pipeline: config.pipeline,
        scale: config.scale,
        preprocess: config.preprocess.clone(),
        preprocess_s: s.elapsed().as_secs_f64(),
    })
}

/// bacseg's pipeline from the prepared image: patches through the engine, blending, back to
/// the input's size `(w, h)`, probabilities outside the breast set to zero.
fn bacseg_pipeline(
    model: &Model,
    runner: &mut Runner<'_, Network>,
    config: &PredictConfig,
    image: Raster<u16>,
    mut breast: Mask,
    (w, h): (usize, usize),
    t: &mut Timings,
) -> Result<Found> {
    let f = config.scale;
    let mut pred = predict_image_with(model.network(), runner, &image, &breast, &config.infer)?;
    // The engine's buffers are not held while the map is postprocessed, measured and written
    // (the peak of a large image); making them again costs milliseconds per image.
    runner.release_buffers();
    t.add_prediction(&pred);
    let mut display = grey_display(&image);
    drop(image);
    if f != 1.0 {
        // Back to the input's pixel grid: outputs and measures are at full resolution.
        pred.prob = resize(&pred.prob, w, h).map(|p| p.clamp(0.0, 1.0));
        breast = resize(&breast.map(|&b| f32::from(u8::from(b))), w, h).map(|&v| v >= 0.5);
        display = resize(&display.map(|&v| f32::from(v)), w, h)
            .map(|&v| v.round().clamp(0.0, 255.0) as u8);
    }
    // No BAC outside the breast: the background, burned-in labels and markers are not tissue.
    if config.preprocess.breast_mask.enabled {
        for (p, &inside) in pred.prob.data_mut().iter_mut().zip(breast.data()) {
            if !inside {
                *p = 0.0;
            }
        }
    }
    Ok((pred.prob, breast, display))
}

/// 8-bit grey values (0-255) of a mammogram, as the published SCU-Net pipeline reads its PNGs:
/// 8-bit sources unchanged; deeper ones mapped linearly from their value range to 0-255 and
/// rounded (OpenCV, which the published code reads with, divides 16-bit PNG values by 256:
/// within one grey level of this).
fn grey8(m: &Mammogram) -> Raster<f32> {
    let (lo, hi) = m.value_range;
    if m.bits_stored <= 8 && lo == 0.0 && hi == 255.0 {
        return m.pixels.map(|v| v.round().clamp(0.0, 255.0));
    }
    let span = (hi - lo).max(f32::MIN_POSITIVE);
    m.pixels
        .map(|v| ((v - lo) / span * 255.0).round().clamp(0.0, 255.0))
}
