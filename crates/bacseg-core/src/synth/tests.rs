//! Invariants of the generator, on small images (a whole breast at 0.7 mm per pixel).

use super::*;
use crate::quantify::{self, Grade, Grading};

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        count: 8,
        seed,
        size: Size::new(256, 320),
        spacing_mm: 0.7,
        ..SynthConfig::default()
    }
}

fn only(severity: Severity, seed: u64) -> SynthConfig {
    let mut mix = SeverityMix {
        mild: 0.0,
        moderate: 0.0,
        severe: 0.0,
    };
    match severity {
        Severity::Mild => mix.mild = 1.0,
        Severity::Moderate => mix.moderate = 1.0,
        Severity::Severe => mix.severe = 1.0,
    }
    SynthConfig {
        negative_fraction: 0.0,
        severity_mix: mix,
        ..small(seed)
    }
}

#[test]
fn masks_lie_inside_the_breast_and_positives_have_bac() {
    for view in [ViewChoice::Cc, ViewChoice::Mlo] {
        let cfg = SynthConfig {
            view,
            ..only(Severity::Moderate, 11)
        };
        for i in 0..4 {
            let s = generate(&cfg, i);
            assert!(s.mask.count() > 0, "{view:?} image {i} has no BAC");
            for (m, b) in s.mask.data().iter().zip(s.breast.data()) {
                assert!(!m || *b, "{view:?} image {i}: BAC outside the breast");
            }
            assert!(s.calcified_vessels >= 1);
            assert_eq!(
                s.calcified_vessels,
                s.params.vessels.len().min(s.calcified_vessels)
            );
        }
    }
}

#[test]
fn negatives_have_empty_masks_and_the_requested_fraction() {
    let cfg = SynthConfig {
        negative_fraction: 0.3,
        ..small(5)
    };
    let plans: Vec<_> = (0..100).map(|i| cfg.plan(i)).collect();
    let negatives = plans.iter().filter(|p| p.is_none()).count();
    assert!(
        (29..=31).contains(&negatives),
        "{negatives} negatives of 100 at 0.3"
    );
    let neg = (0..20).find(|&i| cfg.plan(i).is_none()).unwrap_or(0);
    let s = generate(&cfg, neg);
    assert_eq!(s.mask.count(), 0);
    assert!(s.params.vessels.is_empty());
    assert_eq!(s.calcified_vessels, 0);
    // Fraction 0 and 1 are exact.
    let none = SynthConfig {
        negative_fraction: 0.0,
        ..small(5)
    };
    assert!((0..50).all(|i| none.plan(i).is_some()));
    let all = SynthConfig {
        negative_fraction: 1.0,
        ..small(5)
    };
    assert!((0..50).all(|i| all.plan(i).is_none()));
}

#[test]
fn same_seed_same_pixels_and_image_does_not_depend_on_count() {
    let cfg = small(42);
    let a = generate(&cfg, 3);
    let b = generate(
        &SynthConfig {
            count: 99,
            ..cfg.clone()
        },
        3,
    );
    assert_eq!(a.image, b.image);
    assert_eq!(a.mask, b.mask);
    assert_eq!(a.params, b.params);
    let c = generate(&small(43), 3);
    assert_ne!(a.image, c.image);
    let d = generate(&cfg, 4);
    assert_ne!(a.image, d.image);
}

#[test]
fn values_stay_in_the_stored_bit_range() {
    for bits in [12u8, 14] {
        let cfg = SynthConfig {
            bits: Some(bits),
            ..small(9)
        };
        let s = generate(&cfg, 0);
        let max = (1u16 << bits) - 1;
        assert!(s.image.data().iter().all(|&v| v <= max));
        // The breast is not black and the background is.
        let mean_in = mean_where(&s.image, &s.breast, true);
        let mean_out = mean_where(&s.image, &s.breast, false);
        assert!(mean_in > 0.1 * f64::from(max), "breast mean {mean_in}");
        assert!(
            mean_out < 0.05 * f64::from(max),
            "background mean {mean_out}"
        );
    }
}

fn mean_where(img: &Raster<u16>, mask: &Mask, inside: bool) -> f64 {
    let (mut s, mut n) = (0.0f64, 0.0f64);
    for (&v, &m) in img.data().iter().zip(mask.data()) {
        if m == inside {
            s += f64::from(v);
            n += 1.0;
        }
    }
    s / n.max(1.0)
}

#[test]
fn calcified_vessels_are_brighter_than_their_surroundings() {
    let cfg = only(Severity::Severe, 21);
    let s = generate(&cfg, 0);
    let bac = mean_where(&s.image, &s.mask, true);
    let breast_only = Mask::from_fn(s.mask.width(), s.mask.height(), |x, y| {
        *s.breast.get(x, y) && !*s.mask.get(x, y)
    });
    let tissue = mean_where(&s.image, &breast_only, true);
    assert!(bac > tissue * 1.2, "BAC mean {bac} vs tissue {tissue}");
}

#[test]
fn severe_images_have_more_calcified_length_than_mild_ones() {
    let grading = Grading::default();
    let lengths = |sev: Severity| -> Vec<f64> {
        let cfg = only(sev, 77);
        (0..6)
            .map(|i| {
                let s = generate(&cfg, i);
                dataset::measure(&s, &cfg, &grading)
                    .length_mm
                    .unwrap_or(0.0)
            })
            .collect()
    };
    let mild = lengths(Severity::Mild);
    let severe = lengths(Severity::Severe);
    let max_mild = mild.iter().cloned().fold(0.0, f64::max);
    let min_severe = severe.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(min_severe > max_mild, "mild {mild:?} severe {severe:?}");
}

#[test]
fn positives_measure_the_requested_severity() {
    let grading = Grading::default();
    let mut mismatches = Vec::new();
    for sev in [Severity::Mild, Severity::Moderate, Severity::Severe] {
        let cfg = SynthConfig {
            spacing_mm: 0.35,
            size: Size::new(384, 480),
            ..only(sev, 31)
        };
        for i in 0..6 {
            let s = generate(&cfg, i);
            let measured = dataset::measure(&s, &cfg, &grading);
            if measured.grade != Some(sev.into()) {
                mismatches.push((i, sev, measured.grade, measured.length_mm));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

fn read_dir_sorted(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["images", "masks"] {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(sub))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for p in names {
            out.push((
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            ));
        }
    }
    out.push((
        "manifest".into(),
        std::fs::read(dir.join("manifest.json")).unwrap_or_default(),
    ));
    out
}

#[test]
fn dataset_files_are_byte_identical_and_burden_matches_the_written_masks()
-> Result<(), Box<dyn std::error::Error>> {
    let cfg = SynthConfig {
        count: 5,
        negative_fraction: 0.2,
        ..small(1234)
    };
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let opts = WriteOptions {
        preview: true,
        ..WriteOptions::default()
    };
    let sa = write_dataset(&a, &cfg, &opts, &|_| {})?;
    write_dataset(&b, &cfg, &opts, &|_| {})?;
    let (fa, fb) = (read_dir_sorted(&a), read_dir_sorted(&b));
    assert_eq!(fa.len(), 2 * 5 + 1);
    for ((_, x), (name, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{name} differs between two runs with the same seed");
    }
    assert!(sa.preview.is_some_and(|p| p.exists()));

    let manifest: Manifest = serde_json::from_slice(&std::fs::read(a.join("manifest.json"))?)?;
    assert!(manifest.complete);
    assert_eq!(manifest.images.len(), 5);
    assert!(manifest.images.iter().any(|i| i.negative));
    for entry in &manifest.images {
        let m = crate::io::load(&a.join(&entry.mask))?;
        let mask = m.pixels.map(|&v| v > 0.0);
        let spacing = cfg.pixel_spacing();
        let measured = quantify::measure(&mask, None, Some(spacing), None, &Grading::default());
        assert_eq!(measured.area_px, entry.burden.area_px);
        // serde_json parses floats to within an ulp, not bit-exactly.
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            _ => false,
        };
        assert!(
            close(measured.length_mm, entry.burden.length_mm),
            "{measured:?} vs {:?}",
            entry.burden
        );
        assert!(close(measured.area_mm2, entry.burden.area_mm2));
        assert_eq!(measured.segments, entry.burden.segments);
        assert_eq!(measured.grade, Some(entry.severity));
        assert_eq!(entry.negative, entry.severity == Grade::None);
        assert_eq!(entry.negative, entry.calcified_vessels == 0);
        let img = crate::io::load(&a.join(&entry.image))?;
        assert_eq!((img.width(), img.height()), (256, 320));
    }
    Ok(())
}

#[test]
fn refuses_another_dataset_unless_overwrite() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    let cfg = SynthConfig {
        count: 3,
        ..small(1)
    };
    write_dataset(&dir, &cfg, &WriteOptions::default(), &|_| {})?;
    // The same dataset again is fine.
    write_dataset(&dir, &cfg, &WriteOptions::default(), &|_| {})?;
    let other = SynthConfig {
        count: 2,
        seed: 2,
        ..cfg.clone()
    };
    let err = write_dataset(&dir, &other, &WriteOptions::default(), &|_| {});
    assert!(matches!(err, Err(DatasetError::DifferentDataset { .. })));
    let ow = WriteOptions {
        overwrite: true,
        ..WriteOptions::default()
    };
    write_dataset(&dir, &other, &ow, &|_| {})?;
    // The third image of the old dataset is gone; two remain.
    assert!(!dir.join("images").join(format!("{}.png", stem(2))).exists());
    assert_eq!(std::fs::read_dir(dir.join("masks"))?.count(), 2);
    // A directory of unrelated files is refused too.
    let foreign = tmp.path().join("f");
    std::fs::create_dir_all(&foreign)?;
    std::fs::write(foreign.join("notes.txt"), "x")?;
    let err = write_dataset(&foreign, &cfg, &WriteOptions::default(), &|_| {});
    assert!(matches!(err, Err(DatasetError::DifferentDataset { .. })));
    Ok(())
}

#[test]
fn config_validation_and_severity_mix_parsing() {
    assert!(SynthConfig::default().validate().is_ok());
    let bad = SynthConfig {
        negative_fraction: 1.5,
        ..SynthConfig::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(SynthError::NegativeFraction(_))
    ));
    let tiny = SynthConfig {
        size: Size::new(256, 320),
        spacing_mm: 0.07,
        ..SynthConfig::default()
    };
    assert!(matches!(
        tiny.validate(),
        Err(SynthError::FieldTooSmall { .. })
    ));
    let bits = SynthConfig {
        bits: Some(16),
        ..SynthConfig::default()
    };
    assert!(matches!(bits.validate(), Err(SynthError::Bits(16))));
    let mix: SeverityMix = "mild=1, severe=3".parse().unwrap_or_default();
    assert_eq!(
        mix,
        SeverityMix {
            mild: 1.0,
            moderate: 0.0,
            severe: 3.0
        }
    );
    assert!("mild=-1".parse::<SeverityMix>().is_err());
    assert!("awful=1".parse::<SeverityMix>().is_err());
    assert!("mild=0".parse::<SeverityMix>().is_err());
}

#[test]
fn fast_exp_and_rounding_match_the_library() {
    for i in -1990..=1990 {
        let x = i as f32 * 0.0437;
        let (got, want) = (super::fast_exp(x), x.exp());
        assert!(
            ((got - want) / want).abs() < 1e-5,
            "exp({x}): {got} vs {want}"
        );
    }
    // Clamped outside [-87, 87], never inf or 0.
    assert!(super::fast_exp(200.0).is_finite() && super::fast_exp(-200.0) > 0.0);
    for x in [
        0.0f32, 0.49, 0.51, 1.0, 2.5, 16383.4, 16383.0, 65535.0, 1234.7,
    ] {
        let want = x.round_ties_even() as u16;
        assert_eq!(super::round_u16(x), want, "{x}");
    }
}
