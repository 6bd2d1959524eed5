"""JupyterLab opens the suite's notebooks unmodified.

When a notebook's kernel starts, Lab writes the kernel's ``language_info`` (Python version, lexer,
mimetype...) into the notebook's metadata; the committed notebooks carry only ``{"name": "python"}``
(the Python patch version differs between machines, so it is not committed), so every notebook showed
as "modified" right after opening, and closing it asked to save.  ``ContentsManager`` is jupytext's
contents manager (the ``.ipynb``/``py:percent`` pairing) that, for a notebook whose kernelspec is this
environment's ``minilib`` kernel, fills in the ``language_info`` that kernel will report before Lab
sees the notebook: Lab then finds nothing to change.  Notebooks for other kernels pass unchanged, and
nothing is written to disk on opening.

``make setup`` enables it for the virtual environment's Jupyter server::

    .venv/bin/python -m minilib.lab install   # sets it in <venv>/etc/jupyter/jupyter_server_config.json

Why not a library: Lab has no setting to skip this metadata update, and jupytext's contents manager
(used here) keeps the notebook's metadata as the file has it.
"""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from pathlib import Path

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

from minilib.io import write_text

KERNEL = "minilib"  # the kernelspec `make setup` installs (ipykernel install --sys-prefix --name minilib)
CONFIG = Path("etc") / "jupyter" / "jupyter_server_config.json"  # (the server reads *.d/ only for extensions)
SETTING = {"ServerApp": {"contents_manager_class": "minilib.lab.ContentsManager"}}


@lru_cache(maxsize=1)
def kernel_language_info() -> dict | None:
    """The ``language_info`` the ``minilib`` kernel reports, or None when that kernel is not this
    interpreter (then what it reports is not known here, and notebooks are left as they are)."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        argv = KernelSpecManager().get_kernel_spec(KERNEL).argv
    except NoSuchKernel:
        return None
    if not argv or not os.path.isabs(argv[0]) or not os.path.exists(argv[0]) \
            or not os.path.samefile(argv[0], sys.executable):  # a stale kernelspec: leave notebooks alone
        return None
    return json.loads(json.dumps(IPythonKernel.language_info))


def with_kernel_language_info(model: dict) -> dict:
    """``model`` (a contents-API model) with the kernel's ``language_info`` set when it is a notebook
    with content whose kernelspec is the ``minilib`` kernel."""
    nb = model.get("content") if model.get("type") == "notebook" else None
    if not isinstance(nb, dict):
        return model
    meta = nb.setdefault("metadata", {})
    info = kernel_language_info()
    if info is not None and meta.get("kernelspec", {}).get("name") == KERNEL:
        meta["language_info"] = json.loads(json.dumps(info))  # each model its own copy of the cached dict
    return model


class ContentsManager(build_async_jupytext_contents_manager_class(AsyncLargeFileManager)):
    """Jupytext's contents manager, serving ``minilib`` notebooks with their kernel's ``language_info``."""

    async def get(self, path, content=True, type=None, format=None, **kwargs):  # noqa: A002 (server API)
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        return with_kernel_language_info(model) if content else model


def install(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Enable ``ContentsManager`` for the Jupyter server of the environment at ``prefix``: set in that
    environment's ``jupyter_server_config.json``, other settings there kept."""
    path = Path(prefix) / CONFIG
    config = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); fix or remove it, then rerun") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} holds a {type(config).__name__}, not a JSON object of settings")
    config.setdefault("ServerApp", {}).update(SETTING["ServerApp"])
    return write_text(path, json.dumps(config, indent=2) + "\n")  # atomic: a server never reads half of it


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m minilib.lab", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["install"], help="install: enable the contents manager in this venv")
    ap.add_argument("--prefix", default=sys.prefix, help="the environment's prefix (default: this interpreter's)")
    args = ap.parse_args(argv)
    print(install(args.prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
