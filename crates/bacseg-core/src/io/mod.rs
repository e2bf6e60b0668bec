//! Reading mammograms (DICOM, PNG, TIFF, JPEG) into [`Mammogram`] and writing images, masks and
//! reports atomically. The format is detected from the file's content, not its extension.
//!
//! Reading is bounded: only regular files are opened (a FIFO or a device would block or never
//! end), an image larger than [`max_pixels`] is refused from its header before any pixel is
//! decoded, and a DICOM file's structure is checked (declared lengths within the file,
//! sequences nested at most [`DICOM_MAX_DEPTH`] deep) before dicom-rs parses it.

mod dicom;
mod dicom_check;
mod raster_file;
mod write;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::mammogram::{Laterality, Mammogram, PixelSpacing, View};

pub use write::{
    write_atomic, write_mask_png, write_png_gray8, write_png_gray16, write_png_rgb8,
    write_tiff_gray16, write_unit_png16,
};

/// A file that could not be read as a mammogram, or an output that could not be written.
/// The message always names the file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a DICOM, PNG, TIFF or JPEG file (first bytes: {magic})", path.display())]
    UnknownFormat { path: PathBuf, magic: String },
    #[error("{}: corrupt or truncated {format}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{}: unsupported {format}: {reason}", path.display())]
    Unsupported {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{}: cannot write: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("{}: not a regular file ({kind})", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{}: {width}x{height} pixels is over the limit of {limit} megapixels (BACSEG_MAX_MEGAPIXELS)", path.display())]
    TooLarge {
        path: PathBuf,
        width: u64,
        height: u64,
        limit: u64,
    },
}

/// The pixel spacings, in mm, that a mammogram can plausibly have: detectors have 0.05-0.1 mm,
/// film digitisers 0.025-0.2 mm, and downscaled exports more. A spacing outside is ignored with
/// a note (a 50 mm spacing would make every calcification "severe").
pub const PLAUSIBLE_SPACING_MM: (f64, f64) = (0.005, 1.0);

/// How deep sequences may nest in a DICOM file bacseg reads.
pub const DICOM_MAX_DEPTH: usize = dicom_check::MAX_DEPTH;

/// The largest image decoded by default, in megapixels: 120 (a 10,954 x 10,954 square). The
/// largest full-field detectors give about 30 megapixels, film digitised at 42 um about 80.
/// Prediction needs about 18 bytes per pixel, so the default bounds one image's memory at
/// about 2 GB.
pub const DEFAULT_MAX_MEGAPIXELS: u64 = 120;

/// The pixel limit in force: `BACSEG_MAX_MEGAPIXELS` (a positive number of megapixels) when it
/// is set, else [`DEFAULT_MAX_MEGAPIXELS`].
pub fn max_pixels() -> u64 {
    let mp = std::env::var("BACSEG_MAX_MEGAPIXELS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(DEFAULT_MAX_MEGAPIXELS as f64);
    (mp * 1e6) as u64
}

/// Refuse an image larger than [`max_pixels`] before it is decoded.
fn check_size(path: &Path, width: u64, height: u64) -> Result<(), IoError> {
    let limit = max_pixels();
    if width.saturating_mul(height) > limit {
        return Err(IoError::TooLarge {
            path: path.into(),
            width,
            height,
            limit: limit.div_ceil(1_000_000),
        });
    }
    Ok(())
}

/// Refuse anything but a regular file (following links): reading a FIFO or a device blocks or
/// never ends.
fn check_regular(path: &Path) -> Result<(), IoError> {
    let meta = std::fs::metadata(path).map_err(|source| IoError::Io {
        path: path.into(),
        source,
    })?;
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let kind = if t.is_dir() {
        "a directory"
    } else {
        special_kind(&t)
    };
    Err(IoError::NotAFile {
        path: path.into(),
        kind,
    })
}

#[cfg(unix)]
fn special_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

impl IoError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::UnknownFormat { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Unsupported { path, .. }
            | Self::Write { path, .. }
            | Self::NotAFile { path, .. }
            | Self::TooLarge { path, .. } => path,
        }
    }
}

/// Container formats bacseg reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Dicom,
    Png,
    Tiff,
    /// Baseline/progressive 8-bit JPEG (many public mammogram sets are distributed so).
    Jpeg,
}

impl FileFormat {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dicom => "DICOM",
            Self::Png => "PNG",
            Self::Tiff => "TIFF",
            Self::Jpeg => "JPEG",
        }
    }
}

/// Detect the format from the first bytes of a file (DICOM: `DICM` at offset 128, or a
/// preamble-less data set that starts with a group 0002/0008 tag).
pub fn detect_format(path: &Path) -> Result<FileFormat, IoError> {
    use std::io::Read;
    check_regular(path)?;
    let mut head = [0u8; 132];
    let mut file = std::fs::File::open(path).map_err(|source| IoError::Io {
        path: path.into(),
        source,
    })?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(source) => {
                return Err(IoError::Io {
                    path: path.into(),
                    source,
                });
            }
        }
    }
    let head = &head[..n];
    if head.len() >= 132 && &head[128..132] == b"DICM" {
        return Ok(FileFormat::Dicom);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(FileFormat::Png);
    }
    if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        return Ok(FileFormat::Tiff);
    }
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(FileFormat::Jpeg);
    }
    if head.len() >= 4 && matches!(&head[..4], [0x02, 0x00, _, 0x00] | [0x08, 0x00, _, 0x00]) {
        return Ok(FileFormat::Dicom);
    }
    let magic = head
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    let magic = if magic.is_empty() {
        "empty file".to_string()
    } else {
        magic
    };
    Err(IoError::UnknownFormat {
        path: path.into(),
        magic,
    })
}

/// Read a mammogram from a DICOM, PNG, TIFF or JPEG file.
pub fn load(path: &Path) -> Result<Mammogram, IoError> {
    match detect_format(path)? {
        FileFormat::Dicom => dicom::load(path),
        // The image crate's decoders return errors on bad data; a panic in one (zune-jpeg
        // 0.5.15's AVX2 IDCT panics on some damaged JPEGs) is still the file's error.
        format @ (FileFormat::Png | FileFormat::Tiff | FileFormat::Jpeg) => {
            crate::quiet_panic::catch(|| raster_file::load(path)).unwrap_or_else(|panic| {
                Err(IoError::Corrupt {
                    path: path.into(),
                    format: format.name(),
                    reason: format!("decoder failed: {}", panic.lines().next().unwrap_or("")),
                })
            })
        }
    }
}

/// What `bacseg info` reports about a file. Only acquisition facts: never patient name,
/// ID, birth date, accession number, dates or any other identifier.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub format: FileFormat,
    pub width: usize,
    pub height: usize,
    pub bits_stored: u16,
    /// DICOM Photometric Interpretation; `MONOCHROME2` for grey PNG/TIFF, `RGB` for colour.
    pub photometric_interpretation: String,
    /// DICOM transfer syntax UID and name; `null` for PNG/TIFF.
    pub transfer_syntax: Option<TransferSyntaxInfo>,
    pub pixel_spacing_mm: Option<PixelSpacing>,
    pub laterality: Option<Laterality>,
    pub view_position: Option<View>,
    pub modality: Option<String>,
    pub manufacturer: Option<String>,
    pub manufacturer_model: Option<String>,
    pub presentation_lut_shape: Option<String>,
    pub rescale_slope: Option<f64>,
    pub rescale_intercept: Option<f64>,
    pub has_modality_lut: bool,
    pub number_of_frames: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransferSyntaxInfo {
    pub uid: String,
    pub name: String,
}

/// Describe a file without decoding its pixels.
pub fn info(path: &Path) -> Result<ImageInfo, IoError> {
    match detect_format(path)? {
        FileFormat::Dicom => dicom::info(path),
        format @ (FileFormat::Png | FileFormat::Tiff | FileFormat::Jpeg) => {
            raster_file::info(path, format)
        }
    }
}
