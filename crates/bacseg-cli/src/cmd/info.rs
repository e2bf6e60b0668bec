//! `bacseg info`: what a mammogram file is, without any patient identifier.

use std::path::PathBuf;

use anyhow::Result;
use bacseg_core::io;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DICOM, PNG or TIFF file (format detected from its content).
    file: PathBuf,
    /// Print JSON (schema: docs/cli.md#info) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let info = io::info(&args.file).map_err(bacseg::Error::from)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<(&str, String)> = vec![
        ("file", args.file.display().to_string()),
        ("format", info.format.name().into()),
        ("size", format!("{} x {}", info.width, info.height)),
        ("bits stored", info.bits_stored.to_string()),
        ("photometric", info.photometric_interpretation.clone()),
        (
            "transfer syntax",
            opt(info
                .transfer_syntax
                .as_ref()
                .map(|t| format!("{} ({})", t.name, t.uid))),
        ),
        (
            "pixel spacing",
            opt(info.pixel_spacing_mm.map(|s| {
                format!(
                    "{:.4} x {:.4} mm (row x col), from {}",
                    s.row_mm,
                    s.col_mm,
                    s.source.describe()
                )
            })),
        ),
        (
            "laterality",
            opt(info.laterality.map(|l| l.as_str().into())),
        ),
        (
            "view",
            opt(info.view_position.as_ref().map(|v| v.as_str().into())),
        ),
        ("modality", opt(info.modality.clone())),
        ("manufacturer", opt(info.manufacturer.clone())),
        ("model", opt(info.manufacturer_model.clone())),
        ("presentation LUT", opt(info.presentation_lut_shape.clone())),
        (
            "modality LUT",
            if info.has_modality_lut {
                "Modality LUT Sequence".into()
            } else {
                match (info.rescale_slope, info.rescale_intercept) {
                    (None, None) => "-".into(),
                    (s, i) => format!("slope {} intercept {}", s.unwrap_or(1.0), i.unwrap_or(0.0)),
                }
            },
        ),
        ("frames", info.number_of_frames.to_string()),
    ];
    for (k, v) in rows {
        println!("{k:<17}{v}");
    }
    Ok(())
}
