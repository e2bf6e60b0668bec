//! `bacseg weights`: published pretrained weights, downloaded once into the user's cache and
//! verified by SHA-256 (`fetch`), and what is known and cached (`list`).
//!
//! The cache is `--cache-dir`, else `$BACSEG_CACHE_DIR`, else the platform cache directory
//! (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS) followed by
//! `bacseg/weights`. The work is `bacseg::weights::fetch`'s: a download is renamed into place
//! only once its SHA-256 matches, so the cache never holds a partial or wrong file.

use std::path::PathBuf;

use anyhow::Result;
use bacseg::weights::{self, FetchEvent, Fetched, PUBLISHED, cache_dir, cached_path, published};

use crate::exit::usage;
use crate::progress;

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
        usage(format!(
            "unknown weights {:?} (known: {})",
            args.name,
            names.join(", ")
        ))
    })?;
    let cache = cache_dir(args.cache.cache_dir.as_deref())?;
    let mut bar: Option<Option<indicatif::ProgressBar>> = None;
    let fetched = weights::fetch(
        weights,
        &cache,
        args.url.as_deref(),
        args.force,
        &mut |event| match event {
            FetchEvent::CorruptCache(path) => eprintln!(
                "bacseg: the cached {} does not match its SHA-256; downloading it again",
                path.display()
            ),
            FetchEvent::Progress { done, total } => {
                let b = bar.get_or_insert_with(|| {
                    progress::bar(total.unwrap_or(0), "fetch", progress::BYTES)
                });
                if let Some(b) = b {
                    b.set_position(done);
                }
            }
        },
    )?;
    if let Some(Some(b)) = bar {
        b.finish_and_clear();
    }
    match &fetched {
        Fetched::Cached(_) => eprintln!("bacseg: {} is cached and verified", weights.name),
        Fetched::Downloaded { .. } => {
            eprintln!("bacseg: {} downloaded and verified", weights.name);
        }
    }
    println!("{}", fetched.path().display());
    Ok(())
}
