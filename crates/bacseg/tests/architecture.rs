//! The module graph of every crate in the workspace has no cycle: no module imports (directly
//! or through others) a module that imports it (docs/architecture.md). A module's imports are
//! the `crate::`, `super::` and `self::` paths in its code (comments and `#[cfg(test)]` parts
//! left out), resolved to the longest module path that exists; a parent declaring or
//! re-exporting its children does not count.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Code without comments and without what follows the first `#[cfg(test)]`.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths after `prefix` (`crate::`, `super::`), including inside `use prefix{a, b::c}`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let take = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect()
        };
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(take(item.trim()));
            }
        } else {
            let path = take(rest);
            // `a::{b, c}`: the prefix `a` and each `a::b`.
            let after = &rest[path.len()..];
            if path.ends_with("::") && after.starts_with('{') {
                let end = after.find('}').unwrap_or(after.len());
                for item in after[1..end].split(',') {
                    out.push(format!("{path}{}", take(item.trim())));
                }
            } else {
                out.push(path);
            }
        }
    }
    out.into_iter()
        .map(|p| {
            p.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn cycles_in(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| {
            (
                module_of(src, f),
                code(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    let names: BTreeSet<&Vec<String>> = modules.keys().collect();
    let mut graph: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, text) in &modules {
        let mut refs = paths_after(text, "crate::");
        if !m.is_empty() {
            let parent = &m[..m.len() - 1];
            for p in paths_after(text, "super::") {
                refs.push(parent.iter().cloned().chain(p).collect());
            }
        }
        for r in paths_after(text, "self::") {
            refs.push(m.iter().cloned().chain(r).collect());
        }
        let edges = graph.entry(m).or_default();
        for r in refs {
            if let Some(k) = (1..=r.len())
                .rev()
                .find(|&k| names.contains(&r[..k].to_vec()))
            {
                let target = r[..k].to_vec();
                let related = target.starts_with(m) || m.starts_with(&target);
                if !related {
                    edges.insert(target);
                }
            }
        }
    }
    // A cycle exists where a module reaches itself.
    let mut found = Vec::new();
    for start in graph.keys() {
        let mut stack: Vec<Vec<String>> = graph[start].iter().cloned().collect();
        let mut seen = BTreeSet::new();
        while let Some(next) = stack.pop() {
            if &next == *start {
                found.push(start.to_vec());
                break;
            }
            if seen.insert(next.clone())
                && let Some(out) = graph.get(&next)
            {
                stack.extend(out.iter().cloned());
            }
        }
    }
    found
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for e in std::fs::read_dir(&crates).unwrap() {
        let src = e.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let cycles = cycles_in(&src);
        assert!(
            cycles.is_empty(),
            "{}: modules on an import cycle: {cycles:?}",
            src.display()
        );
        checked += 1;
    }
    assert!(checked >= 4, "found {checked} crates");
}

#[test]
fn the_checker_sees_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("synth")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod synth;\n").unwrap();
    std::fs::write(src.join("synth/mod.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        src.join("synth/a.rs"),
        "use super::b::X;\n// use crate::nothing;\n",
    )
    .unwrap();
    std::fs::write(src.join("synth/b.rs"), "use crate::synth::{a::Y, c};\n").unwrap();
    assert_eq!(cycles_in(&src).len(), 2);
    std::fs::write(src.join("synth/b.rs"), "pub struct X;\n").unwrap();
    assert!(cycles_in(&src).is_empty());
}
