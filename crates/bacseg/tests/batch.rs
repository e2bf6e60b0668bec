//! Inputs, output names and shards of batch prediction.

#![allow(clippy::unwrap_used)] // helpers of tests: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bacseg::batch::{Shard, collect_inputs, output_names, read_manifest};

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Each task of the array, as Slurm numbers it, gets a distinct shard, and together they cover
/// every input exactly once.
fn assert_partition(tasks: &[Vec<(&str, String)>], files: &[PathBuf]) {
    let mut owners = vec![0usize; files.len()];
    let mut indices = Vec::new();
    for env in tasks {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let shard = Shard::from_vars(vars(&pairs)).unwrap().unwrap();
        assert_eq!(shard.count, tasks.len(), "{env:?}");
        indices.push(shard.index);
        for (i, f) in files.iter().enumerate() {
            owners[i] += usize::from(shard.owns(f));
        }
    }
    indices.sort();
    assert_eq!(indices, (0..tasks.len()).collect::<Vec<_>>());
    assert!(owners.iter().all(|&n| n == 1), "{owners:?}");
}

fn slurm(
    ids: impl Iterator<Item = usize> + Clone,
    min: usize,
    max: usize,
    step: usize,
) -> Vec<Vec<(&'static str, String)>> {
    let count = ids.clone().count();
    ids.map(|id| {
        vec![
            ("SLURM_ARRAY_TASK_ID", id.to_string()),
            ("SLURM_ARRAY_TASK_MIN", min.to_string()),
            ("SLURM_ARRAY_TASK_MAX", max.to_string()),
            ("SLURM_ARRAY_TASK_STEP", step.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
        ]
    })
    .collect()
}

#[test]
fn slurm_arrays_and_indexed_jobs_share_every_input_exactly_once() {
    let files: Vec<PathBuf> = (0..200)
        .map(|i| PathBuf::from(format!("/data/img-{i}.dcm")))
        .collect();
    // --array=0-3, --array=1-4 (the first task is not shard 1), --array=1-7:2.
    assert_partition(&slurm(0..4, 0, 3, 1), &files);
    assert_partition(&slurm(1..5, 1, 4, 1), &files);
    assert_partition(&slurm((1..8).step_by(2), 1, 7, 2), &files);
    // Without _COUNT, the count comes from min, max and step.
    let s = Shard::from_vars(vars(&[
        ("SLURM_ARRAY_TASK_ID", "7"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "7"),
        ("SLURM_ARRAY_TASK_STEP", "2"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((s.index, s.count), (3, 4));
    // Kubernetes indexed job: the index, with the completions given.
    let k = |i: &str| {
        Shard::from_vars(vars(&[
            ("JOB_COMPLETION_INDEX", i),
            ("BACSEG_SHARD_COUNT", "3"),
        ]))
        .unwrap()
        .unwrap()
    };
    assert_eq!((k("0").index, k("2").index, k("2").count), (0, 2, 3));
    assert!(Shard::from_vars(vars(&[("JOB_COMPLETION_INDEX", "0")])).is_err());
    assert!(Shard::from_vars(vars(&[])).unwrap().is_none());
    assert!(Shard::new(3, 3).is_err());
}

#[test]
fn the_shard_of_an_image_does_not_depend_on_how_its_path_was_typed() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let spellings = |name: &str| {
        std::fs::write(sub.join(name), b"x").unwrap();
        [
            sub.join(name),
            dir.path().join("sub/./").join(name),
            dir.path().join("sub/../sub").join(name),
        ]
    };
    for i in 0..20 {
        let paths = spellings(&format!("{i}.png"));
        for count in [2, 3, 7] {
            let owner = |p: &Path| (0..count).find(|&k| Shard::new(k, count).unwrap().owns(p));
            let first = owner(&paths[0]);
            assert!(first.is_some());
            assert!(paths.iter().all(|p| owner(p) == first), "{paths:?}");
        }
    }
}

#[test]
fn equal_stems_get_distinct_output_names() {
    let inputs: Vec<PathBuf> = ["x/a.png", "y/a.dcm", "a-2.png", "z/a.png", "b.png"]
        .map(PathBuf::from)
        .to_vec();
    let names = output_names(&inputs);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert_eq!(names[0], "a");
    assert_eq!(names[2], "a-2");
    assert_eq!(names[4], "b");
}

#[test]
fn walks_take_dicom_by_content_report_loops_and_read_quoted_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    std::fs::create_dir_all(root.join("study")).unwrap();
    // A UID-named DICOM file (its "extension" is the UID's last component) and a text file.
    let mut dicom = vec![0u8; 128];
    dicom.extend_from_slice(b"DICM");
    dicom.extend_from_slice(&[0u8; 16]);
    let uid = root.join("study/1.2.840.113619.2.55.3.78");
    std::fs::write(&uid, &dicom).unwrap();
    std::fs::write(root.join("study/README.txt"), b"not an image").unwrap();
    std::fs::write(root.join("a.png"), b"\x89PNG\r\n\x1a\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&root, root.join("study/loop")).unwrap();
    let found = collect_inputs(std::slice::from_ref(&root), None).unwrap();
    assert_eq!(found.files, vec![root.join("a.png"), uid.clone()]);
    #[cfg(unix)]
    assert!(
        found.warnings.iter().any(|w| w.contains("loop")),
        "{:?}",
        found.warnings
    );
    // A manifest with a header, a quoted path containing a comma, and a relative path.
    let odd = root.join("with, comma.png");
    std::fs::write(&odd, b"\x89PNG\r\n\x1a\n").unwrap();
    let csv = root.join("list.csv");
    std::fs::write(&csv, "path,label\n\"with, comma.png\",1\r\na.png,0\n").unwrap();
    assert_eq!(read_manifest(&csv).unwrap(), vec![odd, root.join("a.png")]);
}
