//! Published pretrained weights: what exists, where the user's cache keeps it, and checking a
//! cached file against its SHA-256. The cache is an explicit directory, else
//! `$BACSEG_CACHE_DIR`, else the platform cache directory (`$XDG_CACHE_HOME` or `~/.cache` on
//! Linux, `~/Library/Caches` on macOS) followed by `bacseg/weights`. [`fetch`] downloads to a
//! temporary file beside the destination and renames it into place only once its SHA-256
//! matches, so the cache never holds a partial or wrong file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The cache already held a verified copy.
    Cached(PathBuf),
    /// Downloaded and verified; `replaced_corrupt` when a cached copy did not match.
    Downloaded {
        path: PathBuf,
        replaced_corrupt: bool,
    },
}

impl Fetched {
    /// The verified file.
    pub fn path(&self) -> &Path {
        match self {
            Fetched::Cached(p) | Fetched::Downloaded { path: p, .. } => p,
        }
    }
}

/// What [`fetch`] reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// The cached copy at this path does not match its SHA-256; it is downloaded again.
    CorruptCache(PathBuf),
    /// Bytes received so far, and the total when the server said it.
    Progress { done: u64, total: Option<u64> },
}

/// Make `weights` available in `cache`: a verified cached copy is used unless `force`, else
/// they are downloaded from `url` (default: the published one; the published SHA-256 is
/// required either way). `report` hears of a corrupt cached copy before the download and of
/// the download's progress.
pub fn fetch(
    weights: &Published,
    cache: &Path,
    url: Option<&str>,
    force: bool,
    report: &mut dyn FnMut(FetchEvent),
) -> Result<Fetched> {
    let dest = cached_path(cache, weights);
    let mut replaced_corrupt = false;
    if dest.is_file() && !force {
        if sha256_of(&dest)? == weights.sha256 {
            return Ok(Fetched::Cached(dest));
        }
        report(FetchEvent::CorruptCache(dest.clone()));
        replaced_corrupt = true;
    }
    let dir = dest.parent().unwrap_or(cache);
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::with_source(ErrorKind::Io, format!("creating {}", dir.display()), e))?;
    download_verified(
        url.unwrap_or(weights.url),
        &dest,
        weights.sha256,
        &mut |done, total| report(FetchEvent::Progress { done, total }),
    )?;
    Ok(Fetched::Downloaded {
        path: dest,
        replaced_corrupt,
    })
}

/// Download `url` to `dest` (replacing it) if and only if its SHA-256 is `sha256`.
fn download_verified(
    url: &str,
    dest: &Path,
    sha256: &str,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<()> {
    let net =
        |e: &dyn std::fmt::Display| Error::new(ErrorKind::Io, format!("downloading {url}: {e}"));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("bacseg/", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut response = agent.get(url).call().map_err(|e| net(&e))?;
    let length = response.body().content_length();
    let mut reader = response.body_mut().as_reader();
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{file_name}.part-{}", std::process::id()));
    let write = |e: std::io::Error| {
        Error::with_source(ErrorKind::Io, format!("writing {}", tmp.display()), e)
    };
    let result = (|| -> Result<()> {
        let mut out = std::fs::File::create(&tmp).map_err(write)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| net(&e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(write)?;
            total += n as u64;
            progress(total, length);
        }
        if let Some(expected) = length
            && expected != total
        {
            return Err(net(&format!("got {total} of {expected} bytes")));
        }
        let got = hex(&hasher.finalize());
        if got != sha256 {
            return Err(Error::new(
                ErrorKind::Weights,
                format!(
                    "downloading {url}: SHA-256 {got} does not match the published {sha256} \
                     ({total} bytes received); nothing was cached"
                ),
            ));
        }
        out.sync_all().map_err(write)?;
        std::fs::rename(&tmp, dest).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("moving the download to {}", dest.display()),
                e,
            )
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
