//! Timing helpers shared by `cargo bench -p bacseg-nn --bench models` and `bacseg bench`:
//! the machine's fp32 peak, a model's forward pass and a training step (median of repeats,
//! after one warm-up run).

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor};

use crate::engine::cpu::isa::{engine_isa, measure_peak, measured_peaks};
use crate::engine::cpu::{Net, Nhwc};
use crate::error::NnError;
use crate::loss::soft_dice;
use crate::model::SegmentationModel;

/// The fp32 peak in GFLOP/s of the instruction set the CPU engine uses
/// ([`engine_isa`]) and how it was obtained: `BACSEG_PEAK_GFLOPS` when set, else measured on
/// this machine by [`measured_peaks`] (an FMA loop on every thread).
pub fn peak_gflops() -> (f64, String) {
    if let Some(p) = std::env::var("BACSEG_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return (p, "BACSEG_PEAK_GFLOPS".into());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let isa = engine_isa();
    let peaks = measured_peaks();
    let all = peaks
        .iter()
        .map(|(i, p)| format!("{i} {p:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    match peaks.iter().find(|(i, _)| *i == isa) {
        Some(&(_, p)) => (
            p,
            format!("measured, FMA loop on {threads} threads: {all} GFLOP/s"),
        ),
        None => {
            let p = measure_peak(isa, threads, 0.25);
            (p, format!("measured, scalar FMA loop on {threads} threads"))
        }
    }
}

/// Median of `values` (the upper one of the two middle values for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median seconds of `repeats` forward passes of `model` on a random
/// `[batch, in_channels, side, side]` input, after one warm-up pass.
pub fn time_forward<M: SegmentationModel>(
    model: &M,
    batch: usize,
    side: usize,
    repeats: usize,
) -> f64 {
    let device = model.devices().first().cloned().unwrap_or_default();
    let shape = [batch, model.in_channels(), side, side];
    let x = Tensor::<4>::random(shape, Distribution::Default, &device);
    let _ = model.forward(x.clone()).into_data(); // warm-up: allocations, kernel selection
    let times = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            let _ = model.forward(x.clone()).into_data();
            start.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

/// `len` fixed input values in [0, 1) for the engines' timings.
fn input_values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0)
        .collect()
}

/// Median seconds of `repeats` forward passes of the CPU engine's `net` on a
/// `[batch, in_channels, side, side]` input, after one warm-up pass (which also sizes the
/// buffers reused by the others).
pub fn time_forward_cpu(
    net: &mut Net,
    batch: usize,
    side: usize,
    repeats: usize,
) -> Result<f64, NnError> {
    let c = net.in_channels();
    let x = Nhwc::new(batch, side, side, c, input_values(batch * side * side * c));
    net.forward(&x)?;
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        net.forward(&x)?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Median seconds of `repeats` forward passes of the `ort` engine's `net` on a
/// `[batch, in_channels, side, side]` input, after one warm-up pass.
#[cfg(feature = "ort")]
pub fn time_forward_ort(
    net: &mut crate::engine::ort::OrtNet,
    batch: usize,
    side: usize,
    repeats: usize,
) -> Result<f64, NnError> {
    let shape = [batch, net.in_channels(), side, side];
    let data = input_values(shape.iter().product());
    net.forward(data.clone(), shape)?;
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let input = data.clone();
        let start = Instant::now();
        net.forward(input, shape)?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Median seconds of a training step and of its parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainStepTiming {
    /// The whole step.
    pub total: f64,
    /// Forward pass and loss (read back, so the pass is complete).
    pub forward: f64,
    /// Backward pass and the gradients collected per parameter.
    pub backward: f64,
    /// The AdamW update.
    pub optimizer: f64,
}

/// Median seconds of `repeats` training steps (soft Dice, AdamW at lr 1e-3) of `model`, which
/// must live on an autodiff device (`Device::default().autodiff()`), on a random
/// `[batch, in_channels, side, side]` batch with 5% positive pixels, after one warm-up step;
/// the same steps as `train` runs them (the loss is read back before the backward pass).
pub fn time_train_step<M: SegmentationModel>(
    model: M,
    batch: usize,
    side: usize,
    repeats: usize,
) -> TrainStepTiming {
    let device = model.devices().first().cloned().unwrap_or_default();
    let shape = [batch, model.in_channels(), side, side];
    let x = Tensor::<4>::random(shape, Distribution::Default, &device);
    let y = Tensor::<4>::random(
        [batch, 1, side, side],
        Distribution::Bernoulli(0.05),
        &device,
    );
    let mut optim = AdamWConfig::new().init();
    let mut current = Some(model);
    let Ok(timing) = step_medians::<std::convert::Infallible>(repeats, || {
        let model = current
            .take()
            .expect("the model is put back after every step");
        let start = Instant::now();
        let loss = soft_dice(model.forward(x.clone()), y.clone(), 1.0);
        let _ = loss.clone().into_scalar::<f32>();
        let forward = start.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let backward = start.elapsed().as_secs_f64();
        // burn's CPU backend runs each operation when it is called: the update is done here.
        current = Some(optim.step(1e-3, model, grads));
        Ok([forward, backward, start.elapsed().as_secs_f64()])
    });
    timing
}

/// Medians of `repeats` training steps after one warm-up step; `step` runs one and returns the
/// seconds from its start to the end of the forward pass and loss, of the backward pass, and
/// of the update.
fn step_medians<E>(
    repeats: usize,
    mut step: impl FnMut() -> Result<[f64; 3], E>,
) -> Result<TrainStepTiming, E> {
    let mut parts: [Vec<f64>; 4] = Default::default();
    for i in 0..=repeats.max(1) {
        let [forward, backward, total] = step()?;
        if i > 0 {
            // Step 0 is the warm-up.
            for (list, v) in
                parts
                    .iter_mut()
                    .zip([total, forward, backward - forward, total - backward])
            {
                list.push(v);
            }
        }
    }
    let [total, forward, backward, optimizer] = parts.map(median);
    Ok(TrainStepTiming {
        total,
        forward,
        backward,
        optimizer,
    })
}

/// Median seconds of `repeats` training steps of the CPU training engine `net` (soft Dice,
/// AdamW at lr 1e-3 with burn's defaults, as [`time_train_step`]) on a
/// `[batch, in_channels, side, side]` batch with about 5% positive pixels, after one warm-up
/// step (which also sizes the buffers reused by the others).
pub fn time_train_step_cpu(
    net: &mut crate::train::cpu::TrainNet,
    batch: usize,
    side: usize,
    repeats: usize,
) -> Result<TrainStepTiming, NnError> {
    use crate::loss::LossKind;
    use crate::train::cpu::{AdamW, loss_and_grad};
    let c = net.in_channels();
    let x = Nhwc::new(batch, side, side, c, input_values(batch * side * side * c));
    let y: Vec<f32> = input_values(batch * side * side)
        .into_iter()
        .map(|v| f32::from(v < 0.05))
        .collect();
    let cfg = AdamW::new(1e-4, None);
    let mut grad = Vec::new();
    step_medians(repeats, || {
        let input = x.clone();
        let start = Instant::now();
        let logits = net.forward(input)?;
        loss_and_grad(LossKind::Dice, logits, &y, 1.0, &mut grad);
        let forward = start.elapsed().as_secs_f64();
        net.backward(&grad);
        let backward = start.elapsed().as_secs_f64();
        net.adamw_step(1e-3, &cfg);
        Ok([forward, backward, start.elapsed().as_secs_f64()])
    })
}
