//! `bacseg preprocess`: run the preprocessing chain on one mammogram and write what it
//! produced (normalised image, breast mask, overlay), with per-step timings.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use bacseg_core::io;
use bacseg_core::overlay;
use bacseg_core::preprocess::{self, BreastMaskConfig, Preprocess};
use serde::Serialize;

/// Preprocessing options shared by every command that reads mammograms.
#[derive(Debug, Clone, clap::Args)]
pub struct PreprocessArgs {
    /// Median filter radius in pixels (2 = 5x5); 0 disables denoising.
    #[arg(long, default_value_t = Preprocess::default().median_radius)]
    pub median_radius: usize,
    /// In-breast percentile mapped to 0.
    #[arg(long, default_value_t = Preprocess::default().low_percentile)]
    pub low_percentile: f32,
    /// In-breast percentile mapped to 1.
    #[arg(long, default_value_t = Preprocess::default().high_percentile)]
    pub high_percentile: f32,
    /// Treat the whole image as breast (no breast segmentation).
    #[arg(long)]
    pub no_breast_mask: bool,
    /// Breast mask threshold, as a fraction of the way from the background level to Otsu's
    /// threshold.
    #[arg(long, default_value_t = BreastMaskConfig::default().threshold_fraction)]
    pub breast_threshold: f32,
}

impl PreprocessArgs {
    /// The validated configuration.
    pub fn to_config(&self) -> bacseg::Result<Preprocess> {
        let cfg = Preprocess {
            median_radius: self.median_radius,
            low_percentile: self.low_percentile,
            high_percentile: self.high_percentile,
            breast_mask: BreastMaskConfig {
                enabled: !self.no_breast_mask,
                threshold_fraction: self.breast_threshold,
                ..BreastMaskConfig::default()
            },
        };
        cfg.validate().map_err(|e| {
            bacseg::Error::new(
                bacseg::ErrorKind::Config,
                format!("preprocessing options: {e}"),
            )
        })?;
        Ok(cfg)
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DICOM, PNG or TIFF mammogram.
    input: PathBuf,
    /// Write the normalised image here (16-bit PNG, [0,1] scaled to 0..65535).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Write the breast mask here (8-bit PNG, 0/255).
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Write a downscaled RGB overlay here (image with the breast outline in green).
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Longest side of the overlay, pixels.
    #[arg(long, default_value_t = 1024)]
    overlay_size: usize,
    /// Print the time of each step (load, median, breast mask, normalisation).
    #[arg(long)]
    timings: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

#[derive(Debug, Serialize)]
struct Summary {
    width: usize,
    height: usize,
    breast_fraction: f64,
    window: (f32, f32),
    config: Preprocess,
    timings_s: Timings,
}

#[derive(Debug, Serialize)]
struct Timings {
    load: f64,
    median: f64,
    breast_mask: f64,
    normalise: f64,
    total: f64,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = args.preprocess.to_config()?;
    let t0 = Instant::now();
    let m = bacseg::load_image(&args.input)?;
    let load_s = t0.elapsed().as_secs_f64();
    for note in &m.notes {
        eprintln!("bacseg: {}: {note}", args.input.display());
    }
    let pre = preprocess::preprocess(&m, &cfg);
    let total = t0.elapsed().as_secs_f64();
    if let Some(p) = &args.image {
        io::write_unit_png16(p, &pre.image)?;
    }
    if let Some(p) = &args.mask {
        io::write_mask_png(p, &pre.breast)?;
    }
    if let Some(p) = &args.overlay {
        let o = overlay::render(&pre.image, Some(&pre.breast), None, args.overlay_size);
        io::write_png_rgb8(p, o.width, o.height, &o.data)?;
    }
    let t = pre.timings;
    let summary = Summary {
        width: m.width(),
        height: m.height(),
        breast_fraction: pre.breast.count() as f64 / pre.breast.len().max(1) as f64,
        window: pre.window,
        config: cfg,
        timings_s: Timings {
            load: load_s,
            median: t.median_s,
            breast_mask: t.breast_mask_s,
            normalise: t.normalise_s,
            total,
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{}: {}x{}, breast {:.1}% of the image, grey window {} .. {}",
        args.input.display(),
        summary.width,
        summary.height,
        100.0 * summary.breast_fraction,
        summary.window.0,
        summary.window.1
    );
    if args.timings {
        let t = &summary.timings_s;
        println!(
            "timings: load {:.3} s, median {:.3} s, breast mask {:.3} s, normalise {:.3} s, total {:.3} s",
            t.load, t.median, t.breast_mask, t.normalise, t.total
        );
    }
    Ok(())
}
