//! Training losses on logits: soft Dice (on sigmoid probabilities) and Dice + binary
//! cross-entropy.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

/// Which loss to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Soft Dice on sigmoid probabilities (the reference method).
    Dice,
    /// Soft Dice plus the mean binary cross-entropy, with equal weights.
    #[serde(rename = "dice+bce")]
    DiceBce,
}

impl LossKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dice => "dice",
            Self::DiceBce => "dice+bce",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Dice, Self::DiceBce]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// Soft Dice loss over the whole batch: `1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)` with
/// `p = sigmoid(logits)` and smoothing `s`. Summing over the batch (not per patch) keeps the
/// loss defined for patches without BAC; `s = 1` keeps it finite and makes an empty
/// prediction on an empty target score 0 loss.
pub fn soft_dice(logits: Tensor<4>, target: Tensor<4>, smooth: f32) -> Tensor<1> {
    let p = sigmoid(logits);
    let intersection = (p.clone() * target.clone()).sum();
    let denominator = p.sum() + target.sum();
    (intersection.mul_scalar(2.0).add_scalar(smooth) / denominator.add_scalar(smooth))
        .neg()
        .add_scalar(1.0)
}

/// Mean binary cross-entropy on logits, computed stably as
/// `max(x, 0) - x t + ln(1 + exp(-|x|))`.
pub fn bce_with_logits(logits: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    let softplus = logits.clone().abs().neg().exp().add_scalar(1.0).log();
    (logits.clone().clamp_min(0.0) - logits * target + softplus).mean()
}

/// The configured loss.
pub fn loss(kind: LossKind, logits: Tensor<4>, target: Tensor<4>, smooth: f32) -> Tensor<1> {
    match kind {
        LossKind::Dice => soft_dice(logits, target, smooth),
        LossKind::DiceBce => {
            soft_dice(logits.clone(), target.clone(), smooth) + bce_with_logits(logits, target)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(values: &[f32]) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [1, 1, 1, values.len()]),
            &Device::default(),
        )
    }

    fn scalar(x: Tensor<1>) -> f32 {
        x.into_scalar::<f32>()
    }

    #[test]
    fn dice_matches_a_hand_computation() {
        let logits = [0.0f32, 2.0, -1.0, 3.0];
        let target = [1.0f32, 1.0, 0.0, 0.0];
        let p: Vec<f32> = logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect();
        let inter: f32 = p.iter().zip(&target).map(|(a, b)| a * b).sum();
        let want = 1.0 - (2.0 * inter + 1.0) / (p.iter().sum::<f32>() + 2.0 + 1.0);
        let got = scalar(soft_dice(t(&logits), t(&target), 1.0));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // A confident, correct prediction has a loss near 0; an inverted one near 1.
        let good = scalar(soft_dice(t(&[20.0, 20.0, -20.0]), t(&[1.0, 1.0, 0.0]), 1.0));
        let bad = scalar(soft_dice(
            t(&[-20.0, -20.0, 20.0]),
            t(&[1.0, 1.0, 0.0]),
            1.0,
        ));
        assert!(good < 1e-6 && bad > 0.7, "{good} {bad}");
    }

    #[test]
    fn bce_is_stable_and_matches_the_formula() {
        let x = [-80.0f32, -1.0, 0.0, 1.5, 80.0];
        let y = [1.0f32, 0.0, 1.0, 1.0, 0.0];
        let want: f32 = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| x.max(0.0) - x * y + (1.0 + (-x.abs()).exp()).ln())
            .sum::<f32>()
            / 5.0;
        let got = scalar(bce_with_logits(t(&x), t(&y)));
        assert!(
            got.is_finite() && (got - want).abs() < 1e-4,
            "{got} vs {want}"
        );
        let both = scalar(loss(LossKind::DiceBce, t(&x), t(&y), 1.0));
        let dice = scalar(soft_dice(t(&x), t(&y), 1.0));
        assert!((both - dice - want).abs() < 1e-4);
        assert_eq!(LossKind::from_name("dice+bce"), Some(LossKind::DiceBce));
    }
}
