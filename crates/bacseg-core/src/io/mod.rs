//! Reading mammograms (DICOM, PNG, TIFF) into [`Mammogram`] and writing images, masks and
//! reports atomically. The format is detected from the file's content, not its extension.

mod dicom;
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
}

impl IoError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::UnknownFormat { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Unsupported { path, .. }
            | Self::Write { path, .. } => path,
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
        FileFormat::Png | FileFormat::Tiff | FileFormat::Jpeg => raster_file::load(path),
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
