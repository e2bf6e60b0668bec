//! Which instruction set the CPU engine's own kernels use, chosen at run time, and the fp32
//! peak of each instruction set measured on this machine.
//!
//! The kernels are compiled for AVX-512 (F, VL) and AVX2/FMA through `pulp`'s safe target
//! tokens ([`V4`], [`V3`]) and the best one the CPU has is taken, so one binary runs fast on
//! every x86-64 machine and still runs (on portable code) elsewhere. `BACSEG_CPU_ISA=avx2`
//! (or `avx512`, `portable`) asks for a lower one, for comparing the paths on one machine; a
//! request above what the CPU has falls back to the best it has.
//!
//! The peak is measured rather than computed from a clock and a FLOP/cycle figure, because
//! both vary between CPUs of one family (one or two 512-bit FMA units, AVX-512 clock offsets,
//! boost under load): independent FMA chains on every thread, long enough to reach the
//! steady clock, the best of a few tries. No kernel can beat it, so a share of it is at most
//! 100% up to the noise of the measurement.

use std::sync::OnceLock;
use std::time::Instant;

#[cfg(target_arch = "x86_64")]
use pulp::Simd;

#[cfg(target_arch = "x86_64")]
use pulp::x86::{V3, V4};

/// An instruction set the engine's kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, vectorised by the compiler for the build's baseline target.
    Portable,
    /// AVX2 with FMA: 8 f32 lanes, 16 vector registers.
    Avx2,
    /// AVX-512 F/BW/CD/DQ/VL: 16 f32 lanes, 32 vector registers.
    Avx512,
}

impl Isa {
    /// The name printed by `bench` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "AVX2/FMA",
            Isa::Avx512 => "AVX-512",
        }
    }

    /// The best instruction set this CPU has.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if V4::try_new().is_some() {
                return Isa::Avx512;
            }
            if V3::try_new().is_some() {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run, lowest first.
    pub fn supported() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= Isa::detected())
            .collect()
    }

    /// Parse `BACSEG_CPU_ISA`'s value.
    pub fn parse(value: &str) -> Option<Isa> {
        match value.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" => Some(Isa::Avx512),
            "avx2" => Some(Isa::Avx2),
            "portable" | "scalar" => Some(Isa::Portable),
            _ => None,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction set the engine's kernels use in this process: the best the CPU has, or
/// `BACSEG_CPU_ISA` when it names a lower one (read once).
pub fn engine_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = Isa::detected();
        std::env::var("BACSEG_CPU_ISA")
            .ok()
            .and_then(|v| Isa::parse(&v))
            .map_or(best, |asked| asked.min(best))
    })
}

/// Independent accumulators per thread in the peak loop: more than FMA latency x FMA units
/// (4 x 2 on current cores), so the loop is bound by FMA throughput alone.
const CHAINS: usize = 12;

/// FLOPs of one thread's peak loop of `iterations` for `isa` (an FMA is two).
fn loop_flops(isa: Isa, iterations: u64) -> f64 {
    let lanes = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Portable => 1,
    };
    iterations as f64 * (CHAINS * lanes * 2) as f64
}

/// One thread's FMA loop; returns a value that depends on every FMA (so none is removed).
fn fma_loop(isa: Isa, iterations: u64) -> f32 {
    let seed = std::hint::black_box(1.0e-7_f32);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => match V4::try_new() {
            Some(simd) => simd.vectorize(
                #[inline(always)]
                || {
                    let a = simd.splat_f32x16(seed);
                    let b = simd.splat_f32x16(1.0 - seed);
                    let mut acc = [simd.splat_f32x16(seed); CHAINS];
                    for _ in 0..iterations {
                        for c in &mut acc {
                            *c = simd.mul_add_f32x16(*c, b, a);
                        }
                    }
                    acc.iter().map(|v| simd.reduce_sum_f32s(*v)).sum::<f32>()
                },
            ),
            None => f32::NAN,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => match V3::try_new() {
            Some(simd) => simd.vectorize(
                #[inline(always)]
                || {
                    let a = simd.splat_f32x8(seed);
                    let b = simd.splat_f32x8(1.0 - seed);
                    let mut acc = [simd.splat_f32x8(seed); CHAINS];
                    for _ in 0..iterations {
                        for c in &mut acc {
                            *c = simd.mul_add_f32x8(*c, b, a);
                        }
                    }
                    acc.iter().map(|v| simd.reduce_sum_f32s(*v)).sum::<f32>()
                },
            ),
            None => f32::NAN,
        },
        _ => {
            let mut acc = [seed; CHAINS];
            for _ in 0..iterations {
                for c in &mut acc {
                    *c = c.mul_add(1.0 - seed, seed);
                }
            }
            acc.iter().sum()
        }
    }
}

/// The fp32 FLOP/s of `isa`'s FMA loop on `threads` threads at once, in GFLOP/s: the best of
/// three runs of about `seconds` each (after a warm-up that brings the cores to their
/// steady clock).
pub fn measure_peak(isa: Isa, threads: usize, seconds: f64) -> f64 {
    measure_loop(threads, seconds, |iterations| {
        std::hint::black_box(fma_loop(isa, iterations));
        loop_flops(isa, iterations)
    })
}

/// The FLOP/s of `run` (a loop of the given number of iterations, returning the flops it did)
/// on `threads` threads at once, in GFLOP/s: the best of three runs of about `seconds` each,
/// after a warm-up that brings the cores to their steady clock. The iterations for `seconds`
/// come from a short calibration run on one thread.
pub(crate) fn measure_loop(threads: usize, seconds: f64, run: impl Fn(u64) -> f64 + Sync) -> f64 {
    let threads = threads.max(1);
    let probe = 200_000;
    let start = Instant::now();
    run(probe);
    let per_iteration = start.elapsed().as_secs_f64().max(1e-9) / probe as f64;
    let iterations = ((seconds / per_iteration) as u64).max(probe);
    let timed = |iterations: u64| {
        let start = Instant::now();
        let flops: f64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| run(iterations))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        flops / start.elapsed().as_secs_f64() / 1e9
    };
    timed(iterations / 2);
    (0..3).map(|_| timed(iterations)).fold(0.0, f64::max)
}

/// The measured peak of every instruction set this CPU can run, on all its threads, measured
/// once per process: `(isa, GFLOP/s)`, lowest instruction set first.
pub fn measured_peaks() -> &'static [(Isa, f64)] {
    static PEAKS: OnceLock<Vec<(Isa, f64)>> = OnceLock::new();
    PEAKS.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Isa::supported()
            .into_iter()
            .filter(|&i| i != Isa::Portable)
            .map(|isa| (isa, measure_peak(isa, threads, 0.25)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_the_request_never_exceeds_the_cpu() {
        for isa in Isa::supported() {
            assert!(isa <= Isa::detected());
        }
        assert_eq!(Isa::parse("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::parse("avx-512"), Some(Isa::Avx512));
        assert_eq!(Isa::parse("sse9"), None);
        assert!(engine_isa() <= Isa::detected());
    }

    #[test]
    fn every_supported_instruction_set_measures_a_peak() {
        // Unoptimised test builds run the loop far below the machine's peak, so only that it
        // runs on each path and counts FLOPs is checked here; `bacseg bench` prints the values.
        for isa in Isa::supported() {
            let p = measure_peak(isa, 2, 0.01);
            assert!(p.is_finite() && p > 0.0, "{isa}: {p}");
        }
        assert_eq!(loop_flops(Isa::Avx512, 1), 2.0 * loop_flops(Isa::Avx2, 1));
    }
}
