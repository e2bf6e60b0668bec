//! The `Mammogram` type: decoded pixels plus the acquisition facts the pipeline needs
//! (pixel spacing, laterality, view). It carries no patient identifiers by construction.

use serde::{Deserialize, Serialize};

use crate::raster::Raster;

/// Which breast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Laterality {
    #[serde(rename = "L")]
    Left,
    #[serde(rename = "R")]
    Right,
}

impl Laterality {
    /// Parse a DICOM Image Laterality / Laterality value (`L`, `R`; anything else is unknown).
    pub fn from_dicom(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "L" => Some(Self::Left),
            "R" => Some(Self::Right),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Left => "L",
            Self::Right => "R",
        }
    }
}

/// Mammographic view position. Uncommon views keep their DICOM code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum View {
    Cc,
    Mlo,
    Other(String),
}

impl View {
    /// Parse a DICOM View Position value (`CC`, `MLO`, `ML`, `XCCL`...).
    pub fn from_dicom(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_uppercase();
        match s.as_str() {
            "" => None,
            "CC" => Some(Self::Cc),
            "MLO" => Some(Self::Mlo),
            _ => Some(Self::Other(s)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Cc => "CC",
            Self::Mlo => "MLO",
            Self::Other(s) => s,
        }
    }
}

impl From<View> for String {
    fn from(v: View) -> String {
        v.as_str().to_string()
    }
}

impl From<String> for View {
    fn from(s: String) -> View {
        View::from_dicom(&s).unwrap_or(View::Other(s))
    }
}

/// Where a pixel spacing came from, so that users can judge what a millimetre means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpacingSource {
    /// Pixel Spacing (0028,0030): calibrated to the patient plane by the modality.
    PixelSpacing,
    /// Imager Pixel Spacing (0018,1164) divided by Estimated Radiographic Magnification
    /// Factor (0018,1114): detector spacing corrected to the breast plane.
    ImagerPixelSpacingMagnificationCorrected,
    /// Imager Pixel Spacing (0018,1164) at the detector, no magnification correction.
    ImagerPixelSpacing,
    /// Nominal Scanned Pixel Spacing (0018,2010) of a digitised film.
    NominalScannedPixelSpacing,
    /// Given by the user on the command line or in a config.
    User,
}

impl SpacingSource {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::PixelSpacing => "Pixel Spacing (0028,0030)",
            Self::ImagerPixelSpacingMagnificationCorrected => {
                "Imager Pixel Spacing (0018,1164) / Estimated Radiographic Magnification Factor (0018,1114)"
            }
            Self::ImagerPixelSpacing => {
                "Imager Pixel Spacing (0018,1164), not magnification-corrected"
            }
            Self::NominalScannedPixelSpacing => "Nominal Scanned Pixel Spacing (0018,2010)",
            Self::User => "given by the user",
        }
    }
}

/// Physical pixel size in millimetres and its provenance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PixelSpacing {
    /// Distance between row centres (vertical), mm.
    pub row_mm: f64,
    /// Distance between column centres (horizontal), mm.
    pub col_mm: f64,
    pub source: SpacingSource,
}

impl PixelSpacing {
    /// Area of one pixel in mm^2.
    pub fn pixel_area_mm2(&self) -> f64 {
        self.row_mm * self.col_mm
    }
}

/// A decoded mammogram: grey values where dense tissue and calcium are bright
/// (MONOCHROME1 input has already been inverted), after the Modality LUT.
#[derive(Debug, Clone)]
pub struct Mammogram {
    /// Grey values, row-major. Their range is that of the source (e.g. 0..4095 for 12 bits).
    pub pixels: Raster<f32>,
    pub spacing: Option<PixelSpacing>,
    pub laterality: Option<Laterality>,
    pub view: Option<View>,
    /// Bits per sample in the source (Bits Stored for DICOM, the PNG/TIFF sample depth).
    pub bits_stored: u16,
    /// Smallest and largest values the source can hold after the Modality LUT (e.g.
    /// (0, 4095) for 12 bits stored): used for writing 16-bit output without clipping.
    pub value_range: (f32, f32),
    /// Things the reader did that the user should know about (e.g. colour converted to grey).
    pub notes: Vec<String>,
}

impl Mammogram {
    pub fn width(&self) -> usize {
        self.pixels.width()
    }

    pub fn height(&self) -> usize {
        self.pixels.height()
    }
}
