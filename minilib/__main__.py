"""``python -m minilib prepare``: fetch every default asset and build the derived artefacts the
defaults need (the GPT-2 tokenizer folder, the dequantised SmolLM2), so that later runs start at once."""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib")
    ap.add_argument("cmd", choices=["prepare"])
    ap.parse_args(argv)
    from minilib import assets
    from minilib.models import load
    from minilib.models.tokenizers import gpt2_tokenizer
    for n in assets.DEFAULT_ASSETS:
        print(f"{n}: {assets.fetch(n)}")
    gpt2_tokenizer()
    load("smollm2-135m", device="cpu")
    print("derived artefacts ready")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
