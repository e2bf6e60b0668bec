//! What the commands show while they work: progress bars on a terminal, plain lines in logs
//! and batch jobs. The library reports progress to observers; these are the command line's.

use std::io::IsTerminal;

use bacseg::batch::{BatchObserver, Row, Shard, Status};
use bacseg::train::{CacheObserver, EpochRecord, Observer};
use bacseg::{Pipeline, Predictor};

/// indicatif's count of items, and of bytes, with their rates.
pub const POS: &str = "{pos}/{len} {per_sec}";
pub const BYTES: &str = "{bytes}/{total_bytes} {bytes_per_sec}";

/// A progress bar on stderr when it is a terminal (`None` otherwise: print plain lines).
/// `counter` is indicatif's template for the count and rate ([`POS`], [`BYTES`]).
pub fn bar(len: u64, message: &str, counter: &str) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {counter} eta {{eta}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        bar
    })
}

/// Print `line` above the bar, or on its own without one.
fn say(bar: Option<&indicatif::ProgressBar>, line: String) {
    match bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}

/// Progress on stderr: a bar per cached set and per epoch on a terminal, plain lines otherwise.
pub struct TrainProgress {
    bar: Option<indicatif::ProgressBar>,
    caching: Option<(String, Option<indicatif::ProgressBar>)>,
    epoch: usize,
    epochs: usize,
    total: usize,
    next_line: usize,
}

impl TrainProgress {
    pub fn new() -> Self {
        Self {
            bar: None,
            caching: None,
            epoch: 0,
            epochs: 0,
            total: 0,
            next_line: 0,
        }
    }
}

pub fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

impl CacheObserver for TrainProgress {
    fn caching(&mut self, what: &str, done: usize, total: usize, notes: &[String]) {
        if self.caching.as_ref().is_none_or(|(w, _)| w != what) {
            let bar = bar(total as u64, &format!("caching {what} images"), POS);
            self.caching = Some((what.to_string(), bar));
        }
        for note in notes {
            let bar = self.caching.as_ref().and_then(|(_, b)| b.as_ref());
            say(bar, format!("bacseg: {note}"));
        }
        match self.caching.as_ref().and_then(|(_, b)| b.as_ref()) {
            Some(b) => b.set_position(done as u64),
            None if done == total || done.is_multiple_of(10) => {
                eprintln!("bacseg: cached {done}/{total} {what} images");
            }
            None => {}
        }
    }
    fn cached(&mut self, what: &str, patches: usize, positive: usize) {
        if let Some((_, Some(b))) = self.caching.take() {
            b.finish_and_clear();
        }
        eprintln!("bacseg: {what}: {patches} patches in the breast, {positive} with BAC");
    }
}

impl Observer for TrainProgress {
    fn message(&mut self, text: &str) {
        say(self.bar.as_ref(), format!("bacseg: {text}"));
    }
    fn epoch_start(&mut self, epoch: usize, epochs: usize, patches: usize) {
        self.epoch = epoch;
        self.epochs = epochs;
        self.total = patches;
        self.next_line = patches / 4;
        self.bar = bar(patches as u64, &format!("epoch {epoch}/{epochs}"), POS);
    }
    fn step(&mut self, done: usize, loss: f64) {
        match &self.bar {
            Some(b) => {
                b.set_position(done as u64);
                b.set_message(format!(
                    "epoch {}/{} loss {loss:.4}",
                    self.epoch, self.epochs
                ));
            }
            None if done >= self.next_line && done < self.total => {
                eprintln!(
                    "bacseg: epoch {}/{}: {done}/{} patches, loss {loss:.4}",
                    self.epoch, self.epochs, self.total
                );
                self.next_line += self.total.div_ceil(4).max(1);
            }
            None => {}
        }
    }
    fn validating(&mut self, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "epoch {}/{} validating {done}/{total}",
                self.epoch, self.epochs
            ));
        }
    }
    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!(
            "bacseg: epoch {}/{}: train loss {:.4}, val loss {}, val F1 {} (pooled {}) recall {} precision {} ({} patches){}, {:.2} patches/s, {:.0} s ({:.1} s waiting for data)",
            r.epoch,
            self.epochs,
            r.train_loss,
            opt(r.val_loss, 4),
            opt(r.val.f1, 3),
            opt(r.val_pooled.f1, 3),
            opt(r.val.recall, 3),
            opt(r.val.precision, 3),
            r.val_units,
            r.val_images.as_ref().map_or(String::new(), |d| format!(
                "; images: sensitivity {} specificity {} AUC {}",
                opt(d.sensitivity, 2),
                opt(d.specificity, 2),
                opt(d.auc, 2)
            )),
            r.patches_per_s,
            r.seconds,
            r.load_wait_s
        );
    }
}

/// A progress bar on a terminal, one line per image otherwise; failures and image notes
/// (e.g. colour converted to grey) are printed either way.
pub struct PredictProgress {
    bar: Option<indicatif::ProgressBar>,
    heading: String,
}

impl PredictProgress {
    pub fn new(p: &Predictor<'_>) -> Self {
        let c = p.config();
        let heading = format!(
            "{}{} {}x{} patches at stride {}, {} blending",
            p.model().architecture().name(),
            if c.pipeline == Pipeline::PublishedScuNet {
                " (published pipeline)"
            } else {
                ""
            },
            c.infer.patch,
            c.infer.patch,
            c.infer.stride,
            c.infer.blend.as_str()
        );
        Self { bar: None, heading }
    }
}

impl BatchObserver for PredictProgress {
    fn start(&mut self, total: usize, shard: Shard) {
        let of = if shard.count > 1 {
            format!(" (shard {} of {})", shard.index, shard.count)
        } else {
            String::new()
        };
        eprintln!("bacseg: {total} image(s){of}, {}", self.heading);
        self.bar = bar(total as u64, "predict", POS);
    }

    fn image(&mut self, done: usize, total: usize, row: &Row) {
        if !row.message.is_empty() && row.status != Status::Skipped {
            let level = if row.status == Status::Failed {
                ""
            } else {
                "warning: "
            };
            say(
                self.bar.as_ref(),
                format!("bacseg: {level}{}: {}", row.input.display(), row.message),
            );
        }
        match &self.bar {
            Some(b) => {
                b.set_position(done as u64);
                b.set_message(format!("predict {}", row.name));
                if done == total {
                    b.finish_and_clear();
                }
            }
            None => eprintln!(
                "bacseg: {done}/{total} {}: {} ({:.1} s)",
                row.name,
                row.status.as_str(),
                row.seconds
            ),
        }
    }
}
