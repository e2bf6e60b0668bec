//! DICOM mammograms through dicom-rs: pixel data in any transfer syntax the registry
//! decodes (native, RLE, JPEG baseline/lossless, JPEG 2000 via OpenJPEG), the Modality LUT
//! (Rescale Slope/Intercept or a Modality LUT Sequence), MONOCHROME1 / Presentation LUT
//! Shape INVERSE inversion, and pixel spacing with its provenance.
//!
//! Only acquisition attributes are read. Patient, study and institution attributes are
//! never copied out of the data set.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions, Tag};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::{FileFormat, ImageInfo, IoError, PLAUSIBLE_SPACING_MM, TransferSyntaxInfo, check_size};
use crate::mammogram::{Laterality, Mammogram, PixelSpacing, SpacingSource, View};
use crate::raster::Raster;

const FORMAT: &str = "DICOM";

/// The whole chain of an error, outermost first (dicom-rs nests the useful part).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}

fn corrupt(path: &Path, reason: impl Into<String>) -> IoError {
    IoError::Corrupt {
        path: path.into(),
        format: FORMAT,
        reason: reason.into(),
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> IoError {
    IoError::Unsupported {
        path: path.into(),
        format: FORMAT,
        reason: reason.into(),
    }
}

fn open(path: &Path, with_pixels: bool) -> Result<DefaultDicomObject, IoError> {
    super::dicom_check::check(path).map_err(|reason| corrupt(path, reason))?;
    let mut options = OpenFileOptions::new();
    if !with_pixels {
        options = options.read_until(tags::PIXEL_DATA);
    }
    options
        .open_file(path)
        .map_err(|e| corrupt(path, chain(&e)))
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    let s = e.to_str().ok()?;
    let s = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn floats(obj: &DefaultDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok()??;
    e.to_multi_float64().ok().filter(|v| !v.is_empty())
}

fn float(obj: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    floats(obj, tag).and_then(|v| v.first().copied())
}

fn int(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    let e = obj.element_opt(tag).ok()??;
    e.to_int::<i64>().ok()
}

fn spacing_pair(v: &[f64]) -> Option<(f64, f64)> {
    match v {
        [r, c, ..] if *r > 0.0 && *c > 0.0 && r.is_finite() && c.is_finite() => Some((*r, *c)),
        [s] if *s > 0.0 && s.is_finite() => Some((*s, *s)),
        _ => None,
    }
}

/// [`raw_pixel_spacing`] when it is plausible; otherwise `None` and a note saying why.
fn pixel_spacing(obj: &DefaultDicomObject) -> (Option<PixelSpacing>, Option<String>) {
    let Some(s) = raw_pixel_spacing(obj) else {
        return (None, None);
    };
    let (lo, hi) = PLAUSIBLE_SPACING_MM;
    let ok = |v: f64| (lo..=hi).contains(&v);
    if ok(s.row_mm) && ok(s.col_mm) {
        (Some(s), None)
    } else {
        let note = format!(
            "pixel spacing {} x {} mm ({:?}) is outside the plausible {lo}-{hi} mm for a \
             mammogram: ignored (give the spacing explicitly)",
            s.row_mm, s.col_mm, s.source
        );
        (None, Some(note))
    }
}

/// Pixel spacing in the breast plane where the file allows it: Pixel Spacing first (the
/// modality calibrated it), then Imager Pixel Spacing corrected by the Estimated
/// Radiographic Magnification Factor, then plain Imager Pixel Spacing, then the nominal
/// spacing of a film scanner.
fn raw_pixel_spacing(obj: &DefaultDicomObject) -> Option<PixelSpacing> {
    let make = |(row_mm, col_mm), source| PixelSpacing {
        row_mm,
        col_mm,
        source,
    };
    if let Some(p) = floats(obj, tags::PIXEL_SPACING)
        .as_deref()
        .and_then(spacing_pair)
    {
        return Some(make(p, SpacingSource::PixelSpacing));
    }
    if let Some((r, c)) = floats(obj, tags::IMAGER_PIXEL_SPACING)
        .as_deref()
        .and_then(spacing_pair)
    {
        let mag = float(obj, tags::ESTIMATED_RADIOGRAPHIC_MAGNIFICATION_FACTOR)
            .filter(|m| *m > 0.0 && m.is_finite());
        return Some(match mag {
            Some(m) => make(
                (r / m, c / m),
                SpacingSource::ImagerPixelSpacingMagnificationCorrected,
            ),
            None => make((r, c), SpacingSource::ImagerPixelSpacing),
        });
    }
    floats(obj, tags::NOMINAL_SCANNED_PIXEL_SPACING)
        .as_deref()
        .and_then(spacing_pair)
        .map(|p| make(p, SpacingSource::NominalScannedPixelSpacing))
}

fn laterality(obj: &DefaultDicomObject) -> Option<Laterality> {
    text(obj, tags::IMAGE_LATERALITY)
        .and_then(|s| Laterality::from_dicom(&s))
        .or_else(|| text(obj, tags::LATERALITY).and_then(|s| Laterality::from_dicom(&s)))
}

/// A tabular Modality LUT (Modality LUT Sequence, first item).
#[derive(Debug)]
struct ModalityLut {
    first_mapped: i64,
    data: Vec<f32>,
    bits: u16,
}

impl ModalityLut {
    fn apply(&self, v: f32) -> f32 {
        let last = self.data.len() as i64 - 1;
        let i = (v as i64 - self.first_mapped).clamp(0, last);
        self.data[i as usize]
    }
}

fn modality_lut(path: &Path, obj: &DefaultDicomObject) -> Result<Option<ModalityLut>, IoError> {
    let Some(seq) = obj.element_opt(tags::MODALITY_LUT_SEQUENCE).ok().flatten() else {
        return Ok(None);
    };
    let Some(item) = seq.items().and_then(|items| items.first()) else {
        return Ok(None);
    };
    let bad = |what: &str| corrupt(path, format!("Modality LUT Sequence (0028,3000): {what}"));
    let desc = item
        .element_opt(tags::LUT_DESCRIPTOR)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_int::<i64>().ok())
        .ok_or_else(|| bad("missing or unreadable LUT Descriptor"))?;
    let [n, first, bits, ..] = desc[..] else {
        return Err(bad("LUT Descriptor needs 3 values"));
    };
    let n = if n == 0 {
        65536
    } else {
        n.rem_euclid(65536).max(1)
    } as usize;
    // First Mapped is US or SS depending on Pixel Representation; dicom-rs may give either.
    let first = if first > 32767 && int(obj, tags::PIXEL_REPRESENTATION) == Some(1) {
        first - 65536
    } else {
        first
    };
    let raw = item
        .element_opt(tags::LUT_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_int::<u32>().ok())
        .ok_or_else(|| bad("missing or unreadable LUT Data"))?;
    let data: Vec<f32> = if raw.len() == n {
        raw.iter().map(|&v| v as f32).collect()
    } else if raw.len() == 2 * n {
        // LUT Data read as bytes: little-endian 16-bit words.
        raw.chunks_exact(2)
            .map(|p| (p[0] | (p[1] << 8)) as f32)
            .collect()
    } else {
        return Err(bad(&format!(
            "LUT Data has {} entries, descriptor says {n}",
            raw.len()
        )));
    };
    Ok(Some(ModalityLut {
        first_mapped: first,
        data,
        bits: bits.clamp(1, 16) as u16,
    }))
}

/// Stored values of one decoded frame (native-endian samples of `bits_allocated` bits):
/// bits above Bits Stored masked off and, for signed data, the sign bit extended, as the
/// standard defines (PS3.5 8.1.1); dicom-rs leaves both to the caller.
fn stored_values(
    frame: &[u8],
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
) -> Result<Vec<f32>, String> {
    let bits = u32::from(bits_stored.clamp(1, bits_allocated.max(1)));
    let mask: u32 = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    let sign_bit = 1u32 << (bits - 1);
    let convert = |v: u32| -> f32 {
        let v = v & mask;
        if signed && v & sign_bit != 0 {
            (f64::from(v) - f64::from(mask) - 1.0) as f32
        } else {
            v as f32
        }
    };
    match bits_allocated {
        8 => Ok(frame.iter().map(|&b| convert(u32::from(b))).collect()),
        16 => Ok(frame
            .chunks_exact(2)
            .map(|c| convert(u32::from(u16::from_ne_bytes([c[0], c[1]]))))
            .collect()),
        32 => Ok(frame
            .chunks_exact(4)
            .map(|c| convert(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect()),
        other => Err(format!(
            "{other} bits allocated per sample (8, 16 or 32 supported)"
        )),
    }
}

fn transfer_syntax(obj: &DefaultDicomObject) -> TransferSyntaxInfo {
    let uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let name = TransferSyntaxRegistry
        .get(&uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| "unknown transfer syntax".to_string());
    TransferSyntaxInfo { uid, name }
}

fn frames(obj: &DefaultDicomObject) -> u32 {
    int(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

pub(super) fn info(path: &Path) -> Result<ImageInfo, IoError> {
    let obj = open(path, false)?;
    let width = int(&obj, tags::COLUMNS).unwrap_or(0).max(0) as usize;
    let height = int(&obj, tags::ROWS).unwrap_or(0).max(0) as usize;
    if width == 0 || height == 0 {
        return Err(corrupt(path, "no Rows/Columns: not an image"));
    }
    let lut = modality_lut(path, &obj)?;
    Ok(ImageInfo {
        format: FileFormat::Dicom,
        width,
        height,
        bits_stored: int(&obj, tags::BITS_STORED).unwrap_or(0).clamp(0, 64) as u16,
        photometric_interpretation: text(&obj, tags::PHOTOMETRIC_INTERPRETATION)
            .unwrap_or_else(|| "unknown".into()),
        transfer_syntax: Some(transfer_syntax(&obj)),
        pixel_spacing_mm: pixel_spacing(&obj).0,
        laterality: laterality(&obj),
        view_position: text(&obj, tags::VIEW_POSITION).and_then(|s| View::from_dicom(&s)),
        modality: text(&obj, tags::MODALITY),
        manufacturer: text(&obj, tags::MANUFACTURER),
        manufacturer_model: text(&obj, tags::MANUFACTURER_MODEL_NAME),
        presentation_lut_shape: text(&obj, tags::PRESENTATION_LUT_SHAPE),
        rescale_slope: float(&obj, tags::RESCALE_SLOPE),
        rescale_intercept: float(&obj, tags::RESCALE_INTERCEPT),
        has_modality_lut: lut.is_some(),
        number_of_frames: frames(&obj),
    })
}

pub(super) fn load(path: &Path) -> Result<Mammogram, IoError> {
    // dicom-rs and its codecs are meant to return errors on bad data; a panic deep inside
    // one must still become an error that names the file, not a crash of a whole batch.
    // Caught without printing (a panic message and backtrace before the clean error would
    // only confuse).
    match crate::quiet_panic::catch(|| load_inner(path)) {
        Ok(r) => r,
        Err(msg) => Err(corrupt(path, format!("pixel data decoder failed: {msg}"))),
    }
}

/// What the header claims about the pixels, checked before they are decoded: a size within
/// the limit, at least 2x2, and bit depths that make sense (PS3.3 C.7.6.3).
fn check_header(path: &Path, obj: &DefaultDicomObject) -> Result<(), IoError> {
    let rows = int(obj, tags::ROWS).unwrap_or(0);
    let columns = int(obj, tags::COLUMNS).unwrap_or(0);
    if rows < 2 || columns < 2 {
        return Err(corrupt(
            path,
            format!("Rows {rows} x Columns {columns}: not an image"),
        ));
    }
    check_size(path, columns as u64, rows as u64)?;
    check_jpeg2000_size(path, obj, rows, columns)?;
    check_rle_header(path, obj, allocated_bytes(obj))?;
    check_jpeg_size(path, obj, rows, columns)?;
    let allocated = int(obj, tags::BITS_ALLOCATED).unwrap_or(0);
    let stored = int(obj, tags::BITS_STORED).unwrap_or(0);
    if !matches!(allocated, 8 | 16 | 32) {
        return Err(unsupported(
            path,
            format!("{allocated} bits allocated per sample (8, 16 or 32 supported)"),
        ));
    }
    if stored < 1 || stored > allocated {
        return Err(corrupt(
            path,
            format!("Bits Stored {stored} with Bits Allocated {allocated}"),
        ));
    }
    Ok(())
}

/// Bytes per sample that Bits Allocated says (0 when it is missing or odd).
fn allocated_bytes(obj: &DefaultDicomObject) -> i64 {
    int(obj, tags::BITS_ALLOCATED).unwrap_or(0) / 8
}

/// The first fragment of encapsulated Pixel Data, if there is one.
fn first_fragment(obj: &DefaultDicomObject) -> Option<Vec<u8>> {
    obj.element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.value().fragments().and_then(|f| f.first().cloned()))
}

/// An RLE Lossless frame starts with a 64-byte header: the number of segments (one per byte of
/// each sample, at most 15) and their offsets (PS3.5 Annex G). dicom-rs's decoder trusts it
/// (a hostile count or offset makes it allocate gigabytes, or panic); it is checked here: the
/// count the header needs, the first segment right after the header, offsets increasing and
/// within the fragment.
fn check_rle_header(
    path: &Path,
    obj: &DefaultDicomObject,
    bytes_per_sample: i64,
) -> Result<(), IoError> {
    if obj.meta().transfer_syntax().trim_end_matches('\0') != "1.2.840.10008.1.2.5" {
        return Ok(());
    }
    let Some(frame) = first_fragment(obj) else {
        return Ok(());
    };
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            frame.get(4 * i..4 * i + 4)?.try_into().ok()?,
        ))
    };
    let bad = |why: String| Err(corrupt(path, format!("RLE header: {why}")));
    let Some(count) = word(0) else {
        return bad("shorter than 64 bytes".into());
    };
    let samples = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let expected = samples * bytes_per_sample;
    if i64::from(count) != expected {
        return bad(format!(
            "{count} segments where {samples} sample(s) of {bytes_per_sample} byte(s) need {expected}"
        ));
    }
    let mut previous = 0u32;
    for k in 1..=count as usize {
        let Some(offset) = word(k) else {
            return bad("shorter than 64 bytes".into());
        };
        let first_ok = k > 1 || offset == 64;
        if !first_ok || offset < previous || offset as usize >= frame.len() {
            return bad(format!(
                "segment {k} at byte {offset} of a {}-byte frame",
                frame.len()
            ));
        }
        previous = offset;
    }
    Ok(())
}

/// A JPEG (or JPEG-LS) stream says its own image size in its SOF marker; the decoder
/// allocates what it says (fuzzing found a 1 KB file whose SOF claimed 65408x65535: 4.3 GB),
/// so it must be the size of the DICOM header, with one component.
fn check_jpeg_size(
    path: &Path,
    obj: &DefaultDicomObject,
    rows: i64,
    columns: i64,
) -> Result<(), IoError> {
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let jpeg = [
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    ];
    if !jpeg.contains(&ts.as_str()) {
        return Ok(());
    }
    let Some(fragment) = first_fragment(obj) else {
        return Ok(());
    };
    let Some((width, height, components)) = jpeg_sof(&fragment) else {
        return Err(corrupt(
            path,
            "JPEG pixel data without a readable SOF marker",
        ));
    };
    // A height of 0 is defined later by a DNL marker; the width must match all the same.
    let height_ok = height == 0 || i64::from(height) == rows;
    if i64::from(width) != columns || !height_ok || components != 1 {
        return Err(corrupt(
            path,
            format!(
                "the JPEG stream is {width}x{height} with {components} component(s), the \
                 header says {columns}x{rows} grey"
            ),
        ));
    }
    Ok(())
}

/// Width, height and component count from the SOF marker segment of a JPEG stream (ITU T.81
/// B.2.2; JPEG-LS SOF55 the same), walking the marker segments from SOI.
fn jpeg_sof(bytes: &[u8]) -> Option<(u16, u16, u8)> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        while *bytes.get(at + 1)? == 0xFF {
            at += 1; // fill bytes
        }
        let marker = *bytes.get(at + 1)?;
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            at += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let sof = matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xF7);
        if sof {
            let seg = bytes.get(at + 4..at + 2 + len)?;
            let height = u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]);
            let width = u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]);
            return Some((width, height, *seg.get(5)?));
        }
        if marker == 0xDA || len < 2 {
            return None; // scan data before any SOF
        }
        at += 2 + len;
    }
}

/// A JPEG 2000 codestream says its own image size (its SIZ marker); OpenJPEG allocates what it
/// says, so it must be the size the DICOM header gives (and so within the limit) and hold one
/// component.
fn check_jpeg2000_size(
    path: &Path,
    obj: &DefaultDicomObject,
    rows: i64,
    columns: i64,
) -> Result<(), IoError> {
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    if !matches!(
        ts,
        "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203"
    ) {
        return Ok(());
    }
    let Some(fragment) = first_fragment(obj) else {
        return Ok(()); // dicom-rs reports what is missing
    };
    let Some((width, height, components)) = jpeg2000_siz(&fragment) else {
        return Err(corrupt(
            path,
            "JPEG 2000 pixel data without a readable SIZ marker",
        ));
    };
    if u64::from(width) != columns as u64 || u64::from(height) != rows as u64 || components != 1 {
        return Err(corrupt(
            path,
            format!(
                "the JPEG 2000 codestream is {width}x{height} with {components} component(s), \
                 the header says {columns}x{rows} grey"
            ),
        ));
    }
    Ok(())
}

/// Image width, height and component count from a JPEG 2000 codestream's SIZ marker segment
/// (ISO 15444-1 A.5.1), which follows the SOC marker (in a JP2 file, inside the `jp2c` box).
fn jpeg2000_siz(bytes: &[u8]) -> Option<(u32, u32, u16)> {
    let at = bytes
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?
        + 4;
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            bytes.get(at + i..at + i + 4)?.try_into().ok()?,
        ))
    };
    // Lsiz (2), Rsiz (2), Xsiz, Ysiz, XOsiz, YOsiz (4 each) ... Csiz (2) at 36.
    let (x, y, xo, yo) = (u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(16)?);
    let c = u16::from_be_bytes(bytes.get(at + 36..at + 38)?.try_into().ok()?);
    Some((x.checked_sub(xo)?, y.checked_sub(yo)?, c))
}

fn load_inner(path: &Path) -> Result<Mammogram, IoError> {
    let obj = open(path, true)?;
    let ts = transfer_syntax(&obj);
    let n_frames = frames(&obj);
    if n_frames > 1 {
        return Err(unsupported(
            path,
            format!(
                "multi-frame image ({n_frames} frames, e.g. tomosynthesis): bacseg reads single-frame 2-D mammograms"
            ),
        ));
    }
    let photometric = text(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let samples = int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let photometric = photometric.trim().to_string();
    if samples != 1 || !matches!(photometric.as_str(), "MONOCHROME1" | "MONOCHROME2") {
        return Err(unsupported(
            path,
            format!(
                "{photometric} with {samples} samples per pixel: bacseg reads grey (MONOCHROME1/2) images"
            ),
        ));
    }
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(corrupt(path, "no Pixel Data (7FE0,0010)"));
    }
    check_header(path, &obj)?;
    let decoded = obj.decode_pixel_data().map_err(|e| {
        corrupt(
            path,
            format!("cannot decode pixel data ({}): {}", ts.name, chain(&e)),
        )
    })?;
    let (width, height) = (decoded.columns() as usize, decoded.rows() as usize);
    let bits_stored = decoded.bits_stored();
    let signed = int(&obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let frame = decoded
        .frame_data(0)
        .map_err(|e| corrupt(path, format!("cannot read decoded frame: {}", chain(&e))))?;
    let stored = stored_values(frame, decoded.bits_allocated(), bits_stored, signed)
        .map_err(|reason| unsupported(path, reason))?;
    if stored.len() != width * height {
        return Err(corrupt(
            path,
            format!(
                "pixel data holds {} samples, {width}x{height} needs {}",
                stored.len(),
                width * height
            ),
        ));
    }

    // Range of stored values, mapped through the Modality LUT: the basis for inversion.
    let bits = bits_stored.clamp(1, 32) as i32;
    let (smin, smax) = if signed {
        (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0)
    } else {
        (0.0, 2f64.powi(bits) - 1.0)
    };
    let mut notes = Vec::new();
    let (mut pixels, lo, hi): (Vec<f32>, f32, f32) = match modality_lut(path, &obj)? {
        Some(lut) => {
            notes.push(format!(
                "Modality LUT Sequence applied ({} entries)",
                lut.data.len()
            ));
            let px = stored.iter().map(|&v| lut.apply(v)).collect();
            (px, 0.0, (2f64.powi(i32::from(lut.bits)) - 1.0) as f32)
        }
        None => {
            let slope = float(&obj, tags::RESCALE_SLOPE)
                .filter(|s| *s != 0.0 && s.is_finite())
                .unwrap_or(1.0);
            let intercept = float(&obj, tags::RESCALE_INTERCEPT)
                .filter(|s| s.is_finite())
                .unwrap_or(0.0);
            let (a, b) = (smin * slope + intercept, smax * slope + intercept);
            let px = if slope == 1.0 && intercept == 0.0 {
                stored
            } else {
                stored
                    .iter()
                    .map(|&v| (f64::from(v) * slope + intercept) as f32)
                    .collect()
            };
            (px, a.min(b) as f32, a.max(b) as f32)
        }
    };
    let pls = text(&obj, tags::PRESENTATION_LUT_SHAPE).unwrap_or_default();
    // MONOCHROME1 comes with Presentation LUT Shape INVERSE in conforming files: both say
    // the same inversion, applied once so that calcium is bright.
    if photometric == "MONOCHROME1" || pls.eq_ignore_ascii_case("INVERSE") {
        for v in &mut pixels {
            *v = lo + hi - *v;
        }
        notes.push(format!(
            "inverted ({}) so that dense tissue and calcium are bright",
            if photometric == "MONOCHROME1" {
                "MONOCHROME1"
            } else {
                "Presentation LUT Shape INVERSE"
            }
        ));
    }
    let pixels =
        Raster::from_vec(width, height, pixels).map_err(|e| corrupt(path, e.to_string()))?;
    let (spacing, spacing_note) = pixel_spacing(&obj);
    notes.extend(spacing_note);
    Ok(Mammogram {
        pixels,
        spacing,
        laterality: laterality(&obj),
        view: text(&obj, tags::VIEW_POSITION).and_then(|s| View::from_dicom(&s)),
        bits_stored,
        value_range: (lo, hi),
        notes,
    })
}
