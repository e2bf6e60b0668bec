//! Synthetic mammogram speed on one core, at the default geometry (3328x4096 at 0.07 mm,
//! mixed views, 25% negatives): `generate` alone, and `write_dataset` (generation, the
//! manifest's burden measurement, PNG encoding and the synced writes), per image, against
//! the budget of about 1 s per image on one core that the generator is held to.
//!
//! `cargo bench -p bacseg-core --bench synth`

use std::time::Duration;

use bacseg_core::synth::{self, SynthConfig, WriteOptions};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Images per measured iteration: a positive/negative, CC/MLO mix of the default config.
const IMAGES: u64 = 4;

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    let config = SynthConfig {
        count: IMAGES as usize,
        seed: 21,
        ..SynthConfig::default()
    };
    config.validate().expect("default config");
    let mut g = c.benchmark_group(format!("synth_{IMAGES}x3328x4096_one_core"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(60));
    g.bench_function(BenchmarkId::new("generate", IMAGES), |b| {
        b.iter(|| {
            pool.install(|| {
                (0..IMAGES)
                    .map(|i| synth::generate(&config, i).mask.count())
                    .sum::<usize>()
            })
        })
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = WriteOptions {
        overwrite: true,
        ..WriteOptions::default()
    };
    g.bench_function(BenchmarkId::new("write_dataset", IMAGES), |b| {
        b.iter(|| {
            pool.install(|| {
                synth::write_dataset(dir.path(), &config, &options, &|_| {})
                    .expect("dataset written")
                    .images
            })
        })
    });
    g.finish();
    let budget = Duration::from_secs(IMAGES);
    eprintln!(
        "budget: about {:.1} s per iteration ({IMAGES} images at about 1 s each on one core)",
        budget.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
