//! Where the project's shared real test files are: the directory `BACSEG_SHARED_DATA` names
//! (`.ci/run` sets it). For the tests and benchmarks of every crate, in one place so that they
//! all follow the same rule.

use std::ffi::OsString;
use std::path::PathBuf;

/// The shared data directory. Unset: `None`, after printing that `what` is skipped (a fresh
/// clone without the data still passes). Set to a directory that does not exist: a panic, so
/// that a CI run whose data went missing fails instead of passing by skipping.
pub fn shared_data(what: &str) -> Option<PathBuf> {
    shared_data_from(std::env::var_os("BACSEG_SHARED_DATA"), what)
}

#[allow(clippy::panic, reason = "a test helper: the panic is the failed test")]
fn shared_data_from(value: Option<OsString>, what: &str) -> Option<PathBuf> {
    match value.map(PathBuf::from) {
        None => {
            eprintln!("SKIPPED: set BACSEG_SHARED_DATA to the shared data directory to run {what}");
            None
        }
        Some(dir) if dir.is_dir() => Some(dir),
        Some(dir) => panic!(
            "BACSEG_SHARED_DATA is {} but that is not a directory: {what} cannot run",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_skips_present_runs_missing_fails() {
        assert_eq!(shared_data_from(None, "x"), None);
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().as_os_str().to_owned();
        assert_eq!(
            shared_data_from(Some(here), "x").as_deref(),
            Some(dir.path())
        );
        let gone = dir.path().join("missing").into_os_string();
        assert!(std::panic::catch_unwind(|| shared_data_from(Some(gone), "x")).is_err());
    }
}
