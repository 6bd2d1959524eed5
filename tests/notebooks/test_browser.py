"""JupyterLab for real: a Lab server on localhost (token auth), a notebook opened in headless Chromium,
run through the Run menu on its test parameters; its figure cells show images, no cell shows an error.
A screenshot is kept as a test artefact: build/artefacts/jupyterlab_<notebook>.png.

Needs Debian's ``chromium`` and ``chromium-driver`` (``tools/install_browser.sh``, run by ``make test``);
skipped with a message where they are not installed.  The jupytext pairing (both files of a pair open
as the same notebook, and saving from Lab rewrites the ``py:percent`` twin) is checked on the same
server without a browser.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from minilib.runner import prepare_tests

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "GPT2_anatomy"               # several figures; its test profile runs tiny-gpt2 on a few SST-2 items
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTEFACTS = ROOT / "build" / "artefacts"
RUN_TIMEOUT_S = 300                     # a ceiling for shared machines: the run took 40-90 s at load 8-14 on 2 cores
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800"]
KERNEL_READY = "Python (minilib) | Idle"  # the status bar: the notebook's kernelspec, started and idle
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\w+(Error|Exception)\b", re.MULTILINE)

pytestmark = pytest.mark.integration     # the notebook reads the embedded SST-2 set


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a fresh root: the notebook with its test parameters
    injected (as nbval gets it), and ``pair/``, a copy of the committed .ipynb/.py pair.  User settings,
    workspaces and runtime files go to temporary folders.  Yields ``(base_url, token, root, server log)``."""
    tmp = tmp_path_factory.mktemp("lab")
    root, params = tmp / "root", tmp / "params"
    params.mkdir()
    spec = yaml.safe_load((ROOT / "tests" / "notebooks" / f"{NOTEBOOK}.yaml").read_text()) or {}
    spec.update(results_path=str(tmp / "out" / "results.json"), figures_dir=str(tmp / "out" / "figures"),
                anatomy_dir=str(tmp / "out" / "anatomy"))  # computed here, not taken from the cache
    (params / f"{NOTEBOOK}.yaml").write_text(yaml.safe_dump(spec))
    prepare_tests(root, params)
    pair = root / "pair"  # the committed pair as it is; the .py written last, as after `make notebooks`
    pair.mkdir()
    for ext in (".ipynb", ".py"):
        shutil.copyfile(ROOT / "notebooks" / f"{NOTEBOOK}{ext}", pair / f"{NOTEBOOK}{ext}")
    opened = root / "opened"  # every committed pair, opened untouched by test_opening_leaves_the_notebook_unmodified
    opened.mkdir()
    for f in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for src in (f, f.with_suffix(".py")):
            shutil.copyfile(src, opened / src.name)
    settings = tmp / "settings"
    for plugin, values in {
        # every cell stays in the DOM (no virtual scrolling), no news/update toasts over the page, and no
        # autosave (which would also write the jupytext twin into the root while the notebook runs)
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTER_PLATFORM_DIRS": "1"}
    log = (tmp / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
         "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--ServerApp.open_browser=False"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{(tmp / 'lab.log').read_text()[-3000:]}")
            try:
                if _get(f"{base}/api/status?token={token}", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within 60 s:\n{(tmp / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, root, tmp / "lab.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _put(url: str, token: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


def _cells(nb: dict) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"]).strip()) for c in nb["cells"]]


def test_lab_serves_the_kernel_and_the_jupytext_pair(lab):
    """The ``minilib`` kernel is offered; both files of a pair open as the same notebook (jupytext's
    contents manager), the .py twin included; saving the .ipynb from Lab rewrites its .py twin."""
    base, token, root, _ = lab
    specs = json.loads(_get(f"{base}/api/kernelspecs?token={token}")[1])
    assert "minilib" in specs["kernelspecs"]
    api = f"{base}/api/contents/pair/{NOTEBOOK}"
    ipynb = json.loads(_get(f"{api}.ipynb?token={token}")[1])
    twin = json.loads(_get(f"{api}.py?type=notebook&token={token}")[1])
    assert ipynb["type"] == twin["type"] == "notebook"
    assert ipynb["content"]["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"
    assert _cells(twin["content"]) == _cells(ipynb["content"])
    assert sum("parameters" in c["metadata"].get("tags", []) for c in twin["content"]["cells"]) == 1
    assert twin["content"]["metadata"]["kernelspec"]["name"] == "minilib"
    # a cell added in Lab and saved lands in the .py twin, which stays a py:percent script
    nb = ipynb["content"]
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "Saved from JupyterLab."})
    status, _ = _put(f"{api}.ipynb", token, {"type": "notebook", "format": "json", "content": nb})
    assert status == 200
    py = (root / "pair" / f"{NOTEBOOK}.py").read_text()
    assert py.rstrip().endswith("# %% [markdown]\n# Saved from JupyterLab.")
    assert "# %% tags=[\"parameters\"]" in py


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.skip(f"no browser for the JupyterLab test: {', '.join(missing)} not installed; "
                    "run `bash tools/install_browser.sh` as root (make test does), which needs apt-get")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = Path(tempfile.mkdtemp(prefix="minilib-chromium-"))
    for a in CHROMIUM_ARGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# state of the notebook panel, read in the page: one entry per code cell
CELLS_JS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
return {
  kernel: status ? status.getAttribute('data-status') : null,
  statusbar: Array.from(document.querySelectorAll('.jp-StatusBar-TextItem')).map(e => e.textContent.trim()),
  cells: Array.from(panel.querySelectorAll('.jp-Cell.jp-CodeCell')).map(c => ({
    prompt: (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '',
    source: (c.querySelector('.cm-content') || {}).textContent || '',
    images: Array.from(c.querySelectorAll('.jp-OutputArea-output img'))
                 .filter(i => i.complete && i.naturalWidth > 0).length,
    stderr: Array.from(c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
                 .map(o => o.textContent),
  })),
};
"""


COMMITTED = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
DIRTY_TAB = ".lm-TabBar-tab.jp-mod-dirty"  # JupyterLab marks the tab of a modified document so


@pytest.mark.parametrize("name", COMMITTED)
def test_opening_leaves_the_notebook_unmodified(lab, browser, name):
    """A committed notebook opened in Lab is not "modified" once its kernel is up: the file already has
    what Lab and the kernel would write into it (metadata, cell ids), so closing it asks nothing."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    base, token, root, _ = lab
    browser.get(f"{base}/lab/workspaces/open-{name}/tree/opened/{name}.ipynb?token={token}")
    WebDriverWait(browser, 60).until(lambda d: (s := d.execute_script(CELLS_JS)) and s["cells"]
                                     and s["kernel"] == "idle" and KERNEL_READY in s["statusbar"])
    time.sleep(2)  # what Lab writes on kernel start-up comes just after it reports idle
    dirty = [t.text for t in browser.find_elements(By.CSS_SELECTOR, DIRTY_TAB)]
    assert not dirty, f"{name}.ipynb shows as modified right after opening: tabs {dirty}"


def test_notebook_runs_in_jupyterlab_with_inline_figures(lab, browser):
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    base, token, root, log = lab
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / f"jupyterlab_{NOTEBOOK}.png"
    t0 = time.monotonic()
    state = None
    try:
        browser.get(f"{base}/lab/tree/{NOTEBOOK}.ipynb?token={token}")
        wait = WebDriverWait(browser, 60)
        # the kernel has started and is idle (the status bar says so; the toolbar indicator alone reads
        # "idle" before a kernel exists, and cells run then are silently skipped)
        wait.until(lambda d: (s := d.execute_script(CELLS_JS)) and s["cells"] and s["kernel"] == "idle"
                   and KERNEL_READY in s["statusbar"])
        # Run > Run All Cells, as a user does
        run_menu = wait.until(EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//div[normalize-space(text())='Run']]")))
        run_menu.click()
        run_all = ("//ul[contains(@class,'lm-Menu-content')]/li[contains(@class,'lm-Menu-item')]"
                   "[.//div[contains(@class,'lm-Menu-itemLabel')][normalize-space(.)='Run All Cells']]")
        wait.until(EC.element_to_be_clickable((By.XPATH, run_all))).click()

        def finished(d):
            s = d.execute_script(CELLS_JS)
            done = all(re.fullmatch(r"\[\d+\]:", c["prompt"].strip()) for c in s["cells"])
            failed = any(ERROR_TEXT.search(t) for c in s["cells"] for t in c["stderr"])
            return s if (done and s["kernel"] == "idle") or failed else False
        try:
            state = WebDriverWait(browser, RUN_TIMEOUT_S, poll_frequency=1).until(finished)
        except TimeoutException:
            s = browser.execute_script(CELLS_JS) or {}
            pytest.fail(f"the notebook did not finish within {RUN_TIMEOUT_S} s in JupyterLab (kernel "
                        f"{s.get('kernel')}, prompts {[c['prompt'] for c in s.get('cells', [])]}; screenshot: {shot}); "
                        f"server log:\n{log.read_text()[-3000:]}")
    finally:  # the artefact shows the first figure (or the first error), whatever happened
        try:
            browser.execute_script(
                "const e = document.querySelector('.jp-OutputArea-output img') || document.querySelector("
                "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]');"
                "if (e) e.closest('.jp-Cell').scrollIntoView({block: 'start'});")
            time.sleep(0.5)
            browser.save_screenshot(str(shot))
        except WebDriverException as e:  # keep the test's own failure, not this one
            print(f"[browser] no screenshot: {e.msg}")
    elapsed = time.monotonic() - t0
    cells = state["cells"]
    errors = [(i, t[:500]) for i, c in enumerate(cells) for t in c["stderr"] if ERROR_TEXT.search(t)]
    assert not errors, f"cells show errors (screenshot: {shot}): {errors}"
    unrun = [i for i, c in enumerate(cells) if not re.fullmatch(r"\[\d+\]:", c["prompt"].strip())]
    assert not unrun, f"code cells {unrun} did not run (screenshot: {shot})"
    figure_cells = [c for c in cells if "save_all(" in c["source"] or "save_figure(" in c["source"]]
    assert figure_cells, "no figure cell found in the notebook"
    assert all(c["images"] >= 1 for c in figure_cells), f"a figure cell shows no image (screenshot: {shot})"
    # every figure saved (PDF + PNG) is shown exactly once, and only figure cells show images
    saved = sorted((root.parent / "out" / "figures").glob("*.png"))
    assert saved and all(p.with_suffix(".pdf").is_file() for p in saved)
    assert sum(c["images"] for c in figure_cells) == len(saved), \
        f"{sum(c['images'] for c in figure_cells)} images shown for {len(saved)} figures saved (screenshot: {shot})"
    assert sum(c["images"] for c in cells) == sum(c["images"] for c in figure_cells)
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG")
    print(f"[browser] {NOTEBOOK} ran in JupyterLab in {elapsed:.1f} s; screenshot {shot}")
