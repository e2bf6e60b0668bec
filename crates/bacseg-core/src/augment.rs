//! Training-time augmentation of square patches: flips and 90-degree rotations (applied to
//! the image and its mask alike), and brightness, contrast, gamma and noise (image only).
//! Off for validation; every draw comes from the caller's seeded RNG.

use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// What augmentation may do. Ranges are symmetric: brightness adds a value drawn from
/// [-brightness, brightness], contrast multiplies deviations from the patch mean by
/// 1 + [-contrast, contrast], gamma raises to exp([-gamma, gamma]), noise adds Gaussian noise
/// of a standard deviation drawn from [0, noise_std]. Values stay clamped to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    pub enabled: bool,
    pub flips: bool,
    pub rot90: bool,
    pub brightness: f32,
    pub contrast: f32,
    pub gamma: f32,
    pub noise_std: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            enabled: true,
            flips: true,
            rot90: true,
            brightness: 0.05,
            contrast: 0.15,
            gamma: 0.2,
            noise_std: 0.01,
        }
    }
}

impl Augment {
    /// No augmentation at all (validation, inference).
    pub fn none() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v, max) in [
            ("brightness", self.brightness, 1.0),
            ("contrast", self.contrast, 1.0),
            ("gamma", self.gamma, 2.0),
            ("noise_std", self.noise_std, 0.5),
        ] {
            if !(0.0..=max).contains(&v) {
                return Err(format!(
                    "augmentation {name} must be in [0, {max}], got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// Transpose a square `n x n` buffer in place.
fn transpose<T>(buf: &mut [T], n: usize) {
    for y in 0..n {
        for x in y + 1..n {
            buf.swap(y * n + x, x * n + y);
        }
    }
}

fn flip_h<T>(buf: &mut [T], n: usize) {
    for row in buf.chunks_mut(n) {
        row.reverse();
    }
}

fn flip_v<T>(buf: &mut [T], n: usize) {
    for y in 0..n / 2 {
        for x in 0..n {
            buf.swap(y * n + x, (n - 1 - y) * n + x);
        }
    }
}

/// One of the 8 symmetries of the square, applied identically to every buffer given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dihedral {
    pub transpose: bool,
    pub flip_h: bool,
    pub flip_v: bool,
}

impl Dihedral {
    pub fn apply<T>(&self, buf: &mut [T], n: usize) {
        if self.transpose {
            transpose(buf, n);
        }
        if self.flip_h {
            flip_h(buf, n);
        }
        if self.flip_v {
            flip_v(buf, n);
        }
    }
}

/// Augment one `n x n` patch in place: `image` in [0, 1], `mask` of the same length.
pub fn augment_patch<R: Rng + ?Sized>(
    image: &mut [f32],
    mask: &mut [f32],
    n: usize,
    cfg: &Augment,
    rng: &mut R,
) {
    debug_assert_eq!(image.len(), n * n);
    debug_assert_eq!(mask.len(), n * n);
    if !cfg.enabled {
        return;
    }
    let geo = Dihedral {
        transpose: cfg.rot90 && rng.random_bool(0.5),
        flip_h: cfg.flips && rng.random_bool(0.5),
        flip_v: cfg.flips && rng.random_bool(0.5),
    };
    geo.apply(image, n);
    geo.apply(mask, n);

    let mut draw = |r: f32| {
        if r > 0.0 {
            rng.random_range(-r..=r)
        } else {
            0.0
        }
    };
    let (b, c, g) = (draw(cfg.brightness), draw(cfg.contrast), draw(cfg.gamma));
    if c != 0.0 {
        let mean = image.iter().sum::<f32>() / image.len().max(1) as f32;
        for v in image.iter_mut() {
            *v = mean + (*v - mean) * (1.0 + c);
        }
    }
    if b != 0.0 || c != 0.0 || g != 0.0 {
        let gamma = g.exp();
        for v in image.iter_mut() {
            *v = (*v + b).clamp(0.0, 1.0).powf(gamma);
        }
    }
    if cfg.noise_std > 0.0 {
        let std = rng.random_range(0.0..=cfg.noise_std);
        if let Ok(normal) = Normal::new(0.0f32, std) {
            for v in image.iter_mut() {
                *v = (*v + normal.sample(rng)).clamp(0.0, 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn geometry_moves_image_and_mask_together() {
        let n = 5;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let cfg = Augment {
            brightness: 0.0,
            contrast: 0.0,
            gamma: 0.0,
            noise_std: 0.0,
            ..Augment::default()
        };
        for _ in 0..20 {
            let mut img: Vec<f32> = (0..n * n).map(|i| i as f32 / 25.0).collect();
            let mut mask: Vec<f32> = img.clone();
            augment_patch(&mut img, &mut mask, n, &cfg, &mut rng);
            assert_eq!(img, mask);
            let mut sorted = img.clone();
            sorted.sort_by(f32::total_cmp);
            let orig: Vec<f32> = (0..n * n).map(|i| i as f32 / 25.0).collect();
            assert_eq!(sorted, orig, "a permutation of the pixels");
        }
    }

    #[test]
    fn the_eight_symmetries_are_distinct() {
        let n = 3;
        let base: Vec<u8> = (0..9).collect();
        let mut seen = std::collections::BTreeSet::new();
        for t in [false, true] {
            for h in [false, true] {
                for v in [false, true] {
                    let mut b = base.clone();
                    Dihedral {
                        transpose: t,
                        flip_h: h,
                        flip_v: v,
                    }
                    .apply(&mut b, n);
                    seen.insert(b);
                }
            }
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn intensity_changes_stay_in_range_and_leave_mask() {
        let n = 8;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let cfg = Augment {
            flips: false,
            rot90: false,
            ..Augment::default()
        };
        let mut img: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 / 6.0).collect();
        let orig = img.clone();
        let mut mask = vec![0.0; n * n];
        mask[3] = 1.0;
        let mask0 = mask.clone();
        augment_patch(&mut img, &mut mask, n, &cfg, &mut rng);
        assert_eq!(mask, mask0);
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(img, orig);
        let mut off = orig.clone();
        augment_patch(&mut off, &mut mask, n, &Augment::none(), &mut rng);
        assert_eq!(off, orig);
    }
}
