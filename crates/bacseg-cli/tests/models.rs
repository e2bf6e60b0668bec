//! `bacseg models`: the architecture list, as a table and as JSON (schema: docs/cli.md#models).
#![allow(clippy::unwrap_used)]

mod common;

use common::bacseg;

#[test]
fn models_json_lists_every_architecture_with_exact_parameters() {
    let out = bacseg(&["models", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dt-unet", "unet", "segnet", "contextnet", "scunet"]);
    assert_eq!(rows[0]["parameters"], 7_782_281);
    assert_eq!(rows[4]["parameters"], 169_711);
    assert_eq!(rows[4]["in_channels"], 3);
    assert_eq!(rows[1]["parameters"], 13_395_329);
    assert!((rows[0]["gflop_per_patch"].as_f64().unwrap() - 8.900313088).abs() < 1e-9);
    assert_eq!(rows[1]["in_channels"], 3);
    assert_eq!(rows[0]["config"]["widths"].as_array().unwrap().len(), 7);
}

#[test]
fn models_table_has_one_row_per_architecture() {
    let out = bacseg(&["models"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for row in [
        "dt-unet",
        "7,782,281",
        "unet",
        "13,395,329",
        "segnet",
        "contextnet",
        "scunet",
        "169,711",
    ] {
        assert!(text.contains(row), "missing {row} in\n{text}");
    }
}
