//! One error type for the whole API, with a kind that says whose problem it is.
//!
//! Every failure carries a message that names what failed (a file, a setting) and keeps the
//! error it came from as its [`std::error::Error::source`], so that a program can walk the chain
//! and a command line can print it on one line. [`Error::exit_code`] is the command line's
//! convention: 2 for bad input or configuration (the user can fix it), 1 for anything else.

use std::fmt;

/// Whose problem an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An input file that cannot be used: unreadable, corrupt, unsupported, wrong shape.
    Input,
    /// Settings that are invalid or contradict each other (including a model specification).
    Config,
    /// Model weights that cannot be read or do not fit the network.
    Weights,
    /// A failure of the computation itself (an engine, a worker thread, an internal error).
    Runtime,
    /// Reading or writing outputs, caches and run directories.
    Io,
}

impl ErrorKind {
    /// A short name (`input`, `config`, `weights`, `runtime`, `io`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Input => "input",
            ErrorKind::Config => "config",
            ErrorKind::Weights => "weights",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Io => "io",
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the bacseg API.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message` and no underlying cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind`: `message`, caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }

    /// Whose problem this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// This error as the cause of a new one of the same kind with `message` (what was being
    /// done): `context("model run/a")` on "no such file" reads "model run/a: no such file".
    pub fn context(self, message: impl Into<String>) -> Self {
        let kind = self.kind;
        Self::with_source(kind, message, self)
    }

    /// The command line's exit status for this error: 2 for bad input or configuration, 1 for
    /// anything else.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Input | ErrorKind::Config => 2,
            ErrorKind::Weights | ErrorKind::Runtime | ErrorKind::Io => 1,
        }
    }

    /// The message and those of every cause, joined by ": " (one line).
    pub fn chain_message(&self) -> String {
        let mut parts = vec![self.message.clone()];
        let mut next = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        while let Some(e) = next {
            let text = e.to_string();
            // A wrapped error whose text already ends the previous message adds nothing.
            if !parts.last().is_some_and(|p| p.ends_with(&text)) {
                parts.push(text);
            }
            next = e.source();
        }
        parts.retain(|p| !p.is_empty());
        parts.join(": ")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

impl From<bacseg_core::io::IoError> for Error {
    fn from(e: bacseg_core::io::IoError) -> Self {
        let kind = match e {
            bacseg_core::io::IoError::Write { .. } => ErrorKind::Io,
            _ => ErrorKind::Input,
        };
        Self::with_source(kind, String::new(), e)
    }
}

impl From<bacseg_nn::NnError> for Error {
    fn from(e: bacseg_nn::NnError) -> Self {
        use bacseg_nn::NnError;
        let kind = match e {
            NnError::InputShape { .. } => ErrorKind::Input,
            NnError::Weights { .. } | NnError::UnexpectedTensors { .. } => ErrorKind::Weights,
            NnError::Config { .. } => ErrorKind::Config,
            NnError::OnnxRuntime(_) => ErrorKind::Runtime,
        };
        Self::with_source(kind, String::new(), e)
    }
}

impl From<bacseg_nn::engine::InferError> for Error {
    fn from(e: bacseg_nn::engine::InferError) -> Self {
        match e {
            bacseg_nn::engine::InferError::Nn(e) => e.into(),
            other => Self::with_source(ErrorKind::Runtime, String::new(), other),
        }
    }
}

impl From<bacseg_nn::train::TrainError> for Error {
    fn from(e: bacseg_nn::train::TrainError) -> Self {
        use bacseg_nn::train::TrainError;
        match e {
            TrainError::Nn(e) => e.into(),
            TrainError::Config(_) => Self::with_source(ErrorKind::Config, String::new(), e),
            TrainError::Cache(e) => e.into(),
            TrainError::Run { .. } => Self::with_source(ErrorKind::Io, String::new(), e),
            TrainError::Internal(_) => Self::with_source(ErrorKind::Runtime, String::new(), e),
        }
    }
}

impl From<bacseg_core::dataset::DatasetError> for Error {
    fn from(e: bacseg_core::dataset::DatasetError) -> Self {
        match e {
            bacseg_core::dataset::DatasetError::Io(e) => e.into(),
            e => Self::with_source(ErrorKind::Input, String::new(), e),
        }
    }
}

impl From<bacseg_core::cache::CacheError> for Error {
    fn from(e: bacseg_core::cache::CacheError) -> Self {
        use bacseg_core::cache::CacheError;
        match e {
            CacheError::Dataset(e) => e.into(),
            CacheError::Patch { .. } => Self::with_source(ErrorKind::Input, String::new(), e),
            CacheError::UnknownStem(_) | CacheError::Settings(_) => {
                Self::with_source(ErrorKind::Config, String::new(), e)
            }
            CacheError::File { .. } => Self::with_source(ErrorKind::Io, String::new(), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_choose_the_exit_code_and_the_chain_reads_on_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::with_source(ErrorKind::Input, "a.png", io).context("reading inputs");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.chain_message(), "reading inputs: a.png: no such file");
        assert_eq!(Error::runtime("loader stopped").exit_code(), 1);
        assert_eq!(Error::new(ErrorKind::Weights, "w").exit_code(), 1);
        assert_eq!(Error::config("bad").exit_code(), 2);
        let write = bacseg_core::io::IoError::Write {
            path: "out/x.png".into(),
            reason: "disk full".into(),
        };
        assert_eq!(Error::from(write).kind(), ErrorKind::Io);
        // A training worker that stops is the program's failure, not the user's input.
        let stopped = bacseg_nn::train::TrainError::Internal("the patch loader stopped".into());
        assert_eq!(Error::from(stopped).exit_code(), 1);
    }
}
