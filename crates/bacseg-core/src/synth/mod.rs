//! Synthetic mammograms with exact BAC masks (`bacseg synth`): a physically motivated
//! phantom (breast outline, skin, parenchyma, distractors, detector noise) with calcified
//! vessels whose mask is exactly the pixels their calcium was rendered into.
//!
//! Everything is computed in millimetres and attenuation (line integrals of mu, per mm), then
//! mapped to a 12-14 bit "for presentation" image where dense tissue and calcium are bright.
//! Each image has its own random streams derived from `(seed, index)`, so a dataset is
//! byte-identical whatever the thread scheduling, and image `i` does not depend on `count`.

mod background;
mod dataset;
mod distractors;
mod geometry;
mod labels;
mod phantom;
mod stroke;
mod texture;
mod vessels;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::mammogram::{Laterality, PixelSpacing, SpacingSource, View};
use crate::raster::{Mask, Raster, Size};

pub use background::{BackgroundError, BackgroundImage, insert_into_background, load_backgrounds};
pub use dataset::{
    DatasetError, DatasetSummary, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, ManifestImage,
    PreviewTile, Progress, WriteOptions, measure, render_preview, stem, write_dataset,
};
pub use distractors::DistractorCounts;
pub use phantom::{Density, PhantomParams};
pub use vessels::{MASK_LEVEL_MM, VesselParams};

/// Which projection the phantoms show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewChoice {
    Cc,
    Mlo,
    /// CC or MLO with equal probability, per image.
    Mixed,
}

/// Requested severity of the calcified vessels of one image. The grade in the manifest is
/// the one measured on the written mask (see [`crate::quantify::Grading`]); these targets
/// are chosen so that the two agree for the default grading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Mild,
    Moderate,
    Severe,
}

impl From<Severity> for crate::quantify::Grade {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Mild => Self::Mild,
            Severity::Moderate => Self::Moderate,
            Severity::Severe => Self::Severe,
        }
    }
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Mild => "mild",
            Self::Moderate => "moderate",
            Self::Severe => "severe",
        }
    }
}

/// Relative weights of the severities among BAC-positive images (normalised on use).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityMix {
    pub mild: f64,
    pub moderate: f64,
    pub severe: f64,
}

impl Default for SeverityMix {
    fn default() -> Self {
        Self {
            mild: 0.4,
            moderate: 0.35,
            severe: 0.25,
        }
    }
}

impl std::str::FromStr for SeverityMix {
    type Err = SynthError;

    /// `mild=0.5,moderate=0.3,severe=0.2`; missing names weigh 0.
    fn from_str(s: &str) -> Result<Self, SynthError> {
        let bad = || SynthError::SeverityMixSyntax(s.to_string());
        let mut mix = SeverityMix {
            mild: 0.0,
            moderate: 0.0,
            severe: 0.0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(bad)?;
            let value: f64 = value.trim().parse().map_err(|_| bad())?;
            match name.trim() {
                "mild" => mix.mild = value,
                "moderate" => mix.moderate = value,
                "severe" => mix.severe = value,
                _ => return Err(bad()),
            }
        }
        mix.validate()?;
        Ok(mix)
    }
}

impl SeverityMix {
    fn validate(&self) -> Result<(), SynthError> {
        let w = [self.mild, self.moderate, self.severe];
        if w.iter().any(|v| !v.is_finite() || *v < 0.0) || w.iter().sum::<f64>() <= 0.0 {
            return Err(SynthError::SeverityMix(*self));
        }
        Ok(())
    }

    /// The severity at quantile `u` in [0, 1) of the cumulative weights.
    fn pick(&self, u: f64) -> Severity {
        let total = self.mild + self.moderate + self.severe;
        let u = u * total;
        if u < self.mild {
            Severity::Mild
        } else if u < self.mild + self.moderate {
            Severity::Moderate
        } else {
            Severity::Severe
        }
    }
}

/// Everything that decides a synthetic dataset. Two datasets with equal configs are
/// byte-identical. Defaults are the documented defaults of `bacseg synth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    pub count: usize,
    pub seed: u64,
    /// Image size in pixels (width x height).
    pub size: Size,
    /// Isotropic pixel spacing, mm.
    pub spacing_mm: f64,
    pub view: ViewChoice,
    /// Fraction of images without BAC (empty masks), in [0, 1].
    pub negative_fraction: f64,
    pub severity_mix: SeverityMix,
    /// Bits stored (12..=14); `None` draws 12 or 14 per image, as on real detectors.
    pub bits: Option<u8>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            count: 16,
            seed: 0,
            size: Size::new(3328, 4096),
            spacing_mm: 0.07,
            view: ViewChoice::Mixed,
            negative_fraction: 0.25,
            severity_mix: SeverityMix::default(),
            bits: None,
        }
    }
}

/// A configuration that cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    #[error("image size {0} is too small: both sides must be at least 64 pixels")]
    SizeTooSmall(Size),
    #[error("image size {0} is too large: at most 65536 pixels a side")]
    SizeTooLarge(Size),
    #[error("pixel spacing must be between 0.01 and 2 mm, got {0}")]
    Spacing(f64),
    #[error(
        "the image would be {width_mm:.0} x {height_mm:.0} mm; a breast needs at least 60 x 80 mm (raise --size or --spacing)"
    )]
    FieldTooSmall { width_mm: f64, height_mm: f64 },
    #[error("negative fraction must be in [0, 1], got {0}")]
    NegativeFraction(f64),
    #[error("severity weights must be finite, >= 0 and not all 0, got {0:?}")]
    SeverityMix(SeverityMix),
    #[error("cannot read severity mix {0:?}: expected e.g. mild=0.4,moderate=0.35,severe=0.25")]
    SeverityMixSyntax(String),
    #[error("bits stored must be 12, 13 or 14, got {0}")]
    Bits(u8),
}

impl SynthConfig {
    /// Check every field, so that generation never sees an invalid configuration.
    pub fn validate(&self) -> Result<(), SynthError> {
        let Size { width, height } = self.size;
        if width < 64 || height < 64 {
            return Err(SynthError::SizeTooSmall(self.size));
        }
        if width > 65536 || height > 65536 {
            return Err(SynthError::SizeTooLarge(self.size));
        }
        if !(self.spacing_mm.is_finite() && (0.01..=2.0).contains(&self.spacing_mm)) {
            return Err(SynthError::Spacing(self.spacing_mm));
        }
        let (wmm, hmm) = (
            width as f64 * self.spacing_mm,
            height as f64 * self.spacing_mm,
        );
        if wmm < 60.0 || hmm < 80.0 {
            return Err(SynthError::FieldTooSmall {
                width_mm: wmm,
                height_mm: hmm,
            });
        }
        if !(0.0..=1.0).contains(&self.negative_fraction) {
            return Err(SynthError::NegativeFraction(self.negative_fraction));
        }
        self.severity_mix.validate()?;
        if let Some(b) = self.bits.filter(|b| !(12..=14).contains(b)) {
            return Err(SynthError::Bits(b));
        }
        Ok(())
    }

    /// The pixel spacing written with every image.
    pub fn pixel_spacing(&self) -> PixelSpacing {
        PixelSpacing {
            row_mm: self.spacing_mm,
            col_mm: self.spacing_mm,
            source: SpacingSource::User,
        }
    }

    /// Whether image `index` is BAC-free and, if not, its severity. Chosen from low-discrepancy
    /// sequences rather than coin flips so that any run of images has close to the requested
    /// fractions, while image `index` still does not depend on `count`.
    pub fn plan(&self, index: u64) -> Option<Severity> {
        // Offsets from the seed so that different seeds put negatives at different indices.
        let mut rng = stream_rng(self.seed, u64::MAX, Stream::Plan);
        let phase_neg: f64 = rng.random();
        let phase_sev: f64 = rng.random();
        let f = self.negative_fraction;
        let i = index as f64;
        let negative = ((i + 1.0) * f + phase_neg).floor() > (i * f + phase_neg).floor();
        if negative {
            return None;
        }
        // Golden-ratio sequence: well spread over [0, 1) for any run of indices.
        const PHI: f64 = 0.618_033_988_749_894_9;
        Some(self.severity_mix.pick((phase_sev + i * PHI).fract()))
    }
}

/// Independent random streams of one image: drawing more from one never changes another, so
/// (for example) adding a distractor does not move the vessels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Plan = 1,
    Geometry = 2,
    Texture = 3,
    Distractors = 4,
    Vessels = 5,
    Noise = 6,
    Labels = 7,
}

/// SplitMix64 finaliser: a bijective mixer with good avalanche, used to derive seeds.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ChaCha8 stream for `(seed, index, stream)`.
pub(crate) fn stream_rng(seed: u64, index: u64, stream: Stream) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    let mut h = mix64(seed ^ mix64(index ^ mix64(stream as u64)));
    for chunk in key.chunks_mut(8) {
        h = mix64(h);
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Approximately standard normal from a counter: the sum of four 16-bit uniforms
/// (Irwin-Hall), scaled to unit variance. Its tails stop at 3.5 sigma, which neither detector
/// noise nor a random spectrum needs, and it costs a fraction of Box-Muller; being a pure
/// function of `(seed, i)` it also lets rows be filled in parallel reproducibly.
#[inline]
pub(crate) fn hash_normal(seed: u64, i: u64) -> f32 {
    let h = mix64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    (s as f32 / 65535.0 - 2.0) * 1.732_050_8
}

/// e^x to about 3e-6 relative error for x in [-87, 87] (clamped outside), in plain f32
/// arithmetic: several times faster than `f32::exp` and, unlike the platform's libm, the
/// same bits on every machine, which byte-identical datasets need.
#[inline]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let t = x.clamp(-87.0, 87.0) * std::f32::consts::LOG2_E;
    // Round to nearest by adding and removing 1.5 * 2^23 (exact for |t| < 2^22); the sum's
    // low mantissa bits are then k itself. No libm `round` (a call on baseline x86-64) and
    // no float-to-int conversion, so that loops over pixels vectorise.
    let shifted = t + ROUND_MAGIC;
    let k = shifted - ROUND_MAGIC;
    let f = (t - k) * std::f32::consts::LN_2;
    // Taylor series of e^f on |f| <= ln2/2.
    let p = 1.0
        + f * (1.0
            + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f / 720.0)))));
    let k_bits = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    p * f32::from_bits(k_bits.wrapping_add(127) << 23)
}

/// 1.5 * 2^23: `(x + ROUND_MAGIC) - ROUND_MAGIC` is x rounded to the nearest integer for
/// |x| < 2^22, and `(x + ROUND_MAGIC).to_bits() - ROUND_MAGIC.to_bits()` that integer (two's
/// complement).
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;

/// `x` in [0, 65535] rounded to the nearest integer, without a float-to-int conversion (see
/// [`ROUND_MAGIC`]).
#[inline]
pub(crate) fn round_u16(x: f32) -> u16 {
    (x + ROUND_MAGIC)
        .to_bits()
        .wrapping_sub(ROUND_MAGIC.to_bits()) as u16
}

/// One standard normal deviate (Box-Muller; one of the pair is dropped for simplicity).
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Everything the generator decided about one image, written to the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthParams {
    pub view: View,
    pub laterality: Laterality,
    /// 12-14 for phantoms; 16 for real backgrounds rescaled to 16 bits.
    pub bits_stored: u8,
    /// Requested severity; `null` for a BAC-free image.
    pub requested_severity: Option<Severity>,
    /// The phantom; `null` for an image made on a real background.
    pub phantom: Option<PhantomParams>,
    /// One entry per calcified vessel tree (a vessel with its branches).
    pub vessels: Vec<VesselParams>,
}

/// One generated image with its exact BAC mask.
#[derive(Debug, Clone)]
pub struct SynthSample {
    /// Grey values in `0..2^bits_stored`, dense tissue and calcium bright.
    pub image: Raster<u16>,
    /// Exactly the pixels whose rendered calcium path length is at least [`MASK_LEVEL_MM`].
    pub mask: Mask,
    /// The phantom's breast (skin included): every mask pixel lies inside it.
    pub breast: Mask,
    pub params: SynthParams,
    /// Isotropic pixel spacing, mm (a background's own spacing when it has one).
    pub spacing_mm: f64,
    /// Calcified vessel trees with at least one mask pixel of their own.
    pub calcified_vessels: usize,
    /// The mask's burden as `quantify::measure` gives it with the default grading at the
    /// sample's spacing, without a breast mask (measured once, when the severity was checked).
    pub burden: crate::quantify::BacBurden,
    /// Conversions the reader made to a real background ("colour converted to grey"); empty
    /// for a phantom.
    pub notes: Vec<String>,
}

/// Generate image `index` of the dataset described by `config` (which must have passed
/// [`SynthConfig::validate`]).
pub fn generate(config: &SynthConfig, index: u64) -> SynthSample {
    phantom::generate(config, index, config.plan(index))
}

#[cfg(test)]
mod tests;
