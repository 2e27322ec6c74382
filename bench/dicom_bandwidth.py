"""Bytes over the wire for a whole CT study: uncompressed vs each lossless transfer syntax, and
what a rendered preview costs (the slow-link case of issue 6: rural clinics).

For a synthetic 300-slice 512x512 16-bit CT (bench/_ct_series.py: a body phantom with
correlated noise, not zeros), every slice is transcoded by the archive's own transcoder
(``expediente.dicom.transcode``, the code WADO-RS calls when a viewer asks for a syntax) to
JPEG 2000 lossless, JPEG-LS lossless and RLE lossless. Reported per syntax: the Part-10 bytes of
the whole study, the bytes of a WADO-RS multipart/related response carrying them (framing
included), the ratio to uncompressed, the encode time per slice (median/mean/p95 ms, one
process, one thread) and the decode time per slice on a sample, and the seconds the study takes
at 2, 10 and 100 Mbit/s. Every encoded slice of the sample is decoded and compared with the
original pixels (``lossless_verified``). Also the rendered previews: the middle slice as a JPEG
at full size (quality 90) and as a 128-pixel thumbnail, and the whole study as JPEG previews.

Run (from the repository root; JSON on stdout, progress on stderr):

    .venv/bin/python bench/dicom_bandwidth.py                 # 300 slices
    .venv/bin/python bench/dicom_bandwidth.py --slices 30     # a quick check
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ct_series import ct_series  # noqa: E402

from expediente.dicom.render import render, thumbnail  # noqa: E402
from expediente.dicom.transcode import transcode  # noqa: E402

SYNTAXES = {
    "jpeg2000_lossless": "1.2.840.10008.1.2.4.90",
    "jpegls_lossless": "1.2.840.10008.1.2.4.80",
    "rle_lossless": "1.2.840.10008.1.2.5",
}
EXPLICIT = "1.2.840.10008.1.2.1"
LINKS_MBPS = (2, 10, 100)
BOUNDARY = "0" * 32  # a WADO-RS response's boundary is this long (a random hex token)


def multipart_bytes(sizes: list[int], transfer_syntax: str) -> int:
    """Size of a multipart/related; type="application/dicom" body carrying files of ``sizes``."""
    head = len(f"--{BOUNDARY}\r\nContent-Type: application/dicom; transfer-syntax={transfer_syntax}\r\n\r\n".encode())
    return sum(head + size + 2 for size in sizes) + len(f"--{BOUNDARY}--\r\n")


def _ms(values: list[float]) -> dict:
    values = sorted(values)
    return {
        "median": round(statistics.median(values) * 1000, 2),
        "mean": round(statistics.fmean(values) * 1000, 2),
        "p95": round(values[min(len(values) - 1, int(len(values) * 0.95))] * 1000, 2),
    }


def _pixels(data: bytes) -> np.ndarray:
    return pydicom.dcmread(io.BytesIO(data)).pixel_array


def _links(total: int) -> dict:
    return {f"{mbps}_mbps": round(total * 8 / (mbps * 1e6), 1) for mbps in LINKS_MBPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify", type=int, default=20, help="slices decoded and compared per syntax")
    args = parser.parse_args()

    print(f"generating {args.slices} slices ...", file=sys.stderr)
    started = time.perf_counter()
    files = ct_series(n=args.slices, seed=args.seed)
    generated = time.perf_counter() - started
    sizes = [len(f) for f in files]
    uncompressed = sum(sizes)
    pixel_bytes = 512 * 512 * 2 * len(files)
    sample = sorted({round(i * (len(files) - 1) / max(args.verify - 1, 1)) for i in range(min(args.verify, len(files)))})

    results = {}
    for name, uid in SYNTAXES.items():
        print(f"{name}: encoding {len(files)} slices ...", file=sys.stderr)
        encoded, times = [], []
        for data in files:
            t0 = time.perf_counter()
            encoded.append(transcode(data, uid))
            times.append(time.perf_counter() - t0)
        decode_times, verified = [], True
        for i in sample:
            t0 = time.perf_counter()
            arr = _pixels(encoded[i])
            decode_times.append(time.perf_counter() - t0)
            verified &= bool(np.array_equal(arr, _pixels(files[i])))
        total = sum(len(e) for e in encoded)
        results[name] = {
            "transfer_syntax": uid,
            "study_bytes": total,
            "wado_rs_response_bytes": multipart_bytes([len(e) for e in encoded], uid),
            "ratio": round(uncompressed / total, 3),
            "bytes_per_slice_mean": round(total / len(encoded)),
            "encode_ms_per_slice": _ms(times),
            "encode_s_whole_study": round(sum(times), 2),
            "decode_ms_per_slice": _ms(decode_times),
            "lossless_verified": verified,
            "verified_slices": len(sample),
            "seconds_over_link": _links(total),
        }

    print("rendering previews ...", file=sys.stderr)
    middle = files[len(files) // 2]
    t0 = time.perf_counter()
    preview = render(middle, content_type="image/jpeg", quality=90)
    render_s = time.perf_counter() - t0
    thumb = thumbnail(middle, size=128)
    png = render(middle, content_type="image/png")
    render_times, previews = [], 0
    for data in files:
        t0 = time.perf_counter()
        previews += len(render(data, content_type="image/jpeg", quality=90))
        render_times.append(time.perf_counter() - t0)

    out = {
        "bench": "dicom_bandwidth",
        "study": {
            "slices": len(files),
            "rows": 512,
            "columns": 512,
            "bits_allocated": 16,
            "bits_stored": 12,
            "content": "synthetic body phantom with correlated noise (bench/_ct_series.py)",
            "generate_s": round(generated, 2),
        },
        "uncompressed": {
            "transfer_syntax": EXPLICIT,
            "study_bytes": uncompressed,
            "pixel_bytes": pixel_bytes,
            "wado_rs_response_bytes": multipart_bytes(sizes, EXPLICIT),
            "ratio": 1.0,
            "seconds_over_link": _links(uncompressed),
        },
        "lossless": results,
        "rendered": {
            "middle_slice_jpeg_q90_bytes": len(preview),
            "middle_slice_png_bytes": len(png),
            "thumbnail_128_jpeg_bytes": len(thumb),
            "render_ms_middle_slice": round(render_s * 1000, 2),
            "study_jpeg_previews_bytes": previews,
            "study_jpeg_previews_ratio": round(uncompressed / previews, 2),
            "render_ms_per_slice": _ms(render_times),
            "seconds_over_link": _links(previews),
        },
        "environment": {
            "python": sys.version.split()[0],
            "pydicom": pydicom.__version__,
            "numpy": np.__version__,
            "note": "one process, one thread; machine shared with other work, so times are indicative",
        },
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
