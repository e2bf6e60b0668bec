//! `bacseg bench` with tiny networks and a tiny image: every measurement row is printed.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use common::{bacseg, ok, s};

#[test]
fn bench_prints_forward_training_and_whole_image_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("small.png");
    // A bright disc (the "breast") on black, 96x128.
    image::ImageBuffer::from_fn(96, 128, |x, y| {
        let (dx, dy) = (x as f32 - 20.0, y as f32 - 64.0);
        let inside = dx * dx + dy * dy < 60.0 * 60.0;
        image::Luma([if inside {
            2000 + (x * 13 + y * 7) as u16 % 500
        } else {
            0
        }])
    })
    .save(&img)
    .unwrap();
    let out = bacseg(&[
        "bench",
        "--models",
        "dt-unet,contextnet",
        "--width",
        "4",
        "--depth",
        "3",
        "--patch",
        "32",
        "--batches",
        "2,1",
        "--repeats",
        "1",
        "--image",
        s(&img),
    ]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    // 96x128 at patch 32, stride 16: 5 columns x 7 rows = 35 patches, all predicted without
    // breast skipping.
    assert!(text.contains("35 of 35 patches"), "{text}");
    for row in [
        "| dt-unet forward 1x32x32 | burn |",
        "| dt-unet forward 1x32x32 | cpu |",
        "| dt-unet forward 2x32x32 | burn |",
        "| dt-unet forward 2x32x32 | cpu |",
        "| contextnet forward 1x32x32 | burn |",
        "| dt-unet train step 4x16x16, Dice + AdamW | burn |",
        "| dt-unet train step 1x16x16, Dice + AdamW | cpu |",
        "| dt-unet train step 2x16x16, Dice + AdamW | cpu |",
        "| dt-unet train step 4x16x16, Dice + AdamW | cpu |",
        "| dt-unet train step 8x16x16, Dice + AdamW | cpu |",
        "| dt-unet whole 96x128 mammogram, breast skipping on, batch 4 | cpu |",
        "| dt-unet whole 96x128 mammogram, breast skipping off, batch 4 | cpu |",
        "| peak resident memory (whole run) |",
    ] {
        assert!(text.contains(row), "missing {row:?} in\n{text}");
    }
    // Every architecture runs on the CPU engine too.
    assert!(
        text.contains("| contextnet forward 1x32x32 | cpu |"),
        "{text}"
    );
    // Comparing with PyTorch needs the reference networks.
    let refused = bacseg(&["bench", "--width", "4", "--torch-python", "python3"]);
    assert_eq!(refused.status.code(), Some(2));
    let unknown = bacseg(&["bench", "--models", "resnet"]);
    assert_eq!(unknown.status.code(), Some(2));
}
