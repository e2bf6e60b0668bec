//! Weight files shared with PyTorch: safetensors holding a PyTorch `state_dict` under the tensor
//! names of `tools/torch_reference.py`. Loading maps PyTorch's BatchNorm `weight`/`bias` to
//! burn's `gamma`/`beta`; saving maps them back, so PyTorch loads bacseg's files with
//! `load_state_dict(strict=True)`.

use std::path::Path;

use burn::module::Module;
use burn::store::{
    ApplyResult, BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};

use crate::error::NnError;

/// Load PyTorch-named safetensors weights into `model`, strictly: every model tensor must be in
/// the file with the right shape, and every file tensor must belong to the model (except
/// BatchNorm's `num_batches_tracked` counters, which burn does not keep).
pub fn load_pytorch_safetensors<M: Module>(mut model: M, path: &Path) -> Result<M, NnError> {
    let fail = |message: String| NnError::Weights {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .validate(true)
        .allow_partial(false);
    let result = model
        .load_from(&mut store)
        .map_err(|e| fail(e.to_string()))?;
    check_applied(path, result, |name| name.ends_with("num_batches_tracked"))?;
    Ok(model)
}

/// Check what loading a weight file into a model did: no tensor in error, none of the model's
/// missing, and no file tensor left unused unless `ignorable` says it may be.
pub(crate) fn check_applied(
    path: &Path,
    result: ApplyResult,
    ignorable: impl Fn(&str) -> bool,
) -> Result<(), NnError> {
    let fail = |message: String| NnError::Weights {
        path: path.to_path_buf(),
        message,
    };
    if let Some(error) = result.errors.first() {
        return Err(fail(error.to_string()));
    }
    if !result.missing.is_empty() {
        let names: Vec<_> = result
            .missing
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        return Err(fail(format!(
            "tensors missing from the file: {}",
            names.join(", ")
        )));
    }
    let unexpected: Vec<String> = result
        .unused
        .into_iter()
        .filter(|name| !ignorable(name))
        .collect();
    if !unexpected.is_empty() {
        return Err(NnError::UnexpectedTensors {
            path: path.to_path_buf(),
            names: unexpected,
        });
    }
    Ok(())
}

/// Save `model`'s weights as PyTorch-named safetensors (replacing any file at `path`; burn
/// writes a temporary sibling and renames it, so a failed save leaves the old file intact).
pub fn save_pytorch_safetensors<M: Module>(model: &M, path: &Path) -> Result<(), NnError> {
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| NnError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
