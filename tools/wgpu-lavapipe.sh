#!/usr/bin/env bash
# The GPU code path without a GPU: the `wgpu` release build on Mesa's lavapipe (a Vulkan driver
# that runs on the CPU, slow but exact). Usage: tools/wgpu-lavapipe.sh [WORKDIR]
# Installs lavapipe when missing (Debian's mesa-vulkan-drivers, as root), builds
# `bacseg-cli --features wgpu` in target/wgpu (the `ci` profile), makes a small synthetic
# dataset, trains a small DT-UNet on the wgpu device (config.json must record the Wgpu
# backend), predicts a synthetic image with burn on the wgpu device and with the CPU engine from the same run, and fails
# unless the two probability maps agree within 2/65535 and the masks are identical
# (tools/png_diff.py). `.ci/run` runs it, so that the wgpu path cannot rot unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/wgpu-check}

icd() { ls /usr/share/vulkan/icd.d/lvp_icd*.json 2> /dev/null | head -1; }
if [ -z "$(icd)" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
    echo "wgpu check: Mesa's lavapipe is not installed (Debian: mesa-vulkan-drivers)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q mesa-vulkan-drivers libvulkan1 > /dev/null \
    || { apt-get update -q > /dev/null && apt-get install -y -q mesa-vulkan-drivers libvulkan1 > /dev/null; }
fi
# Only lavapipe: on a machine with a GPU this check still runs on the CPU driver.
VK_ICD_FILENAMES=$(icd)
export VK_ICD_FILENAMES
# The Vulkan loader complains on every start without one (nothing is displayed).
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}

# The `ci` profile (Cargo.toml): release optimisation without thin LTO over one codegen unit.
cargo build --profile ci --locked -p bacseg-cli --features wgpu --target-dir target/wgpu
bin=target/wgpu/ci/bacseg
rm -rf "$work"
mkdir -p "$work"
start=$SECONDS
"$bin" synth --out "$work/data" --count 4 --size 512x640 --spacing 0.14 --seed 5 --negative-fraction 0
"$bin" train --data "$work/data" --model dt-unet --width 8 --depth 4 --patch 128 --batch 4 \
  --patches-per-epoch 16 --epochs 1 --seed 1 --out "$work/run"
grep -qi '"backend": *"[^"]*wgpu' "$work/run/config.json" || {
  echo "wgpu check: the run did not train on the Wgpu backend:" >&2
  grep '"backend"' "$work/run/config.json" >&2
  exit 1
}
image="$work/data/images/synth-00000.png"
"$bin" predict --model "$work/run" --engine burn --out "$work/wgpu" "$image"
"$bin" predict --model "$work/run" --engine cpu --out "$work/cpu" "$image"
python3 tools/png_diff.py "$work/wgpu/synth-00000.prob.png" "$work/cpu/synth-00000.prob.png" 2
python3 tools/png_diff.py "$work/wgpu/synth-00000.mask.png" "$work/cpu/synth-00000.mask.png" 0
echo "wgpu check: trained and predicted on lavapipe in $((SECONDS - start)) s; agrees with the CPU engine"
