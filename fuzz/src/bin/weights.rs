//! Fuzz target: bacseg::fuzzing::Target::Weights (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        bacseg::fuzzing::Target::Weights.run(data);
    });
}
