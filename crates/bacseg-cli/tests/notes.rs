//! Every command that reads images says when the reader converted one (a colour export read
//! as grey), not only `predict`, `convert` and `preprocess`.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use std::path::Path;

use common::{TINY_TRAINING, bacseg, ok, s, tiny_dataset};

const NOTE: &str = "colour image converted to grey";

/// Rewrite every PNG of `dir` as 8-bit RGB with a slight red tint (a colour export).
fn tint(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            let mut rgb = image::open(&path).unwrap().to_rgb8();
            for p in rgb.pixels_mut() {
                p.0[0] = p.0[0].saturating_add(3);
            }
            rgb.save(&path).unwrap();
        }
    }
}

fn says_note(out: &std::process::Output, what: &str) {
    ok(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(NOTE),
        "{what}: no conversion note in\n{stderr}"
    );
}

#[test]
fn train_evaluate_quantify_and_synth_report_colour_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tiny_dataset(&data, 3, 0);
    tint(&data.join("images"));
    tint(&data.join("masks"));

    let mut train = vec!["train", "--data", s(&data)];
    let run = dir.path().join("run");
    train.extend(["--out", s(&run)]);
    train.extend(TINY_TRAINING);
    says_note(&bacseg(&train), "train");

    let masks = data.join("masks");
    let evaluate = bacseg(&["evaluate", "--pred", s(&masks), "--truth", s(&data)]);
    says_note(&evaluate, "evaluate");

    let first = std::fs::read_dir(&masks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap();
    says_note(&bacseg(&["quantify", s(&first)]), "quantify");

    let synth_out = dir.path().join("on-backgrounds");
    let synth = bacseg(&[
        "synth",
        "--out",
        s(&synth_out),
        "--count",
        "2",
        "--background",
        s(&data.join("images")),
    ]);
    says_note(&synth, "synth --background");
}
