//! Fuzz target: bacseg::fuzzing::Target::Manifest (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        bacseg::fuzzing::Target::Manifest.run(data);
    });
}
