//! Published pretrained weights: what exists, where the user's cache keeps it, and checking a
//! cached file against its SHA-256. The cache is an explicit directory, else
//! `$BACSEG_CACHE_DIR`, else the platform cache directory (`$XDG_CACHE_HOME` or `~/.cache` on
//! Linux, `~/Library/Caches` on macOS) followed by `bacseg/weights`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// One published set of weights: its name, file, source and checksum.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub name: &'static str,
    pub file: &'static str,
    pub url: &'static str,
    pub sha256: &'static str,
    pub about: &'static str,
}

/// SCU-Net (Guo et al., Medical Physics 2021), MIT licence, Emory HITI.
pub const PUBLISHED: [Published; 3] = [
    Published {
        name: "scunet",
        file: "SCUNet_dice_512_512_best.pt",
        url: "https://github.com/Emory-HITI/BAC_segmentation/raw/HEAD/SCUNet_dice_512_512_best.pt",
        sha256: "379d359b5dd7b3f9f1a0553841d8eb3e555c5d1cd76a22604b19aa6ea5975366",
        about: "SCU-Net, Dice loss (the published reference model); MIT, Emory HITI",
    },
    Published {
        name: "scunet-nosigmoid",
        file: "SCUNet_dice_512_512_best_nosigmoid.pt",
        url: "https://github.com/Emory-HITI/BAC_segmentation/raw/HEAD/SCUNet_dice_512_512_best_nosigmoid.pt",
        sha256: "5c8e535b083826ec3f8a8dfaeb3d65264ee7c4f5d75b7f0d0b9bd4b45a8a5db7",
        about: "SCU-Net, the published Dice 'nosigmoid' checkpoint; MIT, Emory HITI",
    },
    Published {
        name: "scunet-bce",
        file: "SCU_Net_512_512_best_BCE_pos_all.pt",
        url: "https://github.com/Emory-HITI/BAC_segmentation/raw/HEAD/SCU_Net_512_512_best_BCE_pos_all.pt",
        sha256: "c17bf2dd8cca8e003f8bc8665365ea9419f1412df6b6a99aa78fbc35b03eaa3c",
        about: "SCU-Net, the published 'BCE_pos_all' checkpoint; MIT, Emory HITI",
    },
];

/// The published weights called `name`.
pub fn published(name: &str) -> Option<&'static Published> {
    PUBLISHED.iter().find(|p| p.name == name)
}

/// The weights cache directory.
pub fn cache_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("BACSEG_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("bacseg").join("weights"))
        .ok_or_else(|| {
            Error::config("no cache directory is known here: name one or set BACSEG_CACHE_DIR")
        })
}

/// Where `weights` are cached.
pub fn cached_path(cache: &Path, weights: &Published) -> PathBuf {
    cache.join(weights.name).join(weights.file)
}

/// The SHA-256 of a file, in lower-case hex.
pub fn sha256_of(path: &Path) -> Result<String> {
    let fail = |e: std::io::Error| Error::with_source(ErrorKind::Io, path.display().to_string(), e);
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(fail)?;
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
