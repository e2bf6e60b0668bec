//! Fuzz target: bacseg::fuzzing::Target::Configs (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        bacseg::fuzzing::Target::Configs.run(data);
    });
}
