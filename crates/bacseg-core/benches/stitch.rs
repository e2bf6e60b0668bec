//! Stitching speed at the reference geometry: the 99 patches of 512x512 (stride 384) that
//! cover a 3328x4096 mammogram, blended into one map in each mode, allocation and `finish`
//! included (what predict pays per image).
//!
//! `cargo bench -p bacseg-core --bench stitch`

use bacseg_core::Size;
use bacseg_core::patch::PatchGrid;
use bacseg_core::stitch::{BlendMode, Blender};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let grid = PatchGrid::new(Size::new(3328, 4096), 512, 384).expect("valid grid");
    assert_eq!(grid.len(), 99);
    // Distinct contents per patch so that nothing can be folded away.
    let patches: Vec<Vec<f32>> = (0..grid.len())
        .map(|k| {
            (0..512 * 512)
                .map(|i| ((i * 31 + k * 17) % 1000) as f32 / 1000.0)
                .collect()
        })
        .collect();
    let mut g = c.benchmark_group("stitch_99x512_into_3328x4096");
    g.sample_size(10);
    for mode in BlendMode::ALL {
        g.bench_function(mode.as_str(), |b| {
            b.iter(|| {
                let mut blender = Blender::for_grid(&grid, mode).expect("valid blender");
                for (p, data) in grid.patches().iter().zip(&patches) {
                    blender.add(p, data).expect("patch fits");
                }
                blender.finish()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
