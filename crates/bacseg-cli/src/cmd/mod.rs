//! One module per subcommand: its validated arguments and its `run`.

pub mod bench;
pub mod chain;
pub mod compare;
pub mod convert;
pub mod demo;
pub mod evaluate;
pub mod export;
pub mod info;
pub mod models;
pub mod predict;
pub mod preprocess;
pub mod quantify;
pub mod synth;
pub mod train;
pub mod weights;
