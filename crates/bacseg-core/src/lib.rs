//! bacseg-core: everything in bacseg that is not a neural network.
//!
//! Mammogram I/O (DICOM, PNG, TIFF), preprocessing (denoise, normalisation, breast mask),
//! patch grids and stitching, metrics, post-processing, BAC quantification and synthetic
//! mammograms, on the raster types defined here.

pub mod augment;
pub mod cache;
pub mod dataset;
pub mod detection;
pub mod io;
pub mod mammogram;
pub mod metrics;
pub mod overlay;
pub mod patch;
pub mod postprocess;
pub mod preprocess;
pub mod quantify;
pub mod quiet_panic;
pub mod raster;
pub mod resample;
pub mod shared_data;
pub mod stitch;
pub mod synth;

pub use mammogram::{Laterality, Mammogram, PixelSpacing, SpacingSource, View};
pub use raster::{Mask, ProbMap, Raster, Size};
pub use shared_data::shared_data;
