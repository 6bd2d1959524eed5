"""Write environment.yml from requirements.lock (the one list of pins), so the two never disagree.

    python -m tools.sync_env          # rewrite environment.yml
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = """# Conda users: `conda env create -f environment.yml` gives the same pins as requirements.lock.
# Generated from requirements.lock by `python -m tools.sync_env`; do not edit by hand.
name: minilib
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def pins() -> list[str]:
    return [ln.strip() for ln in (ROOT / "requirements.lock").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def render() -> str:
    return HEADER + "".join(f"      - {p}\n" for p in pins()) + "      - -e .\n"


if __name__ == "__main__":
    (ROOT / "environment.yml").write_text(render())
    print(f"environment.yml: {len(pins())} pins")
