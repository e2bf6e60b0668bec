//! `bacseg compare` end to end on a tiny `bacseg synth` dataset with two tiny models: the
//! table (measured rows and the published reference), both figures, and reuse of finished runs
//! on a second invocation.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use common::{TINY_TRAINING, bacseg, ok, s, tiny_dataset};

#[test]
fn compare_trains_evaluates_and_reuses_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("out");
    tiny_dataset(&data, 6, 4);
    let mut compare = vec![
        "compare",
        "--data",
        s(&data),
        "--models",
        "dt-unet,contextnet",
        "--out",
        s(&out),
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.34",
    ];
    compare.extend(TINY_TRAINING);
    let first = bacseg(&compare);
    ok(&first);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("| DT-UNet |"), "{stdout}");

    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for row in ["| DT-UNet |", "| ContextNet |"] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    assert!(!table.contains("| UNet |") && !table.contains("| SegNet |"));
    assert!(table.contains("published reference (different, real data)"));
    for row in [
        "| DT-UNet (published) | 0.687 | 0.729 | 0.770 | 0.826 |",
        "| UNet (published) | 0.689 | 0.735 |",
        "| SegNet (published) | 0.676 | 0.734 |",
        "| ContextNet (published) | 0.628 | 0.671 |",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    // 6 images: 1 validation, 2 test, 3 training.
    assert!(
        table.contains("3 training, 1 validation, 2 test images"),
        "{table}"
    );
    assert!(table.contains("Seed 0"));
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("splits.json")).unwrap()).unwrap();
    assert_eq!(split["test"].as_array().unwrap().len(), 2);

    // Figures: a band of column labels, then image, ground truth and the two models per row,
    // separated by borders. The labels are 8 px glyphs at scale 1 or 2 (a 16 or 24 px band).
    for (name, rows) in [("figure-patches.png", 4), ("figure-whole.png", 2)] {
        let img = image::open(out.join(name)).unwrap().to_luma8();
        let (w, h) = (img.width(), img.height());
        assert!((w - 4) % 4 == 0 && (w - 4) / 4 > 4, "{name}: {w}x{h}");
        let cell_w = (w - 4) / 4 - 4;
        let band = if 12 * 16 <= cell_w { 24 } else { 16 };
        assert!(
            (h - 4 - band) % rows == 0 && (h - 4 - band) / rows > 4,
            "{name}: {w}x{h}"
        );
        // Every column's label has white pixels in the band, on black.
        for c in 0..4 {
            let x0 = 4 + c * (cell_w + 4);
            let white = (x0..x0 + cell_w)
                .flat_map(|x| (4..4 + band).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y)[0] == 255)
                .count();
            assert!(white > 10, "{name}: column {c} has no label");
            assert_eq!(img.get_pixel(x0, 4)[0], 0, "{name}: band not black");
        }
    }
    // The models in the reference method's order (ContextNet before DT-UNet), whatever the
    // --models order.
    let legend = std::fs::read_to_string(out.join("figures.md")).unwrap();
    assert!(
        legend.contains("1. image, 2. ground truth, 3. ContextNet, 4. DT-UNet"),
        "{legend}"
    );

    // Both models predicted the test images.
    for model in ["dt-unet", "contextnet"] {
        for stem in split["test"].as_array().unwrap() {
            let mask = out
                .join("predictions")
                .join(model)
                .join(format!("{}.mask.png", stem.as_str().unwrap()));
            assert!(mask.is_file(), "{}", mask.display());
        }
    }

    // A second invocation reuses the finished runs: nothing is trained again.
    let metrics = |m: &str| std::fs::read(out.join("runs").join(m).join("metrics.csv")).unwrap();
    let before = (metrics("dt-unet"), metrics("contextnet"));
    let second = bacseg(&compare);
    ok(&second);
    assert!(String::from_utf8_lossy(&second.stderr).contains("reusing"));
    assert_eq!((metrics("dt-unet"), metrics("contextnet")), before);
    assert_eq!(
        std::fs::read_to_string(out.join("table.md")).unwrap(),
        table
    );

    // Another split than the runs' is refused without touching anything.
    let mut other = compare.to_vec();
    other.extend(["--seed", "3"]);
    let refused = bacseg(&other);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another split"));
}
