//! Image-level results, as BAC studies report them beside pixel overlap: is BAC present in
//! the image (sensitivity, specificity, ROC AUC over the predicted burden), how much BAC a
//! model marks on BAC-free images (the false-positive burden), and how well the predicted
//! burden follows the true one on positives (Spearman's rho of area and length, Bland-Altman
//! bias and limits of agreement of the area).
//!
//! An image is truly positive when its truth mask holds any BAC pixel, and predicted positive
//! when the predicted BAC area reaches the detection threshold ([`DetectionRule`]: 1 mm^2 by
//! default, or 25 pixels where the pixel spacing is unknown), so that a few stray pixels do
//! not make an image "positive". AUC ranks images by predicted area, with no threshold.

use serde::{Deserialize, Serialize};

use crate::mammogram::{PixelSpacing, SpacingSource};
use crate::raster::Mask;

/// The unit of the areas (and lengths) compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BurdenUnit {
    /// Areas in mm^2, lengths in mm: every image had a pixel spacing.
    Mm,
    /// Areas in pixels, lengths in pixel steps: some image had no pixel spacing.
    Px,
}

impl BurdenUnit {
    pub fn area(&self) -> &'static str {
        match self {
            Self::Mm => "mm^2",
            Self::Px => "px",
        }
    }
}

/// When an image counts as predicted positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionRule {
    /// Least predicted BAC area, mm^2, for BAC to be reported present (areas in mm^2).
    pub min_area_mm2: f64,
    /// The same in pixels, used when some image has no pixel spacing.
    pub min_area_px: f64,
}

impl Default for DetectionRule {
    fn default() -> Self {
        Self {
            min_area_mm2: 1.0,
            min_area_px: 25.0,
        }
    }
}

impl DetectionRule {
    pub fn threshold(&self, unit: BurdenUnit) -> f64 {
        match unit {
            BurdenUnit::Mm => self.min_area_mm2,
            BurdenUnit::Px => self.min_area_px,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.min_area_mm2) || !positive(self.min_area_px) {
            return Err(format!(
                "detection thresholds must be positive, got {} mm^2 and {} px",
                self.min_area_mm2, self.min_area_px
            ));
        }
        Ok(())
    }
}

/// Area and centreline length of one mask, in the unit of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Burden {
    pub area: f64,
    pub length: f64,
}

/// A mask's area and centreline length in pixels, and in mm^2 and mm with a spacing: what
/// `bacseg evaluate`, `compare` and training validation compare.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MaskBurden {
    pub area_px: usize,
    pub length_px: f64,
    pub area_mm2: Option<f64>,
    pub length_mm: Option<f64>,
}

impl MaskBurden {
    /// Area and length of `mask` (the centreline length of `quantify::measure`).
    pub fn measure(mask: &Mask, spacing_mm: Option<f64>) -> Self {
        let spacing = spacing_mm.map(|mm| PixelSpacing {
            row_mm: mm,
            col_mm: mm,
            source: SpacingSource::User,
        });
        let b = crate::quantify::measure(
            mask,
            None,
            spacing,
            None,
            &crate::quantify::Grading::default(),
        );
        Self {
            area_px: b.area_px,
            length_px: b.length_px,
            area_mm2: b.area_mm2,
            length_mm: b.length_mm,
        }
    }

    /// Area and length in `unit` (`Mm` needs the spacing).
    pub fn in_unit(&self, unit: BurdenUnit) -> Burden {
        match unit {
            BurdenUnit::Mm => Burden {
                area: self.area_mm2.unwrap_or(f64::NAN),
                length: self.length_mm.unwrap_or(f64::NAN),
            },
            BurdenUnit::Px => Burden {
                area: self.area_px as f64,
                length: self.length_px,
            },
        }
    }
}

/// One image's true and predicted burden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageBurden {
    pub name: String,
    pub truth: Burden,
    pub predicted: Burden,
}

/// Bland-Altman agreement of predicted against true values (difference predicted - true).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlandAltman {
    /// Mean difference.
    pub bias: f64,
    /// Sample standard deviation of the differences.
    pub sd: f64,
    /// bias -/+ 1.96 sd.
    pub lower: f64,
    pub upper: f64,
    pub n: usize,
}

/// Image-level detection and burden agreement over a set of images. Values that need images
/// the set lacks (specificity without a BAC-free image, AUC without both kinds, rho with
/// fewer than three positives) are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub unit: BurdenUnit,
    /// Least predicted area for "BAC present", in `unit`'s area.
    pub threshold: f64,
    /// Images with true BAC, and without.
    pub positives: usize,
    pub negatives: usize,
    pub true_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
    pub false_positives: usize,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
    /// ROC AUC of the predicted area as a score for BAC presence (ties count one half).
    pub auc: Option<f64>,
    /// Predicted BAC area on the BAC-free images: mean and largest.
    pub fp_area_mean: Option<f64>,
    pub fp_area_max: Option<f64>,
    /// Spearman's rho of predicted against true area, and length, over the positives.
    pub spearman_area: Option<f64>,
    pub spearman_length: Option<f64>,
    /// Bland-Altman of the area over the positives (two or more).
    pub area_agreement: Option<BlandAltman>,
}

impl Detection {
    /// The results of `images` (all in `unit`) under `rule`.
    pub fn new(images: &[ImageBurden], unit: BurdenUnit, rule: &DetectionRule) -> Self {
        let threshold = rule.threshold(unit);
        let (pos, neg): (Vec<&ImageBurden>, Vec<&ImageBurden>) =
            images.iter().partition(|i| i.truth.area > 0.0);
        let found = |i: &&&ImageBurden| i.predicted.area >= threshold;
        let tp = pos.iter().filter(found).count();
        let fp = neg.iter().filter(found).count();
        let ratio = |a: usize, n: usize| (n > 0).then(|| a as f64 / n as f64);
        let neg_areas: Vec<f64> = neg.iter().map(|i| i.predicted.area).collect();
        let auc = (!pos.is_empty() && !neg.is_empty()).then(|| {
            let mut wins = 0.0;
            for p in &pos {
                for &n in &neg_areas {
                    wins += match p.predicted.area.total_cmp(&n) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
            wins / (pos.len() * neg.len()) as f64
        });
        let column = |f: fn(&ImageBurden) -> f64| pos.iter().map(|i| f(i)).collect::<Vec<f64>>();
        let differences: Vec<f64> = pos
            .iter()
            .map(|i| i.predicted.area - i.truth.area)
            .collect();
        Self {
            unit,
            threshold,
            positives: pos.len(),
            negatives: neg.len(),
            true_positives: tp,
            false_negatives: pos.len() - tp,
            true_negatives: neg.len() - fp,
            false_positives: fp,
            sensitivity: ratio(tp, pos.len()),
            specificity: ratio(neg.len() - fp, neg.len()),
            auc,
            fp_area_mean: (!neg_areas.is_empty())
                .then(|| neg_areas.iter().sum::<f64>() / neg_areas.len() as f64),
            fp_area_max: neg_areas.iter().copied().reduce(f64::max),
            spearman_area: spearman(&column(|i| i.predicted.area), &column(|i| i.truth.area)),
            spearman_length: spearman(&column(|i| i.predicted.length), &column(|i| i.truth.length)),
            area_agreement: bland_altman(&differences),
        }
    }
}

/// Average ranks (1-based; tied values share the mean of their ranks).
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Spearman's rank correlation (Pearson's on average ranks); `None` for fewer than three
/// pairs or when either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 3 {
        return None;
    }
    pearson(&ranks(a), &ranks(b))
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// Bias and limits of agreement of `differences` (predicted - true); `None` for fewer than two.
pub fn bland_altman(differences: &[f64]) -> Option<BlandAltman> {
    let n = differences.len();
    if n < 2 {
        return None;
    }
    let bias = differences.iter().sum::<f64>() / n as f64;
    let var = differences.iter().map(|d| (d - bias).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    Some(BlandAltman {
        bias,
        sd,
        lower: bias - 1.96 * sd,
        upper: bias + 1.96 * sd,
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, truth: (f64, f64), predicted: (f64, f64)) -> ImageBurden {
        ImageBurden {
            name: name.into(),
            truth: Burden {
                area: truth.0,
                length: truth.1,
            },
            predicted: Burden {
                area: predicted.0,
                length: predicted.1,
            },
        }
    }

    #[test]
    fn ranks_share_ties_and_spearman_matches_a_hand_computation() {
        assert_eq!(ranks(&[10.0, 20.0, 10.0, 5.0]), [2.5, 4.0, 2.5, 1.0]);
        // Perfectly monotone (not linear): rho 1; reversed: -1.
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]),
            Some(1.0)
        );
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Ranks (1,2,3,4) against (2,1,4,3): d^2 sums to 4, rho = 1 - 6*4/(4*15) = 0.6.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0], &[20.0, 10.0, 40.0, 30.0]).unwrap();
        assert!((rho - 0.6).abs() < 1e-12, "{rho}");
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn detection_counts_auc_false_positive_burden_and_agreement() {
        let rule = DetectionRule::default();
        let images = [
            // Positives: found, found, missed (0.5 mm^2 is under the 1 mm^2 threshold).
            image("p1", (10.0, 30.0), (12.0, 28.0)),
            image("p2", (4.0, 10.0), (3.0, 11.0)),
            image("p3", (2.0, 5.0), (0.5, 1.0)),
            // Negatives: quiet, a speck under the threshold, a false alarm of 3 mm^2.
            image("n1", (0.0, 0.0), (0.0, 0.0)),
            image("n2", (0.0, 0.0), (0.5, 0.2)),
            image("n3", (0.0, 0.0), (3.0, 4.0)),
        ];
        let d = Detection::new(&images, BurdenUnit::Mm, &rule);
        assert_eq!((d.positives, d.negatives), (3, 3));
        assert_eq!((d.true_positives, d.false_negatives), (2, 1));
        assert_eq!((d.true_negatives, d.false_positives), (2, 1));
        assert_eq!(d.sensitivity, Some(2.0 / 3.0));
        assert_eq!(d.specificity, Some(2.0 / 3.0));
        // Pairs (positive against negative): p1 beats all three: 3; p2 (3.0) beats n1 and n2
        // and ties n3: 2.5; p3 (0.5) beats n1 and ties n2: 1.5. AUC (3 + 2.5 + 1.5) / 9.
        assert!((d.auc.unwrap() - 7.0 / 9.0).abs() < 1e-12);
        assert!((d.fp_area_mean.unwrap() - 3.5 / 3.0).abs() < 1e-12);
        assert_eq!(d.fp_area_max, Some(3.0));
        assert_eq!(d.spearman_area, Some(1.0));
        assert_eq!(d.spearman_length, Some(1.0));
        // Differences 2, -1, -1.5: bias -1/6, sd sqrt(((13/6)^2 + (5/6)^2 + (8/6)^2) / 2).
        let ba = d.area_agreement.unwrap();
        assert!((ba.bias + 1.0 / 6.0).abs() < 1e-12);
        let sd = ((169.0 + 25.0 + 64.0) / 36.0 / 2.0_f64).sqrt();
        assert!((ba.sd - sd).abs() < 1e-12 && (ba.upper - (ba.bias + 1.96 * sd)).abs() < 1e-12);
        // Pixels: the pixel threshold applies.
        let d = Detection::new(&images, BurdenUnit::Px, &rule);
        assert_eq!(
            (d.threshold, d.true_positives, d.false_positives),
            (25.0, 0, 0)
        );
        // Only positives: no specificity, AUC or false-positive burden.
        let d = Detection::new(&images[..3], BurdenUnit::Mm, &rule);
        assert_eq!((d.specificity, d.auc, d.fp_area_mean), (None, None, None));
        assert!(
            DetectionRule {
                min_area_mm2: 0.0,
                ..rule
            }
            .validate()
            .is_err()
        );
    }
}
