//! The CPU engine against burn's own modules (the reference implementation) on small shapes.

use burn::module::{Param, RunningState};
use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};

use super::*;
use crate::model::SegmentationModel;
use crate::networks::blocks::max_pool2x2 as burn_max_pool;
use crate::{DtUnetConfig, Module, UnetConfig};

fn nchw_values(t: Tensor<4>) -> (Vec<f32>, [usize; 4]) {
    let dims = t.dims();
    (t.into_data().try_to_vec::<f32>().unwrap(), dims)
}

/// A burn NCHW tensor as an engine map.
fn to_nhwc(t: Tensor<4>) -> Nhwc {
    let (v, shape) = nchw_values(t);
    Nhwc::from_nchw(&v, shape)
}

/// Largest difference between an engine map and a burn NCHW tensor, relative to the largest
/// magnitude of the reference (at least 1).
fn relative_error(got: &Nhwc, want: Tensor<4>) -> f32 {
    let want = to_nhwc(want);
    assert_eq!(
        (got.n, got.h, got.w, got.c),
        (want.n, want.h, want.w, want.c)
    );
    let scale = want.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    got.data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale
}

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::random(shape, Distribution::Uniform(-1.0, 1.0), device)
}

/// A BatchNorm with non-trivial statistics and affine parameters, in inference mode.
fn random_batch_norm(channels: usize, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(channels).init(device);
    let vec1 =
        |lo: f64, hi: f64| Tensor::<1>::random([channels], Distribution::Uniform(lo, hi), device);
    bn.gamma = Param::from_tensor(vec1(0.5, 1.5));
    bn.beta = Param::from_tensor(vec1(-0.5, 0.5));
    bn.running_mean = RunningState::new(vec1(-0.3, 0.3));
    bn.running_var = RunningState::new(vec1(0.2, 2.0));
    bn
}

#[test]
fn convolution_with_folded_batch_norm_matches_burn() {
    let device = Device::default();
    for (kernel, bias, relu) in [
        (3, false, true),
        (3, true, false),
        (1, true, false),
        (5, true, true),
    ] {
        let (cin, cout) = (3, 4);
        let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(
                kernel / 2,
                kernel / 2,
                kernel / 2,
                kernel / 2,
            ))
            .with_bias(bias)
            .init(&device);
        let bn = random_batch_norm(cout, &device);
        let x = random([2, cin, 5, 7], &device);
        let want = bn.forward(conv.forward(x.clone()));
        let want = if relu {
            burn::tensor::activation::relu(want)
        } else {
            want
        };
        let engine = compile_conv("test", &conv, Some(&bn), vec![cin], relu).unwrap();
        let got = engine.forward(&[&to_nhwc(x)], Vec::new());
        let err = relative_error(&got, want);
        assert!(err < 1e-5, "kernel {kernel}: relative error {err}");
    }
}

#[test]
fn convolution_reads_a_concatenation_in_place() {
    let device = Device::default();
    let conv = Conv2dConfig::new([5, 3], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    let a = random([1, 2, 6, 4], &device);
    let b = random([1, 3, 6, 4], &device);
    let want = conv.forward(Tensor::cat(vec![a.clone(), b.clone()], 1));
    let engine = compile_conv("test", &conv, None, vec![2, 3], false).unwrap();
    // Reuse a too-large buffer full of garbage: every value must be overwritten.
    let got = engine.forward(&[&to_nhwc(a), &to_nhwc(b)], vec![f32::NAN; 1000]);
    assert!(relative_error(&got, want) < 1e-5);
}

#[test]
fn blocked_and_whole_image_paths_agree_with_burn_on_larger_maps() {
    // 40x40 with 24 channels in: both the per-block path (small weights) and, with 160 output
    // channels, the single-GEMM path of the deep levels.
    let device = Device::default();
    for cout in [8, 160] {
        let conv = Conv2dConfig::new([24, cout], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let x = random([2, 24, 40, 40], &device);
        let want = conv.forward(x.clone());
        let engine = compile_conv("test", &conv, None, vec![24], false).unwrap();
        let got = engine.forward(&[&to_nhwc(x)], Vec::new());
        let err = relative_error(&got, want);
        assert!(err < 1e-5, "{cout} channels: relative error {err}");
    }
}

#[test]
fn pooling_upsampling_and_resizing_match_burn() {
    let device = Device::default();
    let x = random([2, 3, 6, 10], &device);
    let got = max_pool2x2(&to_nhwc(x.clone()), Vec::new());
    assert_eq!(relative_error(&got, burn_max_pool(x.clone())), 0.0);

    let up = ConvTranspose2dConfig::new([3, 5], [2, 2])
        .with_stride([2, 2])
        .init(&device);
    let engine = compile_transposed("test", &up).unwrap();
    let got = engine.forward(&to_nhwc(x.clone()), Vec::new());
    assert!(relative_error(&got, up.forward(x.clone())) < 1e-5);

    let got = resize_bilinear_aligned(&to_nhwc(x.clone()), 13, 21, Vec::new());
    let want = crate::networks::blocks::resize_bilinear(x, [13, 21], true);
    assert!(relative_error(&got, want) < 1e-5);
}

#[test]
fn unsupported_layers_are_refused_with_the_reason() {
    let device = Device::default();
    let strided = Conv2dConfig::new([2, 2], [3, 3])
        .with_stride([2, 2])
        .init(&device);
    let err = compile_conv("test", &strided, None, vec![2], false).unwrap_err();
    assert!(err.to_string().contains("stride"), "{err}");
    let dilated = Conv2dConfig::new([2, 2], [3, 3])
        .with_dilation([2, 2])
        .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(&device);
    assert!(compile_conv("test", &dilated, None, vec![2], false).is_err());
    let conv = Conv2dConfig::new([2, 2], [1, 1]).init(&device);
    assert!(compile_conv("test", &conv, None, vec![3], false).is_err());
}

/// Give every BatchNorm of a double convolution random statistics.
fn randomise(block: &mut DoubleConv, device: &Device) {
    block.bn1 = random_batch_norm(block.bn1.gamma.dims()[0], device);
    block.bn2 = random_batch_norm(block.bn2.gamma.dims()[0], device);
}

/// A DT-UNet of `widths` in validation mode with random BatchNorm statistics.
fn random_dt_unet(widths: Vec<usize>, device: &Device) -> crate::DtUnet {
    let mut model = DtUnetConfig::new()
        .with_widths(widths)
        .init(device)
        .unwrap();
    for block in model.down.iter_mut() {
        randomise(block, device);
    }
    for level in model.up.iter_mut() {
        randomise(&mut level.conv, device);
    }
    model.valid()
}

#[test]
fn dt_unet_matches_burn_and_reuses_its_buffers() {
    let device = Device::default();
    let model = random_dt_unet(vec![3, 6, 12], &device);
    let mut net = crate::engine::cpu::Net::for_model(&model).unwrap().unwrap();
    assert_eq!((net.name(), net.in_channels()), ("dt-unet", 1));
    for (n, side) in [(2, 16), (1, 24), (2, 16)] {
        let x = random([n, 1, side, side], &device);
        let want = model.forward(x.clone());
        let got = net.forward(&to_nhwc(x)).unwrap();
        let err = relative_error(&Nhwc::new(n, side, side, 1, got), want);
        assert!(err < 1e-4, "{n}x{side}: relative error {err}");
    }
    let bad = Nhwc::new(1, 10, 16, 1, vec![0.0; 160]);
    let err = net.forward(&bad).unwrap_err();
    assert!(err.to_string().contains("multiples of 4"), "{err}");
}

#[test]
fn unet_with_three_input_channels_matches_burn() {
    let device = Device::default();
    let mut model = UnetConfig::new()
        .with_widths(vec![4, 8])
        .init(&device)
        .unwrap();
    for block in model.down.iter_mut().chain(model.up.iter_mut()) {
        randomise(block, &device);
    }
    let model = model.valid();
    let mut net = crate::engine::cpu::Net::for_model(&model).unwrap().unwrap();
    assert_eq!(net.in_channels(), model.in_channels());
    let x = random([2, 3, 12, 20], &device);
    let want = model.forward(x.clone());
    let got = net.forward(&to_nhwc(x)).unwrap();
    let err = relative_error(&Nhwc::new(2, 12, 20, 1, got), want);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn every_direct_convolution_path_this_cpu_runs_matches_burn() {
    // Each register blocking of the direct convolution, forced whatever the process would
    // pick, against burn's convolution: 3x3 and 5x5 kernels, one input or a concatenation,
    // widths that leave tails of 4-pixel and single-pixel tiles, two images, several tasks,
    // into a reused buffer full of garbage. Paths this CPU cannot run are named as skipped.
    use super::direct::{Blocking, blocking};
    use super::isa::Isa;
    let device = Device::default();
    let cases = [
        (Blocking::Avx2C8, Isa::Avx2, 8),
        (Blocking::Avx2C16, Isa::Avx2, 48),
        (Blocking::Avx512C8, Isa::Avx512, 24),
        (Blocking::Avx512C16, Isa::Avx512, 48),
        (Blocking::Avx512C32, Isa::Avx512, 64),
        (Blocking::Avx512Px8, Isa::Avx512, 8),
        (Blocking::Avx512Px8, Isa::Avx512, 16),
    ];
    let mut skipped = Vec::new();
    for (path, isa, cout) in cases {
        assert_eq!(
            blocking(isa, cout),
            Some(path),
            "blocking for {cout} channels"
        );
        if !Isa::supported().contains(&isa) {
            skipped.push(format!("{path:?} ({cout} channels)"));
            continue;
        }
        for (kernel, splits, width, relu) in [
            (3, vec![5], 23, true),
            (3, vec![3, 5], 37, false),
            (5, vec![2, 6], 13, true),
            (3, vec![8], 1, true),
            (3, vec![4, 4], 101, true),
            (3, vec![8, 8], 37, false),
            (3, vec![1, 8], 64, true),
        ] {
            let cin: usize = splits.iter().sum();
            let pad = kernel / 2;
            let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(&device);
            let bn = random_batch_norm(cout, &device);
            let parts: Vec<Tensor<4>> = splits
                .iter()
                .map(|&c| random([2, c, 9, width], &device))
                .collect();
            let want = bn.forward(conv.forward(Tensor::cat(parts.clone(), 1)));
            let want = if relu {
                burn::tensor::activation::relu(want)
            } else {
                want
            };
            let engine = compile_conv("test", &conv, Some(&bn), splits.clone(), relu).unwrap();
            let maps: Vec<Nhwc> = parts.into_iter().map(to_nhwc).collect();
            let refs: Vec<&Nhwc> = maps.iter().collect();
            let mut got = Nhwc::with_buffer(2, 9, width, cout, vec![f32::NAN; 50_000]);
            assert!(engine.forward_direct(path, &refs, &mut got), "{path:?} ran");
            // And the path the engine picks itself in this process.
            let chosen = engine.forward(&refs, vec![f32::NAN; 50_000]);
            let err_chosen = relative_error(&chosen, want.clone());
            assert!(
                err_chosen < 1e-5,
                "engine's choice for {cout} channels: {err_chosen}"
            );
            let err = relative_error(&got, want);
            assert!(
                err < 1e-5,
                "{path:?}, kernel {kernel}, splits {splits:?}, width {width}: {err}"
            );
        }
    }
    assert!(
        skipped.len() < cases.len() || Isa::detected() == Isa::Portable,
        "no direct path ran"
    );
    eprintln!(
        "direct convolution paths run on {}: {}; skipped (not on this CPU): {}",
        Isa::detected(),
        cases.len() - skipped.len(),
        if skipped.is_empty() {
            "none".to_string()
        } else {
            skipped.join(", ")
        }
    );
}

#[test]
fn one_channel_head_matches_burn() {
    // The 1x1 convolution to one channel (AVX-512 path where the CPU has it, else the GEMM):
    // 8 and 24 input channels, widths with a tail of fewer than 16 pixels.
    let device = Device::default();
    for (cin, width) in [(8, 37), (24, 16), (8, 5)] {
        let conv = Conv2dConfig::new([cin, 1], [1, 1]).init(&device);
        let x = random([2, cin, 3, width], &device);
        let want = conv.forward(x.clone());
        let engine = compile_conv("test", &conv, None, vec![cin], false).unwrap();
        let got = engine.forward(&[&to_nhwc(x)], vec![f32::NAN; 500]);
        let err = relative_error(&got, want);
        assert!(err < 1e-5, "{cin} channels, width {width}: {err}");
    }
}

/// `bn` with random statistics and affine parameters (its epsilon kept).
fn randomise_batch_norm(bn: &mut BatchNorm, device: &Device) {
    let epsilon = bn.epsilon;
    *bn = random_batch_norm(bn.gamma.dims()[0], device);
    bn.epsilon = epsilon;
}

/// `act` with random slopes, positive and negative (as many as it had).
fn randomise_prelu(act: &mut burn::nn::PRelu, device: &Device) {
    let n = act.alpha.dims()[0];
    act.alpha = Param::from_tensor(Tensor::<1>::random(
        [n],
        Distribution::Uniform(-0.5, 0.5),
        device,
    ));
}

#[test]
fn scunet_matches_burn_and_reuses_its_buffers() {
    let device = Device::default();
    let mut model = crate::ScuNetConfig::new().init(&device).unwrap();
    for layer in [
        &mut model.level1_0,
        &mut model.level1_1,
        &mut model.level1_2,
        &mut model.level2_0.conv1x1,
        &mut model.level3_0.conv1x1,
    ] {
        randomise_batch_norm(&mut layer.bn, &device);
        randomise_prelu(&mut layer.act, &device);
    }
    for (bn, act) in [
        (&mut model.b1.bn, &mut model.b1.act),
        (&mut model.b2.bn, &mut model.b2.act),
        (&mut model.level2_0.bn, &mut model.level2_0.act),
        (&mut model.level3_0.bn, &mut model.level3_0.act),
        (&mut model.up3.conv.bn1, &mut model.up3.conv.act1),
        (&mut model.up3.conv.bn2, &mut model.up3.conv.act2),
        (&mut model.up4.conv.bn1, &mut model.up4.conv.act1),
        (&mut model.up4.conv.bn2, &mut model.up4.conv.act2),
    ] {
        randomise_batch_norm(bn, &device);
        randomise_prelu(act, &device);
    }
    let model = model.valid();
    let mut net = crate::engine::cpu::Net::for_model(&model).unwrap().unwrap();
    assert_eq!((net.name(), net.in_channels()), ("scunet", 3));
    for (n, h, w) in [(2, 32, 48), (1, 16, 16), (2, 32, 48)] {
        let x = random([n, 3, h, w], &device);
        let want = model.forward(x.clone());
        let got = net.forward(&to_nhwc(x)).unwrap();
        let err = relative_error(&Nhwc::new(n, h, w, 1, got), want);
        eprintln!("scunet {n}x{h}x{w}: relative error {err:.2e}");
        assert!(err < 1e-5, "{n}x{h}x{w}: relative error {err}");
    }
    let bad = Nhwc::new(1, 12, 16, 3, vec![0.0; 576]);
    let err = net.forward(&bad).unwrap_err();
    assert!(err.to_string().contains("multiples of 8"), "{err}");
    // Weights in f64 are burn's to run.
    let f64_model = model.with_precision(crate::Precision::F64);
    assert!(crate::engine::cpu::Net::for_model(&f64_model).is_none());
}

#[test]
fn bf16_convolution_matches_f32_on_bf16_rounded_values() {
    // The bf16 kernel against the f32 engine given the same values rounded to bf16: equal up
    // to the order of the f32 additions. 3x3 and 1x1 kernels, one input or a concatenation,
    // 16 and 32 output channels (both blockings), widths with 4-pixel and single-pixel tails.
    use super::bf16::{available, round_to_bf16};
    if !available() {
        eprintln!("bf16 convolution skipped: this CPU has no AVX512_BF16");
        return;
    }
    let device = Device::default();
    for (kernel, splits, cout, side) in [
        (3, vec![8], 16, 21),
        (3, vec![16, 8], 32, 19),
        (3, vec![32], 64, 13),
        (1, vec![64], 32, 9),
    ] {
        let cin: usize = splits.iter().sum();
        let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_padding(PaddingConfig2d::Same)
            .init(&device);
        let weight = values(conv.weight.val(), "test", "weights").unwrap();
        let bias = values(conv.bias.as_ref().unwrap().val(), "test", "bias").unwrap();
        let rounded: Vec<f32> = weight.iter().map(|&v| round_to_bf16(v)).collect();
        let make =
            |w: &[f32]| Conv::from_oihw(w, kernel, splits.clone(), cout, Some(&bias), None, true);
        let (mut fast, exact) = (make(&weight), make(&rounded));
        assert!(fast.set_bf16(true), "{splits:?} -> {cout}");
        let maps: Vec<Nhwc> = splits
            .iter()
            .map(|&c| to_nhwc(random([2, c, side, side], &device)))
            .collect();
        let rounded_maps: Vec<Nhwc> = maps
            .iter()
            .map(|m| {
                Nhwc::new(
                    m.n,
                    m.h,
                    m.w,
                    m.c,
                    m.data.iter().map(|&v| round_to_bf16(v)).collect(),
                )
            })
            .collect();
        let got = fast.forward(&maps.iter().collect::<Vec<_>>(), vec![f32::NAN; 7]);
        let want = exact.forward(&rounded_maps.iter().collect::<Vec<_>>(), Vec::new());
        let scale = want.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let err = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
            / scale;
        assert!(
            err < 1e-5,
            "{kernel}x{kernel} {splits:?} -> {cout}: relative error {err}"
        );
        // And the rounding itself stays small against the f32 convolution.
        let f32_out = make(&weight).forward(&maps.iter().collect::<Vec<_>>(), Vec::new());
        let err = got
            .data
            .iter()
            .zip(&f32_out.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
            / scale;
        assert!(err < 2e-2, "{splits:?} -> {cout}: bf16 against f32 {err}");
    }
    // Shapes it does not take stay in f32.
    let odd = Conv::from_oihw(&[0.5; 24], 1, vec![3], 8, None, None, false);
    assert!(!odd.clone().set_bf16(true));
}

/// Values for the SegNet test from a generator of its own (burn's is one per process, shared
/// with the tests running meanwhile): the same draws on every run, so the margin to a
/// pooling tie checked below holds on every run too. `BACSEG_ENGINE_TEST_SEED` overrides the
/// seed, to try other draws.
struct Draws(rand_chacha::ChaCha8Rng);

impl Draws {
    fn new(default: u64) -> Self {
        use rand::SeedableRng;
        let seed = std::env::var("BACSEG_ENGINE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        Self(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    fn tensor<const D: usize>(
        &mut self,
        shape: [usize; D],
        lo: f32,
        hi: f32,
        device: &Device,
    ) -> Tensor<D> {
        use rand::Rng;
        let values: Vec<f32> = (0..shape.iter().product())
            .map(|_| self.0.random_range(lo..hi))
            .collect();
        Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
    }

    /// `layer`'s weights within He-uniform bounds, its BatchNorm with non-trivial statistics.
    fn conv_bn(&mut self, layer: &mut crate::networks::blocks::ConvBn, device: &Device) {
        let dims = layer.conv.weight.dims();
        let bound = (6.0 / (dims[1] * dims[2] * dims[3]) as f32).sqrt();
        layer.conv.weight = Param::from_tensor(self.tensor(dims, -bound, bound, device));
        if let Some(bias) = &layer.conv.bias {
            let n = bias.dims()[0];
            layer.conv.bias = Some(Param::from_tensor(self.tensor([n], -0.1, 0.1, device)));
        }
        let c = layer.bn.gamma.dims()[0];
        layer.bn.gamma = Param::from_tensor(self.tensor([c], 0.5, 1.5, device));
        layer.bn.beta = Param::from_tensor(self.tensor([c], -0.5, 0.5, device));
        layer.bn.running_mean = RunningState::new(self.tensor([c], -0.3, 0.3, device));
        layer.bn.running_var = RunningState::new(self.tensor([c], 0.2, 2.0, device));
    }
}

/// The smallest gap, over the 2x2 pooling windows of `map` (NCHW, burn's) whose two largest
/// values are not both zero, between those two values relative to the map's largest
/// magnitude: float rounding smaller than this cannot move a pooled value.
fn pooling_margin(map: Tensor<4>) -> f32 {
    let m = to_nhwc(map);
    let scale = m.data.iter().fold(f32::MIN_POSITIVE, |s, v| s.max(v.abs()));
    let at =
        |img: usize, y: usize, x: usize, ch: usize| m.data[((img * m.h + y) * m.w + x) * m.c + ch];
    let mut margin = f32::INFINITY;
    for img in 0..m.n {
        for y in (0..m.h - 1).step_by(2) {
            for x in (0..m.w - 1).step_by(2) {
                for ch in 0..m.c {
                    let mut v = [
                        at(img, y, x, ch),
                        at(img, y, x + 1, ch),
                        at(img, y + 1, x, ch),
                        at(img, y + 1, x + 1, ch),
                    ];
                    v.sort_by(|a, b| b.total_cmp(a));
                    if v[0] != 0.0 || v[1] != 0.0 {
                        margin = margin.min((v[0] - v[1]) / scale);
                    }
                }
            }
        }
    }
    margin
}

#[test]
fn segnet_matches_burn_and_reuses_its_buffers() {
    let device = Device::default();
    let mut draws = Draws::new(13);
    let mut model = crate::SegNetConfig::new()
        .with_widths(vec![4, 8, 8])
        .with_convs(vec![2, 1, 2])
        .init(&device)
        .unwrap();
    for stage in model.enc.iter_mut().chain(model.dec.iter_mut()) {
        for layer in stage.layers.iter_mut() {
            draws.conv_bn(layer, &device);
        }
    }
    let model = model.valid();
    let mut net = crate::engine::cpu::Net::for_model(&model).unwrap().unwrap();
    assert_eq!((net.name(), net.in_channels()), ("segnet", 1));
    for (n, h, w) in [(2, 16, 24), (1, 8, 8), (2, 16, 24)] {
        let x = draws.tensor([n, 1, h, w], 0.0, 1.0, &device);
        // The engine and burn round differently; a pooling window whose two largest values
        // are within that rounding could pool either, so the draws must keep clear of it.
        let mut map = x.clone();
        let mut smallest = f32::INFINITY;
        for stage in &model.enc {
            map = stage.forward(map);
            let margin = pooling_margin(map.clone());
            smallest = smallest.min(margin);
            assert!(
                margin > 1e-4,
                "{n}x{h}x{w}: a pooling window within {margin:.1e} of a tie (try another \
                 BACSEG_ENGINE_TEST_SEED)"
            );
            map = burn_max_pool(map);
        }
        let want = model.forward(x.clone());
        let got = net.forward(&to_nhwc(x)).unwrap();
        let err = relative_error(&Nhwc::new(n, h, w, 1, got), want);
        eprintln!("segnet {n}x{h}x{w}: relative error {err:.2e}, pooling margin {smallest:.1e}");
        assert!(err < 1e-5, "{n}x{h}x{w}: relative error {err}");
    }
    let bad = Nhwc::new(1, 12, 16, 1, vec![0.0; 192]);
    let err = net.forward(&bad).unwrap_err();
    assert!(err.to_string().contains("multiples of 8"), "{err}");
}

#[test]
fn pooling_with_argmax_and_unpooling_invert_each_other() {
    // Channels-last 1x4x4x2: channel 0 counts up, channel 1 down; every window's maximum is
    // at a different corner for the two channels.
    let data: Vec<f32> = (0..16).flat_map(|i| [i as f32, 15.0 - i as f32]).collect();
    let x = Nhwc::new(1, 4, 4, 2, data);
    let mut which = vec![9u8; 8];
    let pooled = segnet::max_pool2x2_argmax(&x, Vec::new(), &mut which);
    assert_eq!(pooled.data, [5.0, 15.0, 7.0, 13.0, 13.0, 7.0, 15.0, 5.0]);
    assert_eq!(which, [3, 0, 3, 0, 3, 0, 3, 0]);
    let back = segnet::max_unpool2x2(&pooled, &which, vec![1.0; 3]);
    for (i, pair) in back.data.chunks(2).enumerate() {
        let (y, x) = (i / 4, i % 4);
        let want0 = if y % 2 == 1 && x % 2 == 1 {
            i as f32
        } else {
            0.0
        };
        let want1 = if y % 2 == 0 && x % 2 == 0 {
            15.0 - i as f32
        } else {
            0.0
        };
        assert_eq!(pair, [want0, want1], "position {y},{x}");
    }
}

#[test]
fn contextnet_matches_burn_and_reuses_its_buffers() {
    let device = Device::default();
    let mut draws = Draws::new(5);
    let mut model = crate::ContextNetConfig::new()
        .with_base_width(4)
        .with_expansion(2)
        .init(&device)
        .unwrap();
    {
        let s = &mut model.shallow;
        let mut layers = vec![&mut s.conv];
        for ds in [&mut s.ds1, &mut s.ds2, &mut s.ds3] {
            layers.extend([&mut ds.dw, &mut ds.pw]);
        }
        let d = &mut model.deep;
        layers.extend([&mut d.stem, &mut d.conv]);
        for b in d.blocks.iter_mut() {
            if let Some(e) = b.expand.as_mut() {
                layers.push(e);
            }
            layers.extend([&mut b.dw, &mut b.project]);
        }
        let f = &mut model.fusion;
        layers.extend([&mut f.dw, &mut f.deep_proj, &mut f.shallow_proj]);
        for ds in [&mut model.classifier.ds1, &mut model.classifier.ds2] {
            layers.extend([&mut ds.dw, &mut ds.pw]);
        }
        for layer in layers {
            draws.conv_bn(layer, &device);
        }
        let head = &mut model.classifier.head;
        let dims = head.weight.dims();
        head.weight = Param::from_tensor(draws.tensor(dims, -0.5, 0.5, &device));
    }
    let model = model.valid();
    let mut net = crate::engine::cpu::Net::for_model(&model).unwrap().unwrap();
    assert_eq!((net.name(), net.in_channels()), ("contextnet", 1));
    for (n, h, w) in [(2, 64, 96), (1, 32, 32), (2, 64, 96)] {
        let x = draws.tensor([n, 1, h, w], 0.0, 1.0, &device);
        let want = model.forward(x.clone());
        let got = net.forward(&to_nhwc(x)).unwrap();
        let err = relative_error(&Nhwc::new(n, h, w, 1, got), want);
        eprintln!("contextnet {n}x{h}x{w}: relative error {err:.2e}");
        assert!(err < 1e-5, "{n}x{h}x{w}: relative error {err}");
    }
    let bad = Nhwc::new(1, 48, 64, 1, vec![0.0; 48 * 64]);
    let err = net.forward(&bad).unwrap_err();
    assert!(err.to_string().contains("multiples of 32"), "{err}");
}

#[test]
fn half_pixel_resizing_matches_burn() {
    let device = Device::default();
    let mut draws = Draws::new(3);
    for (h, w, oh, ow) in [(16, 24, 4, 6), (2, 3, 16, 24), (5, 7, 5, 7), (8, 8, 12, 20)] {
        let x = draws.tensor([2, 3, h, w], -1.0, 1.0, &device);
        let want = crate::networks::blocks::resize_bilinear(x.clone(), [oh, ow], false);
        let got = kernels::resize_bilinear_half_pixel(&to_nhwc(x), oh, ow, Vec::new());
        let err = relative_error(&got, want);
        assert!(err < 1e-6, "{h}x{w} to {oh}x{ow}: relative error {err}");
    }
}

/// Whether the Winograd path is on in this process (`BACSEG_CPU_WINOGRAD=0` turns it off;
/// its tests then say they are skipped).
fn winograd_on() -> bool {
    let on = !super::winograd::winograd_disabled();
    if !on {
        eprintln!("Winograd tests skipped: BACSEG_CPU_WINOGRAD=0 turns the path off");
    }
    on
}

#[test]
fn winograd_convolution_matches_burn() {
    // F(4x4, 3x3) against burn's convolution: concatenated inputs, channel counts that are
    // not multiples of the 16 transformed together, tile rows of a task crossing images, and
    // both ways of splitting the work (few tiles: the products in parallel; many: tasks of
    // tile rows), on two threads as on CI.
    if !winograd_on() {
        return;
    }
    let device = Device::default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        for (splits, cout, [n, h, w], relu) in [
            (vec![32], 40, [2, 8, 12], true),
            (vec![40, 24], 48, [1, 16, 8], false),
            (vec![64], 64, [2, 8, 8], true),
            (vec![32, 32], 64, [4, 28, 36], true),
            (vec![48], 96, [3, 20, 44], false),
        ] {
            let cin: usize = splits.iter().sum();
            let conv = Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let bn = random_batch_norm(cout, &device);
            let parts: Vec<Tensor<4>> = splits
                .iter()
                .map(|&c| random([n, c, h, w], &device))
                .collect();
            let want = bn.forward(conv.forward(Tensor::cat(parts.clone(), 1)));
            let want = if relu {
                burn::tensor::activation::relu(want)
            } else {
                want
            };
            let mut engine = compile_conv("test", &conv, Some(&bn), splits.clone(), relu).unwrap();
            assert!(engine.set_winograd(true), "{splits:?} -> {cout}");
            let maps: Vec<Nhwc> = parts.into_iter().map(to_nhwc).collect();
            let refs: Vec<&Nhwc> = maps.iter().collect();
            let mut got = Nhwc::with_buffer(n, h, w, cout, vec![f32::NAN; 10]);
            assert!(engine.forward_winograd(&refs, &mut got), "ran");
            let err = relative_error(&got, want.clone());
            assert!(err < 1e-5, "{splits:?} -> {cout} at {n}x{h}x{w}: {err}");
            // `forward` takes it too.
            let chosen = engine.forward(&refs, Vec::new());
            assert_eq!(chosen.data, got.data, "forward took another path");
        }
    });
    // Where it does not run: narrow layers, sides that are not multiples of 4.
    let narrow = Conv2dConfig::new([16, 32], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    let mut engine = compile_conv("test", &narrow, None, vec![16], true).unwrap();
    assert!(!engine.set_winograd(true));
    let conv = Conv2dConfig::new([64, 64], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    let mut engine = compile_conv("test", &conv, None, vec![64], false).unwrap();
    assert!(engine.set_winograd(true));
    let x = random([1, 64, 10, 16], &device);
    let want = conv.forward(x.clone());
    let x = to_nhwc(x);
    let mut out = Nhwc::with_buffer(1, 10, 16, 64, Vec::new());
    assert!(!engine.forward_winograd(&[&x], &mut out));
    let err = relative_error(&engine.forward(&[&x], Vec::new()), want);
    assert!(err < 1e-5, "10x16 on the other paths: {err}");
    // Four tiles (one 8x8 map) are too few.
    let x = to_nhwc(random([1, 64, 8, 8], &device));
    let mut out = Nhwc::with_buffer(1, 8, 8, 64, Vec::new());
    assert!(!engine.forward_winograd(&[&x], &mut out));
}

#[test]
fn dt_unet_with_wide_levels_matches_burn() {
    // Levels of 32 and 64 channels: the engine's Winograd convolutions inside the network
    // (encoder, and decoder levels reading the concatenation in place).
    if !winograd_on() {
        return;
    }
    let device = Device::default();
    let model = random_dt_unet(vec![8, 32, 64], &device);
    let mut net = crate::engine::cpu::Net::for_model(&model).unwrap().unwrap();
    assert!(
        net.set_winograd(true) >= 3,
        "the wide convolutions take Winograd"
    );
    let x = random([2, 1, 64, 48], &device);
    let want = model.forward(x.clone());
    let got = net.forward(&to_nhwc(x)).unwrap();
    let err = relative_error(&Nhwc::new(2, 64, 48, 1, got), want);
    assert!(err < 1e-4, "relative error {err}");
}
