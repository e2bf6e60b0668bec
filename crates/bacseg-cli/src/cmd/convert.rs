//! `bacseg convert`: decoded pixels (after the Modality LUT, MONOCHROME1 inverted) or the
//! preprocessed image, as 16-bit grey PNG or TIFF.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bacseg_core::io;
use bacseg_core::preprocess::{self, Preprocess};

use crate::exit::usage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DICOM, PNG or TIFF mammogram.
    input: PathBuf,
    /// Output file: `.png` or `.tif`/`.tiff` (16-bit grey).
    output: PathBuf,
    /// Write the preprocessed image (median, normalised to [0,1] inside the breast) scaled
    /// to 0..65535 instead of the decoded values.
    #[arg(long)]
    normalized: bool,
    /// Replace an existing output file.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    preprocess: crate::cmd::preprocess::PreprocessArgs,
}

#[derive(Debug, Clone, Copy)]
enum OutFormat {
    Png,
    Tiff,
}

fn out_format(path: &Path) -> Result<OutFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(OutFormat::Png),
        Some("tif" | "tiff") => Ok(OutFormat::Tiff),
        _ => Err(usage(format!(
            "{}: output must end in .png, .tif or .tiff",
            path.display()
        ))),
    }
}

pub fn run(args: Args) -> Result<()> {
    let format = out_format(&args.output)?;
    if args.output.exists() && !args.overwrite {
        return Err(usage(format!(
            "{}: already exists (use --overwrite to replace it)",
            args.output.display()
        )));
    }
    let cfg: Preprocess = args.preprocess.to_config()?;
    let mammogram = bacseg::load_image(&args.input)?;
    for note in &mammogram.notes {
        eprintln!("bacseg: {}: {note}", args.input.display());
    }
    let data: Vec<u16> = if args.normalized {
        let pre = preprocess::preprocess(&mammogram, &cfg);
        pre.image
            .data()
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 65535.0).round() as u16)
            .collect()
    } else {
        let (lo, hi) = mammogram.value_range;
        // Negative modality values (signed data) are shifted so the smallest possible value
        // is 0; values beyond 16 bits cannot be written and are clipped (with a warning).
        let offset = if lo < 0.0 { -lo } else { 0.0 };
        if hi + offset > 65535.0 {
            eprintln!(
                "bacseg: {}: values up to {} do not fit 16 bits and are clipped",
                args.input.display(),
                hi + offset
            );
        }
        if offset > 0.0 {
            eprintln!(
                "bacseg: {}: values shifted by +{offset} to be non-negative",
                args.input.display()
            );
        }
        mammogram
            .pixels
            .data()
            .iter()
            .map(|&v| (v + offset).round().clamp(0.0, 65535.0) as u16)
            .collect()
    };
    let (w, h) = (mammogram.width(), mammogram.height());
    match format {
        OutFormat::Png => io::write_png_gray16(&args.output, w, h, &data),
        OutFormat::Tiff => io::write_tiff_gray16(&args.output, w, h, &data),
    }
    .with_context(|| format!("converting {}", args.input.display()))?;
    Ok(())
}
