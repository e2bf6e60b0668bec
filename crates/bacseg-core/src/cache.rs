//! On-disk patch cache for training: each image of a dataset is read, preprocessed once (the
//! same [`crate::preprocess`] chain as inference) and stored in a compact file, from which
//! training and validation read single patches on demand. Memory use does not grow with the
//! dataset: only the patch index (a few bytes per patch) stays in memory.
//!
//! One file per image, `<stem>.bpc`:
//! ```text
//! magic "BACSEGPC" | version u32 | width u32 | height u32 | key [u8; 32]
//! image: width*height u16 little-endian, the normalised [0,1] image x 65535, row-major
//! mask:  height rows of ceil(width/8) bytes, BAC bits, least significant bit first
//! ```
//! 3 bytes + 1 bit per pixel instead of 5 bytes as f32 + u8. The key is a SHA-256 of the
//! preprocessing and grid settings and of the source files' sizes and modification times: a
//! file whose key differs is rebuilt, so a cache directory can be shared between runs.
//! `index.json` lists every cached image with its in-breast patches.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::{Dataset, DatasetError, load_sample};
use crate::io::{IoError, write_atomic};
use crate::patch::{Patch, PatchError, PatchGrid, SampleItem, sample_items};
use crate::preprocess::{Preprocess, preprocess};
use crate::raster::{Mask, Raster};

const MAGIC: &[u8; 8] = b"BACSEGPC";
const VERSION: u32 = 1;
const HEADER: u64 = 8 + 4 + 4 + 4 + 32;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{stem}: {source}")]
    Patch { stem: String, source: PatchError },
    #[error("image {0} is not in the dataset")]
    UnknownStem(String),
    #[error("bad cache settings: {0}")]
    Settings(String),
}

impl CacheError {
    fn file(path: &Path, e: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

impl From<IoError> for CacheError {
    fn from(e: IoError) -> Self {
        Self::Dataset(DatasetError::Io(e))
    }
}

/// How images become cached patches: the preprocessing and the patch grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    pub preprocess: Preprocess,
    /// Patch side in pixels.
    pub patch: usize,
    /// Distance between patch origins.
    pub stride: usize,
    /// Patches with less than this fraction of breast pixels are left out.
    pub min_breast_fraction: f64,
}

impl CacheSpec {
    pub fn validate(&self) -> Result<(), CacheError> {
        self.preprocess
            .validate()
            .map_err(|e| CacheError::Settings(e.to_string()))?;
        if self.patch < 8 || self.stride == 0 || self.stride > self.patch {
            return Err(CacheError::Settings(format!(
                "patch {} and stride {}: need patch >= 8 and 0 < stride <= patch",
                self.patch, self.stride
            )));
        }
        if !(0.0..=1.0).contains(&self.min_breast_fraction) {
            return Err(CacheError::Settings(format!(
                "min_breast_fraction must be in [0, 1], got {}",
                self.min_breast_fraction
            )));
        }
        Ok(())
    }
}

/// One cached image: its size, in-breast patches and their BAC flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedImage {
    pub stem: String,
    pub width: usize,
    pub height: usize,
    /// Hex SHA-256 of the settings and the source files' metadata.
    pub key: String,
    /// In-breast patches, with `positive` set where the truth has BAC.
    pub patches: Vec<(Patch, bool)>,
    /// BAC pixels in the whole truth mask.
    pub bac_pixels: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Index {
    spec: CacheSpec,
    images: Vec<CachedImage>,
}

/// The cached images of one list of stems, in that order.
#[derive(Debug, Clone)]
pub struct PatchCache {
    dir: PathBuf,
    spec: CacheSpec,
    images: Vec<CachedImage>,
}

fn metadata_fingerprint(path: &Path) -> Result<String, CacheError> {
    let m = std::fs::metadata(path).map_err(|e| CacheError::file(path, e))?;
    let modified = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{}:{modified}", path.display(), m.len()))
}

fn key_for(spec: &CacheSpec, image: &Path, mask: &Path) -> Result<[u8; 32], CacheError> {
    let mut h = Sha256::new();
    h.update(VERSION.to_le_bytes());
    h.update(serde_json::to_vec(spec).map_err(|e| CacheError::Settings(e.to_string()))?);
    h.update(metadata_fingerprint(image)?.as_bytes());
    h.update(metadata_fingerprint(mask)?.as_bytes());
    Ok(h.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PatchCache {
    /// Cache `stems` of `dataset` under `dir` (created if needed), reusing files whose key
    /// matches. Images are processed in parallel; `on_image(done, total, notes)` is called
    /// after each, with the conversions the reader made to a newly cached image ("path: colour
    /// converted to grey", for the caller to show; none for a reused entry).
    pub fn build(
        dataset: &Dataset,
        stems: &[String],
        spec: &CacheSpec,
        dir: &Path,
        on_image: &(dyn Fn(usize, usize, &[String]) + Sync),
    ) -> Result<Self, CacheError> {
        spec.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| CacheError::file(dir, e))?;
        let index_path = dir.join("index.json");
        let previous: Vec<CachedImage> = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
            .map(|i| i.images)
            .unwrap_or_default();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let images = stems
            .par_iter()
            .map(|stem| {
                let sample = dataset
                    .get(stem)
                    .ok_or_else(|| CacheError::UnknownStem(stem.clone()))?;
                let key = hex(&key_for(spec, &sample.image, &sample.mask)?);
                let file = dir.join(format!("{stem}.bpc"));
                let reuse = previous
                    .iter()
                    .find(|c| &c.stem == stem && c.key == key)
                    .filter(|c| file_key(&file).ok().as_deref() == Some(c.key.as_str()))
                    .cloned();
                let (cached, notes) = match reuse {
                    Some(c) => (c, Vec::new()),
                    // A decoder that panics on one image is that image's error, printed
                    // as one line like any other (not a crash of the training run).
                    None => {
                        crate::quiet_panic::catch(|| cache_one(stem, spec, &key, &file, sample))
                            .unwrap_or_else(|panic| {
                                Err(CacheError::from(IoError::Corrupt {
                                    path: sample.image.clone(),
                                    format: "image",
                                    reason: format!(
                                        "decoder failed: {}",
                                        panic.lines().next().unwrap_or("")
                                    ),
                                }))
                            })?
                    }
                };
                on_image(
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    stems.len(),
                    &notes,
                );
                Ok(cached)
            })
            .collect::<Result<Vec<_>, CacheError>>()?;
        // Keep entries of other stems (another split may share this directory).
        let mut all: Vec<CachedImage> = previous
            .into_iter()
            .filter(|p| !stems.contains(&p.stem))
            .collect();
        all.extend(images.iter().cloned());
        let index = Index {
            spec: spec.clone(),
            images: all,
        };
        write_atomic(&index_path, |w| {
            serde_json::to_writer(&mut *w, &index).map_err(|e| e.to_string())
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            spec: spec.clone(),
            images,
        })
    }

    pub fn spec(&self) -> &CacheSpec {
        &self.spec
    }

    pub fn images(&self) -> &[CachedImage] {
        &self.images
    }

    /// Every cached patch as a sampler item (`image` indexes [`Self::images`]).
    pub fn items(&self) -> Vec<SampleItem> {
        self.images
            .iter()
            .enumerate()
            .flat_map(|(i, img)| {
                img.patches
                    .iter()
                    .map(move |&(patch, positive)| SampleItem {
                        image: i,
                        patch,
                        positive,
                    })
            })
            .collect()
    }

    fn path(&self, image: usize) -> PathBuf {
        self.dir.join(format!("{}.bpc", self.images[image].stem))
    }

    /// Read one `patch x patch` window: the image into `image` ([0, 1]) and the truth into
    /// `mask` (0 or 1); the part outside the image (padding) is 0 in both.
    pub fn read_patch(
        &self,
        item: &SampleItem,
        image: &mut [f32],
        mask: &mut [f32],
    ) -> Result<(), CacheError> {
        let n = self.spec.patch;
        let img = self
            .images
            .get(item.image)
            .ok_or_else(|| CacheError::Settings(format!("no cached image {}", item.image)))?;
        if image.len() != n * n || mask.len() != n * n {
            return Err(CacheError::Settings(format!(
                "patch buffers must hold {n}x{n} values"
            )));
        }
        let p = item.patch;
        if p.x + p.valid_width > img.width || p.y + p.valid_height > img.height {
            return Err(CacheError::Settings(format!(
                "patch at ({}, {}) lies outside {} ({}x{})",
                p.x, p.y, img.stem, img.width, img.height
            )));
        }
        image.fill(0.0);
        mask.fill(0.0);
        let path = self.path(item.image);
        let mut f = File::open(&path).map_err(|e| CacheError::file(&path, e))?;
        let (w, h) = (img.width as u64, img.height as u64);
        let mut row16 = vec![0u8; p.valid_width * 2];
        let (b0, b1) = (p.x / 8, (p.x + p.valid_width).div_ceil(8));
        let mut bits = vec![0u8; b1 - b0];
        let mask_start = HEADER + w * h * 2;
        let stride = img.width.div_ceil(8) as u64;
        for r in 0..p.valid_height {
            let y = (p.y + r) as u64;
            let out = &mut image[r * n..r * n + p.valid_width];
            f.seek(SeekFrom::Start(HEADER + (y * w + p.x as u64) * 2))
                .and_then(|_| f.read_exact(&mut row16))
                .map_err(|e| CacheError::file(&path, e))?;
            for (o, b) in out.iter_mut().zip(row16.chunks_exact(2)) {
                *o = u16::from_le_bytes([b[0], b[1]]) as f32 / 65535.0;
            }
            f.seek(SeekFrom::Start(mask_start + y * stride + b0 as u64))
                .and_then(|_| f.read_exact(&mut bits))
                .map_err(|e| CacheError::file(&path, e))?;
            for (c, o) in mask[r * n..r * n + p.valid_width].iter_mut().enumerate() {
                let x = p.x + c - b0 * 8;
                *o = f32::from((bits[x / 8] >> (x % 8)) & 1);
            }
        }
        Ok(())
    }

    /// The whole cached truth mask of one image.
    pub fn read_truth(&self, image: usize) -> Result<Mask, CacheError> {
        let img = &self.images[image];
        let path = self.path(image);
        let mut f = File::open(&path).map_err(|e| CacheError::file(&path, e))?;
        let stride = img.width.div_ceil(8);
        let mut bits = vec![0u8; stride * img.height];
        f.seek(SeekFrom::Start(
            HEADER + (img.width * img.height * 2) as u64,
        ))
        .and_then(|_| f.read_exact(&mut bits))
        .map_err(|e| CacheError::file(&path, e))?;
        Ok(Raster::from_fn(img.width, img.height, |x, y| {
            (bits[y * stride + x / 8] >> (x % 8)) & 1 == 1
        }))
    }
}

/// The key stored in a cache file's header, if the file is a readable cache file.
fn file_key(path: &Path) -> Result<String, CacheError> {
    let mut f = File::open(path).map_err(|e| CacheError::file(path, e))?;
    let mut header = [0u8; HEADER as usize];
    f.read_exact(&mut header)
        .map_err(|e| CacheError::file(path, e))?;
    if &header[..8] != MAGIC || header[8..12] != VERSION.to_le_bytes() {
        return Err(CacheError::file(path, "not a bacseg patch cache file"));
    }
    Ok(hex(&header[20..52]))
}

fn cache_one(
    stem: &str,
    spec: &CacheSpec,
    key: &str,
    file: &Path,
    sample: &crate::dataset::Sample,
) -> Result<(CachedImage, Vec<String>), CacheError> {
    let (mammogram, truth) = load_sample(sample)?;
    let notes = mammogram
        .notes
        .iter()
        .map(|n| format!("{}: {n}", sample.image.display()))
        .collect();
    let pre = preprocess(&mammogram, &spec.preprocess);
    let size = truth.size();
    let patch_err = |source| CacheError::Patch {
        stem: stem.to_string(),
        source,
    };
    let grid = PatchGrid::new(size, spec.patch, spec.stride)
        .and_then(|g| g.within_breast(&pre.breast, spec.min_breast_fraction))
        .map_err(patch_err)?;
    let items = sample_items(0, &grid, &truth).map_err(patch_err)?;
    let (w, h) = (size.width, size.height);
    let stride = w.div_ceil(8);
    let key_bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    write_atomic(file, |out| {
        let io = |e: std::io::Error| e.to_string();
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
        out.write_all(&(w as u32).to_le_bytes()).map_err(io)?;
        out.write_all(&(h as u32).to_le_bytes()).map_err(io)?;
        out.write_all(&key_bytes).map_err(io)?;
        for row in pre.image.data().chunks(w) {
            let bytes: Vec<u8> = row
                .iter()
                .flat_map(|&v| ((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_le_bytes())
                .collect();
            out.write_all(&bytes).map_err(io)?;
        }
        for y in 0..h {
            let mut bits = vec![0u8; stride];
            for (x, &t) in truth.row(y).iter().enumerate() {
                if t {
                    bits[x / 8] |= 1 << (x % 8);
                }
            }
            out.write_all(&bits).map_err(io)?;
        }
        Ok(())
    })?;
    let cached = CachedImage {
        stem: stem.to_string(),
        width: w,
        height: h,
        key: key.to_string(),
        patches: items.iter().map(|i| (i.patch, i.positive)).collect(),
        bac_pixels: truth.count() as u64,
    };
    Ok((cached, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{write_mask_png, write_png_gray16};

    fn dataset(dir: &Path) -> Dataset {
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::create_dir_all(dir.join("masks")).unwrap();
        for (k, stem) in ["a", "b"].iter().enumerate() {
            let (w, h) = (70 + 9 * k, 50);
            let img = Raster::from_fn(w, h, |x, y| (1000 + 37 * x + 11 * y) as u16);
            let mask = Raster::from_fn(w, h, |x, y| (x + k) % 13 == 0 && y > 20);
            write_png_gray16(&dir.join(format!("images/{stem}.png")), w, h, img.data()).unwrap();
            write_mask_png(&dir.join(format!("masks/{stem}.png")), &mask).unwrap();
        }
        Dataset::open(dir).unwrap()
    }

    fn spec() -> CacheSpec {
        CacheSpec {
            preprocess: Preprocess {
                median_radius: 0,
                ..Preprocess::default()
            },
            patch: 32,
            stride: 24,
            min_breast_fraction: 0.0,
        }
    }

    #[test]
    fn patches_read_back_what_preprocessing_and_the_mask_hold() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = dataset(&tmp.path().join("data"));
        let stems = ds.stems();
        let cache = PatchCache::build(
            &ds,
            &stems,
            &spec(),
            &tmp.path().join("cache"),
            &|_, _, _| {},
        )
        .unwrap();
        assert_eq!(cache.images().len(), 2);
        for (i, stem) in stems.iter().enumerate() {
            let (m, truth) = load_sample(ds.get(stem).unwrap()).unwrap();
            let pre = preprocess(&m, &spec().preprocess);
            assert_eq!(cache.read_truth(i).unwrap(), truth);
            assert_eq!(cache.images()[i].bac_pixels, truth.count() as u64);
            for item in cache.items().iter().filter(|it| it.image == i) {
                let (mut img, mut msk) = (vec![0.0; 32 * 32], vec![0.0; 32 * 32]);
                cache.read_patch(item, &mut img, &mut msk).unwrap();
                let p = item.patch;
                let mut any = false;
                for r in 0..32 {
                    for c in 0..32 {
                        let (v, t) = (img[r * 32 + c], msk[r * 32 + c]);
                        if r < p.valid_height && c < p.valid_width {
                            let want = *pre.image.get(p.x + c, p.y + r);
                            assert!((v - want).abs() <= 1.0 / 65535.0, "{v} vs {want}");
                            let bac = *truth.get(p.x + c, p.y + r);
                            assert_eq!(t, f32::from(u8::from(bac)));
                            any |= bac;
                        } else {
                            assert_eq!((v, t), (0.0, 0.0));
                        }
                    }
                }
                assert_eq!(any, item.positive);
            }
        }
    }

    #[test]
    fn files_are_reused_and_rebuilt_when_settings_change() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = dataset(&tmp.path().join("data"));
        let dir = tmp.path().join("cache");
        let stems = ds.stems();
        PatchCache::build(&ds, &stems, &spec(), &dir, &|_, _, _| {}).unwrap();
        let file = dir.join("a.bpc");
        // Mark the cached file with an old modification time: a rebuild would write it anew.
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(t0)
            .unwrap();
        PatchCache::build(&ds, &stems, &spec(), &dir, &|_, _, _| {}).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), t0);
        let other = CacheSpec {
            stride: 16,
            ..spec()
        };
        let c = PatchCache::build(&ds, &stems, &other, &dir, &|_, _, _| {}).unwrap();
        assert_ne!(std::fs::metadata(&file).unwrap().modified().unwrap(), t0);
        assert_eq!(c.spec().stride, 16);
    }

    #[test]
    fn bad_settings_and_unknown_stems_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = dataset(&tmp.path().join("data"));
        let bad = CacheSpec {
            stride: 0,
            ..spec()
        };
        let dir = tmp.path().join("cache");
        assert!(matches!(
            PatchCache::build(&ds, &ds.stems(), &bad, &dir, &|_, _, _| {}),
            Err(CacheError::Settings(_))
        ));
        let err =
            PatchCache::build(&ds, &["zzz".into()], &spec(), &dir, &|_, _, _| {}).unwrap_err();
        assert!(err.to_string().contains("zzz"));
    }
}
