"""Cost of verifying the cache at every use: warm check (stat only) vs first check after a change
(hash), against loading the model itself.

    python benchmarks/bench_assets.py [--name smollm2-135m-hf] [--repeats 5]

Reads the cache only: the hash is taken with ``record=False`` (nothing is written), the warm check is
what every ``load`` does once the folder's record is in place.  Prints medians over repeats (these
machines are noisy) and the ratios to ``load("smollm2-135m")``.
"""

import argparse
import statistics
import time

import torch

from minilib import assets
from minilib.models import load


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="smollm2-135m-hf", help="a derived artefact (or an asset) in the cache")
    ap.add_argument("--model", default="smollm2-135m", help="the model whose load time is the reference")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load(args.model, device="cpu")  # builds/verifies once, so that the record is in place
    kind, d, expect = assets._folder(args.name)
    res = assets.check_folder(d, full=True, record=False)
    assert res.reason is None, res.reason
    mb = res.hashed_bytes / 1e6
    full = timed(lambda: assets.check_folder(d, full=True, record=False), args.repeats)
    warm_res = assets.check_folder(d, expect=expect)
    warm = timed(lambda: assets.check_folder(d, expect=expect), args.repeats * 20)
    t_load = timed(lambda: load(args.model, device="cpu"), args.repeats)
    print(f"{kind} {args.name}: {res.files} files, {mb:.1f} MB")
    print(f"  warm check (stat only, {warm_res.hashed} files hashed):  {warm * 1e3:8.2f} ms   "
          f"{warm / t_load:.2e} x load")
    print(f"  first check after a change (hash all):  {full * 1e3:8.1f} ms   {full / t_load:.2f} x load   "
          f"({mb / full / 1e3:.2f} GB/s)")
    print(f"  load({args.model!r}) (median of {args.repeats}):  {t_load * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
