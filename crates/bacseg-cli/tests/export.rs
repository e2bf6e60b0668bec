//! `bacseg export`: a small DT-UNet and the published SCU-Net checkpoint as ONNX with their
//! reference input and output, and the errors for bad sides, weights and paths.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use bacseg_nn::{Device, DtUnetConfig, save_pytorch_safetensors};
use common::{bacseg, ok, s};

#[test]
fn export_writes_an_onnx_model_and_reference_arrays() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("w.safetensors");
    let model = DtUnetConfig::new()
        .with_base_width(2, 3)
        .init(&Device::default())
        .unwrap();
    save_pytorch_safetensors(&model, &weights).unwrap();
    let onnx = tmp.path().join("out/m.onnx");
    let io = tmp.path().join("io");
    let export = |side: &str| {
        bacseg(&[
            "export",
            "--model",
            s(&weights),
            "--width",
            "2",
            "--depth",
            "3",
            "--out",
            s(&onnx),
            "--reference-io",
            s(&io),
            "--reference-side",
            side,
        ])
    };
    std::fs::create_dir_all(onnx.parent().unwrap()).unwrap();
    ok(&export("16"));
    let proto = bacseg_nn::onnx::read(&std::fs::read(&onnx).unwrap()).unwrap();
    let graph = proto.graph.unwrap();
    assert_eq!(proto.opset_import[0].version, bacseg_nn::onnx::OPSET);
    // 3 encoder + 2 decoder double convolutions and the head.
    assert_eq!(
        graph.node.iter().filter(|n| n.op_type == "Conv").count(),
        11
    );
    // 1x1x16x16 float32 arrays after a 128-byte header.
    for name in ["input.npy", "output.npy"] {
        let bytes = std::fs::read(io.join(name)).unwrap();
        assert_eq!(bytes.len(), 128 + 4 * 256, "{name}");
    }
    // A side the network cannot take is refused, saying why, before anything is written.
    std::fs::remove_file(&onnx).unwrap();
    std::fs::remove_dir_all(&io).unwrap();
    let bad = export("10");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("reference input size") && err.contains("multiples of 4"),
        "{err}"
    );
    assert!(
        !onnx.exists() && !io.exists(),
        "a refused export wrote files"
    );
    // Weights that do not match the architecture are refused: a weights error, exit 1.
    let wrong = bacseg(&[
        "export",
        "--model",
        s(&weights),
        "--arch",
        "unet",
        "--out",
        s(&onnx),
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    let missing = bacseg(&[
        "export",
        "--model",
        "/nonexistent/w.safetensors",
        "--out",
        s(&onnx),
    ]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn the_published_scunet_checkpoint_is_exported_with_its_normalisation() {
    let Some(shared) = bacseg_core::shared_data("the SCU-Net export test") else {
        return;
    };
    let checkpoint = shared.join("../models/scunet/SCUNet_dice_512_512_best.pt");
    if !checkpoint.is_file() {
        eprintln!("SKIPPED: {} is absent", checkpoint.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("scunet.onnx");
    let io = tmp.path().join("io");
    let model = format!("scunet:{}", s(&checkpoint));
    let out = bacseg(&[
        "export",
        "--model",
        &model,
        "--out",
        s(&onnx),
        "--reference-io",
        s(&io),
        "--reference-side",
        "32",
    ]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("probabilities"));
    let proto = bacseg_nn::onnx::read(&std::fs::read(&onnx).unwrap()).unwrap();
    let graph = proto.graph.unwrap();
    assert_eq!(graph.node[0].op_type, "Sub");
    assert!(graph.node.iter().any(|n| n.op_type == "PRelu"));
    // 1x3x32x32 input and 1x1x32x32 output after a 128-byte header.
    let len = |name: &str| std::fs::read(io.join(name)).unwrap().len();
    assert_eq!(len("input.npy"), 128 + 4 * 3 * 1024);
    assert_eq!(len("output.npy"), 128 + 4 * 1024);
}
