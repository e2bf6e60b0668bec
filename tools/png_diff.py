#!/usr/bin/env python3
"""Largest difference between two 8- or 16-bit grey PNGs of the same size, in grey levels.

Usage: tools/png_diff.py A.png B.png [MAX]
Prints the size, the largest and the mean absolute difference; exits 1 when the sizes differ
or the largest difference is over MAX (default 0). Standard library only (zlib), so that CI
needs no imaging package; reads the non-interlaced grey PNGs bacseg writes (any filter).
"""

import struct
import sys
import zlib


def read_grey(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if colour != 0 or depth not in (8, 16) or interlace != 0:
        sys.exit(f"{path}: not a non-interlaced 8/16-bit grey PNG")
    bpp = depth // 8
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    if bpp == 1:
        values = [v for row in rows for v in row]
    else:
        values = [v for row in rows for v in struct.unpack(f">{width}H", bytes(row))]
    return width, height, values


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    limit = int(sys.argv[3]) if len(sys.argv) == 4 else 0
    wa, ha, a = read_grey(sys.argv[1])
    wb, hb, b = read_grey(sys.argv[2])
    if (wa, ha) != (wb, hb):
        print(f"sizes differ: {wa}x{ha} and {wb}x{hb}")
        return 1
    diffs = [abs(x - y) for x, y in zip(a, b)]
    largest, mean = max(diffs), sum(diffs) / len(diffs)
    print(f"{wa}x{ha}: largest difference {largest}, mean {mean:.4f} (grey levels; allowed {limit})")
    return 0 if largest <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
