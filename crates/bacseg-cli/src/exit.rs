//! Turning errors into one-line messages and exit codes.

use std::process::ExitCode;

/// A flag value that is invalid, missing or contradicts another: exit code 2.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    bacseg::Error::new(bacseg::ErrorKind::Config, message).into()
}

/// An input file or directory that cannot be used: exit code 2.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    bacseg::Error::new(bacseg::ErrorKind::Input, message).into()
}

/// Print the error chain on one line and choose the exit code: a [`bacseg::Error`]'s own
/// (from its kind), else 2 for a read error of bacseg-core, 1 for anything else.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut parts: Vec<String> = Vec::new();
            for c in e.chain() {
                let text = match c.downcast_ref::<bacseg::Error>() {
                    Some(b) => b.chain_message(),
                    None => c.to_string(),
                };
                if !text.is_empty() && !parts.last().is_some_and(|p| p.ends_with(&text)) {
                    parts.push(text);
                }
                if c.is::<bacseg::Error>() {
                    break; // its chain is already in its message
                }
            }
            eprintln!("bacseg: error: {}", parts.join(": "));
            if let Some(b) = e.chain().find_map(|c| c.downcast_ref::<bacseg::Error>()) {
                return ExitCode::from(b.exit_code());
            }
            let input = e.chain().any(|c| {
                c.downcast_ref::<bacseg_core::io::IoError>()
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
