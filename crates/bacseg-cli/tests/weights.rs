//! `bacseg weights fetch` against a local HTTP server on 127.0.0.1 (no outside network): a
//! verified download is cached once and reused, a download whose SHA-256 differs or that fails
//! leaves nothing in the cache.
#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up its data stops right there"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{bacseg, ok, s};

/// Serves `body` with `status` to every request on a background thread; returns the URL of
/// `/weights.pt` and the number of requests served so far.
fn serve(status: &'static str, body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            // Request line and headers, up to the blank line.
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            // Counted before the response: once a client has its answer, the count is final.
            counter.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: \
                 application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (format!("http://127.0.0.1:{port}/weights.pt"), served)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { files_under(&p) } else { vec![p] }
        })
        .collect()
}

#[test]
fn a_download_with_the_wrong_sha256_or_status_is_not_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (url, served) = serve("200 OK", b"not the published checkpoint".to_vec());
    let out = bacseg(&[
        "weights",
        "fetch",
        "scunet",
        "--url",
        &url,
        "--cache-dir",
        s(&cache),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHA-256"), "{stderr}");
    assert!(stderr.contains("nothing was cached"), "{stderr}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert!(files_under(&cache).is_empty(), "{:?}", files_under(&cache));

    let (missing, _) = serve("404 Not Found", b"no such file".to_vec());
    let out = bacseg(&[
        "weights",
        "fetch",
        "scunet",
        "--url",
        &missing,
        "--cache-dir",
        s(&cache),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    assert!(files_under(&cache).is_empty());

    let unknown = bacseg(&["weights", "fetch", "resnet", "--cache-dir", s(&cache)]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("scunet"));
}

#[test]
fn the_published_checkpoint_is_fetched_verified_and_cached_once() {
    let Some(shared) = bacseg_core::shared_data("the weights fetch test") else {
        return;
    };
    let checkpoint = shared.join("../models/scunet/SCUNet_dice_512_512_best.pt");
    let bytes = std::fs::read(&checkpoint).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (url, served) = serve("200 OK", bytes.clone());
    let fetch = || {
        bacseg(&[
            "weights",
            "fetch",
            "scunet",
            "--url",
            &url,
            "--cache-dir",
            s(&cache),
        ])
    };
    let first = fetch();
    ok(&first);
    let path = PathBuf::from(String::from_utf8_lossy(&first.stdout).trim());
    assert!(path.starts_with(&cache));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(files_under(&cache), vec![path.clone()]);
    // Cached: no second request.
    let second = fetch();
    ok(&second);
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), s(&path));
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // A damaged cached copy is noticed and replaced.
    std::fs::write(&path, b"damaged").unwrap();
    ok(&fetch());
    assert_eq!(served.load(Ordering::SeqCst), 2);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let list = bacseg(&["weights", "list", "--cache-dir", s(&cache)]);
    ok(&list);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("cached: {}", s(&path))));
}
