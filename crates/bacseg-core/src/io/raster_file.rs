//! PNG, TIFF and JPEG mammograms (8- or 16-bit grey; colour is converted to grey with a note).

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader};

use super::{FileFormat, ImageInfo, IoError, check_size};
use crate::mammogram::Mammogram;
use crate::raster::Raster;

fn map_image_error(path: &Path, format: FileFormat, e: ImageError) -> IoError {
    let format = format.name();
    match e {
        ImageError::IoError(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            IoError::Corrupt {
                path: path.into(),
                format,
                reason: "file ends early".into(),
            }
        }
        ImageError::IoError(source) => IoError::Io {
            path: path.into(),
            source,
        },
        ImageError::Unsupported(u) => IoError::Unsupported {
            path: path.into(),
            format,
            reason: u.to_string(),
        },
        ImageError::Limits(l) => IoError::Unsupported {
            path: path.into(),
            format,
            reason: l.to_string(),
        },
        other => IoError::Corrupt {
            path: path.into(),
            format,
            reason: other.to_string(),
        },
    }
}

fn open(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, IoError> {
    ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|source| IoError::Io {
            path: path.into(),
            source,
        })
}

fn format_of(reader: &ImageReader<std::io::BufReader<std::fs::File>>) -> FileFormat {
    match reader.format() {
        Some(image::ImageFormat::Tiff) => FileFormat::Tiff,
        Some(image::ImageFormat::Jpeg) => FileFormat::Jpeg,
        _ => FileFormat::Png,
    }
}

/// Rec. 601 luma; keeps 16-bit precision because it works on f32.
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

pub(super) fn load(path: &Path) -> Result<Mammogram, IoError> {
    let reader = open(path)?;
    let format = format_of(&reader);
    let fail = |e| map_image_error(path, format, e);
    let mut decoder = reader.into_decoder().map_err(fail)?;
    // The size from the header, checked before a pixel is decoded; the decoder may then
    // allocate what that size needs (16-bit RGBA at most) and no more.
    let (w, h) = decoder.dimensions();
    check_size(path, u64::from(w), u64::from(h))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(u64::from(w) * u64::from(h) * 8 + (64 << 20));
    decoder.set_limits(limits).map_err(fail)?;
    let img = DynamicImage::from_decoder(decoder).map_err(fail)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut notes = Vec::new();
    let (pixels, bits, max): (Vec<f32>, u16, f32) = match img {
        DynamicImage::ImageLuma8(b) => {
            (b.into_raw().into_iter().map(f32::from).collect(), 8, 255.0)
        }
        DynamicImage::ImageLuma16(b) => (
            b.into_raw().into_iter().map(f32::from).collect(),
            16,
            65535.0,
        ),
        DynamicImage::ImageLumaA8(b) => {
            notes.push("alpha channel ignored".into());
            (b.pixels().map(|p| f32::from(p.0[0])).collect(), 8, 255.0)
        }
        DynamicImage::ImageLumaA16(b) => {
            notes.push("alpha channel ignored".into());
            (b.pixels().map(|p| f32::from(p.0[0])).collect(), 16, 65535.0)
        }
        other => {
            let sixteen = matches!(
                other,
                DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_)
            );
            let rgb = other.to_rgb32f();
            let scale = if sixteen { 65535.0 } else { 255.0 };
            let mut grey_already = true;
            let px: Vec<f32> = rgb
                .pixels()
                .map(|p| {
                    let [r, g, b] = p.0;
                    grey_already &= r == g && g == b;
                    (luma(r, g, b) * scale).round()
                })
                .collect();
            notes.push(if grey_already {
                "RGB image with equal channels read as grey".into()
            } else {
                "colour image converted to grey (Rec. 601 luma): mammograms are grey; check the export".into()
            });
            (px, if sixteen { 16 } else { 8 }, scale)
        }
    };
    let pixels = Raster::from_vec(w, h, pixels).map_err(|e| IoError::Corrupt {
        path: path.into(),
        format: format.name(),
        reason: e.to_string(),
    })?;
    Ok(Mammogram {
        pixels,
        spacing: None,
        laterality: None,
        view: None,
        bits_stored: bits,
        value_range: (0.0, max),
        notes,
    })
}

pub(super) fn info(path: &Path, format: FileFormat) -> Result<ImageInfo, IoError> {
    let reader = open(path)?;
    let decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(path, format, e))?;
    let (w, h) = decoder.dimensions();
    let color = decoder.color_type();
    let photometric = if color.has_color() {
        "RGB"
    } else {
        "MONOCHROME2"
    };
    let bits = (color.bits_per_pixel() / u16::from(color.channel_count())).max(1);
    Ok(ImageInfo {
        format,
        width: w as usize,
        height: h as usize,
        bits_stored: bits,
        photometric_interpretation: photometric.into(),
        transfer_syntax: None,
        pixel_spacing_mm: None,
        laterality: None,
        view_position: None,
        modality: None,
        manufacturer: None,
        manufacturer_model: None,
        presentation_lut_shape: None,
        rescale_slope: None,
        rescale_intercept: None,
        has_modality_lut: false,
        number_of_frames: 1,
    })
}
