//! A structural check of a DICOM file before dicom-rs parses it: every declared element length
//! fits in what remains of the file (and of its enclosing item or sequence), and sequences nest
//! at most [`MAX_DEPTH`] deep.
//!
//! Written by hand because no crate does it: dicom-rs allocates what an element header
//! declares (a 397 KB file whose Pixel Data claims 0xFFFFFFF0 bytes took 4.1 GB) and parses
//! nested sequences recursively (a few thousand nested sequences overflow any thread's stack,
//! which aborts the process). The walk reads element headers only and seeks over values, so it
//! costs a few system calls per element, not a second read of the pixel data.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::Tag;
use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;

/// The deepest nesting of sequences accepted. Mammograms nest a few levels (a Modality LUT
/// Sequence, a View Code Sequence with its modifiers); DICOM itself sets no limit.
pub const MAX_DEPTH: usize = 32;

const UNDEFINED: u32 = 0xFFFF_FFFF;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Item,
    /// Encapsulated pixel data: its items are fragments of bytes, not data sets.
    Fragments,
}

/// An open sequence, item or encapsulated pixel data: where it ends (`None`: undefined length,
/// closed by a delimiter) and how the data sets inside it are encoded.
struct Open {
    end: Option<u64>,
    kind: Kind,
    encoding: Encoding,
}

struct Walker<R> {
    file: R,
    len: u64,
    pos: u64,
}

impl<R: Read + Seek> Walker<R> {
    fn read<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.file
            .read_exact(&mut b)
            .map_err(|e| format!("at byte {}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let n = i64::try_from(n).map_err(|_| "element too long".to_string())?;
        self.file
            .seek(SeekFrom::Current(n))
            .map_err(|e| format!("at byte {}: {e}", self.pos))?;
        self.pos += n as u64;
        Ok(())
    }
}

fn u16_of(b: [u8; 2], enc: Encoding) -> u16 {
    if enc == Encoding::ExplicitBe {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_of(b: [u8; 4], enc: Encoding) -> u32 {
    if enc == Encoding::ExplicitBe {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Whether an explicit VR header has two reserved bytes and a 32-bit length: every VR but the
/// short ones of PS3.5 Table 7.1-2, and so any unknown VR too, as dicom-rs reads them (a
/// walk that read an unknown VR's length otherwise would not see the length dicom-rs
/// allocates).
fn long_vr(vr: [u8; 2]) -> bool {
    !matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// The size of one value of a binary numeric VR.
fn unit_of(vr: [u8; 2]) -> Option<u32> {
    match &vr {
        b"US" | b"SS" | b"OW" => Some(2),
        b"UL" | b"SL" | b"FL" | b"AT" | b"OL" | b"OF" => Some(4),
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => Some(8),
        _ => None,
    }
}

fn is_sequence_in_dictionary(tag: Tag) -> bool {
    StandardDataDictionary
        .by_tag(tag)
        .is_some_and(|e| e.vr() == VirtualVr::Exact(VR::SQ))
}

fn encoding_of(transfer_syntax: &str) -> Option<Encoding> {
    match transfer_syntax.trim_end_matches(['\0', ' ']) {
        "1.2.840.10008.1.2" => Some(Encoding::ImplicitLe),
        "1.2.840.10008.1.2.2" => Some(Encoding::ExplicitBe),
        // Deflated: the data set is compressed and cannot be walked without inflating it;
        // dicom-rs reads it (the walk stops after the file meta information).
        "1.2.840.10008.1.2.1.99" => None,
        _ => Some(Encoding::ExplicitLe),
    }
}

/// Check the file at `path` (see the module documentation). The error says what is wrong and
/// where, for a message that names the file.
pub(super) fn check(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    walk(BufReader::with_capacity(1 << 14, file), len)
}

fn walk<R: Read + Seek>(file: R, len: u64) -> Result<(), String> {
    let mut w = Walker { file, len, pos: 0 };
    // Preamble and magic, or a data set that starts at once.
    if len >= 132 {
        w.skip(128)?;
        if &w.read::<4>()? != b"DICM" {
            w.file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            w.pos = 0;
        }
    }
    let mut dataset = Encoding::ExplicitLe;
    let mut in_meta = true;
    let mut stack: Vec<Open> = Vec::new();
    loop {
        // Close the items and sequences of defined length that end here.
        while let Some(end) = stack.last().and_then(|o| o.end) {
            if w.pos < end {
                break;
            }
            if w.pos > end {
                return Err(format!(
                    "an element overruns its enclosing item or sequence (ends at byte {end}, \
                     element at byte {})",
                    w.pos
                ));
            }
            stack.pop();
        }
        // Fewer than 8 bytes cannot hold an element; trailing padding is dicom-rs's to judge,
        // as is what an unclosed undefined length means.
        if w.len - w.pos < 8 {
            return Ok(());
        }
        let start = w.pos;
        let group_bytes = w.read::<2>()?;
        // The file meta information (group 0002) is always explicit VR little endian; the
        // data set after it uses the transfer syntax (and UN of undefined length holds
        // implicit VR little endian).
        if in_meta && u16::from_le_bytes(group_bytes) != 0x0002 {
            in_meta = false;
        }
        let e = match (in_meta, stack.last()) {
            (true, _) => Encoding::ExplicitLe,
            (false, Some(open)) => open.encoding,
            (false, None) => dataset,
        };
        let group = u16_of(group_bytes, e);
        let element = u16_of(w.read::<2>()?, e);
        let tag = Tag(group, element);
        // The limit an element must fit in: the file, and its enclosing defined lengths.
        let limit = stack
            .iter()
            .filter_map(|o| o.end)
            .min()
            .unwrap_or(w.len)
            .min(w.len);
        if group == 0xFFFE {
            let length = u32_of(w.read::<4>()?, e);
            let top = stack.last().map(|o| o.kind);
            match element {
                0xE000 if top == Some(Kind::Fragments) => {
                    fits(tag, w.pos, length, limit)?;
                    w.skip(u64::from(length))?;
                }
                0xE000 => {
                    let end = end_of(tag, w.pos, length, limit)?;
                    stack.push(Open {
                        end,
                        kind: Kind::Item,
                        encoding: e,
                    });
                }
                // Delimiters close the innermost open one of undefined length; a stray
                // delimiter is dicom-rs's to judge.
                0xE00D => {
                    if stack
                        .last()
                        .is_some_and(|o| o.kind == Kind::Item && o.end.is_none())
                    {
                        stack.pop();
                    }
                }
                0xE0DD => {
                    if stack
                        .last()
                        .is_some_and(|o| o.kind != Kind::Item && o.end.is_none())
                    {
                        stack.pop();
                    }
                }
                _ => {
                    fits(tag, w.pos, length, limit)?;
                    w.skip(u64::from(length))?;
                }
            }
            continue;
        }
        let (vr, length) = if e == Encoding::ImplicitLe {
            (None, u32_of(w.read::<4>()?, e))
        } else {
            let vr = w.read::<2>()?;
            if long_vr(vr) {
                w.read::<2>()?;
                (Some(vr), u32_of(w.read::<4>()?, e))
            } else {
                (Some(vr), u32::from(u16_of(w.read::<2>()?, e)))
            }
        };
        let sequence = match vr {
            Some(vr) => &vr == b"SQ",
            None => is_sequence_in_dictionary(tag),
        };
        if length == UNDEFINED || sequence {
            // Only Pixel Data of undefined length holds fragments; dicom-rs reads any other
            // element of undefined length as a sequence of data sets (UN ones in implicit VR),
            // and so does the walk.
            let (kind, encoding) = match vr {
                _ if tag == Tag(0x7FE0, 0x0010) && !sequence => (Kind::Fragments, e),
                Some(v) if &v == b"UN" => (Kind::Sequence, Encoding::ImplicitLe),
                _ => (Kind::Sequence, e),
            };
            let end = end_of(tag, w.pos, length, limit)?;
            stack.push(Open {
                end,
                kind,
                encoding,
            });
            let depth = stack.iter().filter(|o| o.kind == Kind::Sequence).count();
            if depth > MAX_DEPTH {
                return Err(format!(
                    "sequences nested more than {MAX_DEPTH} deep (at {tag}, byte {start})"
                ));
            }
            continue;
        }
        fits(tag, w.pos, length, limit)?;
        // A numeric value whose length is not a whole number of its units: dicom-rs reads the
        // whole units only and then parses the rest of the file shifted.
        let unit = match vr {
            Some(vr) => unit_of(vr),
            None => StandardDataDictionary
                .by_tag(tag)
                .and_then(|entry| match entry.vr() {
                    VirtualVr::Exact(vr) => unit_of(vr.to_bytes()),
                    _ => None,
                }),
        };
        if let Some(unit) = unit
            && length % unit != 0
        {
            return Err(format!(
                "element {tag} holds {length} bytes, not a whole number of its {unit}-byte values \
                 (at byte {start})"
            ));
        }
        if in_meta && tag == Tag(0x0002, 0x0010) && length <= 64 {
            let mut uid = vec![0u8; length as usize];
            w.file.read_exact(&mut uid).map_err(|e| e.to_string())?;
            w.pos += u64::from(length);
            match encoding_of(&String::from_utf8_lossy(&uid)) {
                Some(found) => dataset = found,
                None => return Ok(()),
            }
            continue;
        }
        w.skip(u64::from(length))?;
    }
}

fn fits(tag: Tag, at: u64, length: u32, limit: u64) -> Result<(), String> {
    if at + u64::from(length) > limit {
        return Err(format!(
            "element {tag} declares {length} bytes but only {} remain (at byte {at})",
            limit.saturating_sub(at)
        ));
    }
    Ok(())
}

/// Where an item or sequence starting at `at` ends: `None` for an undefined length, else its
/// end, which must be within `limit`.
fn end_of(tag: Tag, at: u64, length: u32, limit: u64) -> Result<Option<u64>, String> {
    if length == UNDEFINED {
        return Ok(None);
    }
    fits(tag, at, length, limit)?;
    Ok(Some(at + u64::from(length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explicit VR little endian: file meta with the transfer syntax, then `body`.
    fn file(body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        let uid = b"1.2.840.10008.1.2.1\0";
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        f.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        f.extend_from_slice(uid);
        f.extend_from_slice(body);
        f
    }

    fn element(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&group.to_le_bytes());
        e.extend_from_slice(&elem.to_le_bytes());
        e.extend_from_slice(vr);
        if long_vr(*vr) {
            e.extend_from_slice(&[0, 0]);
            e.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            e.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        e.extend_from_slice(value);
        e
    }

    /// `depth` sequences of undefined length, each in an item of undefined length.
    fn nested(depth: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for _ in 0..depth {
            b.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
            b.extend_from_slice(&UNDEFINED.to_le_bytes());
            b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            b.extend_from_slice(&UNDEFINED.to_le_bytes());
        }
        for _ in 0..depth {
            b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
        b
    }

    fn run(bytes: &[u8]) -> Result<(), String> {
        walk(std::io::Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn plain_elements_and_modest_nesting_pass() {
        let mut body = element(0x0028, 0x0010, b"US", &512u16.to_le_bytes());
        body.extend(nested(5));
        body.extend(element(0x7FE0, 0x0010, b"OW", &[0u8; 64]));
        assert_eq!(run(&file(&body)), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let err = run(&file(&nested(5000))).unwrap_err();
        assert!(err.contains("nested more than 32"), "{err}");
    }

    #[test]
    fn a_length_beyond_the_file_is_refused() {
        let mut body = element(0x7FE0, 0x0010, b"OW", &[0u8; 64]);
        // Pixel Data claims 0xFFFFFFF0 bytes.
        body[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let err = run(&file(&body)).unwrap_err();
        assert!(err.contains("declares 4294967280 bytes"), "{err}");
        // An element longer than its enclosing defined-length item.
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend_from_slice(&10u32.to_le_bytes());
        item.extend(element(0x0008, 0x0100, b"SH", b"ABCDEFGHIJKL"));
        let mut seq = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0];
        seq.extend_from_slice(&UNDEFINED.to_le_bytes());
        seq.extend(item);
        assert!(run(&file(&seq)).is_err());
    }

    /// Found by fuzzing (a mutation of a small JPEG-LS file): an element with an unknown VR
    /// ("VG") whose next six bytes dicom-rs reads as reserved bytes and a 32-bit length
    /// (0x7FE00000 here), allocating 2 GB for a 738-byte file, while the walk had read a 16-bit
    /// length. Unknown VRs now have the long form in the walk too.
    #[test]
    fn an_unknown_vr_has_the_long_length_form() {
        let mut body = vec![0x28, 0x00, 0x03, 0x00, b'V', b'G', 0x02, 0x00];
        body.extend_from_slice(&0x7FE0_0000u32.to_le_bytes());
        body.extend_from_slice(&[0u8; 64]);
        let err = run(&file(&body)).unwrap_err();
        assert!(err.contains("declares 2145386496 bytes"), "{err}");
    }

    /// Found by fuzzing: a US element of 257 bytes (dicom-rs reads 256 and goes on one byte
    /// off), and an OW element of undefined length that is not Pixel Data (dicom-rs reads its
    /// items as data sets, and a JPEG 2000 fragment's bytes as an element of 1 GB).
    #[test]
    fn odd_numeric_lengths_and_non_pixel_undefined_lengths_read_as_dicom_rs_does() {
        let odd = element(0x0028, 0x0002, b"US", &[0x41; 257]);
        let err = run(&file(&odd)).unwrap_err();
        assert!(err.contains("not a whole number"), "{err}");
        let mut ow = vec![0x11, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0];
        ow.extend_from_slice(&UNDEFINED.to_le_bytes());
        ow.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 16, 0, 0, 0]);
        // A "fragment" whose bytes read as an element claiming 1 GB.
        ow.extend_from_slice(&[0xFF, 0x4F, 0xFF, 0x51, b'O', b'B', 0, 0]);
        ow.extend_from_slice(&0x4000_0000u32.to_le_bytes());
        ow.extend_from_slice(&[0; 4]);
        let err = run(&file(&ow)).unwrap_err();
        assert!(err.contains("declares 1073741824 bytes"), "{err}");
    }
}
