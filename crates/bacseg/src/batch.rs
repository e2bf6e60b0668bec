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
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::predict::{ImagePrediction, PredictConfig, Predictor, Timings};

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
}

impl BatchOptions {
    /// Outputs in `out`, existing ones kept, 1024-pixel overlays, one worker.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            overwrite: false,
            overlay_size: 1024,
            shard: Shard::ALL,
        }
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
    run_batch(inputs, options, observer, &mut |input, name| {
        predict_one(predictor, input, name, options)
    })
}

/// One image's burden and notes.
type Done = (BacBurden, Vec<String>);

/// The batch loop of [`predict_files`] around any per-image work `one` (input, output name)
/// returning the burden and the image's notes.
fn run_batch(
    inputs: &[PathBuf],
    options: &BatchOptions,
    observer: &mut dyn BatchObserver,
    one: &mut dyn FnMut(&Path, &str) -> Result<Done>,
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
    observer.start(total, options.shard);
    let mut rows = Vec::with_capacity(total);
    for (i, (input, name)) in mine.into_iter().enumerate() {
        let json = options.out.join(format!("{name}.bac.json"));
        let row = if json.is_file() && !options.overwrite {
            Row {
                name,
                input: input.clone(),
                status: Status::Skipped,
                message: "outputs exist (overwrite to predict again)".into(),
                burden: std::fs::read_to_string(&json)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| serde_json::from_value(v["burden"].clone()).ok()),
                seconds: 0.0,
            }
        } else {
            let t0 = Instant::now();
            // A panic anywhere in one image's work (a decoder, the engine, a writer) is that
            // image's failure, not the batch's.
            let outcome =
                bacseg_core::quiet_panic::catch(|| one(input, &name)).unwrap_or_else(|panic| {
                    let first = panic.lines().next().unwrap_or("");
                    Err(Error::runtime(format!("internal error: {first}")))
                });
            let seconds = t0.elapsed().as_secs_f64();
            match outcome {
                Ok((burden, notes)) => Row {
                    name,
                    input: input.clone(),
                    status: Status::Ok,
                    message: notes.join("; "),
                    burden: Some(burden),
                    seconds,
                },
                Err(e) => Row {
                    name,
                    input: input.clone(),
                    status: Status::Failed,
                    message: e.chain_message(),
                    burden: None,
                    seconds,
                },
            }
        };
        observer.image(i + 1, total, &row);
        rows.push(row);
    }
    let summary_csv = options.out.join(if options.shard.count > 1 {
        format!(
            "summary-{}-of-{}.csv",
            options.shard.index, options.shard.count
        )
    } else {
        "summary.csv".into()
    });
    write_summary(&summary_csv, &rows)?;
    Ok(BatchSummary { rows, summary_csv })
}

/// Load, predict and write one image; on failure, remove what it had written.
fn predict_one(
    predictor: &mut Predictor<'_>,
    input: &Path,
    name: &str,
    options: &BatchOptions,
) -> Result<(BacBurden, Vec<String>)> {
    let start = Instant::now();
    let image = crate::load_image(input)?;
    let load_s = start.elapsed().as_secs_f64();
    let pred = predictor.predict(&image)?;
    let mut written = Vec::new();
    let result = write_outputs(
        predictor,
        &image,
        &pred,
        name,
        options,
        load_s,
        start,
        &mut written,
    );
    if result.is_err() {
        for p in written {
            let _ = std::fs::remove_file(p);
        }
    }
    result?;
    Ok((pred.burden, image.notes))
}

#[allow(clippy::too_many_arguments)]
fn write_outputs(
    predictor: &Predictor<'_>,
    image: &bacseg_core::mammogram::Mammogram,
    pred: &ImagePrediction,
    name: &str,
    options: &BatchOptions,
    load_s: f64,
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
    timings.load_s = load_s;
    timings.write_s = s.elapsed().as_secs_f64();
    timings.total_s = start.elapsed().as_secs_f64();
    let model = predictor.model();
    let record = Record {
        format: "bacseg-prediction/1",
        stem: name,
        width: image.width(),
        height: image.height(),
        spacing: pred.spacing,
        laterality: image.laterality.map(|l| format!("{l:?}")),
        view: image.view.clone().map(String::from),
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

fn write_summary(path: &Path, rows: &[Row]) -> Result<()> {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    write_atomic(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let fail = |e: csv::Error| e.to_string();
        out.write_record([
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
        ])
        .map_err(fail)?;
        for r in rows {
            let b = r.burden.as_ref();
            out.write_record([
                r.name.clone(),
                r.input.display().to_string(),
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
            ])
            .map_err(fail)?;
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
        let inputs: Vec<PathBuf> = ["a.png", "b.png", "c.png"].map(PathBuf::from).to_vec();
        let options = BatchOptions::new(dir.path().join("out"));
        let summary = run_batch(&inputs, &options, &mut Silent, &mut |input, _| {
            if input == Path::new("b.png") {
                panic!("decoder exploded\nsecond line");
            }
            let empty = bacseg_core::raster::Mask::filled(2, 2, false);
            let grading = bacseg_core::quantify::Grading::default();
            let burden = bacseg_core::quantify::measure(&empty, None, None, None, &grading);
            Ok((burden, vec![]))
        })
        .unwrap();
        let status: Vec<_> = summary.rows.iter().map(|r| r.status.clone()).collect();
        assert_eq!(status, [Status::Ok, Status::Failed, Status::Ok]);
        assert_eq!(summary.rows[1].message, "internal error: decoder exploded");
        let csv = std::fs::read_to_string(&summary.summary_csv).unwrap();
        assert_eq!(csv.lines().count(), 4, "{csv}");
        assert!(csv.contains("b,b.png,failed,"), "{csv}");
    }
}
