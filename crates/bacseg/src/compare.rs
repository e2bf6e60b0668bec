//! Architectures compared on the same data: the split every run must share, the evaluation
//! of the trained runs on the test images at patch level (each model's patch prediction
//! before stitching) and whole-image level (the `predict` outputs), and the report
//! (`table.md`, `figure-patches.png`, `figure-whole.png`, `figures.md`). `bacseg compare`
//! trains and predicts between [`plan`] and [`evaluate`] with the `train` and `predict`
//! commands it prints; a program does the same with [`crate::train::Trainer`] and
//! [`crate::batch::predict_files`].

use std::path::{Path, PathBuf};

use bacseg_core::dataset::{Dataset, Split, recorded_spacing, strata};
use bacseg_core::detection::{Detection, DetectionRule};
use bacseg_core::io::{self, write_atomic, write_png_gray8};
use bacseg_core::metrics::{Aggregate, ConfusionCounts, EmptyPolicy, Metrics};
use bacseg_core::patch::{Patch, PatchGrid, SummedArea};
use bacseg_core::preprocess::preprocess;
use bacseg_core::raster::{Mask, Raster};
use bacseg_nn::Architecture;
use bacseg_nn::engine::patch_probabilities;
use bacseg_nn::train::{BestRecord, RunConfig, RunDir};

use crate::error::{Error, ErrorKind, Result};
use crate::evaluate::{ImageEvaluation, MaskBurden, detect, read_mask};
use crate::model::{Model, ModelSource};

/// The name of an architecture in tables and figures.
pub fn display_name(arch: Architecture) -> &'static str {
    match arch {
        Architecture::DtUnet => "DT-UNet",
        Architecture::Unet => "UNet",
        Architecture::SegNet => "SegNet",
        Architecture::ContextNet => "ContextNet",
        Architecture::ScuNet => "SCU-Net",
    }
}

/// The order of the model columns in the figures, the reference method's (its Figures 1 and 2:
/// image, ground truth, ContextNet, SegNet, UNet, DT-UNet), whatever the `--models` order.
const FIGURE_ORDER: [Architecture; 5] = [
    Architecture::ContextNet,
    Architecture::SegNet,
    Architecture::Unet,
    Architecture::DtUnet,
    Architecture::ScuNet,
];

fn figure_rank(arch: Architecture) -> usize {
    FIGURE_ORDER
        .iter()
        .position(|&a| a == arch)
        .unwrap_or(FIGURE_ORDER.len())
}

/// Published F1 (patch, whole image) of each architecture, and DT-UNet's recall.
const REFERENCE: [(&str, f64, f64); 4] = [
    ("DT-UNet", 0.687, 0.729),
    ("UNet", 0.689, 0.735),
    ("SegNet", 0.676, 0.734),
    ("ContextNet", 0.628, 0.671),
];
const REFERENCE_DT_UNET_RECALL: (f64, f64) = (0.770, 0.826);

/// What to compare and where.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Dataset directory (`DATA/splits.json`, when it exists, defines the split).
    pub data: PathBuf,
    /// Output directory: `splits.json`, `runs/<model>/`, `predictions/<model>/`, the report.
    pub out: PathBuf,
    /// The architectures, in table order; each at most once.
    pub architectures: Vec<Architecture>,
    /// Training budget of each model, minutes (recorded in the table).
    pub minutes_per_model: f64,
    /// Seed of the split (and, by the caller, of every run).
    pub seed: u64,
    /// Fractions of a stratified split (without `DATA/splits.json`).
    pub val_fraction: f64,
    pub test_fraction: f64,
    /// Train every model again even when its run holds a finished epoch.
    pub overwrite: bool,
}

/// One model of a [`Plan`]: where its run and predictions live and whether it is to be
/// trained (else a finished run on the same split is reused).
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub architecture: Architecture,
    pub run: PathBuf,
    pub predictions: PathBuf,
    pub train: bool,
}

/// The checked comparison: split, test images and runs. Nothing is written by [`plan`].
#[derive(Debug, Clone)]
pub struct Plan {
    pub data: PathBuf,
    pub out: PathBuf,
    pub split: Split,
    /// `DATA/splits.json`, or `OUT/splits.json` for a stratified split ([`Plan::write_split`]).
    pub splits_path: PathBuf,
    /// Whether the split came from the dataset.
    pub split_given: bool,
    /// Test images: stem, image, truth mask.
    pub test: Vec<(String, PathBuf, PathBuf)>,
    pub runs: Vec<PlannedRun>,
    pub seed: u64,
    pub minutes_per_model: f64,
}

/// Check the options, open the dataset, make the split and decide which runs to train. Runs
/// to reuse must have been trained on this split; that is checked before anything is written.
pub fn plan(options: &CompareOptions) -> Result<Plan> {
    if options.minutes_per_model.is_nan() || options.minutes_per_model <= 0.0 {
        return Err(Error::config("the training minutes per model must be > 0"));
    }
    if options.architectures.is_empty() {
        return Err(Error::config("no architecture to compare"));
    }
    for (i, a) in options.architectures.iter().enumerate() {
        if options.architectures[..i].contains(a) {
            return Err(Error::config(format!("{} is listed twice", a.name())));
        }
    }
    let dataset = Dataset::open(&options.data)?;
    let data_splits = options.data.join("splits.json");
    let given = data_splits.is_file();
    let (split, splits_path) = if given {
        let split = Split::load(&data_splits, &dataset)?;
        (split, data_splits)
    } else {
        let split = Split::stratified(
            &strata(&dataset)?,
            options.val_fraction,
            options.test_fraction,
            options.seed,
        )
        .map_err(|e| Error::config(format!("{}: {e}", options.data.display())))?;
        (split, options.out.join("splits.json"))
    };
    if split.test.is_empty() {
        return Err(if given {
            Error::input(format!(
                "{}: the test part is empty; compare evaluates on the test images",
                splits_path.display()
            ))
        } else {
            Error::config("the test split is empty: give a test fraction > 0 (or more images)")
        });
    }
    let mut runs = Vec::new();
    for &arch in &options.architectures {
        let run = options.out.join("runs").join(arch.name());
        let dir = RunDir::new(&run);
        let finished = dir.has_checkpoint() && dir.best_weights().is_file();
        if !options.overwrite
            && dir.has_checkpoint()
            && dir.read_config().is_ok_and(|c| c.split != split)
        {
            return Err(Error::config(format!(
                "{} was trained on another split than this one ({}); train it again \
                 (overwrite), or use the same seed and fractions",
                run.display(),
                splits_path.display()
            )));
        }
        runs.push(PlannedRun {
            architecture: arch,
            predictions: options.out.join("predictions").join(arch.name()),
            run,
            train: options.overwrite || !finished,
        });
    }
    let test = dataset
        .samples_of(&split.test)
        .map(|s| (s.stem.clone(), s.image.clone(), s.mask.clone()))
        .collect();
    Ok(Plan {
        data: options.data.clone(),
        out: options.out.clone(),
        split,
        splits_path,
        split_given: given,
        test,
        runs,
        seed: options.seed,
        minutes_per_model: options.minutes_per_model,
    })
}

impl Plan {
    /// Check the trained runs before they are used: each has a readable configuration on this
    /// plan's split and best weights, and all share the preprocessing and patch settings (the
    /// patch-level comparison needs the same grid). Returns the runs' configurations.
    pub fn check_runs(&self) -> Result<Vec<RunConfig>> {
        let mut configs: Vec<RunConfig> = Vec::new();
        for r in &self.runs {
            let dir = RunDir::new(&r.run);
            let config = dir.read_config().map_err(|e| {
                Error::with_source(ErrorKind::Input, r.run.display().to_string(), e)
            })?;
            if config.split != self.split {
                return Err(Error::config(format!(
                    "{} was trained on another split than {}; train it again (overwrite)",
                    r.run.display(),
                    self.splits_path.display()
                )));
            }
            if !dir.best_weights().is_file() {
                return Err(Error::config(format!(
                    "{}: no best.safetensors (no epoch finished within the time budget?)",
                    r.run.display()
                )));
            }
            if let Some(first) = configs.first()
                && first.patches != config.patches
            {
                return Err(Error::config(format!(
                    "{} uses other preprocessing or patch settings than {}; the patch-level \
                     comparison needs the same; train them again with the same options",
                    r.run.display(),
                    self.runs[0].run.display()
                )));
            }
            configs.push(config);
        }
        if configs.is_empty() {
            return Err(Error::config("no run to evaluate"));
        }
        Ok(configs)
    }

    /// Create the output directory and write a stratified split to `OUT/splits.json` (a split
    /// from the dataset is left where it is).
    pub fn write_split(&self) -> Result<()> {
        std::fs::create_dir_all(&self.out).map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("creating {}", self.out.display()), e)
        })?;
        if !self.split_given {
            write_atomic(&self.splits_path, |w| {
                serde_json::to_writer_pretty(&mut *w, &self.split).map_err(|e| e.to_string())
            })?;
        }
        Ok(())
    }
}

/// One compared model's results on the test images.
#[derive(Debug, Clone)]
pub struct Entry {
    pub architecture: Architecture,
    pub run: PathBuf,
    pub predictions: PathBuf,
    pub config: RunConfig,
    /// Trainable parameters.
    pub parameters: usize,
    /// Patch level (the test patches whose truth holds BAC) and whole-image level.
    /// Pixel metrics: patch level over the in-breast test patches whose truth holds BAC,
    /// whole-image level over the test images whose truth holds BAC (the BAC-free ones are
    /// scored by `detection`).
    pub patch: Aggregate,
    pub image: Aggregate,
    /// Image level: detection of BAC per test image, false-positive burden on the BAC-free
    /// ones and burden agreement on the positives ([`crate::evaluate::detect`]).
    pub detection: Detection,
}

/// The comparison's results and the files of its report.
#[derive(Debug)]
pub struct Comparison {
    pub entries: Vec<Entry>,
    /// In-breast test patches whose truth holds BAC.
    pub positive_patches: usize,
    /// `table.md`'s text.
    pub table: String,
    pub table_path: PathBuf,
    /// The figures written (no patch figure when no test patch holds BAC).
    pub figures: Vec<PathBuf>,
    pub figures_md: PathBuf,
    /// Conversions the readers made to the test images and masks ("path: note").
    pub notes: Vec<String>,
}

/// Evaluate the trained runs of `plan` on its test images (their `predict` outputs must be in
/// each run's `predictions` directory) and write the report in `OUT`. `progress(k, total,
/// stem)` is called before the k-th test image (1-based). Forward passes take `batch` patches at a time.
pub fn evaluate(
    plan: &Plan,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Comparison> {
    let configs = plan.check_runs()?;
    let mut entries = Vec::new();
    let mut models = Vec::new();
    for (r, config) in plan.runs.iter().zip(configs) {
        let model = Model::load(&ModelSource::RunDir(r.run.clone()))?;
        entries.push(Entry {
            architecture: r.architecture,
            run: r.run.clone(),
            predictions: r.predictions.clone(),
            config,
            parameters: model.parameters(),
            patch: Aggregate::new(&[], EmptyPolicy::Skip),
            image: Aggregate::new(&[], EmptyPolicy::Skip),
            detection: detect(&[], &DetectionRule::default()),
        });
        models.push(model);
    }
    let patches = entries[0].config.patches.clone();
    let batch = batch.max(1);
    // The entries in the figures' column order.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| figure_rank(entries[i].architecture));
    let mut patch_units: Vec<Vec<ConfusionCounts>> = vec![Vec::new(); entries.len()];
    let mut image_units: Vec<Vec<ConfusionCounts>> = vec![Vec::new(); entries.len()];
    let mut image_results: Vec<Vec<ImageEvaluation>> = vec![Vec::new(); entries.len()];
    let spacing = recorded_spacing(&plan.data);
    let mut patch_examples: Vec<Example> = Vec::new();
    let mut whole_examples: Vec<Example> = Vec::new();
    let mut positive_patches = 0usize;
    let mut notes = Vec::new();
    for (k, (stem, image_path, mask_path)) in plan.test.iter().enumerate() {
        progress(k + 1, plan.test.len(), stem);
        let truth = read_mask(mask_path, &mut notes)?;
        let m = io::load(image_path)?;
        notes.extend(
            m.notes
                .iter()
                .map(|n| format!("{}: {n}", image_path.display())),
        );
        let pre = preprocess(&m, &patches.preprocess);
        if pre.image.size() != truth.size() {
            return Err(Error::input(format!(
                "{}: the mask is {}x{}, the image {}x{}",
                mask_path.display(),
                truth.width(),
                truth.height(),
                pre.image.width(),
                pre.image.height()
            )));
        }
        // Whole image: the predict outputs against the truth.
        let mut predicted = Vec::with_capacity(entries.len());
        let spacing_mm = spacing.get(stem).copied();
        let truth_burden = MaskBurden::measure(&truth, spacing_mm);
        for ((e, units), results) in entries
            .iter()
            .zip(image_units.iter_mut())
            .zip(image_results.iter_mut())
        {
            let path = e.predictions.join(format!("{stem}.mask.png"));
            let pred = read_mask(&path, &mut notes)?;
            let counts = ConfusionCounts::from_masks(&pred, &truth)
                .map_err(|err| Error::input(format!("{}: {err}", path.display())))?;
            units.push(counts);
            results.push(ImageEvaluation {
                name: stem.clone(),
                counts,
                metrics: counts.metrics(EmptyPolicy::Skip),
                patches: None,
                patch_counts: None,
                spacing_mm,
                truth_burden,
                predicted_burden: MaskBurden::measure(&pred, spacing_mm),
            });
            predicted.push(pred);
        }
        let in_order: Vec<&Mask> = order.iter().map(|&i| &predicted[i]).collect();
        whole_examples.push(Example::whole(stem, &pre.image, &truth, &in_order));
        whole_examples.sort_by_key(|x| std::cmp::Reverse(x.bac));
        whole_examples.truncate(2);

        // Patch level: the grid of the runs, the patches whose truth holds BAC.
        let grid = PatchGrid::new(truth.size(), patches.patch, patches.stride)
            .and_then(|g| g.within_breast(&pre.breast, patches.min_breast_fraction))
            .map_err(|e| Error::input(format!("{stem}: {e}")))?;
        let bac = SummedArea::new(&truth);
        let positive: Vec<(Patch, usize)> = grid
            .patches()
            .iter()
            .map(|p| {
                (
                    *p,
                    bac.sum(p.x, p.y, p.valid_width, p.valid_height) as usize,
                )
            })
            .filter(|(_, bac)| *bac > 0)
            .collect();
        positive_patches += positive.len();
        if positive.is_empty() {
            continue;
        }
        let n = patches.patch;
        let mut per_model: Vec<Vec<Mask>> = Vec::with_capacity(models.len());
        for ((model, e), units) in models.iter().zip(&entries).zip(patch_units.iter_mut()) {
            let mut masks = Vec::with_capacity(positive.len());
            for chunk in positive.chunks(batch) {
                // Each patch's own forward pass, before any stitching.
                let mut images = Vec::with_capacity(chunk.len() * n * n);
                for (p, _) in chunk {
                    images.extend_from_slice(grid.extract(&pre.image, p, 0.0).data());
                }
                let prob =
                    patch_probabilities(model.network(), images, n, false).map_err(|err| {
                        Error::from(err).context(format!("{}: {stem}", e.run.display()))
                    })?;
                for (j, (p, _)) in chunk.iter().enumerate() {
                    let at = j * n * n;
                    let pred = Raster::from_fn(n, n, |x, y| {
                        x < p.valid_width && y < p.valid_height && prob[at + y * n + x] > 0.5
                    });
                    let t = grid.extract(&truth, p, false);
                    let valid = Patch { x: 0, y: 0, ..*p };
                    units.push(ConfusionCounts::in_patch(&pred, &t, &valid));
                    masks.push(pred);
                }
            }
            per_model.push(masks);
        }
        for (j, (p, bac)) in positive.iter().enumerate() {
            let worst = patch_examples.last().map_or(0, |x| x.bac);
            if patch_examples.len() < 4 || *bac > worst {
                let preds: Vec<Mask> = order.iter().map(|&i| per_model[i][j].clone()).collect();
                patch_examples.push(Example::patch(stem, &pre.image, &truth, p, n, *bac, preds));
                patch_examples.sort_by_key(|x| std::cmp::Reverse(x.bac));
                patch_examples.truncate(4);
            }
        }
    }
    for (((e, p), i), r) in entries
        .iter_mut()
        .zip(&patch_units)
        .zip(&image_units)
        .zip(&image_results)
    {
        e.patch = Aggregate::new(p, EmptyPolicy::Skip);
        // Pixel overlap where there is BAC to overlap: a BAC-free image's F1 is 0 or
        // undefined, so the images without BAC are scored in the image-level table instead.
        let positive: Vec<ConfusionCounts> = i
            .iter()
            .zip(r)
            .filter(|(_, r)| r.truth_burden.area_px > 0)
            .map(|(c, _)| *c)
            .collect();
        e.image = Aggregate::new(&positive, EmptyPolicy::Skip);
        e.detection = detect(r, &DetectionRule::default());
    }

    // The report.
    let table = render_table(plan, &entries, positive_patches);
    let table_path = plan.out.join("table.md");
    write_text(&table_path, &table)?;
    let names: Vec<&str> = order
        .iter()
        .map(|&i| display_name(entries[i].architecture))
        .collect();
    let labels: Vec<&str> = ["image", "ground truth"]
        .into_iter()
        .chain(names.iter().copied())
        .collect();
    let mut figures = Vec::new();
    if !patch_examples.is_empty() {
        let path = plan.out.join("figure-patches.png");
        write_grid(&path, &patch_examples, &labels)?;
        figures.push(path);
    }
    let path = plan.out.join("figure-whole.png");
    write_grid(&path, &whole_examples, &labels)?;
    figures.push(path);
    let figures_md = plan.out.join("figures.md");
    write_text(
        &figures_md,
        &render_figures_md(&names, &patch_examples, &whole_examples),
    )?;
    Ok(Comparison {
        entries,
        positive_patches,
        table,
        table_path,
        figures,
        figures_md,
        notes,
    })
}

/// One row of a figure: grey image, truth, then each model's mask, all the same size.
struct Example {
    /// BAC pixels of the truth shown.
    pub bac: usize,
    /// What the row shows (for the legend).
    pub what: String,
    image: Raster<u8>,
    masks: Vec<Raster<u8>>,
}

/// Side of the figure cells: small patches are enlarged (nearest) to at least this.
const MIN_CELL: usize = 128;
/// Height of the whole-image cells, about.
const WHOLE_HEIGHT: usize = 400;

fn grey(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

fn white(b: bool) -> u8 {
    if b { 255 } else { 0 }
}

impl Example {
    fn patch(
        stem: &str,
        image: &Raster<f32>,
        truth: &Mask,
        p: &Patch,
        n: usize,
        bac: usize,
        preds: Vec<Mask>,
    ) -> Self {
        let f = MIN_CELL.div_ceil(n).max(1);
        let up = |r: &Raster<u8>| Raster::from_fn(n * f, n * f, |x, y| *r.get(x / f, y / f));
        let crop_img = image.crop(p.x, p.y, n, n, 0.0).map(|&v| grey(v));
        let crop_truth = truth.crop(p.x, p.y, n, n, false).map(|&b| white(b));
        let mut masks = vec![up(&crop_truth)];
        masks.extend(preds.iter().map(|m| up(&m.map(|&b| white(b)))));
        Self {
            bac,
            what: format!(
                "{stem}, patch at x {} y {} ({n} px), {bac} BAC px",
                p.x, p.y
            ),
            image: up(&crop_img),
            masks,
        }
    }

    fn whole(stem: &str, image: &Raster<f32>, truth: &Mask, preds: &[&Mask]) -> Self {
        let (w, h) = (image.width(), image.height());
        let f = h.div_ceil(WHOLE_HEIGHT).max(1);
        let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
        // Box average for the image; a mask pixel is white when any pixel under it is BAC, so
        // that thin vessels stay visible.
        let img = Raster::from_fn(ow, oh, |ox, oy| {
            let (x0, y0) = (ox * f, oy * f);
            let (x1, y1) = ((x0 + f).min(w), (y0 + f).min(h));
            let mut sum = 0.0;
            for y in y0..y1 {
                sum += image.row(y)[x0..x1].iter().sum::<f32>();
            }
            grey(sum / ((x1 - x0) * (y1 - y0)) as f32)
        });
        let any = |m: &Mask| {
            Raster::from_fn(ow, oh, |ox, oy| {
                let (x0, y0) = (ox * f, oy * f);
                let (x1, y1) = ((x0 + f).min(w), (y0 + f).min(h));
                white((y0..y1).any(|y| m.row(y)[x0..x1].iter().any(|&b| b)))
            })
        };
        let mut masks = vec![any(truth)];
        masks.extend(preds.iter().map(|m| any(m)));
        let bac = truth.count();
        Self {
            bac,
            what: format!("{stem}: {w}x{h} px shown at 1/{f}, {bac} BAC px"),
            image: img,
            masks,
        }
    }
}

/// Draw `text` in white with its top left corner at (`x`, `y`), each font pixel `scale` pixels
/// wide; characters outside ASCII and anything beyond the raster are left out.
fn draw_text(out: &mut Raster<u8>, x: usize, y: usize, text: &str, scale: usize) {
    for (k, c) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or_default();
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x + (k * 8 + gx) * scale + dx, y + gy * scale + dy);
                        if px < out.width() && py < out.height() {
                            *out.get_mut(px, py) = 255;
                        }
                    }
                }
            }
        }
    }
}

/// Rows of cells separated by a grey border, under a band with each column's label (white on
/// black, centred; shortened when it does not fit the cell), as one 8-bit grey PNG.
fn write_grid(path: &Path, rows: &[Example], labels: &[&str]) -> Result<()> {
    const BORDER: usize = 4;
    const BORDER_GREY: u8 = 128;
    let cols = rows.first().map_or(0, |r| 1 + r.masks.len());
    let cell_w = rows.iter().map(|r| r.image.width()).max().unwrap_or(1);
    let cell_h = rows.iter().map(|r| r.image.height()).max().unwrap_or(1);
    // Font scale: 2 where every label fits the cell at that size, else 1.
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let scale = if longest * 16 <= cell_w { 2 } else { 1 };
    let band = 8 * scale + 2 * BORDER;
    let width = BORDER + cols * (cell_w + BORDER);
    let height = BORDER + band + rows.len() * (cell_h + BORDER);
    let mut out = Raster::filled(width, height.max(1), BORDER_GREY);
    for (c, label) in labels.iter().take(cols).enumerate() {
        let x0 = BORDER + c * (cell_w + BORDER);
        for y in BORDER..BORDER + band {
            for x in x0..x0 + cell_w {
                *out.get_mut(x, y) = 0;
            }
        }
        let fit: String = label.chars().take(cell_w / (8 * scale)).collect();
        let text_w = fit.chars().count() * 8 * scale;
        draw_text(
            &mut out,
            x0 + (cell_w - text_w) / 2,
            2 * BORDER,
            &fit,
            scale,
        );
    }
    for (r, ex) in rows.iter().enumerate() {
        let y0 = BORDER + band + r * (cell_h + BORDER);
        for (c, cell) in std::iter::once(&ex.image).chain(&ex.masks).enumerate() {
            let x0 = BORDER + c * (cell_w + BORDER);
            for y in 0..cell.height() {
                for x in 0..cell.width() {
                    *out.get_mut(x0 + x, y0 + y) = *cell.get(x, y);
                }
            }
        }
    }
    write_png_gray8(path, out.width(), out.height(), out.data())?;
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())
    })?;
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.3}"))
}

fn cells(m: &Metrics) -> String {
    m.values()
        .iter()
        .map(|v| fmt(*v))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Epochs trained, seconds spent (from metrics.csv) and the best epoch of a run.
fn run_summary(run: &Path) -> (usize, f64, Option<BestRecord>) {
    let (mut epochs, mut seconds) = (0, 0.0);
    if let Ok(text) = std::fs::read_to_string(run.join("metrics.csv")) {
        let mut lines = text.lines();
        let col = lines
            .next()
            .and_then(|h| h.split(',').position(|c| c.trim() == "seconds"));
        for line in lines.filter(|l| !l.trim().is_empty()) {
            epochs += 1;
            if let Some(v) = col
                .and_then(|c| line.split(',').nth(c))
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                seconds += v;
            }
        }
    }
    let best = std::fs::read_to_string(run.join("best.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<BestRecord>(&t).ok());
    (epochs, seconds, best)
}

fn render_table(plan: &Plan, entries: &[Entry], positive_patches: usize) -> String {
    let mut t = String::new();
    let split = &plan.split;
    let p = &entries[0].config.patches;
    t.push_str(&format!(
        "# Model comparison on {}\n\n\
         Split ({}): {} training, {} validation, {} test images. Seed {}. Budget: {} minutes \
         of training per model (the run's time budget), at most {} epochs. Patches {} px at stride \
         {}.\n\n\
         Measured on the {} test images, threshold 0.5. Patch level: the {} in-breast test \
         patches whose truth contains BAC, each model's patch prediction before stitching, \
         counted over the patch's image pixels. Whole image: `bacseg predict` outputs on the {} \
         test images with BAC (the BAC-free ones are scored in the image-level table below). \
         Mean over units; a metric undefined for a unit (no true and no predicted BAC) is left \
         out of its mean.\n\n",
        plan.data.display(),
        plan.splits_path.display(),
        split.train.len(),
        split.val.len(),
        split.test.len(),
        plan.seed,
        plan.minutes_per_model,
        entries[0].config.train.epochs,
        p.patch,
        p.stride,
        split.test.len(),
        positive_patches,
        entries[0].detection.positives,
    ));
    if let Some(classes) = split.describe() {
        t.push_str(&format!(
            "Images per BAC class (the split is stratified by class and view): {classes}.\n\n"
        ));
    }
    t.push_str(
        "| model | patch recall | patch precision | patch accuracy | patch F1 | patch Jaccard \
         | image recall | image precision | image accuracy | image F1 | image Jaccard |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for e in entries {
        t.push_str(&format!(
            "| {} | {} | {} |\n",
            display_name(e.architecture),
            cells(&e.patch.mean),
            cells(&e.image.mean)
        ));
    }
    let d = &entries[0].detection;
    let unit = d.unit.area();
    t.push_str(&format!(
        "\n## Image level\n\n\
         Is BAC found in each test image ({} with BAC, {} BAC-free): BAC present when the \
         predicted area reaches {} {unit}; AUC ranks the images by predicted area. False-positive \
         burden: predicted area on the BAC-free test images. Burden agreement on the test images \
         with BAC: Spearman's rho of predicted against true area and centreline length, \
         Bland-Altman bias of the area (predicted - true) with its 95% limits.\n\n\
         | model | sensitivity | specificity | ROC AUC | FP burden mean ({unit}) | FP burden max \
         ({unit}) | rho area | rho length | area bias ({unit}) | limits of agreement ({unit}) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        d.positives, d.negatives, d.threshold
    ));
    let area = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for e in entries {
        let d = &e.detection;
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            display_name(e.architecture),
            fmt(d.sensitivity),
            fmt(d.specificity),
            fmt(d.auc),
            area(d.fp_area_mean),
            area(d.fp_area_max),
            fmt(d.spearman_area),
            fmt(d.spearman_length),
            area(d.area_agreement.map(|b| b.bias)),
            d.area_agreement.map_or("-".to_string(), |b| format!(
                "{:.2} to {:.2}",
                b.lower, b.upper
            )),
        ));
    }
    t.push_str(
        "\n## Runs\n\n\
         | model | parameters | run | epochs trained | training minutes | best epoch | \
         validation score |\n|---|---|---|---|---|---|---|\n",
    );
    for e in entries {
        let (epochs, seconds, best) = run_summary(&e.run);
        t.push_str(&format!(
            "| {} | {} | `{}` | {epochs} | {:.1} | {} | {} |\n",
            display_name(e.architecture),
            e.parameters,
            e.run.display(),
            seconds / 60.0,
            best.as_ref().map_or("-".into(), |b| b.epoch.to_string()),
            best.map_or("-".into(), |b| format!(
                "{} ({})",
                fmt(b.val_f1),
                b.selection.as_str()
            )),
        ));
    }
    t.push_str(
        "\n## Published reference (different, real data)\n\n\
         The numbers reported for the reference method on its own full-field digital \
         mammograms, trained to convergence. They are not measured here and are not comparable \
         with the table above; they show the expected ranking and scale.\n\n\
         | published reference (different, real data) | patch F1 | image F1 | patch recall | \
         image recall |\n|---|---|---|---|---|\n",
    );
    for (name, patch, image) in REFERENCE {
        let (rp, ri) = if name == "DT-UNet" {
            (
                format!("{:.3}", REFERENCE_DT_UNET_RECALL.0),
                format!("{:.3}", REFERENCE_DT_UNET_RECALL.1),
            )
        } else {
            ("-".into(), "-".into())
        };
        t.push_str(&format!(
            "| {name} (published) | {patch:.3} | {image:.3} | {rp} | {ri} |\n"
        ));
    }
    t
}

fn render_figures_md(names: &[&str], patches: &[Example], whole: &[Example]) -> String {
    let columns = ["image", "ground truth"]
        .into_iter()
        .chain(names.iter().copied())
        .enumerate()
        .map(|(i, c)| format!("{}. {c}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let mut t = format!(
        "# Figures\n\n\
         Columns, left to right (labelled in each figure's top band; the models in the \
         reference method's figure order, whatever the `--models` order): {columns}. The image \
         is the preprocessed mammogram in grey; truth and predictions are white (BAC) on \
         black, predictions thresholded at 0.5. Cells are separated by a grey border.\n\n\
         ## figure-patches.png\n\n\
         Test patches with the most BAC, one per row (the patch predictions before stitching; \
         patches smaller than {MIN_CELL} px are enlarged, nearest neighbour):\n\n"
    );
    if patches.is_empty() {
        t.push_str("(no test patch contains BAC: not written)\n");
    }
    for (i, ex) in patches.iter().enumerate() {
        t.push_str(&format!("{}. {}\n", i + 1, ex.what));
    }
    t.push_str(&format!(
        "\n## figure-whole.png\n\n\
         Test images with the most BAC, one per row, downscaled to about {WHOLE_HEIGHT} px \
         height (box average for the image; a mask pixel is white when any pixel under it is \
         BAC); predictions are the `bacseg predict` masks:\n\n"
    ));
    for (i, ex) in whole.iter().enumerate() {
        t.push_str(&format!("{}. {}\n", i + 1, ex.what));
    }
    t
}
