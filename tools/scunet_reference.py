#!/usr/bin/env python3
"""The published SCU-Net in PyTorch: the parity fixture and reference masks for bacseg's port.

SCU-Net (Guo et al., Medical Physics 2021, MIT licence) is the published BAC segmentation
model; its checkpoints are in ``../shared/models/scunet/``. The reference here is the authors'
own architecture file, never a copy inside this repository: download ``SCUNet.py`` from

    https://github.com/Emory-HITI/BAC_segmentation/blob/master/SCUNet.py

and pass its path with ``--scunet-py``. Its class ``SCUNet`` is imported from that file (it
imports ``torchsummary`` at the top; a stand-in module is used when that is not installed).

The published inference (``AutoSeg.py`` and ``utils.py`` of that repository), reproduced by
:func:`segment`: read the PNG with ``cv2.imread`` and convert BGR to grey, median-blur 5x5, cut
512x512 tiles at stride 480 with the last tile of each axis snapped to the image edge, skip tiles
whose mean <= 20 or std <= 10 (0-255 scale), scale to [0, 1], normalise with mean 0.2813 and std
0.1256, replicate to 3 channels, run the network in float64 (its forward returns the raw 1x1
head output, no sigmoid), merge the tiles into a zero map with the element-wise max, and
threshold the map at > 0.65.

Needs PyTorch (CPU is enough), safetensors, numpy and OpenCV; never run by CI:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch safetensors numpy opencv-python-headless

Commands (run from the repository root):

``fixture --scunet-py P [--checkpoint C] [--image I] [--map M] [--threads N]``
    Writes ``crates/bacseg-nn/tests/fixtures/scunet_emory_crop.safetensors``: a 192x192 crop of
    the Emory BAC-positive mammogram and the network's raw output on it. The crop is the one
    (origin a multiple of 8) holding the most pixels > 0.65 of the whole-image reference map,
    that is where the published pipeline finds the most calcified vessel; the map is computed
    with :func:`segment`, or read from ``--map`` (a ``.scunet_map.npy`` that ``pipeline`` wrote
    for the same image and checkpoint). The network input is the raw 8-bit grey crop, without
    the median filter, normalised as above. Tensors: ``input_u8`` (uint8 [192, 192], the crop),
    ``origin`` (int64 [2], the crop's top-left (x, y) = (column, row) in the full image),
    ``output_f64`` (float64 [192, 192], the raw output in float64) and ``output_f32`` (float32
    [192, 192], the same with float32 weights and input, to report the float32 error).

``pipeline IMAGE... --scunet-py P [--checkpoint C] --out DIR [--threads N]``
    Runs the published pipeline on each image and writes ``DIR/<stem>.scunet_map.npy`` (the
    merged map, float32) and ``DIR/<stem>.scunet_mask.png`` (0/255, map > 0.65); prints tiles
    total and kept, the seconds spent in forward passes and in total, and the mask pixel count.

``check-mask A.png B.png``
    Compares two masks (non-zero = foreground), for example bacseg's against the reference
    mask: prints the Dice coefficient and the foreground counts of A, B and both.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

FIXTURES = Path(__file__).resolve().parent.parent / "crates" / "bacseg-nn" / "tests" / "fixtures"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DEFAULT_CHECKPOINT = SHARED / "models" / "scunet" / "SCUNet_dice_512_512_best.pt"
DEFAULT_IMAGE = SHARED / "data" / "real" / "emory-bac-positive-cc.png"

TILE = 512
STRIDE = 480
MIN_TILE_MEAN = 20.0
MIN_TILE_STD = 10.0
NORM_MEAN = 0.2813
NORM_STD = 0.1256
THRESHOLD = 0.65
BATCH = 8
CROP = 192
CROP_STEP = 8


# ----------------------------------------------------------------------------------------------
# The published model.


def import_scunet(path: Path) -> type[nn.Module]:
    """The class ``SCUNet`` of the published ``SCUNet.py`` at ``path``."""
    if importlib.util.find_spec("torchsummary") is None:
        stand_in = types.ModuleType("torchsummary")

        def summary(*_args, **_kwargs):
            raise RuntimeError("torchsummary is not installed")

        stand_in.summary = summary
        sys.modules["torchsummary"] = stand_in
    spec = importlib.util.spec_from_file_location("scunet_published", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SCUNet


def load_model(scunet_py: Path, checkpoint: Path) -> nn.Module:
    """The published network with the checkpoint's float64 weights, in eval mode."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model_state_dict"]
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    model = import_scunet(scunet_py)().double()
    model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# The published pipeline.


def read_grey(path: Path) -> np.ndarray:
    """The image as the published code reads it: ``cv2.imread`` (BGR, 8-bit), then grey."""
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def tile_origins(n: int) -> list[int]:
    """Tile starts along an axis of length ``n`` (``get_slices`` of the published code)."""
    origins = []
    for i in range(0, n, STRIDE):
        if i + TILE >= n:
            origins.append(n - TILE)
            break
        origins.append(i)
    return origins


def network_input(grey: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """8-bit grey [H, W] (or [N, H, W]) to the normalised 3-channel input [N, 3, H, W]."""
    x = torch.from_numpy((grey.astype(np.float64) / 255.0 - NORM_MEAN) / NORM_STD)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).to(dtype).contiguous()


def informative(tile: np.ndarray) -> bool:
    """Whether the published code keeps a tile (the others are mostly background)."""
    return np.mean(tile) > MIN_TILE_MEAN and np.std(tile) > MIN_TILE_STD


@dataclass
class Segmentation:
    map: np.ndarray
    tiles_total: int
    tiles_kept: int
    forward_seconds: float


def segment(model: nn.Module, grey: np.ndarray) -> Segmentation:
    """The published pipeline on 8-bit grey ``grey``: the merged float64 map (mask = map > 0.65)."""
    blurred = cv2.medianBlur(grey, 5)
    height, width = blurred.shape
    origins = [(r, c) for r in tile_origins(height) for c in tile_origins(width)]
    kept = [(r, c) for r, c in origins if informative(blurred[r:r + TILE, c:c + TILE])]
    merged = np.zeros(blurred.shape, dtype=np.float64)
    forward_seconds = 0.0
    with torch.no_grad():
        for start in range(0, len(kept), BATCH):
            batch = kept[start:start + BATCH]
            tiles = np.stack([blurred[r:r + TILE, c:c + TILE] for r, c in batch])
            begin = time.perf_counter()
            out = model(network_input(tiles, torch.float64))[:, 0].numpy()
            forward_seconds += time.perf_counter() - begin
            for (r, c), tile_out in zip(batch, out):
                view = merged[r:r + TILE, c:c + TILE]
                np.maximum(view, tile_out, out=view)
    return Segmentation(merged, len(origins), len(kept), forward_seconds)


# ----------------------------------------------------------------------------------------------
# Commands.


def best_crop(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of the CROP x CROP window, origin a multiple of CROP_STEP, with the most
    foreground pixels in ``mask`` (the first in row-major order on ties)."""
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    rows = np.arange(0, mask.shape[0] - CROP + 1, CROP_STEP)
    cols = np.arange(0, mask.shape[1] - CROP + 1, CROP_STEP)
    r0, c0 = rows[:, None], cols[None, :]
    counts = (integral[r0 + CROP, c0 + CROP] - integral[r0, c0 + CROP]
              - integral[r0 + CROP, c0] + integral[r0, c0])
    i, j = np.unravel_index(np.argmax(counts), counts.shape)
    return int(rows[i]), int(cols[j])


def cmd_fixture(args) -> int:
    torch.set_num_threads(args.threads)
    model = load_model(args.scunet_py, args.checkpoint)
    grey = read_grey(args.image)
    if args.map is not None:
        reference = np.load(args.map)
        if reference.shape != grey.shape:
            raise SystemExit(f"{args.map} is {reference.shape}, the image {grey.shape}")
    else:
        reference = segment(model, grey).map
    row, col = best_crop(reference > THRESHOLD)
    crop = np.ascontiguousarray(grey[row:row + CROP, col:col + CROP])
    with torch.no_grad():
        out64 = model(network_input(crop, torch.float64))[0, 0]
        out32 = copy.deepcopy(model).float()(network_input(crop, torch.float32))[0, 0]
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / "scunet_emory_crop.safetensors"
    save_file({
        "input_u8": torch.from_numpy(crop),
        "origin": torch.tensor([col, row], dtype=torch.int64),
        "output_f64": out64.contiguous(),
        "output_f32": out32.contiguous(),
    }, str(path))
    in_reference = int((reference[row:row + CROP, col:col + CROP] > THRESHOLD).sum())
    print(f"crop origin (x, y) = ({col}, {row}), {CROP}x{CROP}: {in_reference} pixels > "
          f"{THRESHOLD} in the whole-image reference map")
    print(f"output_f64 min {out64.min().item():.6f} max {out64.max().item():.6f}, "
          f"{int((out64 > THRESHOLD).sum())} pixels > {THRESHOLD}")
    print(f"max |f32 - f64| = {(out32.double() - out64).abs().max().item():.3e}")
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


def cmd_pipeline(args) -> int:
    torch.set_num_threads(args.threads)
    model = load_model(args.scunet_py, args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    for image in args.images:
        begin = time.perf_counter()
        result = segment(model, read_grey(image))
        mask = result.map > THRESHOLD
        total_seconds = time.perf_counter() - begin
        np.save(args.out / f"{image.stem}.scunet_map.npy", result.map.astype(np.float32))
        cv2.imwrite(str(args.out / f"{image.stem}.scunet_mask.png"), mask.astype(np.uint8) * 255)
        print(f"{image.name}: tiles {result.tiles_kept}/{result.tiles_total} kept, forward "
              f"{result.forward_seconds:.1f} s, total {total_seconds:.1f} s, "
              f"mask {int(mask.sum())} pixels")
    return 0


def cmd_check_mask(args) -> int:
    a, b = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in (args.a, args.b))
    if a is None or b is None:
        raise SystemExit("cannot read a mask")
    if a.shape != b.shape:
        raise SystemExit(f"masks differ in shape: {a.shape} and {b.shape}")
    a, b = a > 0, b > 0
    count_a, count_b, both = int(a.sum()), int(b.sum()), int((a & b).sum())
    dice = 2 * both / (count_a + count_b) if count_a + count_b else 1.0
    print(f"dice {dice:.6f}: A {count_a} pixels, B {count_b}, both {both}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    model_args = argparse.ArgumentParser(add_help=False)
    model_args.add_argument("--scunet-py", type=Path, required=True,
                            help="the published SCUNet.py (see the module docstring)")
    model_args.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    model_args.add_argument("--threads", type=int, default=2)

    fixture = sub.add_parser("fixture", parents=[model_args],
                             help="write the SCU-Net parity fixture")
    fixture.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    fixture.add_argument("--map", type=Path,
                         help="a .scunet_map.npy of the same image, instead of recomputing it")
    fixture.set_defaults(run=cmd_fixture)

    pipeline = sub.add_parser("pipeline", parents=[model_args],
                              help="run the published pipeline, write maps and masks")
    pipeline.add_argument("images", type=Path, nargs="+")
    pipeline.add_argument("--out", type=Path, required=True)
    pipeline.set_defaults(run=cmd_pipeline)

    check = sub.add_parser("check-mask", help="Dice and pixel counts of two masks")
    check.add_argument("a", type=Path)
    check.add_argument("b", type=Path)
    check.set_defaults(run=cmd_check_mask)

    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
