//! Segmentation metrics as defined in DESIGN.md: per-unit pixel confusion counts (a unit is a
//! patch or a whole image), recall, precision, accuracy, F1 and Jaccard, aggregated either by
//! averaging per-unit metrics (`mean`) or by summing counts first (`pooled`), with an explicit
//! policy for units where a metric's denominator is zero.

use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::patch::{Patch, PatchGrid};
use crate::raster::{Mask, Size};

/// Inputs that cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("prediction is {pred}, truth is {truth}: masks must have the same size")]
    SizeMismatch { pred: Size, truth: Size },
    #[error("the patch grid is for a {grid} image, the masks are {masks}")]
    GridMismatch { grid: Size, masks: Size },
    #[error("unknown {what} {got:?} (expected {expected})")]
    Unknown {
        what: &'static str,
        got: String,
        expected: &'static str,
    },
}

/// Pixel counts of one unit. `fn` is a keyword, hence `fn_` (serialised as `fn`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionCounts {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
}

impl std::ops::Add for ConfusionCounts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            tp: self.tp + o.tp,
            fp: self.fp + o.fp,
            fn_: self.fn_ + o.fn_,
            tn: self.tn + o.tn,
        }
    }
}

impl std::iter::Sum for ConfusionCounts {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

impl ConfusionCounts {
    /// Counts over whole masks of the same size.
    pub fn from_masks(pred: &Mask, truth: &Mask) -> Result<Self, MetricsError> {
        if pred.size() != truth.size() {
            return Err(MetricsError::SizeMismatch {
                pred: pred.size(),
                truth: truth.size(),
            });
        }
        Ok(Self::of_slices(pred.data(), truth.data()))
    }

    /// Counts over the valid region of `patch` (padding never counts). The masks must have
    /// the same size and contain the patch's valid region.
    pub fn in_patch(pred: &Mask, truth: &Mask, patch: &Patch) -> Self {
        (patch.y..patch.y + patch.valid_height)
            .map(|y| {
                let cols = patch.x..patch.x + patch.valid_width;
                Self::of_slices(&pred.row(y)[cols.clone()], &truth.row(y)[cols])
            })
            .sum()
    }

    fn of_slices(pred: &[bool], truth: &[bool]) -> Self {
        let mut c = [0u64; 4];
        for (&p, &t) in pred.iter().zip(truth) {
            c[usize::from(p) * 2 + usize::from(t)] += 1;
        }
        Self {
            tn: c[0],
            fn_: c[1],
            fp: c[2],
            tp: c[3],
        }
    }

    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// The five metrics of this unit under `policy`.
    pub fn metrics(&self, policy: EmptyPolicy) -> Metrics {
        let (tp, fp, fn_, tn) = (
            self.tp as f64,
            self.fp as f64,
            self.fn_ as f64,
            self.tn as f64,
        );
        let ratio = |num: f64, den: f64| {
            if den > 0.0 {
                Some(num / den)
            } else {
                policy.value()
            }
        };
        Metrics {
            recall: ratio(tp, tp + fn_),
            precision: ratio(tp, tp + fp),
            accuracy: ratio(tp + tn, tp + fp + fn_ + tn),
            f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
            jaccard: ratio(tp, tp + fp + fn_),
        }
    }
}

/// What a metric is for a unit where its denominator is zero: recall with no true BAC,
/// precision with no predicted BAC, F1 and Jaccard with neither. Always reported with results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyPolicy {
    /// Undefined (`null`): the unit is left out of that metric's mean. The default, because
    /// it neither rewards nor punishes a model on units that cannot measure it.
    #[default]
    Skip,
    /// 1: nothing to find and nothing found counts as perfect.
    One,
    /// 0: such units count as failures.
    Zero,
}

impl EmptyPolicy {
    pub const ALL: [EmptyPolicy; 3] = [Self::Skip, Self::One, Self::Zero];

    fn value(&self) -> Option<f64> {
        match self {
            Self::Skip => None,
            Self::One => Some(1.0),
            Self::Zero => Some(0.0),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::One => "one",
            Self::Zero => "zero",
        }
    }
}

impl std::fmt::Display for EmptyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EmptyPolicy {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| MetricsError::Unknown {
                what: "empty policy",
                got: s.into(),
                expected: "skip, one or zero",
            })
    }
}

/// The five metrics; `None` (JSON `null`) where undefined under the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub recall: Option<f64>,
    pub precision: Option<f64>,
    pub accuracy: Option<f64>,
    pub f1: Option<f64>,
    pub jaccard: Option<f64>,
}

impl Metrics {
    /// In table order: recall, precision, accuracy, F1, Jaccard.
    pub fn values(&self) -> [Option<f64>; 5] {
        [
            self.recall,
            self.precision,
            self.accuracy,
            self.f1,
            self.jaccard,
        ]
    }

    fn from_values(v: [Option<f64>; 5]) -> Self {
        Self {
            recall: v[0],
            precision: v[1],
            accuracy: v[2],
            f1: v[3],
            jaccard: v[4],
        }
    }
}

/// Each metric per unit, then averaged over the units where it is defined; `None` when it is
/// defined for none.
pub fn mean(units: &[ConfusionCounts], policy: EmptyPolicy) -> Metrics {
    let mut sum = [0.0f64; 5];
    let mut n = [0usize; 5];
    for u in units {
        for (k, v) in u.metrics(policy).values().into_iter().enumerate() {
            if let Some(v) = v {
                sum[k] += v;
                n[k] += 1;
            }
        }
    }
    Metrics::from_values(std::array::from_fn(|k| {
        (n[k] > 0).then(|| sum[k] / n[k] as f64)
    }))
}

/// Counts summed over all units, then each metric once. With no unit at all every metric
/// follows the policy (nothing was compared).
pub fn pooled(units: &[ConfusionCounts], policy: EmptyPolicy) -> Metrics {
    units
        .iter()
        .copied()
        .sum::<ConfusionCounts>()
        .metrics(policy)
}

/// Both aggregations over one level's units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub mean: Metrics,
    pub pooled: Metrics,
    /// Units aggregated.
    pub units: usize,
    /// Their summed counts.
    pub counts: ConfusionCounts,
}

impl Aggregate {
    pub fn new(units: &[ConfusionCounts], policy: EmptyPolicy) -> Self {
        Self {
            mean: mean(units, policy),
            pooled: pooled(units, policy),
            units: units.len(),
            counts: units.iter().copied().sum(),
        }
    }
}

/// Which patches are units at patch level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchSet {
    /// Patches whose truth contains any BAC: the reference method's evaluation, which
    /// otherwise would be dominated by the many empty patches where every model scores 1.
    #[default]
    Positive,
    /// Every patch of the grid (every in-breast patch when the grid skips the rest).
    All,
}

impl PatchSet {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::All => "all",
        }
    }
}

impl std::fmt::Display for PatchSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PatchSet {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "positive" => Ok(Self::Positive),
            "all" => Ok(Self::All),
            _ => Err(MetricsError::Unknown {
                what: "patch set",
                got: s.into(),
                expected: "positive or all",
            }),
        }
    }
}

/// Confusion counts of each patch in `set`, with the prediction and the truth cut by the same
/// grid; a patch counts only its valid region. In grid order.
pub fn patch_counts(
    pred: &Mask,
    truth: &Mask,
    grid: &PatchGrid,
    set: PatchSet,
) -> Result<Vec<ConfusionCounts>, MetricsError> {
    if pred.size() != truth.size() {
        return Err(MetricsError::SizeMismatch {
            pred: pred.size(),
            truth: truth.size(),
        });
    }
    if grid.image_size() != truth.size() {
        return Err(MetricsError::GridMismatch {
            grid: grid.image_size(),
            masks: truth.size(),
        });
    }
    Ok(grid
        .patches()
        .par_iter()
        .map(|p| ConfusionCounts::in_patch(pred, truth, p))
        .collect::<Vec<_>>()
        .into_iter()
        .filter(|c| set == PatchSet::All || c.tp + c.fn_ > 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::Raster;

    fn mask(w: usize, rows: &[&str]) -> Mask {
        let data: Vec<bool> = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        Raster::from_vec(w, rows.len(), data).unwrap()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn counts_and_metrics_by_hand() {
        let truth = mask(4, &["##..", "##..", "....", "...."]);
        let pred = mask(4, &["#...", "##.#", "....", "#..."]);
        let c = ConfusionCounts::from_masks(&pred, &truth).unwrap();
        // TP: (0,0),(0,1),(1,1) = 3; FN: (1,0) = 1; FP: (3,1),(0,3) = 2; TN: 16 - 6 = 10.
        assert_eq!(
            c,
            ConfusionCounts {
                tp: 3,
                fp: 2,
                fn_: 1,
                tn: 10
            }
        );
        let m = c.metrics(EmptyPolicy::Skip);
        assert!(close(m.recall, 3.0 / 4.0));
        assert!(close(m.precision, 3.0 / 5.0));
        assert!(close(m.accuracy, 13.0 / 16.0));
        assert!(close(m.f1, 6.0 / 9.0));
        assert!(close(m.jaccard, 3.0 / 6.0));
    }

    #[test]
    fn empty_truth_and_empty_prediction() {
        let empty = mask(3, &["...", "..."]);
        let some = mask(3, &["#..", "..."]);
        // Empty truth, one false positive: recall undefined, precision 0.
        let c = ConfusionCounts::from_masks(&some, &empty).unwrap();
        assert_eq!(
            c,
            ConfusionCounts {
                tp: 0,
                fp: 1,
                fn_: 0,
                tn: 5
            }
        );
        let m = c.metrics(EmptyPolicy::Skip);
        assert_eq!(m.recall, None);
        assert!(close(m.precision, 0.0) && close(m.f1, 0.0) && close(m.jaccard, 0.0));
        assert!(close(m.accuracy, 5.0 / 6.0));
        assert!(close(c.metrics(EmptyPolicy::One).recall, 1.0));
        assert!(close(c.metrics(EmptyPolicy::Zero).recall, 0.0));
        // Empty prediction, one missed pixel: precision undefined, recall 0.
        let c = ConfusionCounts::from_masks(&empty, &some).unwrap();
        assert_eq!(
            c,
            ConfusionCounts {
                tp: 0,
                fp: 0,
                fn_: 1,
                tn: 5
            }
        );
        let m = c.metrics(EmptyPolicy::Skip);
        assert_eq!(m.precision, None);
        assert!(close(m.recall, 0.0) && close(m.f1, 0.0));
        // Both empty: only accuracy is defined under skip.
        let m = ConfusionCounts::from_masks(&empty, &empty)
            .unwrap()
            .metrics(EmptyPolicy::Skip);
        assert_eq!(
            (m.recall, m.precision, m.f1, m.jaccard),
            (None, None, None, None)
        );
        assert!(close(m.accuracy, 1.0));
        let one = ConfusionCounts::from_masks(&empty, &empty)
            .unwrap()
            .metrics(EmptyPolicy::One);
        assert!(one.values().iter().all(|&v| close(v, 1.0)));
        assert!(ConfusionCounts::from_masks(&empty, &mask(2, &["..", ".."])).is_err());
    }

    #[test]
    fn mean_and_pooled_differ_as_defined() {
        let a = ConfusionCounts {
            tp: 1,
            fp: 0,
            fn_: 3,
            tn: 0,
        }; // recall 1/4, jaccard 1/4
        let b = ConfusionCounts {
            tp: 9,
            fp: 1,
            fn_: 0,
            tn: 0,
        }; // recall 1, jaccard 9/10
        let empty = ConfusionCounts {
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 4,
        };
        let units = [a, b, empty];
        let m = mean(&units, EmptyPolicy::Skip);
        assert!(close(m.recall, (0.25 + 1.0) / 2.0));
        assert!(close(m.jaccard, (0.25 + 0.9) / 2.0));
        assert!(close(m.accuracy, (0.25 + 0.9 + 1.0) / 3.0));
        let m1 = mean(&units, EmptyPolicy::One);
        assert!(close(m1.recall, (0.25 + 1.0 + 1.0) / 3.0));
        let p = pooled(&units, EmptyPolicy::Skip);
        assert!(close(p.recall, 10.0 / 13.0));
        assert!(close(p.precision, 10.0 / 11.0));
        assert!(close(p.jaccard, 10.0 / 14.0));
        assert!(close(p.accuracy, 14.0 / 18.0));
        assert_eq!(mean(&[empty], EmptyPolicy::Skip).recall, None);
        assert_eq!(pooled(&[], EmptyPolicy::Skip).accuracy, None);
        let agg = Aggregate::new(&units, EmptyPolicy::Skip);
        assert_eq!((agg.units, agg.counts.tp, agg.counts.total()), (3, 10, 18));
    }

    #[test]
    fn patches_count_valid_region_and_positive_set() {
        // 6x3 image, patches of 4 at stride 2 -> x = 0, 2 (snapped), one row, 3 tall (padded).
        let truth = mask(6, &["#.....", "......", "......"]);
        let pred = mask(6, &["#....#", "......", "......"]);
        let grid = PatchGrid::new(Size::new(6, 3), 4, 2).unwrap();
        assert_eq!(grid.len(), 2);
        let all = patch_counts(&pred, &truth, &grid, PatchSet::All).unwrap();
        assert_eq!(
            all[0],
            ConfusionCounts {
                tp: 1,
                fp: 0,
                fn_: 0,
                tn: 11
            }
        );
        assert_eq!(
            all[1],
            ConfusionCounts {
                tp: 0,
                fp: 1,
                fn_: 0,
                tn: 11
            }
        );
        let pos = patch_counts(&pred, &truth, &grid, PatchSet::Positive).unwrap();
        assert_eq!(pos, vec![all[0]]);
        let other = PatchGrid::new(Size::new(7, 3), 4, 2).unwrap();
        assert!(matches!(
            patch_counts(&pred, &truth, &other, PatchSet::All),
            Err(MetricsError::GridMismatch { .. })
        ));
        assert_eq!("all".parse::<PatchSet>().unwrap(), PatchSet::All);
        assert_eq!("one".parse::<EmptyPolicy>().unwrap(), EmptyPolicy::One);
        assert!("nan".parse::<EmptyPolicy>().is_err());
    }

    #[test]
    fn serialises_nulls_and_fn_key() {
        let c = ConfusionCounts {
            tp: 0,
            fp: 0,
            fn_: 2,
            tn: 1,
        };
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["fn"], 2);
        let m = serde_json::to_value(c.metrics(EmptyPolicy::Skip)).unwrap();
        assert!(m["precision"].is_null());
        assert_eq!(m["recall"], 0.0);
    }
}
