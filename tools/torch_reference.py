#!/usr/bin/env python3
"""PyTorch twins of bacseg's networks: parity fixtures, the weight round trip, timings.

bacseg-nn (Rust, burn) and this file build DT-UNet, UNet, SegNet and ContextNet with the same
layers under the same names, so a PyTorch ``state_dict`` saved as safetensors loads into bacseg
and a bacseg weight file loads into PyTorch with ``load_state_dict(strict=True)``.

Needs PyTorch (CPU is enough) and safetensors; never run by CI:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch safetensors numpy opencv-python-headless onnx onnxruntime

(opencv-python-headless for ``predict-time``, the whole-mammogram timing of ``bacseg bench``;
onnx and onnxruntime for the bench's ONNX Runtime row.)

Commands (run from the repository root):

``fixtures``
    Writes ``crates/bacseg-nn/tests/fixtures/``: for each architecture at a small width, the
    seeded random weights (``<name>.safetensors``, the PyTorch state_dict with randomised
    BatchNorm statistics) and ``<name>_io.safetensors`` holding ``input``, ``eval_output``
    (running statistics) and ``train_output`` (batch statistics, ``model.train()``). The full
    reference DT-UNet (31 MB of weights) is not stored: both sides fill it with the same
    counter-based values (:func:`deterministic_state`), and only its 1x1x64x64 input and eval
    output are (``dt_unet_reference_io.safetensors``). The Rust test ``tests/parity.rs`` loads
    these and asserts max |difference| < 1e-4.

``train-step``
    Writes ``crates/bacseg-nn/tests/fixtures/<name>_train_step.safetensors`` for DT-UNet (soft
    Dice) and UNet (Dice + BCE) at the small widths above, from the weights of
    ``<name>.safetensors``: the batch (``input``, ``target``), the loss of the first step,
    every parameter's gradient after it (``grad.<param>``) and every parameter after
    ``TRAIN_STEPS`` AdamW steps on that batch (``after.<param>``; lr 1e-2, weight decay 1e-2,
    eps 1e-5: burn's AdamW defaults, gradients not clipped), BatchNorm in training mode. The
    Rust test ``cpu::train`` (``pytorch_training_step_fixture``) checks bacseg's CPU training
    engine against it. Running variances are not compared: PyTorch averages the unbiased
    batch variance, burn (whose checkpoints bacseg keeps) the biased one.

``roundtrip DIR``
    Checks weights written by bacseg: ``cargo test -p bacseg-nn --test parity -- --ignored
    export_for_pytorch`` with ``BACSEG_EXPORT_DIR=DIR`` saves, for each architecture, burn's own
    randomly initialised weights (``DIR/<name>.safetensors``) and burn's eval output on a fixed
    input (``DIR/<name>_io.safetensors``). This loads every weight file into the PyTorch twin
    with ``strict=True`` and compares outputs (max |difference| < 1e-4).

``bench``
    Times the reference DT-UNet forward on 1x1x512x512 in eval mode (median of repeats), for
    the comparison table in README.md (burn's side: ``cargo bench -p bacseg-nn``).

``train-time --side S --batch B --steps N``
    The Dice + AdamW training loop of ``bench`` on the reference DT-UNet at any patch side and
    batch: median seconds per step and patches per second over ``N`` steps after one warm-up
    step, on random batches drawn anew each step (what ``bacseg train`` reports as
    ``patches_per_s``, without loading).

``predict-time --image PRE.png --breast MASK.png --weights W.safetensors``
    Times the reference DT-UNet over the in-breast patches of one whole mammogram, the patches
    ``bacseg predict`` uses: ``PRE.png`` and ``MASK.png`` come from ``bacseg preprocess IMAGE
    --image PRE.png --mask MASK.png``; the grid is bacseg's (``--patch``, ``--stride``, last row
    and column snapped to the edge, patches kept when at least ``--min-breast-fraction`` of
    their pixels are breast). ``--write-weights`` first writes the deterministic reference
    weights to ``W.safetensors`` for ``bacseg predict --model W.safetensors`` to load. Prints
    the patch count (compare with ``timings.patches`` of bacseg's ``bac.json``) and the forward
    time over all of them in batches of ``--batch`` after one warm-up batch. Needs
    opencv-python-headless to read the 16-bit PNG.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

FIXTURES = Path(__file__).resolve().parent.parent / "crates" / "bacseg-nn" / "tests" / "fixtures"
TOLERANCE = 1e-4


# ----------------------------------------------------------------------------------------------
# The networks. Attribute names are the tensor names bacseg-nn uses; keep them in step.


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class ConvBn(nn.Module):
    """Convolution, BatchNorm, ReLU unless ``relu`` is False; padding dilation*(k-1)/2."""

    def __init__(self, cin, cout, kernel=3, stride=1, dilation=1, groups=1, bias=False, relu=True):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, dilation, groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = DoubleConv(2 * cout, cout, bias=False)


class DtUnet(nn.Module):
    def __init__(self, in_channels=1, widths=(8, 16, 32, 64, 128, 256, 512)):
        super().__init__()
        w = list(widths)
        cins = [in_channels] + w[:-1]
        self.down = nn.ModuleList(DoubleConv(ci, co, bias=False) for ci, co in zip(cins, w))
        self.up = nn.ModuleList(UpBlock(w[i], w[i - 1]) for i in range(len(w) - 1, 0, -1))
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x):
        skips = []
        for i, level in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = level(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            up = block.up(x)
            x = block.conv(torch.cat([skips.pop(), up], 1))
        return self.head(x)


class Unet(nn.Module):
    def __init__(self, in_channels=3, widths=(64, 128, 256, 512)):
        super().__init__()
        w = list(widths)
        levels = w + [w[-1]]  # the bottleneck keeps the deepest width
        cins = [in_channels] + levels[:-1]
        self.down = nn.ModuleList(DoubleConv(ci, co, bias=True) for ci, co in zip(cins, levels))
        ups, prev = [], levels[-1]
        for j in range(len(w) - 1, -1, -1):
            out = w[j - 1] if j > 0 else w[0]
            ups.append(DoubleConv(prev + w[j], out, bias=True))
            prev = out
        self.up = nn.ModuleList(ups)
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x):
        skips = []
        for i, level in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = level(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            up = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=True)
            x = block(torch.cat([skip, up], 1))
        return self.head(x)


class Stage(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class SegNet(nn.Module):
    def __init__(self, in_channels=1, widths=(64, 128, 256, 512, 512), convs=(2, 2, 3, 3, 3)):
        super().__init__()
        w, n = list(widths), list(convs)
        enc, cin = [], in_channels
        for width, count in zip(w, n):
            enc.append(Stage([ConvBn(cin if k == 0 else width, width) for k in range(count)]))
            cin = width
        self.enc = nn.ModuleList(enc)
        dec = []
        for s in range(len(w) - 1, -1, -1):
            count = n[s] if s > 0 else n[s] - 1
            out_last = w[s - 1] if s > 0 else w[0]
            dec.append(Stage([ConvBn(w[s], out_last if k == count - 1 else w[s]) for k in range(count)]))
        self.dec = nn.ModuleList(dec)
        self.head = nn.Conv2d(w[0], 1, 3, padding=1)

    def forward(self, x):
        pools = []
        for stage in self.enc:
            x = stage(x)
            size = x.shape[2:]
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            pools.append((idx, size))
        for stage in self.dec:
            idx, size = pools.pop()
            x = stage(F.max_unpool2d(x, idx, 2, output_size=size))
        return self.head(x)


class DsConv(nn.Module):
    """Depthwise-separable convolution: 3x3 depthwise (stride s), then 1x1 pointwise."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.dw = ConvBn(cin, cin, 3, stride=stride, groups=cin)
        self.pw = ConvBn(cin, cout, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual (expand 1x1, depthwise 3x3, linear 1x1 projection)."""

    def __init__(self, cin, cout, expansion, stride):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBn(cin, hidden, 1) if expansion != 1 else None
        self.dw = ConvBn(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = ConvBn(hidden, cout, 1, relu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


def contextnet_bottlenecks(base):
    """(expansion t, channels c, repeats n, stride s) of Poudel et al. 2018, Table 1, for base 32."""
    return [(1, base, 1, 1), (6, base, 1, 1), (6, base * 3 // 2, 3, 2), (6, base * 2, 3, 2),
            (6, base * 3, 2, 1), (6, base * 4, 2, 1)]


class ShallowBranch(nn.Module):
    def __init__(self, cin, b):
        super().__init__()
        self.conv = ConvBn(cin, b, 3, stride=2)
        self.ds1 = DsConv(b, 2 * b, stride=2)
        self.ds2 = DsConv(2 * b, 4 * b, stride=2)
        self.ds3 = DsConv(4 * b, 4 * b, stride=1)

    def forward(self, x):
        return self.ds3(self.ds2(self.ds1(self.conv(x))))


class DeepBranch(nn.Module):
    def __init__(self, cin, b, expansion):
        super().__init__()
        self.stem = ConvBn(cin, b, 3, stride=2)
        blocks, c = [], b
        for t, cout, n, s in contextnet_bottlenecks(b):
            t = 1 if t == 1 else expansion
            for k in range(n):
                blocks.append(Bottleneck(c, cout, t, s if k == 0 else 1))
                c = cout
        self.blocks = nn.ModuleList(blocks)
        self.conv = ConvBn(c, 4 * b, 3)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.conv(x)


class Fusion(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = ConvBn(c, c, 3, dilation=4, groups=c)
        self.deep_proj = ConvBn(c, c, 1, bias=True, relu=False)
        self.shallow_proj = ConvBn(c, c, 1, bias=True, relu=False)

    def forward(self, shallow, deep):
        deep = F.interpolate(deep, size=shallow.shape[2:], mode="bilinear", align_corners=False)
        deep = self.deep_proj(self.dw(deep))
        return F.relu(deep + self.shallow_proj(shallow))


class Classifier(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ds1 = DsConv(c, c)
        self.ds2 = DsConv(c, c)
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        return self.head(self.ds2(self.ds1(x)))


class ContextNet(nn.Module):
    def __init__(self, in_channels=1, base_width=32, expansion=6):
        super().__init__()
        b = base_width
        self.shallow = ShallowBranch(in_channels, b)
        self.deep = DeepBranch(in_channels, b, expansion)
        self.fusion = Fusion(4 * b)
        self.classifier = Classifier(4 * b)

    def forward(self, x):
        h, w = x.shape[2:]
        small = F.interpolate(x, size=(h // 4, w // 4), mode="bilinear", align_corners=False)
        fused = self.fusion(self.shallow(x), self.deep(small))
        return F.interpolate(self.classifier(fused), size=(h, w), mode="bilinear", align_corners=False)


# Small configurations of the fixtures. tests/parity.rs builds the same ones.
SMALL = {
    "dt_unet": (lambda: DtUnet(1, (4, 8, 16, 32)), (2, 1, 32, 32)),
    "unet": (lambda: Unet(3, (4, 8, 16, 32)), (2, 3, 32, 32)),
    "segnet": (lambda: SegNet(1, (4, 8, 16, 32, 32), (2, 2, 3, 3, 3)), (2, 1, 32, 32)),
    "contextnet": (lambda: ContextNet(1, 8, 6), (2, 1, 128, 128)),
}
REFERENCE_DT_UNET_INPUT = (1, 1, 64, 64)


# ----------------------------------------------------------------------------------------------
# Weights


def randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm affine and running statistics, so eval mode tests their mapping."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * (torch.rand(n, generator=gen) * 2 - 1))
                m.bias.copy_(0.1 * (torch.rand(n, generator=gen) * 2 - 1))
                m.running_mean.copy_(0.2 * (torch.rand(n, generator=gen) * 2 - 1))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


MASK64 = (1 << 64) - 1


def fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def unit_values(name: str, count: int) -> np.ndarray:
    """count values in [0, 1) with 24 random bits each: splitmix64(fnv1a64(name) + i) >> 40."""
    with np.errstate(over="ignore"):
        z = np.arange(count, dtype=np.uint64) + np.uint64(fnv1a64(name))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def deterministic_tensor(name: str, shape) -> torch.Tensor:
    """The value bacseg's test gives tensor `name`: computed in f64, rounded once to f32.

    4-D weights: uniform(-a, a) with a = sqrt(6 / fan), fan = numel / shape[0]; 1-D `.weight`
    (BatchNorm): 1 + 0.2(2u-1); `.bias`: 0.1(2u-1); running_mean 0.2(2u-1); running_var 0.5+u.
    """
    count = math.prod(shape)
    u = unit_values(name, count)
    v = 2.0 * u - 1.0
    if name.endswith("running_var"):
        out = 0.5 + u
    elif name.endswith("running_mean"):
        out = 0.2 * v
    elif len(shape) == 1 and name.endswith(".weight"):
        out = 1.0 + 0.2 * v
    elif len(shape) == 1:
        out = 0.1 * v
    else:
        out = v * math.sqrt(6.0 / (count // shape[0]))
    return torch.from_numpy(out.astype(np.float32)).reshape(shape)


def deterministic_state(model: nn.Module) -> dict:
    return {
        name: deterministic_tensor(name, tuple(t.shape))
        for name, t in model.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }


def fixed_input(shape, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen)


def outputs(model: nn.Module, x: torch.Tensor):
    model.eval()
    with torch.no_grad():
        eval_out = model(x)
    model.train()
    with torch.no_grad():
        train_out = model(x)
    model.eval()
    return eval_out, train_out


# ----------------------------------------------------------------------------------------------
# Commands


def cmd_fixtures(_args) -> int:
    torch.set_num_threads(2)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for seed, (name, (build, shape)) in enumerate(SMALL.items()):
        torch.manual_seed(1000 + seed)
        model = build()
        randomise_batchnorm(model, torch.Generator().manual_seed(2000 + seed))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, FIXTURES / f"{name}.safetensors")
        x = fixed_input(shape, 3000 + seed)
        eval_out, train_out = outputs(model, x)
        save_file({"input": x, "eval_output": eval_out, "train_output": train_out},
                  FIXTURES / f"{name}_io.safetensors")
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params} trainable parameters, input {tuple(shape)}, "
              f"max|eval| {eval_out.abs().max():.3g}, max|train| {train_out.abs().max():.3g}")

    reference = DtUnet()
    reference.load_state_dict(deterministic_state(reference), strict=True)
    x = fixed_input(REFERENCE_DT_UNET_INPUT, 4000)
    reference.eval()
    with torch.no_grad():
        out = reference(x)
    save_file({"input": x, "eval_output": out}, FIXTURES / "dt_unet_reference_io.safetensors")
    params = sum(p.numel() for p in reference.parameters())
    print(f"dt_unet reference: {params} trainable parameters, max|eval| {out.abs().max():.3g}")
    total = sum(f.stat().st_size for f in FIXTURES.glob("*.safetensors"))
    print(f"fixtures: {total / 1e6:.2f} MB in {FIXTURES}")
    return 0


TRAIN_STEPS = 3


def soft_dice(logits, target, smooth=1.0):
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)


def cmd_train_step(_args) -> int:
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    cases = {
        "dt_unet": lambda l, t: soft_dice(l, t),
        "unet": lambda l, t: soft_dice(l, t) + F.binary_cross_entropy_with_logits(l, t),
    }
    for seed, (name, loss_fn) in enumerate(cases.items()):
        build, shape = SMALL[name]
        model = build()
        model.load_state_dict(load_file(FIXTURES / f"{name}.safetensors"), strict=True)
        model.train()
        x = fixed_input(shape, 5000 + seed)
        gen = torch.Generator().manual_seed(6000 + seed)
        target = (torch.rand((shape[0], 1, shape[2], shape[3]), generator=gen) < 0.2).float()
        optim = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-5,
                                  weight_decay=1e-2)
        out = {"input": x, "target": target}
        for step in range(TRAIN_STEPS):
            optim.zero_grad()
            loss = loss_fn(model(x), target)
            loss.backward()
            if step == 0:
                out["loss"] = loss.detach().reshape(1)
                for pname, param in model.named_parameters():
                    out[f"grad.{pname}"] = param.grad.detach().clone()
            optim.step()
        for pname, param in model.named_parameters():
            out[f"after.{pname}"] = param.detach().clone()
        save_file({k: v.contiguous() for k, v in out.items()},
                  FIXTURES / f"{name}_train_step.safetensors")
        print(f"{name}: loss {out['loss'].item():.6f}, {TRAIN_STEPS} AdamW steps")
    return 0


def cmd_roundtrip(args) -> int:
    directory = Path(args.dir)
    failures = 0
    for name, (build, _) in SMALL.items():
        weights = directory / f"{name}.safetensors"
        io = directory / f"{name}_io.safetensors"
        if not weights.exists():
            print(f"{name}: {weights} missing (run the export test first)")
            failures += 1
            continue
        model = build()
        # strict: every PyTorch tensor must be in the file and every file tensor in the model.
        model.load_state_dict(load_file(weights), strict=True)
        model.eval()
        data = load_file(io)
        with torch.no_grad():
            out = model(data["input"])
        diff = (out - data["eval_output"]).abs().max().item()
        ok = diff < TOLERANCE
        failures += not ok
        print(f"{name}: bacseg weights load in PyTorch (strict); max|diff| {diff:.2e} "
              f"{'ok' if ok else 'FAIL'}")
    return 1 if failures else 0


def cmd_bench(args) -> int:
    torch.set_num_threads(args.threads)
    model = DtUnet().eval()
    x = torch.rand(1, 1, 512, 512)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    gflop = 8.900313088
    print(f"pytorch {torch.__version__} eager, {args.threads} threads: reference DT-UNet forward "
          f"1x1x512x512 median {median:.3f} s over {args.repeats} ({gflop / median:.1f} GFLOP/s)")
    if args.no_train:
        return 0
    # The training step of the Rust bench: batch 4 x 1 x 256 x 256, soft Dice (smoothing 1,
    # over the batch) on sigmoid outputs, AdamW (lr 1e-3, burn's defaults otherwise).
    model = DtUnet().train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-5, weight_decay=1e-4)
    x = torch.rand(4, 1, 256, 256)
    y = (torch.rand(4, 1, 256, 256) < 0.05).float()
    times = []
    for i in range(min(args.repeats, 5) + 1):
        start = time.perf_counter()
        p = torch.sigmoid(model(x))
        loss = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i > 0:  # step 0 warms up
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"pytorch {torch.__version__} eager, {args.threads} threads: reference DT-UNet training "
          f"step 4x1x256x256 Dice+AdamW median {median:.3f} s over {len(times)} "
          f"({3 * 4 * gflop / 4 / median:.1f} GFLOP/s)")
    return 0


def cmd_train_time(args) -> int:
    torch.set_num_threads(args.threads)
    model = DtUnet().train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-5, weight_decay=1e-4)
    shape = (args.batch, 1, args.side, args.side)
    times = []
    for i in range(args.steps + 1):
        x = torch.rand(shape)
        y = (torch.rand(shape) < 0.05).float()
        start = time.perf_counter()
        loss = soft_dice(model(x), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i > 0:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    total = sum(times)
    print(f"pytorch {torch.__version__} eager, {args.threads} threads: reference DT-UNet "
          f"Dice+AdamW step {args.batch}x1x{args.side}x{args.side}: median {median:.3f} s, "
          f"{args.batch * len(times) / total:.2f} patches/s over {len(times)} steps")
    return 0


def grid_origins(length: int, size: int, stride: int) -> list[int]:
    """bacseg's PatchGrid origins along one axis: every ``stride``, the last one at the edge."""
    if length <= size:
        return [0]
    last = length - size
    return list(range(0, last, stride)) + [last]


def cmd_predict_time(args) -> int:
    import cv2  # only this command needs it

    torch.set_num_threads(args.threads)
    model = DtUnet()
    if args.write_weights:
        save_file(deterministic_state(model), args.weights)
    state = load_file(args.weights)
    model.load_state_dict(state, strict=False)
    model.eval()
    image = cv2.imread(args.image, cv2.IMREAD_UNCHANGED)
    breast = cv2.imread(args.breast, cv2.IMREAD_UNCHANGED)
    if image is None or breast is None:
        print(f"cannot read {args.image} or {args.breast}", file=sys.stderr)
        return 2
    image = image.astype(np.float32) / (65535.0 if image.dtype == np.uint16 else 255.0)
    breast = breast > 0
    h, w = image.shape
    n = args.patch
    patches = []
    for y in grid_origins(h, n, args.stride):
        for x in grid_origins(w, n, args.stride):
            vh, vw = min(n, h - y), min(n, w - x)
            if breast[y:y + vh, x:x + vw].sum() >= args.min_breast_fraction * vh * vw:
                tile = np.zeros((n, n), np.float32)
                tile[:vh, :vw] = image[y:y + vh, x:x + vw]
                patches.append(tile)
    total = len(grid_origins(h, n, args.stride)) * len(grid_origins(w, n, args.stride))
    batches = [np.stack(patches[i:i + args.batch]) for i in range(0, len(patches), args.batch)]
    with torch.no_grad():
        model(torch.from_numpy(batches[0][:, None]))  # warm-up
        start = time.perf_counter()
        for b in batches:
            torch.sigmoid(model(torch.from_numpy(b[:, None])))
        forward = time.perf_counter() - start
    print(f"pytorch {torch.__version__} eager, {args.threads} threads: reference DT-UNet over "
          f"{len(patches)} of {total} {n}x{n} patches (stride {args.stride}), batch {args.batch}: "
          f"forward {forward:.1f} s ({forward / len(patches):.3f} s per patch, "
          f"{8.900313088 * len(patches) / forward:.1f} GFLOP/s)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fixtures", help="write the parity fixtures").set_defaults(run=cmd_fixtures)
    sub.add_parser("train-step", help="write the training-step fixtures").set_defaults(
        run=cmd_train_step)
    rt = sub.add_parser("roundtrip", help="load bacseg-saved weights in PyTorch and compare")
    rt.add_argument("dir")
    rt.set_defaults(run=cmd_roundtrip)
    bench = sub.add_parser("bench", help="time the reference DT-UNet forward and training step")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--repeats", type=int, default=10)
    bench.add_argument("--no-train", action="store_true", help="time the forward pass only")
    bench.set_defaults(run=cmd_bench)
    tt = sub.add_parser("train-time", help="time the DT-UNet training loop at any shape")
    tt.add_argument("--side", type=int, default=256)
    tt.add_argument("--batch", type=int, default=4)
    tt.add_argument("--steps", type=int, default=10)
    tt.add_argument("--threads", type=int, default=2)
    tt.set_defaults(run=cmd_train_time)
    pt = sub.add_parser("predict-time", help="time DT-UNet over one mammogram's in-breast patches")
    pt.add_argument("--image", required=True)
    pt.add_argument("--breast", required=True)
    pt.add_argument("--weights", required=True)
    pt.add_argument("--write-weights", action="store_true")
    pt.add_argument("--patch", type=int, default=512)
    pt.add_argument("--stride", type=int, default=256)
    pt.add_argument("--min-breast-fraction", type=float, default=0.05)
    pt.add_argument("--batch", type=int, default=4)
    pt.add_argument("--threads", type=int, default=2)
    pt.set_defaults(run=cmd_predict_time)
    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
