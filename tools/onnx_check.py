#!/usr/bin/env python3
"""Check a `bacseg export` ONNX model in ONNX Runtime, and time it.

    python tools/onnx_check.py MODEL.onnx --reference DIR [--tolerance 1e-4]
    python tools/onnx_check.py MODEL.onnx --bench [--side 512 --batch 1 --repeats 5]

`--reference DIR` runs DIR/input.npy (written by `bacseg export --reference-io DIR`) and
compares with DIR/output.npy (burn's logits): the largest absolute difference must be within
the tolerance. `--bench` prints the median forward time (after one warm-up) on a random input,
as `onnxruntime forward BxCxSxS: median T s`. Needs: onnx, onnxruntime, numpy.
"""
import argparse
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--reference")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--side", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()

    model = onnx.load(a.model)
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}
    print(f"{a.model}: ONNX IR {model.ir_version}, opset {opset.get('', '?')}, "
          f"{len(model.graph.node)} nodes, checker passed")
    session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    channels = session.get_inputs()[0].shape[1]
    status = 0
    if a.reference:
        x = np.load(f"{a.reference}/input.npy")
        want = np.load(f"{a.reference}/output.npy")
        got = session.run(None, {name: x})[0]
        if got.shape != want.shape:
            print(f"shape mismatch: onnxruntime {got.shape}, burn {want.shape}")
            return 1
        diff = float(np.max(np.abs(got - want)))
        ok = diff <= a.tolerance
        print(f"onnxruntime vs burn on {x.shape}: max |difference| {diff:.3g} "
              f"(tolerance {a.tolerance:g}, output range [{want.min():.3g}, {want.max():.3g}]): "
              f"{'OK' if ok else 'FAIL'}")
        status = 0 if ok else 1
    if a.bench:
        x = np.random.default_rng(0).random((a.batch, channels, a.side, a.side), dtype=np.float32)
        session.run(None, {name: x})
        times = []
        for _ in range(max(1, a.repeats)):
            t = time.perf_counter()
            session.run(None, {name: x})
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"onnxruntime forward {a.batch}x{channels}x{a.side}x{a.side}: "
              f"median {times[len(times) // 2]:.4f} s ({ort.__version__}, {ort.get_device()})")
    return status


if __name__ == "__main__":
    sys.exit(main())
