//! Fuzz target: bacseg::fuzzing::Target::Weights (see docs/fuzzing.md).

fn main() {
    // Without afl.rs's abort-on-any-panic hook: bacseg catches the panics of decoders (as
    // dicom-rs's RLE decoder's) and turns them into errors; a panic that escapes still
    // aborts, which AFL counts as a crash.
    afl::fuzz_nohook!(|data: &[u8]| {
        bacseg::fuzzing::Target::Weights.run(data);
    });
}
