//! `bacseg synth`: write a dataset of synthetic mammograms with exact BAC masks, or insert
//! synthetic BAC into real BAC-free mammograms (`--background`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use bacseg_core::Size;
use bacseg_core::synth::{
    self, DatasetError, Progress, SeverityMix, SynthConfig, ViewChoice, WriteOptions,
};

use crate::exit::{bad_input, usage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output dataset directory (images/, masks/, manifest.json).
    #[arg(long)]
    out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = SynthConfig::default().count)]
    count: usize,
    /// Random seed: the same seed and options give byte-identical files.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
    /// Image size WIDTHxHEIGHT in pixels (ignored with --background: each background keeps
    /// its size).
    #[arg(long, default_value = "3328x4096", value_parser = parse_size)]
    size: Size,
    /// Pixel spacing in mm (for --background: used when a file records none).
    #[arg(long, default_value_t = SynthConfig::default().spacing_mm)]
    spacing: f64,
    /// Projection: cc, mlo (with pectoral muscle) or mixed.
    #[arg(long, value_enum, default_value = "mixed")]
    view: ViewArg,
    /// Fraction of images without BAC (empty masks).
    #[arg(long, default_value_t = SynthConfig::default().negative_fraction)]
    negative_fraction: f64,
    /// Relative weights of the severities among BAC-positive images.
    #[arg(long, default_value = "mild=0.4,moderate=0.35,severe=0.25")]
    severity_mix: String,
    /// Bits stored, 12-14 (default: 12 or 14 drawn per image).
    #[arg(long)]
    bits: Option<u8>,
    /// Also write preview.png: the first images downscaled, with their masks, and 1:1 crops.
    #[arg(long)]
    preview: bool,
    /// Insert synthetic BAC into the BAC-free mammograms (DICOM, PNG, TIFF) of this
    /// directory instead of generating phantoms.
    #[arg(long)]
    background: Option<PathBuf>,
    /// Replace the files of another dataset in a non-empty --out.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ViewArg {
    Cc,
    Mlo,
    Mixed,
}

fn parse_size(s: &str) -> Result<Size, String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("expected WIDTHxHEIGHT, got {s:?}"))
    };
    Ok(Size::new(parse(w)?, parse(h)?))
}

pub fn run(args: Args) -> Result<()> {
    let severity_mix: SeverityMix = args
        .severity_mix
        .parse()
        .map_err(|e| usage(format!("--severity-mix: {e}")))?;
    let config = SynthConfig {
        count: args.count,
        seed: args.seed,
        size: args.size,
        spacing_mm: args.spacing,
        view: match args.view {
            ViewArg::Cc => ViewChoice::Cc,
            ViewArg::Mlo => ViewChoice::Mlo,
            ViewArg::Mixed => ViewChoice::Mixed,
        },
        negative_fraction: args.negative_fraction,
        severity_mix,
        bits: args.bits,
    };
    config.validate().map_err(|e| usage(e.to_string()))?;
    let background = match &args.background {
        Some(dir) => synth::load_backgrounds(dir).map_err(|e| bad_input(e.to_string()))?,
        None => Vec::new(),
    };
    let options = WriteOptions {
        overwrite: args.overwrite,
        preview: args.preview,
        background,
    };

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(config.count as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} images  {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let start = Instant::now();
    // A background's notes (colour converted to grey) once per file, not once per image.
    let noted = std::sync::Mutex::new(std::collections::HashSet::new());
    let report = |p: Progress| {
        if let Progress::Wrote { notes, .. } = &p {
            for note in notes {
                if noted.lock().is_ok_and(|mut n| n.insert(note.clone())) {
                    match &bar {
                        Some(b) => b.println(format!("bacseg: {note}")),
                        None => eprintln!("bacseg: {note}"),
                    }
                }
            }
        }
        match (&bar, p) {
            (Some(bar), Progress::Wrote { done, .. }) => bar.set_position(done as u64),
            (
                None,
                Progress::Wrote {
                    done, total, stem, ..
                },
            ) => eprintln!("synth: {done}/{total} {stem}"),
            (_, Progress::Started { .. } | Progress::Preview { .. }) => {}
        }
    };
    let summary =
        synth::write_dataset(&args.out, &config, &options, &report).map_err(|e| match e {
            DatasetError::Config(_) => usage(e.to_string()),
            DatasetError::DifferentDataset { .. } | DatasetError::Background(_) => {
                bad_input(e.to_string())
            }
            other => anyhow::Error::new(other),
        });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let summary = summary.with_context(|| format!("writing {}", args.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let [none, mild, moderate, severe] = summary.by_severity;
    println!(
        "wrote {} images to {} in {secs:.1} s ({:.2} s/image): {} BAC-free; measured severity none {none}, mild {mild}, moderate {moderate}, severe {severe}",
        summary.images,
        args.out.display(),
        secs / summary.images.max(1) as f64,
        summary.negatives,
    );
    println!("manifest: {}", summary.manifest.display());
    if let Some(p) = summary.preview {
        println!("preview:  {}", p.display());
    }
    Ok(())
}
