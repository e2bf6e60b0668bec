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

    // Figures: image, truth and the two models per row, separated by borders.
    for (name, rows) in [("figure-patches.png", 4), ("figure-whole.png", 2)] {
        let img = image::open(out.join(name)).unwrap();
        let (w, h) = (img.width(), img.height());
        assert!((h - 4) % rows == 0 && (h - 4) / rows > 4, "{name}: {w}x{h}");
        assert!((w - 4) % 4 == 0 && (w - 4) / 4 > 4, "{name}: {w}x{h}");
    }
    let legend = std::fs::read_to_string(out.join("figures.md")).unwrap();
    assert!(legend.contains("1. image, 2. truth, 3. DT-UNet, 4. ContextNet"));

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
