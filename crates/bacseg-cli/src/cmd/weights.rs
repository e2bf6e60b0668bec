//! `bacseg weights`: published pretrained weights, downloaded once into the user's cache and
//! verified by SHA-256 (`fetch`), and what is known and cached (`list`).
//!
//! The cache is `--cache-dir`, else `$BACSEG_CACHE_DIR`, else the platform cache directory
//! (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS) followed by
//! `bacseg/weights`. A download goes to a temporary file beside its destination and is renamed
//! into place only once its SHA-256 matches, so the cache never holds a partial or wrong file.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::exit::InputError;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Download published weights into the cache (once) and print their path.
    Fetch(FetchArgs),
    /// List the published weights bacseg knows, with their source and whether they are cached.
    List(CacheArgs),
}

#[derive(Debug, clap::Args)]
struct CacheArgs {
    /// Cache directory (default: $BACSEG_CACHE_DIR, else the user's cache directory + bacseg).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// Which weights: `scunet` (the reference Dice-trained SCU-Net), `scunet-nosigmoid` or
    /// `scunet-bce` (the two other published SCU-Net checkpoints).
    name: String,
    /// Download from this URL instead of the published one (a mirror); the published SHA-256
    /// is still required.
    #[arg(long)]
    url: Option<String>,
    /// Download again even when the cache holds a verified copy.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Published weights bacseg can fetch.
use bacseg::weights::{PUBLISHED, cache_dir, cached_path, hex, published, sha256_of};

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Fetch(a) => fetch(a),
        Command::List(a) => list(a),
    }
}

fn list(args: CacheArgs) -> Result<()> {
    let cache = cache_dir(args.cache_dir.as_deref())?;
    println!("cache: {}", cache.display());
    for p in &PUBLISHED {
        let path = cached_path(&cache, p);
        let state = if path.is_file() {
            format!("cached: {}", path.display())
        } else {
            "not cached".to_string()
        };
        println!(
            "{:<18} {}\n{:<18} {}\n{:<18} {state}",
            p.name, p.about, "", p.url, ""
        );
    }
    Ok(())
}

fn fetch(args: FetchArgs) -> Result<()> {
    let weights = published(&args.name).ok_or_else(|| {
        let names: Vec<_> = PUBLISHED.iter().map(|p| p.name).collect();
        InputError(format!(
            "unknown weights {:?} (known: {})",
            args.name,
            names.join(", ")
        ))
    })?;
    let cache = cache_dir(args.cache.cache_dir.as_deref())?;
    let dest = cached_path(&cache, weights);
    if dest.is_file() && !args.force {
        if sha256_of(&dest)? == weights.sha256 {
            eprintln!("bacseg: {} is cached and verified", weights.name);
            println!("{}", dest.display());
            return Ok(());
        }
        eprintln!(
            "bacseg: the cached {} does not match its SHA-256; downloading it again",
            dest.display()
        );
    }
    let url = args.url.as_deref().unwrap_or(weights.url);
    let dir = dest.parent().unwrap_or(&cache);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    download_verified(url, &dest, weights.sha256)?;
    eprintln!("bacseg: {} downloaded and verified", weights.name);
    println!("{}", dest.display());
    Ok(())
}

/// Download `url` to `dest` (replacing it) if and only if its SHA-256 is `sha256`.
fn download_verified(url: &str, dest: &Path, sha256: &str) -> Result<()> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("bacseg/", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| anyhow::anyhow!("downloading {url}: {e}"))?;
    let length = response.body().content_length();
    let mut reader = response.body_mut().as_reader();
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{file_name}.part-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut out =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(length.unwrap_or(0));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "fetch [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| anyhow::anyhow!("downloading {url}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", tmp.display()))?;
            total += n as u64;
            if let Some(b) = &bar {
                b.set_position(total);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if let Some(expected) = length
            && expected != total
        {
            anyhow::bail!("downloading {url}: got {total} of {expected} bytes");
        }
        let got = hex(&hasher.finalize());
        if got != sha256 {
            anyhow::bail!(
                "downloading {url}: SHA-256 {got} does not match the published {sha256} \
                 ({total} bytes received); nothing was cached"
            );
        }
        out.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("moving the download to {}", dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
