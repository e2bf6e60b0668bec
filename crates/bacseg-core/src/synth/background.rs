//! Inserting synthetic BAC into real BAC-free mammograms (`--background`).

use std::path::PathBuf;

use super::{SynthConfig, SynthSample};

/// A real mammogram to insert calcified vessels into; read when it is used.
#[derive(Debug, Clone)]
pub struct BackgroundImage {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("todo")]
    Todo,
}

pub fn load_backgrounds(_dir: &std::path::Path) -> Result<Vec<BackgroundImage>, BackgroundError> {
    Err(BackgroundError::Todo)
}

pub fn insert_into_background(_bg: &BackgroundImage, _config: &SynthConfig, _index: u64) -> Result<SynthSample, BackgroundError> {
    Err(BackgroundError::Todo)
}
