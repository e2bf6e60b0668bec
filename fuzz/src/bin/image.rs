//! Fuzz target: bacseg::fuzzing::Target::Image (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        bacseg::fuzzing::Target::Image.run(data);
    });
}
