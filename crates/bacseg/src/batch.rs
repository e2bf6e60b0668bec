//! Prediction over many files: finding the inputs (files, directory trees, a manifest CSV),
//! giving each a distinct output name, sharing them between workers (Slurm arrays, Kubernetes
//! indexed jobs), skipping images already done, isolating failures (an error or a panic on one
//! image is that image's failed row; the batch goes on) and writing `summary.csv`.
//!
//! Outputs per image, in the output directory: `<name>.mask.png` (0/255), `<name>.prob.png`
//! (16-bit probabilities), `<name>.overlay.png`, and `<name>.bac.json` written last: its
//! presence marks the image as done. A failed image leaves none of them. Schema:
//! docs/cli.md#predict.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bacseg_core::io::{write_atomic, write_mask_png, write_png_rgb8, write_unit_png16};
use bacseg_core::mammogram::PixelSpacing;
use bacseg_core::overlay;
use bacseg_core::quantify::BacBurden;
use bacseg_nn::Device;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::predict::{ImagePrediction, PredictConfig, Predictor, Prepared, Timings};

/// File extensions taken as images without looking inside.
const IMAGE_EXTENSIONS: [&str; 7] = ["dcm", "dicom", "png", "tif", "tiff", "jpg", "jpeg"];

/// Inputs found, and what could not be looked at.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Image files, directories expanded in sorted order, then the manifest's.
    pub files: Vec<PathBuf>,
    /// Entries that could not be read (unreadable directories, symlink loops), one line each.
    pub warnings: Vec<String>,
}

/// The images among `paths` (files as given; directories walked recursively, hidden entries
/// skipped, symlinks followed with loops reported) and those a manifest CSV lists (its first
/// column; a header row is recognised by naming no file; relative paths are relative to the
/// CSV's directory). In a directory, a file is an image by its extension (DICOM, PNG, TIFF,
/// JPEG) or, whatever its name (PACS exports: none, or a UID such as `1.2.840...78`), by
/// content that starts like DICOM, PNG, TIFF or JPEG.
pub fn collect_inputs(paths: &[PathBuf], manifest: Option<&Path>) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            let walker = walkdir::WalkDir::new(p)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| {
                    e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')
                });
            for entry in walker {
                match entry {
                    Ok(e) if e.file_type().is_file() && is_image_file(e.path()) => {
                        found.push(e.into_path())
                    }
                    Ok(_) => {}
                    Err(e) => inputs.warnings.push(walk_warning(&e)),
                }
            }
            inputs.files.extend(found);
        } else {
            inputs.files.push(p.clone());
        }
    }
    if let Some(csv) = manifest {
        inputs.files.extend(read_manifest(csv)?);
    }
    if inputs.files.is_empty() {
        return Err(Error::input(
            "no input images (give files, directories or a manifest)",
        ));
    }
    Ok(inputs)
}

fn walk_warning(e: &walkdir::Error) -> String {
    let path = e
        .path()
        .map_or_else(String::new, |p| format!("{}: ", p.display()));
    if let Some(ancestor) = e.loop_ancestor() {
        format!(
            "{path}symbolic link loop back to {} (not followed)",
            ancestor.display()
        )
    } else {
        match e.io_error() {
            Some(io) => format!("{path}{io} (skipped)"),
            None => format!("{path}{e} (skipped)"),
        }
    }
}

/// The first column of a manifest CSV, read with the csv crate (quoted fields, any line ends).
pub fn read_manifest(csv_path: &Path) -> Result<Vec<PathBuf>> {
    let fail = |e: csv::Error| {
        Error::with_source(
            ErrorKind::Input,
            format!("manifest {}", csv_path.display()),
            e,
        )
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .map_err(fail)?;
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(fail)?;
        let first = record.get(0).unwrap_or("");
        let p = PathBuf::from(first);
        let p = if p.is_absolute() { p } else { base.join(p) };
        if first.is_empty() || (i == 0 && !p.exists()) {
            continue; // blank line or header
        }
        files.push(p);
    }
    Ok(files)
}

fn is_image_file(p: &Path) -> bool {
    let known = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    known || looks_like_image(p)
}

/// Whether a file's first bytes are those of a DICOM (preamble + `DICM`), PNG, TIFF or JPEG.
fn looks_like_image(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    let Ok(file) = std::fs::File::open(p) else {
        return false;
    };
    let mut n = 0;
    let mut reader = file.take(132);
    while let Ok(k) = reader.read(&mut head[n..]) {
        if k == 0 {
            break;
        }
        n += k;
    }
    let head = &head[..n];
    head.starts_with(b"\x89PNG")
        || head.starts_with(b"II*\0")
        || head.starts_with(b"MM\0*")
        || head.starts_with(&[0xFF, 0xD8, 0xFF])
        || head.get(128..132) == Some(b"DICM")
}

/// Output names for `inputs`, in order: each file's stem, with `-2`, `-3`... added where two
/// inputs share a stem, never equal to another input's stem or to a name already given.
pub fn output_names(inputs: &[PathBuf]) -> Vec<String> {
    let base = |p: &PathBuf| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "image".into())
    };
    let stems: HashSet<String> = inputs.iter().map(base).collect();
    let mut first_owner: HashMap<String, usize> = HashMap::new();
    for (i, p) in inputs.iter().enumerate() {
        first_owner.entry(base(p)).or_insert(i);
    }
    let mut given = HashSet::new();
    inputs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let b = base(p);
            let mut name = b.clone();
            if first_owner[&b] != i {
                let mut k = 2;
                loop {
                    name = format!("{b}-{k}");
                    if !stems.contains(&name) && !given.contains(&name) {
                        break;
                    }
                    k += 1;
                }
            }
            given.insert(name.clone());
            name
        })
        .collect()
}

/// One worker's share of the inputs: `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Everything (one worker).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// A checked shard.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::config(format!(
                "shard index {index} must be below shard count {count}"
            )));
        }
        Ok(Self { index, count })
    }

    /// The shard of this process from the environment: `BACSEG_SHARD_INDEX`/`_COUNT`; a Slurm
    /// array task (`SLURM_ARRAY_TASK_ID` with `_MIN`, `_MAX`, `_STEP`, `_COUNT`: `--array=1-N`,
    /// `0-N`, `1-N:2` all give indices 0..count); a Kubernetes indexed Job
    /// (`JOB_COMPLETION_INDEX`, with the completions in `BACSEG_SHARD_COUNT`). `None` when
    /// none is set.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let num = |name: &str| -> Result<Option<usize>> {
            match var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    Error::config(format!("{name}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let explicit_count = num("BACSEG_SHARD_COUNT")?;
        if let Some(index) = num("BACSEG_SHARD_INDEX")? {
            let count = explicit_count.ok_or_else(|| {
                Error::config("BACSEG_SHARD_INDEX is set but BACSEG_SHARD_COUNT is not")
            })?;
            return Self::new(index, count).map(Some);
        }
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let count = match (
                explicit_count,
                num("SLURM_ARRAY_TASK_COUNT")?,
                num("SLURM_ARRAY_TASK_MAX")?,
            ) {
                (Some(c), _, _) => c,
                (None, Some(c), _) => c,
                (None, None, Some(max)) => (max.saturating_sub(min)) / step + 1,
                (None, None, None) => {
                    return Err(Error::config(
                        "SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or _MAX \
                         (or BACSEG_SHARD_COUNT)",
                    ));
                }
            };
            if id < min || (id - min) % step != 0 {
                return Err(Error::config(format!(
                    "SLURM_ARRAY_TASK_ID {id} is not on the array's grid (min {min}, step {step})"
                )));
            }
            return Self::new((id - min) / step, count).map(Some);
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = explicit_count.ok_or_else(|| {
                Error::config(
                    "JOB_COMPLETION_INDEX is set: give the job's completions as \
                     BACSEG_SHARD_COUNT (or a shard count)",
                )
            })?;
            return Self::new(index, count).map(Some);
        }
        Ok(None)
    }

    /// Whether `path` belongs to this shard: SHA-256 of its canonical path (so `a.png`,
    /// `./a.png` and `/data/a.png` agree), modulo the count.
    pub fn owns(&self, path: &Path) -> bool {
        if self.count == 1 {
            return true;
        }
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_le_bytes(first) % self.count as u64) as usize == self.index
    }
}

/// How a batch writes its outputs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Predict images whose outputs exist again.
    pub overwrite: bool,
    /// Longest side of the overlay PNG.
    pub overlay_size: usize,
    pub shard: Shard,
    /// With a key, every output names an input by a keyed hash of its path (`anon-` and 32
    /// hex digits, HMAC-SHA-256) instead of the path, for archives whose paths carry patient
    /// identifiers; see [`anonymize_key`].
    pub anonymize_key: Option<Vec<u8>>,
    /// Decode and preprocess the next image on a thread of its own while the current one is
    /// predicted (one more preprocessed image in memory; default on). Each image's `bac.json`
    /// records its decoding and preprocessing times and how long its prediction waited for
    /// them.
    pub decode_ahead: bool,
}

impl BatchOptions {
    /// Outputs in `out`, existing ones kept, 1024-pixel overlays, one worker, paths shown,
    /// the next image decoded ahead.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            overwrite: false,
            overlay_size: 1024,
            shard: Shard::ALL,
            anonymize_key: None,
            decode_ahead: true,
        }
    }

    /// How outputs name `input`: its path as given, or its keyed hash.
    pub fn shown_path(&self, input: &Path) -> String {
        match &self.anonymize_key {
            None => input.display().to_string(),
            Some(key) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                mac.update(input.as_os_str().as_encoded_bytes());
                let digest = mac.finalize().into_bytes();
                format!("anon-{}", crate::weights::hex(&digest[..16]))
            }
        }
    }
}

/// The key for anonymised paths of outputs in `out`: `BACSEG_ANONYMIZE_KEY` when it is set
/// (the same key gives the same hashes across output directories and sites), else the key
/// kept in `OUT/.bacseg-anonymize-key`, made (32 random bytes, readable by the owner only)
/// on first use so that reruns into `out` name inputs alike.
pub fn anonymize_key(out: &Path) -> Result<Vec<u8>> {
    if let Some(key) = std::env::var_os("BACSEG_ANONYMIZE_KEY").filter(|k| !k.is_empty()) {
        return Ok(key.as_encoded_bytes().to_vec());
    }
    let path = out.join(".bacseg-anonymize-key");
    let io = |e: std::io::Error| Error::with_source(ErrorKind::Io, path.display().to_string(), e);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return hex_decode(text.trim())
            .ok_or_else(|| Error::input(format!("{}: not a hex key", path.display())));
    }
    std::fs::create_dir_all(out).map_err(io)?;
    let key: [u8; 32] = rand::random();
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(&path) {
        Ok(mut f) => {
            use std::io::Write;
            writeln!(f, "{}", crate::weights::hex(&key)).map_err(io)?;
            Ok(key.to_vec())
        }
        // Another worker made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            hex_decode(text.trim())
                .ok_or_else(|| Error::input(format!("{}: not a hex key", path.display())))
        }
        Err(e) => Err(io(e)),
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Bytes at the start of an input hashed for its identity (a DICOM header, an image header
/// and the first pixels).
const HEAD_BYTES: u64 = 64 * 1024;

/// What identifies the input of a prediction, recorded in its `bac.json`: an image is skipped
/// as done only when its outputs were made from a file of the same size and first bytes, with
/// the same model and settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputIdentity {
    /// The path as given (its keyed hash with anonymised paths).
    pub path: String,
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (informative; not compared, since
    /// copying an archive changes it).
    pub modified: Option<u64>,
    /// SHA-256 of the first 64 KiB.
    pub head_sha256: String,
}

impl InputIdentity {
    /// The identity of `input`, shown as `path`. Only regular files are read.
    pub fn of(input: &Path, path: String) -> Result<Self> {
        use std::io::Read;
        let fail = |e: std::io::Error| {
            Error::with_source(ErrorKind::Input, input.display().to_string(), e)
        };
        let meta = std::fs::metadata(input).map_err(fail)?;
        if !meta.is_file() {
            return Err(Error::input(format!(
                "{}: not a regular file",
                input.display()
            )));
        }
        let mut head = Vec::new();
        std::fs::File::open(input)
            .map_err(fail)?
            .take(HEAD_BYTES)
            .read_to_end(&mut head)
            .map_err(fail)?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        Ok(Self {
            path,
            size: meta.len(),
            modified,
            head_sha256: crate::weights::hex(&Sha256::digest(&head)),
        })
    }

    /// Whether both describe the same file content (size and first bytes).
    pub fn same_content(&self, other: &Self) -> bool {
        self.size == other.size && self.head_sha256 == other.head_sha256
    }
}

/// What became of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// One row of summary.csv.
#[derive(Debug, Clone)]
pub struct Row {
    /// Output name.
    pub name: String,
    pub input: PathBuf,
    /// The input as the outputs name it: its path, or its keyed hash with anonymised paths.
    pub shown: String,
    pub status: Status,
    /// Why it failed or was skipped; the image's notes (e.g. colour converted to grey).
    pub message: String,
    pub burden: Option<BacBurden>,
    pub seconds: f64,
}

/// Progress of a batch (all methods optional).
pub trait BatchObserver {
    /// Before the first image: how many this worker has.
    fn start(&mut self, _total: usize, _shard: Shard) {}
    /// After each image (`done` of `total`).
    fn image(&mut self, _done: usize, _total: usize, _row: &Row) {}
}

/// An observer that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;
impl BatchObserver for Silent {}

/// The rows of a batch and where its summary is.
#[derive(Debug, Clone)]
pub struct BatchSummary {
    pub rows: Vec<Row>,
    pub summary_csv: PathBuf,
}

impl BatchSummary {
    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

/// bac.json.
#[derive(Debug, Serialize)]
struct Record<'a> {
    format: &'static str,
    stem: &'a str,
    input: &'a InputIdentity,
    /// SHA-256 of the model (architecture, widths, weights) and settings that made this.
    fingerprint: &'a str,
    width: usize,
    height: usize,
    spacing: Option<PixelSpacing>,
    laterality: Option<String>,
    view: Option<String>,
    burden: &'a BacBurden,
    model: ModelRecord<'a>,
    settings: &'a PredictConfig,
    timings: Timings,
}

#[derive(Debug, Serialize)]
struct ModelRecord<'a> {
    architecture: &'a str,
    config: &'a serde_json::Value,
    weights: String,
    backend: String,
    bacseg_version: &'static str,
    precision: bacseg_nn::Precision,
}

/// Predict every input of this worker's shard, writing each image's outputs and then
/// `summary.csv` (`summary-<index>-of-<count>.csv` for a shard). Output names come from all
/// `inputs` (see [`output_names`]), so every worker names an image alike. Failures of single
/// images (unreadable files, errors, panics) are rows with status `failed`; the function fails
/// only when the output directory or the summary cannot be written.
pub fn predict_files(
    predictor: &mut Predictor<'_>,
    inputs: &[PathBuf],
    options: &BatchOptions,
    observer: &mut dyn BatchObserver,
) -> Result<BatchSummary> {
    let fingerprint = fingerprint(predictor);
    let config = predictor.config().clone();
    let load = |input: &Path| -> Result<(About, Vec<String>, Prepared)> {
        let mut image = crate::load_image(input)?;
        let about = About {
            width: image.width(),
            height: image.height(),
            laterality: image.laterality.map(|l| format!("{l:?}")),
            view: image.view.clone().map(String::from),
        };
        let notes = std::mem::take(&mut image.notes);
        // The pixels are freed inside once preprocessing is done with them.
        Ok((about, notes, config.prepare(image)?))
    };
    run_batch(
        inputs,
        options,
        &fingerprint,
        observer,
        &load,
        &mut |_, name, id, image| predict_one(predictor, name, id, image, &fingerprint, options),
    )
}

/// SHA-256 of what makes a prediction: the model (architecture, widths, weights file content,
/// precision) and the prediction settings.
fn fingerprint(predictor: &Predictor<'_>) -> String {
    let model = predictor.model();
    let weights = crate::weights::sha256_of(model.weights_path()).unwrap_or_default();
    let what = serde_json::json!({
        "architecture": model.spec().architecture,
        "config": model.spec().config,
        "weights_sha256": weights,
        "precision": model.precision(),
        "settings": predictor.config(),
    });
    crate::weights::hex(&Sha256::digest(what.to_string().as_bytes()))
}

/// One image's burden and notes.
type Done = (BacBurden, Vec<String>);

/// What bac.json says made it.
#[derive(Debug, Deserialize)]
struct Made {
    input: Option<InputIdentity>,
    fingerprint: Option<String>,
    burden: Option<BacBurden>,
}

/// Row messages of images another process claimed.
const ELSEWHERE: &str = "being predicted by another process";
const ELSEWHERE_DONE: &str = "predicted by another process";

/// An image claimed by this process: `<name>.lock` in the output directory, made exclusively
/// (holding `pid host`) and removed when the claim is dropped. A lock whose process is gone
/// (same host, no such process; or older than a day) is taken over.
struct Claim {
    path: PathBuf,
}

impl Claim {
    /// Claim `name`, or say who holds it.
    fn take(out: &Path, name: &str) -> Result<Self, String> {
        let path = out.join(format!("{name}.lock"));
        let me = format!("{} {}", std::process::id(), host());
        for _ in 0..2 {
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            match made {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = f.write_all(me.as_bytes());
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    if !lock_is_stale(&path, &holder) {
                        let mut parts = holder.split_whitespace();
                        let (pid, on) = (parts.next().unwrap_or("?"), parts.next().unwrap_or("?"));
                        return Err(format!("pid {pid} on {on}"));
                    }
                    let _ = std::fs::remove_file(&path);
                }
                // A directory that cannot hold locks: predict without one.
                Err(_) => {
                    return Ok(Self {
                        path: PathBuf::new(),
                    });
                }
            }
        }
        Err("a lock that could not be taken over".into())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether the process holding a lock is gone.
fn lock_is_stale(path: &Path, holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    let (pid, on) = (parts.next(), parts.next());
    if let (Some(pid), Some(on)) = (pid, on)
        && on == host()
        && Path::new("/proc/self").exists()
    {
        return !Path::new("/proc").join(pid).exists();
    }
    // Another host, or no /proc: a lock untouched for a day is abandoned.
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600))
}

/// Whether the outputs under an image's name count as done for this input: `Ok` with their
/// burden when they were made from the same file content with the same model and settings,
/// else `Err` saying why they are predicted again.
fn done_before(
    json: &Path,
    id: &InputIdentity,
    fingerprint: &str,
) -> Result<Option<BacBurden>, &'static str> {
    let made = std::fs::read_to_string(json)
        .ok()
        .and_then(|t| serde_json::from_str::<Made>(&t).ok())
        .ok_or("its bac.json cannot be read")?;
    match &made.input {
        None => return Err("its bac.json does not record its input (an older bacseg made it)"),
        Some(prev) if !prev.same_content(id) => {
            return Err("they were made from another file with the same output name");
        }
        Some(_) => {}
    }
    if made.fingerprint.as_deref() != Some(fingerprint) {
        return Err("they were made with another model or other settings");
    }
    Ok(made.burden)
}

/// An input as the batch's `load` made it (for prediction: decoded and preprocessed), the
/// seconds that took, and the seconds the batch waited for it (less when it was made ahead).
pub(crate) struct Loaded<T> {
    pub value: T,
    pub load_s: f64,
    pub wait_s: f64,
}

/// The work on one image of [`run_batch`]: input, output name, input identity, the input as
/// `load` made it.
type OneImage<'a, T> = dyn FnMut(&Path, &str, &InputIdentity, Loaded<T>) -> Result<Done> + 'a;

/// A decoding that runs while the previous image is predicted: the input's index and its
/// thread (the result, or the message of a panic inside the decoder; the decoding's seconds).
struct Ahead<'s, T> {
    index: usize,
    thread: std::thread::ScopedJoinHandle<'s, (std::result::Result<Result<T>, String>, f64)>,
}

/// Decode `input` with `load`, a panic inside the decoder caught as the image's error.
fn decode<T>(load: &(dyn Fn(&Path) -> Result<T> + Sync), input: &Path) -> Result<Loaded<T>> {
    let t = Instant::now();
    let value = bacseg_core::quiet_panic::catch(|| load(input)).map_err(internal_error)??;
    let load_s = t.elapsed().as_secs_f64();
    Ok(Loaded {
        value,
        load_s,
        wait_s: load_s,
    })
}

/// The failure a panic becomes: its first line.
fn internal_error(panic: String) -> Error {
    let first = panic.lines().next().unwrap_or("");
    Error::runtime(format!("internal error: {first}"))
}

/// The batch loop of [`predict_files`] around any decoding `load` and per-image work `one`
/// (input, output name, input identity, the decoded input) returning the burden and the
/// image's notes. With [`BatchOptions::decode_ahead`], the next image this worker will predict
/// is decoded on a thread of its own while `one` runs on the current one.
fn run_batch<T: Send>(
    inputs: &[PathBuf],
    options: &BatchOptions,
    fingerprint: &str,
    observer: &mut dyn BatchObserver,
    load: &(dyn Fn(&Path) -> Result<T> + Sync),
    one: &mut OneImage<'_, T>,
) -> Result<BatchSummary> {
    let names = output_names(inputs);
    let mine: Vec<(&PathBuf, String)> = inputs
        .iter()
        .zip(names)
        .filter(|(p, _)| options.shard.owns(p))
        .collect();
    std::fs::create_dir_all(&options.out).map_err(|e| {
        Error::with_source(
            ErrorKind::Io,
            format!("creating {}", options.out.display()),
            e,
        )
    })?;
    let total = mine.len();
    let summary_csv = options.out.join(if options.shard.count > 1 {
        format!(
            "summary-{}-of-{}.csv",
            options.shard.index, options.shard.count
        )
    } else {
        "summary.csv".into()
    });
    // Rows are appended as images finish (a killed batch leaves the summary of what it did);
    // the complete summary replaces it at the end.
    let mut live = LiveSummary::create(&summary_csv)?;
    observer.start(total, options.shard);
    let mut rows = Vec::with_capacity(total);
    // Whether image j will be predicted, as far as can be told before its turn (its identity
    // can be read, its outputs are not done, no other process holds it): only such an image
    // is decoded ahead.
    let will_predict = |j: usize| {
        let (input, name) = &mine[j];
        let json = options.out.join(format!("{name}.bac.json"));
        let Ok(id) = InputIdentity::of(input, options.shown_path(input)) else {
            return false;
        };
        let done =
            !options.overwrite && json.is_file() && done_before(&json, &id, fingerprint).is_ok();
        !done && !options.out.join(format!("{name}.lock")).exists()
    };
    std::thread::scope(|scope| -> Result<()> {
        let mut ahead: Option<Ahead<'_, T>> = None;
        for (i, (input, name)) in mine.iter().enumerate() {
            let (input, name) = (*input, name.as_str());
            let json = options.out.join(format!("{name}.bac.json"));
            let shown = options.shown_path(input);
            let t0 = Instant::now();
            let row = |status, message: String, burden| Row {
                name: name.to_string(),
                input: input.clone(),
                shown: shown.clone(),
                status,
                message,
                burden,
                seconds: t0.elapsed().as_secs_f64(),
            };
            // A decoding started for this image, if any; one for an image that turns out to
            // be skipped is waited for and dropped with the skip.
            let mine_ahead = ahead.take_if(|a| a.index == i);
            let id = match InputIdentity::of(input, shown.clone()) {
                Ok(id) => id,
                Err(e) => {
                    let message = e
                        .chain_message()
                        .replace(&input.display().to_string(), &shown);
                    let r = row(Status::Failed, message, None);
                    live.append(&r)?;
                    observer.image(i + 1, total, &r);
                    rows.push(r);
                    continue;
                }
            };
            let mut again = None;
            if json.is_file() && !options.overwrite {
                match done_before(&json, &id, fingerprint) {
                    Ok(burden) => {
                        let r = row(
                            Status::Skipped,
                            "outputs exist (overwrite to predict again)".into(),
                            burden,
                        );
                        live.append(&r)?;
                        observer.image(i + 1, total, &r);
                        rows.push(r);
                        continue;
                    }
                    Err(why) => again = Some(format!("predicted again: {why}")),
                }
            }
            // Claim the image: another process predicting into the same directory skips it.
            let claim = match Claim::take(&options.out, name) {
                Ok(claim) => claim,
                Err(holder) => {
                    let r = row(Status::Skipped, format!("{ELSEWHERE} ({holder})"), None);
                    live.append(&r)?;
                    observer.image(i + 1, total, &r);
                    rows.push(r);
                    continue;
                }
            };
            // It may have been finished by another process since it was looked at.
            if !options.overwrite
                && json.is_file()
                && let Ok(burden) = done_before(&json, &id, fingerprint)
            {
                drop(claim);
                let r = row(Status::Skipped, ELSEWHERE_DONE.into(), burden);
                live.append(&r)?;
                observer.image(i + 1, total, &r);
                rows.push(r);
                continue;
            }
            let loaded = match mine_ahead {
                Some(a) => {
                    let waited = Instant::now();
                    match a.thread.join() {
                        Ok((value, load_s)) => value.map_err(internal_error).and_then(|v| {
                            v.map(|value| Loaded {
                                value,
                                load_s,
                                wait_s: waited.elapsed().as_secs_f64(),
                            })
                        }),
                        Err(_) => Err(Error::runtime("internal error: the decoding thread")),
                    }
                }
                None => decode(load, input),
            };
            // The next image to predict is decoded while this one runs.
            if options.decode_ahead
                && let Some(j) = (i + 1..mine.len()).find(|&j| will_predict(j))
            {
                let next = mine[j].0;
                ahead = Some(Ahead {
                    index: j,
                    thread: scope.spawn(move || {
                        let t = Instant::now();
                        let value = bacseg_core::quiet_panic::catch(|| load(next));
                        (value, t.elapsed().as_secs_f64())
                    }),
                });
            }
            // A panic anywhere in one image's work (a decoder, the engine, a writer) is that
            // image's failure, not the batch's.
            let outcome = loaded.and_then(|loaded| {
                bacseg_core::quiet_panic::catch(|| one(input, name, &id, loaded))
                    .unwrap_or_else(|panic| Err(internal_error(panic)))
            });
            drop(claim);
            let r = match outcome {
                Ok((burden, notes)) => {
                    let message = again
                        .into_iter()
                        .chain(notes)
                        .collect::<Vec<_>>()
                        .join("; ");
                    row(Status::Ok, message, Some(burden))
                }
                Err(e) => {
                    let message = e
                        .chain_message()
                        .replace(&input.display().to_string(), &shown);
                    row(Status::Failed, message, None)
                }
            };
            live.append(&r)?;
            observer.image(i + 1, total, &r);
            rows.push(r);
        }
        Ok(())
    })?;
    // Images another process was predicting: their outputs, if it has finished them.
    for r in rows.iter_mut().filter(|r| r.message.starts_with(ELSEWHERE)) {
        let json = options.out.join(format!("{}.bac.json", r.name));
        if let Ok(id) = InputIdentity::of(&r.input, r.shown.clone())
            && let Ok(burden) = done_before(&json, &id, fingerprint)
        {
            r.burden = burden;
            r.message = ELSEWHERE_DONE.into();
        }
    }
    write_summary(&summary_csv, &rows)?;
    Ok(BatchSummary { rows, summary_csv })
}

/// Predict and write one prepared image; on failure, remove what it had written.
fn predict_one(
    predictor: &mut Predictor<'_>,
    name: &str,
    id: &InputIdentity,
    loaded: Loaded<(About, Vec<String>, Prepared)>,
    fingerprint: &str,
    options: &BatchOptions,
) -> Result<(BacBurden, Vec<String>)> {
    // From the wait for its preparation: a preparation done ahead is not this image's time.
    let start = Instant::now()
        .checked_sub(std::time::Duration::from_secs_f64(loaded.wait_s))
        .unwrap_or_else(Instant::now);
    let (about, notes, prepared) = loaded.value;
    let mut pred = predictor.predict_prepared(prepared)?;
    pred.timings.load_s = loaded.load_s - pred.timings.preprocess_s;
    pred.timings.waited_s = loaded.wait_s;
    let mut written = Vec::new();
    let result = write_outputs(
        predictor,
        &about,
        &pred,
        name,
        (id, fingerprint),
        options,
        start,
        &mut written,
    );
    if result.is_err() {
        for p in written {
            let _ = std::fs::remove_file(p);
        }
    }
    result?;
    Ok((pred.burden, notes))
}

/// What bac.json records of the input image.
struct About {
    width: usize,
    height: usize,
    laterality: Option<String>,
    view: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn write_outputs(
    predictor: &Predictor<'_>,
    image: &About,
    pred: &ImagePrediction,
    name: &str,
    (id, fingerprint): (&InputIdentity, &str),
    options: &BatchOptions,
    start: Instant,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let s = Instant::now();
    let path = |kind: &str| options.out.join(format!("{name}.{kind}"));
    let mask = path("mask.png");
    write_mask_png(&mask, &pred.mask)?;
    written.push(mask);
    let prob = path("prob.png");
    write_unit_png16(&prob, &pred.prob)?;
    written.push(prob);
    let ov = overlay::render(
        &pred.display,
        Some(&pred.breast),
        Some(&pred.mask),
        options.overlay_size,
    );
    let ov_path = path("overlay.png");
    write_png_rgb8(&ov_path, ov.width, ov.height, &ov.data)?;
    written.push(ov_path);
    let mut timings = pred.timings;
    timings.write_s = s.elapsed().as_secs_f64();
    timings.total_s = start.elapsed().as_secs_f64();
    let model = predictor.model();
    let record = Record {
        format: "bacseg-prediction/2",
        stem: name,
        input: id,
        fingerprint,
        width: image.width,
        height: image.height,
        spacing: pred.spacing,
        laterality: image.laterality.clone(),
        view: image.view.clone(),
        burden: &pred.burden,
        model: ModelRecord {
            architecture: &model.spec().architecture,
            config: &model.spec().config,
            weights: model
                .weights_path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            backend: format!("{:?}", Device::default()),
            bacseg_version: env!("CARGO_PKG_VERSION"),
            precision: model.precision(),
        },
        settings: predictor.config(),
        timings,
    };
    // Written last: its presence marks the image as done.
    write_atomic(&path("bac.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &record).map_err(|e| e.to_string())
    })?;
    Ok(())
}

const SUMMARY_HEADER: [&str; 11] = [
    "stem",
    "input",
    "status",
    "area_px",
    "area_mm2",
    "length_mm",
    "segments",
    "grade",
    "prob_sum",
    "seconds",
    "message",
];

/// One row of summary.csv as text (the input as the outputs show it).
fn summary_record(r: &Row) -> [String; 11] {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let b = r.burden.as_ref();
    [
        r.name.clone(),
        r.shown.clone(),
        r.status.as_str().to_string(),
        b.map_or(String::new(), |b| b.area_px.to_string()),
        num(b.and_then(|b| b.area_mm2)),
        num(b.and_then(|b| b.length_mm)),
        b.map_or(String::new(), |b| b.segments.to_string()),
        b.and_then(|b| b.grade)
            .map_or("", |g| g.as_str())
            .to_string(),
        num(b.and_then(|b| b.prob.map(|p| p.sum))),
        format!("{:.2}", r.seconds),
        r.message.clone(),
    ]
}

/// summary.csv while the batch runs: the header, then each row as its image finishes, flushed
/// to the file at once.
struct LiveSummary {
    path: PathBuf,
    out: csv::Writer<std::fs::File>,
}

impl LiveSummary {
    fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("writing {}", path.display()), e)
        })?;
        let mut live = Self {
            path: path.to_path_buf(),
            out: csv::Writer::from_writer(file),
        };
        live.write(&SUMMARY_HEADER.map(String::from))?;
        Ok(live)
    }

    fn append(&mut self, row: &Row) -> Result<()> {
        self.write(&summary_record(row))
    }

    fn write(&mut self, record: &[String; 11]) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Io,
                format!("writing {}: {e}", self.path.display()),
            )
        };
        self.out.write_record(record).map_err(|e| fail(&e))?;
        self.out.flush().map_err(|e| fail(&e))
    }
}

/// The complete summary, in input order, replacing the live one atomically.
fn write_summary(path: &Path, rows: &[Row]) -> Result<()> {
    write_atomic(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let fail = |e: csv::Error| e.to_string();
        out.write_record(SUMMARY_HEADER).map_err(fail)?;
        for r in rows {
            out.write_record(summary_record(r)).map_err(fail)?;
        }
        out.flush().map_err(|e| e.to_string())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_on_one_image_is_its_failed_row_and_the_batch_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let inputs: Vec<PathBuf> = ["a.png", "b.png", "c.png"]
            .map(|n| dir.path().join(n))
            .to_vec();
        for p in &inputs {
            std::fs::write(p, b"x").unwrap();
        }
        for decode_ahead in [true, false] {
            let mut options = BatchOptions::new(dir.path().join("out"));
            options.decode_ahead = decode_ahead;
            let summary = run_batch(
                &inputs,
                &options,
                "fp",
                &mut Silent,
                &|input: &Path| {
                    if input.ends_with("c.png") {
                        panic!("decoder exploded\nsecond line");
                    }
                    Ok(())
                },
                &mut |input, _, _, _| {
                    if input.ends_with("b.png") {
                        panic!("engine exploded\nsecond line");
                    }
                    Ok((empty_burden(), vec![]))
                },
            )
            .unwrap();
            let status: Vec<_> = summary.rows.iter().map(|r| r.status.clone()).collect();
            assert_eq!(status, [Status::Ok, Status::Failed, Status::Failed]);
            assert_eq!(summary.rows[1].message, "internal error: engine exploded");
            assert_eq!(summary.rows[2].message, "internal error: decoder exploded");
            let csv = std::fs::read_to_string(&summary.summary_csv).unwrap();
            assert_eq!(csv.lines().count(), 4, "{csv}");
            assert!(csv.contains("b.png,failed,"), "{csv}");
            std::fs::remove_dir_all(&options.out).unwrap();
        }
    }

    fn empty_burden() -> BacBurden {
        let empty = bacseg_core::raster::Mask::filled(2, 2, false);
        let grading = bacseg_core::quantify::Grading::default();
        bacseg_core::quantify::measure(&empty, None, None, None, &grading)
    }

    /// Each image after the first is decoded on another thread while the one before it is
    /// predicted (here: the decoding of image k + 1 has started before image k's work ends);
    /// images whose outputs are done are not decoded at all.
    #[test]
    fn the_next_image_is_decoded_while_the_current_one_is_predicted() {
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let inputs: Vec<PathBuf> = ["a.png", "b.png", "c.png", "d.png"]
            .map(|n| dir.path().join(n))
            .to_vec();
        for p in &inputs {
            std::fs::write(p, b"x").unwrap();
        }
        let options = BatchOptions::new(dir.path().join("out"));
        std::fs::create_dir_all(&options.out).unwrap();
        // c.png was predicted before with the same model: skipped, so never decoded.
        let id = InputIdentity::of(&inputs[2], options.shown_path(&inputs[2])).unwrap();
        let made = serde_json::json!({"input": id, "fingerprint": "fp", "burden": null});
        std::fs::write(options.out.join("c.bac.json"), made.to_string()).unwrap();
        let events = Arc::new(Mutex::new(Vec::<String>::new()));
        let main = std::thread::current().id();
        let log = |e: String| events.lock().unwrap().push(e);
        let summary = run_batch(
            &inputs,
            &options,
            "fp",
            &mut Silent,
            &|input: &Path| {
                let name = input.file_stem().unwrap().to_string_lossy().into_owned();
                let on = if std::thread::current().id() == main {
                    "main"
                } else {
                    "ahead"
                };
                log(format!("decode {name} on {on}"));
                Ok(name)
            },
            &mut |_, _, _, loaded: Loaded<String>| {
                log(format!("predict {} start", loaded.value));
                // The work ends once the next image's decoding has started (or after 20 s,
                // which the order checked below then shows): a decoding ahead starts while
                // this runs however slowly the machine schedules its thread.
                let next = match loaded.value.as_str() {
                    "a" => Some("decode b on ahead"),
                    "b" => Some("decode d on ahead"),
                    _ => None,
                };
                let t = std::time::Instant::now();
                while let Some(next) = next
                    && !events.lock().unwrap().iter().any(|e| e == next)
                    && t.elapsed() < std::time::Duration::from_secs(20)
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                log(format!("predict {} end", loaded.value));
                Ok((empty_burden(), vec![]))
            },
        )
        .unwrap();
        let status: Vec<_> = summary.rows.iter().map(|r| r.status.clone()).collect();
        assert_eq!(
            status,
            [Status::Ok, Status::Ok, Status::Skipped, Status::Ok]
        );
        let events = events.lock().unwrap().clone();
        let at = |e: &str| {
            events
                .iter()
                .position(|x| x == e)
                .unwrap_or_else(|| panic!("no {e:?} in {events:?}"))
        };
        assert!(
            !events.iter().any(|e| e.starts_with("decode c")),
            "{events:?}"
        );
        assert!(
            events.contains(&"decode a on main".to_string()),
            "{events:?}"
        );
        for (this, next) in [("a", "b"), ("b", "d")] {
            assert!(
                at(&format!("decode {next} on ahead")) < at(&format!("predict {this} end")),
                "{events:?}"
            );
        }
    }

    #[test]
    fn anonymised_paths_are_keyed_hashes_and_the_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let key = anonymize_key(&out).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(anonymize_key(&out).unwrap(), key, "the kept key is reused");
        let mut options = BatchOptions::new(&out);
        let plain = options.shown_path(Path::new("/archive/PATIENT-123/1-1.dcm"));
        assert_eq!(plain, "/archive/PATIENT-123/1-1.dcm");
        options.anonymize_key = Some(key);
        let a = options.shown_path(Path::new("/archive/PATIENT-123/1-1.dcm"));
        let b = options.shown_path(Path::new("/archive/PATIENT-124/1-1.dcm"));
        assert!(
            a.starts_with("anon-") && a.len() == 5 + 32 && !a.contains("PATIENT"),
            "{a}"
        );
        assert_ne!(a, b);
        options.anonymize_key = Some(b"another key".to_vec());
        assert_ne!(
            options.shown_path(Path::new("/archive/PATIENT-123/1-1.dcm")),
            a
        );
    }
}
