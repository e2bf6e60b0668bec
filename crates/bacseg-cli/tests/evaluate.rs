//! `bacseg evaluate` and `bacseg quantify` on tiny masks written into a temporary directory:
//! identical masks score 1, a shifted prediction scores what an independent count in this
//! file predicts, bad input exits with code 2.

// A test that cannot set up its data should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bacseg, s};

use std::path::Path;

use bacseg_core::Raster;
use bacseg_core::io::write_mask_png;
use serde_json::Value;

const W: usize = 100;
const H: usize = 80;
const PATCH: usize = 32;
const STRIDE: usize = 24;

/// Vessel-like truth masks: two thin lines; a thick diagonal; nothing (a negative image).
fn truths() -> Vec<(&'static str, Vec<bool>)> {
    let a = |x: usize, y: usize| {
        (y == 10 && (5..90).contains(&x)) || (x == 70 && (20..75).contains(&y))
    };
    let b = |x: usize, y: usize| (x as i64 - y as i64).abs() <= 2 && x < 60;
    let c = |_: usize, _: usize| false;
    let grid = |f: &dyn Fn(usize, usize) -> bool| (0..W * H).map(|i| f(i % W, i / W)).collect();
    vec![("a", grid(&a)), ("b", grid(&b)), ("c", grid(&c))]
}

/// The mask moved `dx` pixels right; pixels pushed out are lost, the gap is background.
fn shifted(m: &[bool], dx: usize) -> Vec<bool> {
    (0..W * H).map(|i| i % W >= dx && m[i - dx]).collect()
}

fn write_dir(dir: &Path, masks: &[(&str, Vec<bool>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, m) in masks {
        let r = Raster::from_vec(W, H, m.clone()).unwrap();
        write_mask_png(&dir.join(format!("{name}.png")), &r).unwrap();
    }
}

/// [tp, fp, fn, tn] over the rectangle of an image `W` pixels wide.
fn count(pred: &[bool], truth: &[bool], x0: usize, y0: usize, w: usize, h: usize) -> [f64; 4] {
    count_in(W, pred, truth, x0, y0, w, h)
}

fn count_in(
    width: usize,
    pred: &[bool],
    truth: &[bool],
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
) -> [f64; 4] {
    let mut c = [0.0; 4];
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            let (p, t) = (pred[y * width + x], truth[y * width + x]);
            c[match (p, t) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            }] += 1.0;
        }
    }
    c
}

/// recall, precision, accuracy, F1, Jaccard; None for a zero denominator (policy "skip").
fn metrics(c: [f64; 4]) -> [Option<f64>; 5] {
    let [tp, fp, fn_, tn] = c;
    let r = |n: f64, d: f64| (d > 0.0).then(|| n / d);
    [
        r(tp, tp + fn_),
        r(tp, tp + fp),
        r(tp + tn, tp + fp + fn_ + tn),
        r(2.0 * tp, 2.0 * tp + fp + fn_),
        r(tp, tp + fp + fn_),
    ]
}

fn mean(units: &[[f64; 4]]) -> [Option<f64>; 5] {
    std::array::from_fn(|k| {
        let v: Vec<f64> = units.iter().filter_map(|c| metrics(*c)[k]).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    })
}

fn pooled(units: &[[f64; 4]]) -> [Option<f64>; 5] {
    metrics(
        units
            .iter()
            .fold([0.0; 4], |a, c| std::array::from_fn(|k| a[k] + c[k])),
    )
}

/// Patch origins written out for 100x80 at 32/24: 0, 24, 48, then 68 (= 100 - 32) snapped;
/// 0, 24, then 48 (= 80 - 32).
const XS: [usize; 4] = [0, 24, 48, 68];
const YS: [usize; 3] = [0, 24, 48];

const KEYS: [&str; 5] = ["recall", "precision", "accuracy", "f1", "jaccard"];

fn assert_metrics(json: &Value, expect: [Option<f64>; 5], what: &str) {
    for (k, e) in KEYS.iter().zip(expect) {
        match e {
            Some(e) => {
                let got = json[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{what}.{k}: {}", json[k]));
                assert!(
                    (got - e).abs() < 1e-9,
                    "{what}.{k}: got {got}, expected {e}"
                );
            }
            None => assert!(
                json[k].is_null(),
                "{what}.{k}: expected null, got {}",
                json[k]
            ),
        }
    }
}

fn evaluate_json(pred: &Path, truth: &Path, extra: &[&str]) -> Value {
    let (ps, ts) = (PATCH.to_string(), STRIDE.to_string());
    let mut args = vec![
        "evaluate",
        "--pred",
        s(pred),
        "--truth",
        s(truth),
        "--patch-size",
        &ps,
        "--stride",
        &ts,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = bacseg(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("evaluate prints JSON")
}

#[test]
fn identical_masks_score_one_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let truth = truths();
    // A dataset layout for the truth (masks/ inside), a bare folder for the prediction.
    write_dir(&dir.path().join("ds/masks"), &truth);
    write_dir(&dir.path().join("pred"), &truth);
    let j = evaluate_json(&dir.path().join("pred"), &dir.path().join("ds"), &[]);
    assert_eq!(j["empty_policy"], "skip");
    for level in ["image", "patch"] {
        for agg in ["mean", "pooled"] {
            assert_metrics(&j[level][agg], [Some(1.0); 5], &format!("{level}.{agg}"));
        }
    }
    assert_eq!(j["per_image"].as_array().unwrap().len(), 3);
    // The negative image: only accuracy is defined.
    let c = &j["per_image"][2];
    assert_eq!(c["name"], "c");
    assert_metrics(&c["metrics"], [None, None, Some(1.0), None, None], "c");
    assert_eq!(c["patches"], 0);
}

#[test]
fn shifted_prediction_matches_independent_counts() {
    let dir = tempfile::tempdir().unwrap();
    let truth = truths();
    let pred: Vec<(&str, Vec<bool>)> = truth.iter().map(|(n, m)| (*n, shifted(m, 2))).collect();
    write_dir(&dir.path().join("truth"), &truth);
    write_dir(&dir.path().join("pred"), &pred);

    let image_units: Vec<[f64; 4]> = truth
        .iter()
        .zip(&pred)
        .map(|((_, t), (_, p))| count(p, t, 0, 0, W, H))
        .collect();
    let mut positive = Vec::new();
    let mut all = Vec::new();
    for ((_, t), (_, p)) in truth.iter().zip(&pred) {
        for &y in &YS {
            for &x in &XS {
                let c = count(p, t, x, y, PATCH, PATCH);
                all.push(c);
                if c[0] + c[2] > 0.0 {
                    positive.push(c);
                }
            }
        }
    }

    let j = evaluate_json(&dir.path().join("pred"), &dir.path().join("truth"), &[]);
    assert_metrics(&j["image"]["mean"], mean(&image_units), "image.mean");
    assert_metrics(&j["image"]["pooled"], pooled(&image_units), "image.pooled");
    assert_metrics(&j["patch"]["mean"], mean(&positive), "patch.mean");
    assert_metrics(&j["patch"]["pooled"], pooled(&positive), "patch.pooled");
    assert_eq!(j["patch"]["units"].as_u64(), Some(positive.len() as u64));
    // The shift must actually cost something, or this test would prove nothing.
    assert!(j["image"]["pooled"]["jaccard"].as_f64().unwrap() < 0.9);

    let j = evaluate_json(
        &dir.path().join("pred"),
        &dir.path().join("truth"),
        &["--patches", "all", "--empty-policy", "one"],
    );
    assert_eq!(j["empty_policy"], "one");
    assert_eq!(j["patch"]["units"].as_u64(), Some(all.len() as u64));
    let one = |m: [Option<f64>; 5]| m.map(|v| Some(v.unwrap_or(1.0)));
    let mean_one: [Option<f64>; 5] = std::array::from_fn(|k| {
        Some(
            all.iter()
                .map(|c| metrics(*c)[k].unwrap_or(1.0))
                .sum::<f64>()
                / all.len() as f64,
        )
    });
    assert_metrics(&j["patch"]["mean"], mean_one, "patch.mean (all, one)");
    assert_metrics(
        &j["patch"]["pooled"],
        one(pooled(&all)),
        "patch.pooled (all, one)",
    );

    // The table names both levels and both aggregations.
    let (ps, ts) = (PATCH.to_string(), STRIDE.to_string());
    let out = bacseg(&[
        "evaluate",
        "--pred",
        s(&dir.path().join("pred")),
        "--truth",
        s(&dir.path().join("truth")),
        "--patch-size",
        &ps,
        "--stride",
        &ts,
        "--method",
        "shifted",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    for word in [
        "Patch level",
        "Whole image",
        "Recall",
        "Jaccard",
        "shifted",
        "mean",
        "pooled",
        "empty policy: skip",
    ] {
        assert!(table.contains(word), "{word} missing from:\n{table}");
    }
}

#[test]
fn image_level_detection_counts_images_and_the_false_positive_burden() {
    let dir = tempfile::tempdir().unwrap();
    let truth = truths();
    // a and b predicted exactly; on the BAC-free c, a 3x3 false alarm (9 px).
    let mut pred = truth.clone();
    for y in 40..43 {
        for x in 40..43 {
            pred[2].1[y * W + x] = true;
        }
    }
    write_dir(&dir.path().join("truth"), &truth);
    write_dir(&dir.path().join("pred"), &pred);
    let area = |m: &[bool]| m.iter().filter(|&&v| v).count() as f64;

    // 0.5 mm pixels: the alarm is 2.25 mm^2, over the 1 mm^2 threshold.
    let j = evaluate_json(
        &dir.path().join("pred"),
        &dir.path().join("truth"),
        &["--spacing", "0.5"],
    );
    // Pixel overlap over the images with BAC: a and b, predicted exactly.
    assert_eq!(j["image_positive"]["units"].as_u64(), Some(2));
    assert_metrics(
        &j["image_positive"]["pooled"],
        [Some(1.0); 5],
        "image_positive",
    );
    let d = &j["detection"];
    assert_eq!(d["unit"], "mm");
    assert_eq!(
        (d["positives"].as_u64(), d["negatives"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(d["sensitivity"].as_f64(), Some(1.0));
    assert_eq!(d["specificity"].as_f64(), Some(0.0));
    assert_eq!(d["auc"].as_f64(), Some(1.0));
    assert_eq!(d["fp_area_max"].as_f64(), Some(2.25));
    // Two positives: no rank correlation; identical masks: no bias.
    assert!(d["spearman_area"].is_null());
    assert_eq!(d["area_agreement"]["bias"].as_f64(), Some(0.0));
    let a = &j["per_image"][0];
    assert_eq!(
        a["truth_burden"]["area_px"].as_f64(),
        Some(area(&truth[0].1))
    );
    assert_eq!(
        a["truth_burden"]["area_mm2"].as_f64(),
        Some(area(&truth[0].1) * 0.25)
    );

    // A larger threshold keeps the alarm below it; without a spacing, pixels (9 < 25).
    let j = evaluate_json(
        &dir.path().join("pred"),
        &dir.path().join("truth"),
        &["--spacing", "0.5", "--detect-min-area", "3"],
    );
    assert_eq!(j["detection"]["specificity"].as_f64(), Some(1.0));
    let j = evaluate_json(&dir.path().join("pred"), &dir.path().join("truth"), &[]);
    assert_eq!(j["detection"]["unit"], "px");
    assert_eq!(j["detection"]["fp_area_mean"].as_f64(), Some(9.0));
    assert_eq!(j["detection"]["specificity"].as_f64(), Some(1.0));
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(&dir.path().join("truth"), &truths());
    write_dir(&dir.path().join("pred"), &truths()[..2]);
    let out = bacseg(&[
        "evaluate",
        "--pred",
        s(&dir.path().join("pred")),
        "--truth",
        s(&dir.path().join("truth")),
    ]);
    // The images that were predicted are evaluated; the truth mask without one is named.
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no prediction for 1 truth mask"));
    std::fs::create_dir_all(dir.path().join("none")).unwrap();
    let out = bacseg(&[
        "evaluate",
        "--pred",
        s(&dir.path().join("none")),
        "--truth",
        s(&dir.path().join("truth")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no prediction for any"));
    let out = bacseg(&[
        "evaluate",
        "--pred",
        s(&dir.path().join("truth")),
        "--truth",
        s(&dir.path().join("truth")),
        "--stride",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = bacseg(&["quantify", s(&dir.path().join("missing.png"))]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn quantify_measures_a_drawn_vessel() {
    let dir = tempfile::tempdir().unwrap();
    // A 3-pixel-wide horizontal band 150 px long, and a separate 4x4 speck.
    let m = Raster::from_fn(200, 60, |x, y| {
        ((20..170).contains(&x) && (29..32).contains(&y))
            || (x >= 190 && y >= 50 && x < 194 && y < 54)
    });
    let mask = dir.path().join("v.png");
    write_mask_png(&mask, &m).unwrap();
    let out = bacseg(&["quantify", s(&mask), "--spacing", "0.1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = &j["images"][0]["burden"];
    assert_eq!(b["area_px"], 450 + 16);
    assert!((b["area_mm2"].as_f64().unwrap() - 4.66).abs() < 1e-9);
    assert_eq!(b["segments"], 2);
    // 15 mm of band plus the speck's 0.4 mm extent.
    let len = b["length_mm"].as_f64().unwrap();
    assert!((len - 15.4).abs() < 0.02 * 15.4, "{len}");
    assert_eq!(b["grade"], "mild");
    assert_eq!(j["grade_note"], "not clinically validated");
    assert_eq!(j["grading"]["clinically_validated"], false);
    // Without spacing: no mm, no grade, still pixels.
    let out = bacseg(&["quantify", s(&mask)]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.contains("466") && table.contains("not clinically validated"),
        "{table}"
    );
    // Grouping by breast needs laterality, which a PNG cannot give.
    let out = bacseg(&["quantify", s(&mask), "--group-by", "breast"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The done-when check on `bacseg synth` output: its masks as prediction and truth score 1;
/// a copy shifted 3 px right scores what an independent count predicts.
#[test]
fn synth_dataset_identical_and_shifted() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    let out = bacseg(&[
        "synth",
        "--out",
        s(&ds),
        "--count",
        "3",
        "--size",
        "640x800",
        "--spacing",
        "0.15",
        "--seed",
        "11",
        "--negative-fraction",
        "0",
    ]);
    assert!(
        out.status.success(),
        "synth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pw = 256;
    let run = |pred: &Path| {
        let out = bacseg(&[
            "evaluate",
            "--pred",
            s(pred),
            "--truth",
            s(&ds),
            "--patch-size",
            "256",
            "--stride",
            "192",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let j = run(&ds.join("masks"));
    for level in ["image", "patch"] {
        for agg in ["mean", "pooled"] {
            assert_metrics(
                &j[level][agg],
                [Some(1.0); 5],
                &format!("synth {level}.{agg}"),
            );
        }
    }

    // 640 x 800 at 256 / 192: columns 0, 192, 384 (= 640 - 256); rows 0, 192, 384, 544.
    let (xs, ys) = ([0, 192, 384], [0, 192, 384, 544]);
    let shifted_dir = dir.path().join("shifted");
    std::fs::create_dir_all(&shifted_dir).unwrap();
    let (mut images, mut patches) = (Vec::new(), Vec::new());
    let mut names: Vec<_> = std::fs::read_dir(ds.join("masks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3);
    for path in names {
        let m = bacseg_core::io::load(&path).unwrap();
        assert_eq!((m.width(), m.height()), (640, 800));
        let truth: Vec<bool> = m.pixels.data().iter().map(|&v| v > 0.0).collect();
        let pred: Vec<bool> = (0..640 * 800)
            .map(|i| i % 640 >= 3 && truth[i - 3])
            .collect();
        let r = Raster::from_vec(640, 800, pred.clone()).unwrap();
        write_mask_png(&shifted_dir.join(path.file_name().unwrap()), &r).unwrap();
        images.push(count_in(640, &pred, &truth, 0, 0, 640, 800));
        for &y in &ys {
            for &x in &xs {
                let c = count_in(640, &pred, &truth, x, y, pw, pw);
                if c[0] + c[2] > 0.0 {
                    patches.push(c);
                }
            }
        }
    }
    let j = run(&shifted_dir);
    assert_metrics(
        &j["image"]["mean"],
        mean(&images),
        "synth shifted image.mean",
    );
    assert_metrics(
        &j["image"]["pooled"],
        pooled(&images),
        "synth shifted image.pooled",
    );
    assert_metrics(
        &j["patch"]["mean"],
        mean(&patches),
        "synth shifted patch.mean",
    );
    assert_metrics(
        &j["patch"]["pooled"],
        pooled(&patches),
        "synth shifted patch.pooled",
    );
    assert!(
        j["image"]["pooled"]["recall"].as_f64().unwrap() < 0.99,
        "the shift must cost something"
    );
}
