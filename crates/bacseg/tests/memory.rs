//! Peak memory of `predict` per pixel, counted by a global allocator that tracks the bytes held
//! at once: a batch (read a 16-bit PNG, preprocess, forward, blend, postprocess, measure, write
//! the mask, probability map, overlay and bac.json) must stay within the bound that
//! docs/architecture.md states, so that a 10000x10000 mammogram predicts in under 1 GiB.
//! Its own test binary: the counting allocator serves nothing else.

#![allow(clippy::unwrap_used)] // helpers of tests: a failed unwrap is a failed test
#![allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one only forwards to the system's"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bacseg::batch::Silent;
use bacseg::{BatchOptions, Model, ModelSource, PredictConfig, Predictor, predict_files};
use bacseg_core::io::write_png_gray16;
use bacseg_nn::{Architecture, Device, ModelSpec, save_pytorch_safetensors};

/// The system allocator, counting the bytes held now and the most held at once.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = HELD.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may be held at once while the data moves.
            grew(new_size);
            HELD.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A 12-bit `w x h` mammogram-like image: a half-disc breast with texture and a few bright
/// thin lines (so that the mask, skeleton and components are not empty) on a dark background.
fn write_image(path: &std::path::Path, w: usize, h: usize) {
    let r = 0.45 * w.min(h) as f32 * 2.0;
    let data: Vec<u16> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32 - h as f32 / 2.0);
            if x * x + y * y > r * r {
                return 40;
            }
            let line = (i / w).is_multiple_of(97) && !(i % w).is_multiple_of(3);
            if line {
                4000
            } else {
                1800 + ((i * 7 + i / w * 3) % 500) as u16
            }
        })
        .collect();
    write_png_gray16(path, w, h, &data).unwrap();
}

fn model(dir: &std::path::Path) -> Model {
    let spec = ModelSpec::reference(Architecture::DtUnet)
        .with_overrides(Some(2), Some(3))
        .unwrap();
    let net = spec.build_seeded(&Device::default(), 3).unwrap();
    let weights = dir.join("w.safetensors");
    save_pytorch_safetensors(&net, &weights).unwrap();
    drop(net);
    Model::load(&ModelSource::Safetensors {
        path: weights,
        spec,
    })
    .unwrap()
}

/// Peak bytes held while `predict_files` predicts one `w x h` image and writes its outputs.
fn batch_peak(model: &Model, threshold: f32, w: usize, h: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("image.png");
    write_image(&input, w, h);
    let mut config = PredictConfig::for_model(model);
    config.infer.patch = 128;
    config.infer.stride = 96;
    config.postprocess.threshold = threshold;
    let mut predictor = Predictor::new(model, config).unwrap();
    let options = BatchOptions::new(dir.path().join("out"));
    let before = HELD.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let summary = predict_files(&mut predictor, &[input], &options, &mut Silent).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert_eq!(summary.count(bacseg::batch::Status::Ok), 1, "{summary:?}");
    peak
}

/// Bytes per pixel (the slope between two image sizes, so that what does not grow with the
/// image, the model and the engine's buffers, is left out) and the rest, bytes.
fn per_pixel(model: &Model, threshold: f32) -> (f64, f64) {
    let (small, large) = ((1200, 1500), (2400, 3000));
    let a = batch_peak(model, threshold, small.0, small.1) as f64;
    let b = batch_peak(model, threshold, large.0, large.1) as f64;
    let (pa, pb) = ((small.0 * small.1) as f64, (large.0 * large.1) as f64);
    let slope = (b - a) / (pb - pa);
    (slope, b - slope * pb)
}

#[test]
fn predict_holds_about_8_bytes_per_pixel_and_12_when_the_mask_covers_the_breast() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    // No BAC (a threshold no probability passes): the image terms only.
    let (clear, rest) = per_pixel(&model, 1.0);
    eprintln!("no BAC: {clear:.2} bytes per pixel + {:.1} MB", rest / 1e6);
    assert!(clear <= 8.5, "{clear:.2} bytes per pixel without BAC");
    // Every breast pixel BAC (a threshold every probability passes): the worst case for the
    // postprocessing and the measures, which work on the mask's bounding box.
    let (full, rest) = per_pixel(&model, 0.0);
    eprintln!(
        "all breast BAC: {full:.2} bytes per pixel + {:.1} MB",
        rest / 1e6
    );
    assert!(
        full <= 12.5,
        "{full:.2} bytes per pixel with the whole breast as BAC"
    );
}
