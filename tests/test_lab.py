"""minilib.lab: notebooks served with the minilib kernel's language_info (Lab then opens them
unmodified; tests/notebooks/test_browser.py checks that in a browser), and its installation."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minilib import lab

ROOT = Path(__file__).resolve().parents[1]


def _model(kernel: str, info: dict | None = None, type_: str = "notebook") -> dict:
    meta = {"kernelspec": {"name": kernel, "display_name": kernel, "language": "python"},
            "language_info": info or {"name": "python"}}
    return {"type": type_, "content": {"metadata": meta, "cells": [], "nbformat": 4, "nbformat_minor": 5}}


def test_the_kernel_info_is_this_interpreters_ipykernel_report():
    from ipykernel.ipkernel import IPythonKernel
    info = lab.kernel_language_info()
    assert info == IPythonKernel.language_info   # what the kernel sends Lab in kernel_info_reply
    assert info["version"] == sys.version.split()[0]


def test_a_minilib_notebook_gets_the_kernel_language_info_others_pass_unchanged():
    served = lab.with_kernel_language_info(_model("minilib"))
    assert served["content"]["metadata"]["language_info"] == lab.kernel_language_info()
    other = _model("python3")
    assert lab.with_kernel_language_info(json.loads(json.dumps(other))) == other
    text = {"type": "file", "content": "x = 1\n"}
    assert lab.with_kernel_language_info(dict(text)) == text
    listing = {"type": "notebook", "content": None}
    assert lab.with_kernel_language_info(dict(listing)) == listing


def test_contents_manager_serves_the_committed_notebook_with_it_and_leaves_the_file(tmp_path):
    name = "BERT_anatomy"
    for ext in (".ipynb", ".py"):
        (tmp_path / f"{name}{ext}").write_bytes((ROOT / "notebooks" / f"{name}{ext}").read_bytes())
    before = (tmp_path / f"{name}.ipynb").read_bytes()
    cm = lab.ContentsManager(root_dir=str(tmp_path))
    model = asyncio.run(cm.get(f"{name}.ipynb"))
    assert model["content"]["metadata"]["language_info"] == lab.kernel_language_info()
    assert model["content"]["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"  # still jupytext's
    assert (tmp_path / f"{name}.ipynb").read_bytes() == before                          # nothing written
    assert asyncio.run(cm.get(f"{name}.ipynb", content=False))["content"] is None


def test_a_kernelspec_whose_interpreter_is_gone_leaves_notebooks_alone(monkeypatch, tmp_path):
    from jupyter_client import kernelspec
    spec = kernelspec.KernelSpec(argv=[str(tmp_path / "gone" / "python"), "-m", "ipykernel_launcher"])
    monkeypatch.setattr(kernelspec.KernelSpecManager, "get_kernel_spec", lambda self, name: spec)
    lab.kernel_language_info.cache_clear()
    try:
        assert lab.kernel_language_info() is None
        model = _model("minilib")
        assert lab.with_kernel_language_info(model)["content"]["metadata"]["language_info"] == {"name": "python"}
    finally:
        lab.kernel_language_info.cache_clear()


def test_install_sets_the_contents_manager_and_keeps_other_settings(tmp_path):
    path = tmp_path / lab.CONFIG
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"ServerApp": {"port": 9999}, "LabApp": {"news_url": ""}}))
    assert lab.install(tmp_path) == path
    lab.install(tmp_path)  # idempotent
    assert json.loads(path.read_text()) == {
        "ServerApp": {"port": 9999, "contents_manager_class": "minilib.lab.ContentsManager"},
        "LabApp": {"news_url": ""}}
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("text,msg", [("{not json", "is not valid JSON"), ("[1, 2]", "holds a list")])
def test_install_refuses_a_broken_config_and_leaves_it(tmp_path, text, msg):
    path = tmp_path / lab.CONFIG
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=msg):
        lab.install(tmp_path)
    assert path.read_text() == text


def test_the_venvs_jupyter_server_uses_it():
    """make setup ran `python -m minilib.lab install`: the server of this environment is configured so."""
    out = subprocess.run([sys.executable, "-c",
                          "from jupyter_server.serverapp import ServerApp; a = ServerApp(); a.load_config_file(); "
                          "print(a.config.ServerApp.contents_manager_class)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "minilib.lab.ContentsManager", \
        "run `make setup` (or .venv/bin/python -m minilib.lab install)"
