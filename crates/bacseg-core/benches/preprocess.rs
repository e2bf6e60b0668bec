//! Preprocessing speed on a full-size (3328x4096) 12-bit mammogram-like image: the
//! sliding-histogram median against a reference sort-per-window median in the same run,
//! on one thread, and the whole chain (median + breast mask + normalisation) on all cores.
//!
//! `cargo bench -p bacseg-core --bench preprocess`

use bacseg_core::preprocess::{self, Preprocess, median_filter};
use bacseg_core::{Mammogram, Raster};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

/// A bright half-ellipse with texture and noise on a dark background, 12-bit.
fn mammogram_like(w: usize, h: usize) -> Raster<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    Raster::from_fn(w, h, |x, y| {
        let dx = x as f32 / (w as f32 * 0.7);
        let dy = (y as f32 - h as f32 / 2.0) / (h as f32 * 0.45);
        let r = dx * dx + dy * dy;
        let base = if r < 1.0 {
            900.0 + 1400.0 * (1.0 - r) + 300.0 * ((x as f32 * 0.05).sin() * (y as f32 * 0.03).cos())
        } else {
            60.0
        };
        (base + rng.random_range(-40.0..40.0f32))
            .round()
            .clamp(0.0, 4095.0)
    })
}

/// Reference: sort-free selection of each 5x5 window's median (edges replicated).
fn reference_median5(img: &Raster<f32>) -> Raster<f32> {
    let (w, h) = (img.width() as isize, img.height() as isize);
    let mut win = [0f32; 25];
    Raster::from_fn(img.width(), img.height(), |x, y| {
        let mut k = 0;
        for dy in -2..=2 {
            for dx in -2..=2 {
                let xx = (x as isize + dx).clamp(0, w - 1) as usize;
                let yy = (y as isize + dy).clamp(0, h - 1) as usize;
                win[k] = *img.get(xx, yy);
                k += 1;
            }
        }
        *win.select_nth_unstable_by(12, f32::total_cmp).1
    })
}

fn bench(c: &mut Criterion) {
    let img = mammogram_like(3328, 4096);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut g = c.benchmark_group("median5x5_3328x4096_1thread");
    g.sample_size(10);
    g.bench_function("sliding_histogram", |b| {
        b.iter(|| one.install(|| median_filter(&img, 2)))
    });
    g.bench_function("reference_select_per_window", |b| {
        b.iter(|| reference_median5(&img))
    });
    g.finish();

    let m = Mammogram {
        pixels: img.clone(),
        spacing: None,
        laterality: None,
        view: None,
        bits_stored: 12,
        value_range: (0.0, 4095.0),
        notes: vec![],
    };
    let cfg = Preprocess::default();
    let mut g = c.benchmark_group("preprocess_3328x4096_all_cores");
    g.sample_size(10);
    g.bench_function("median_mask_normalise", |b| {
        b.iter(|| preprocess::preprocess(&m, &cfg))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
