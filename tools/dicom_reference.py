#!/usr/bin/env python3
"""Independent decoding of the shared real DICOM files with pydicom, for bacseg's tests.

Writes crates/bacseg-core/tests/fixtures/dicom_reference.json: for each single-frame grey
file in DATA/dicom, the image size and a digest of the pixel values after the Modality LUT
(pydicom's apply_modality_lut) and, for MONOCHROME1 or Presentation LUT Shape INVERSE, the
inversion lo + hi - v over the range of possible values (the convention bacseg documents).
The Rust test `real_dicom` decodes the same files and compares.

Needs: pip install numpy pydicom pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg
Usage: python3 tools/dicom_reference.py ../shared/data
Not run by CI.
"""
import hashlib
import json
import pathlib
import sys

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

data = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
out = {}
for f in sorted((data / "dicom").glob("*.dcm")):
    try:
        ds = pydicom.dcmread(f)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames != 1 or ds.SamplesPerPixel != 1:
            out[f.name] = {"skip": f"{frames} frames, {ds.SamplesPerPixel} samples"}
            continue
        raw = ds.pixel_array
        v = apply_modality_lut(raw, ds).astype(np.float64)
        bits = int(ds.BitsStored)
        signed = int(ds.PixelRepresentation) == 1
        if "ModalityLUTSequence" in ds:
            lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        else:
            smin, smax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            icpt = float(getattr(ds, "RescaleIntercept", 0) or 0)
            a, b = smin * slope + icpt, smax * slope + icpt
            lo, hi = min(a, b), max(a, b)
        pls = str(getattr(ds, "PresentationLUTShape", "")).upper()
        if ds.PhotometricInterpretation == "MONOCHROME1" or pls == "INVERSE":
            v = lo + hi - v
        v32 = v.astype(np.float32)
        out[f.name] = {
            "width": int(ds.Columns),
            "height": int(ds.Rows),
            "sum": float(v.sum()),
            "min": float(v.min()),
            "max": float(v.max()),
            "sha256_f32le": hashlib.sha256(v32.astype("<f4").tobytes()).hexdigest(),
        }
    except Exception as e:  # a broken file: record that pydicom could not read it either
        out[f.name] = {"error": f"{type(e).__name__}: {e}"}
dest = pathlib.Path(__file__).resolve().parent.parent / "crates/bacseg-core/tests/fixtures/dicom_reference.json"
dest.parent.mkdir(parents=True, exist_ok=True)
dest.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
print(json.dumps(out, indent=2))
