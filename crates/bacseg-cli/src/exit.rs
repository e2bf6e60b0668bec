//! Turning errors into one-line messages and exit codes.

use std::process::ExitCode;

/// An error caused by the user's input (a file that cannot be read, an invalid option):
/// exit code 2. Anything else that fails is exit code 1.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

impl From<bacseg_core::io::IoError> for InputError {
    fn from(e: bacseg_core::io::IoError) -> Self {
        InputError(e.to_string())
    }
}

/// Print the error chain on one line and choose the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("bacseg: error: {msg}");
            let input = e.chain().any(|c| {
                c.downcast_ref::<InputError>().is_some()
                    || c.downcast_ref::<bacseg_core::io::IoError>()
                        .is_some_and(|e| !matches!(e, bacseg_core::io::IoError::Write { .. }))
            });
            if input {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
