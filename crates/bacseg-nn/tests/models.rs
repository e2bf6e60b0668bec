//! Architecture invariants: exact published parameter counts, output shapes, FLOP counts.
#![allow(clippy::unwrap_used)]

use bacseg_nn::{
    Architecture, ContextNetConfig, DtUnetConfig, NnError, SegNetConfig, SegmentationModel,
    UnetConfig,
};
use burn::module::Module;
use burn::tensor::{Device, Tensor};

#[test]
fn dt_unet_reference_has_the_published_parameter_count() {
    let model = DtUnetConfig::new().init(&Device::default()).unwrap();
    assert_eq!(model.trainable_parameters(), 7_782_281);
    // burn's own count adds the 2 x 3,040 BatchNorm running statistics.
    assert_eq!(model.num_params(), 7_788_361);
}

#[test]
fn unet_reference_has_the_published_parameter_count() {
    let device = Device::default();
    assert_eq!(
        UnetConfig::new()
            .init(&device)
            .unwrap()
            .trainable_parameters(),
        13_395_329
    );
    let grey = UnetConfig::new().with_in_channels(1).init(&device).unwrap();
    assert_eq!(grey.trainable_parameters(), 13_394_177);
}

#[test]
fn segnet_and_contextnet_reference_sizes() {
    // Not published for this 1-channel, 1-class variant; computed by tools/torch_reference.py
    // from the PyTorch twins (sum of p.numel() over model.parameters()).
    let device = Device::default();
    assert_eq!(
        SegNetConfig::new()
            .init(&device)
            .unwrap()
            .trainable_parameters(),
        29_434_497
    );
    assert_eq!(
        ContextNetConfig::new()
            .init(&device)
            .unwrap()
            .trainable_parameters(),
        1_019_713
    );
}

#[test]
fn reference_dt_unet_costs_the_published_flops() {
    let model = DtUnetConfig::new().init(&Device::default()).unwrap();
    assert_eq!(model.forward_flops([512, 512]), 8_900_313_088);
}

#[test]
fn flops_scale_with_the_image_area() {
    let device = Device::default();
    let check = |a: u64, b: u64| assert_eq!(b, 4 * a, "FLOPs of a 2x larger side must be 4x");
    let m = DtUnetConfig::new().init(&device).unwrap();
    check(m.forward_flops([256, 256]), m.forward_flops([512, 512]));
    let m = UnetConfig::new().init(&device).unwrap();
    check(m.forward_flops([256, 256]), m.forward_flops([512, 512]));
    let m = SegNetConfig::new().init(&device).unwrap();
    check(m.forward_flops([256, 256]), m.forward_flops([512, 512]));
    let m = ContextNetConfig::new().init(&device).unwrap();
    check(m.forward_flops([256, 256]), m.forward_flops([512, 512]));
}

fn assert_full_resolution_logits<M: SegmentationModel>(model: &M, shape: [usize; 4]) {
    let device = Device::default();
    model.check_input(shape).unwrap();
    let out = model.forward(Tensor::<4>::ones(shape, &device));
    assert_eq!(
        out.dims(),
        [shape[0], 1, shape[2], shape[3]],
        "{}",
        model.name()
    );
}

#[test]
fn every_architecture_outputs_one_full_resolution_logit_map() {
    let device = Device::default();
    let m = DtUnetConfig::new()
        .with_base_width(2, 3)
        .init(&device)
        .unwrap();
    assert_full_resolution_logits(&m, [2, 1, 8, 12]);
    let m = UnetConfig::new()
        .with_widths(vec![2, 4])
        .with_in_channels(1)
        .init(&device)
        .unwrap();
    assert_full_resolution_logits(&m, [1, 1, 8, 16]);
    let m = SegNetConfig::new()
        .with_widths(vec![2, 4])
        .with_convs(vec![1, 2])
        .init(&device)
        .unwrap();
    assert_full_resolution_logits(&m, [1, 1, 12, 8]);
    let m = ContextNetConfig::new()
        .with_base_width(2)
        .with_expansion(2)
        .init(&device)
        .unwrap();
    assert_full_resolution_logits(&m, [1, 1, 64, 32]);
}

#[test]
fn input_shapes_the_network_cannot_take_are_rejected() {
    let m = DtUnetConfig::new()
        .with_base_width(2, 3)
        .init(&Device::default())
        .unwrap();
    assert!(matches!(
        m.check_input([1, 1, 8, 10]),
        Err(NnError::InputShape { .. })
    ));
    assert!(matches!(
        m.check_input([1, 3, 8, 8]),
        Err(NnError::InputShape { .. })
    ));
    assert!(matches!(
        m.check_input([0, 1, 8, 8]),
        Err(NnError::InputShape { .. })
    ));
    assert!(m.check_input([3, 1, 16, 8]).is_ok());
}

#[test]
fn invalid_configurations_are_rejected() {
    let device = Device::default();
    assert!(
        DtUnetConfig::new()
            .with_widths(vec![8])
            .init(&device)
            .is_err()
    );
    assert!(UnetConfig::new().with_in_channels(0).init(&device).is_err());
    assert!(
        SegNetConfig::new()
            .with_convs(vec![2, 2])
            .init(&device)
            .is_err()
    );
    assert!(
        ContextNetConfig::new()
            .with_base_width(3)
            .init(&device)
            .is_err()
    );
}

#[test]
fn catalog_lists_every_architecture_by_name() {
    let device = Device::default();
    let names: Vec<_> = Architecture::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(names, ["dt-unet", "unet", "segnet", "contextnet", "scunet"]);
    for arch in Architecture::ALL {
        assert_eq!(Architecture::from_name(arch.name()), Some(arch));
        let summary = arch.reference_summary(&device).unwrap();
        assert_eq!(summary.name, arch.name());
        assert!(summary.gflop_per_patch > 0.0);
    }
    let dt = Architecture::DtUnet.reference_summary(&device).unwrap();
    assert_eq!(dt.parameters, 7_782_281);
    assert!((dt.gflop_per_patch - 8.900313088).abs() < 1e-9);
    assert_eq!(dt.config["widths"][6], 512);
    assert_eq!(Architecture::from_name("sc-unet"), None);
}
