"""Every fenced block of README.md and docs/*.md runs: a documented command that fails, fails here.

Each block is one test case (id ``file:line``), looked up in ``BLOCKS`` by a stable key: the file and the
block's first command (shell: its first command with comments stripped; Python and text: its first line).
A block that is in no entry fails (``test_every_block_is_classified``), so the docs cannot grow an untested
command; an entry whose block is gone fails too (``test_no_stale_entries``).  An entry says, per block:

* ``Text(why)``: not a command (a tree listing, an output sample, a spec sample: YAML is parsed);
* ``Shell({command: action})``: every command of a ``bash`` block, matched exactly (comments stripped), is
  run as written (``RUN``), transformed (``Append``, ``Replace``, ``Make``, ``Papermill``) or skipped
  (``Skip``); a command that is not in the entry fails.  The block's commands run as one bash script,
  ``set -euo pipefail``, in the repository root;
* ``Python(...)``: the block runs as a script, after an optional prelude (names its prose defines) and
  string replacements (a tiny model for a slow one), each with its reason; or ``Skip(why)``;
* ``Xfail(why, match)``: a block that fails on a library bug (reported); the test fails if it passes or
  fails for another reason (``match`` must be in its output), so the entry goes when the bug is fixed.

Rewrites applied to every command, as written or not (outputs never land in the repository):

* papermill's output notebook goes to the test's tmp folder; so does every path under ``/tmp/``;
* environment: ``OMP_NUM_THREADS=1``, ``PYTHONPATH`` = this checkout (also for the papermill kernel),
  ``MINILIB_FIGURES`` = tmp, ``HF_HUB_OFFLINE=1`` (this machine has no hub; hub commands are skipped);
* run folders the commands create under ``runs/`` are removed afterwards.

``Papermill(why)``: ``--prepare-only`` (papermill checks the notebook, parses ``-p``/``-y``/``-f`` and
injects the parameters), then the parameters cell, the injected cell and the notebook's check cell (the
cell that calls ``minilib.params.resolve``: types, ranges, profile, writable paths) are executed in the
``--cwd`` folder, and the ``-k`` kernel must exist.  So every value a papermill example passes is
checked in seconds; full notebook runs are nbval's job (``make test``: every notebook on its ``test``
profile, the profile of the README's first example).  Marked ``integration``: it loads the embedded
models and data.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = ".venv/bin/python"
pytestmark = pytest.mark.integration


# --- what each documented block is, and how it runs ---------------------------------------------------

@dataclass(frozen=True)
class Text:
    why: str


@dataclass(frozen=True)
class Skip:
    why: str


@dataclass(frozen=True)
class Run:
    why: str = "as written"


RUN = Run()


@dataclass(frozen=True)
class Append:
    args: str
    why: str


@dataclass(frozen=True)
class Replace:
    old: str
    new: str
    why: str
    also: Run | Append | None = None   # then appended as well


@dataclass(frozen=True)
class Make:
    """``make TARGET VAR=...``: the target's own recipe (``make -n -o setup``: the venv exists, set-up is
    not redone), run with ``args`` appended."""
    args: str
    why: str


@dataclass(frozen=True)
class Papermill:
    why: str


@dataclass(frozen=True)
class Shell:
    commands: dict


@dataclass(frozen=True)
class Python:
    why: str = "as written"
    prelude: str = ""
    replace: tuple = ()                 # (old, new) pairs, applied in order; each must occur
    cwd: str = "root"                   # "root" or "tmp" (where a block writes relative paths)


@dataclass(frozen=True)
class Xfail:
    why: str
    match: str
    block: object = None                # the Python / Shell entry it would be


TINY_TEXTS = '["the movie was great fun", "a dull, lifeless film", "what a waste of time and money", "surprisingly moving"]'

# a sweep's table.csv as `collect` writes it: the real BERT_pruning_baseline records of results/, three
# runs with the sweep's seed 0, 1, 2 (what `sweep sweeps/anatomy-grid.yaml` gives for that entry)
SWEEP_TABLE = textwrap.dedent("""
    import json, pathlib
    from minilib.runner.collect import collect
    _src = json.loads(pathlib.Path({root!r}, "results", "BERT_pruning_baseline.json").read_text())
    _dirs = []
    for _s in range(3):
        _d = pathlib.Path("runs/sweeps/anatomy-grid/BERT_pruning_baseline__seed%d" % _s)
        _d.mkdir(parents=True)
        (_d / "results.json").write_text(json.dumps(_src))
        (_d / "params.json").write_text(json.dumps({{"seed": _s}}))
        _dirs.append(_d)
    collect(_dirs).to_csv("runs/sweeps/anatomy-grid/table.csv", index=False)
""").format(root=str(ROOT))

HUB = "needs the Hugging Face hub (not reachable here); the same calls on the embedded/tiny models are tested"
DRY = "--dry-run: plans every run (spec, notebooks, parameters, fingerprints), runs nothing; the runs themselves take hours"
SEEN_IN_TESTS = "the runner on a real 2-worker LocalCluster is tested in tests/test_runner.py"
SEED_BUG = ("minilib.runner.collect: a record column `seed` (the BERT baseline's random-mask seed) shadows the "
            "sweep's `seed` parameter, so the seeds of a sweep are lost and aggregate_over_seeds raises")

BLOCKS = {
    # ---------------------------------------------------------------- README.md
    ("README.md", "make reproduce"): Shell({
        "make reproduce": Make("--dry-run", DRY),
        "make test": Skip("the whole test suite, this test included"),
        "make lab": Skip("starts a JupyterLab server (tests/notebooks/test_browser.py runs one)"),
    }),
    ("README.md", ".venv/bin/papermill notebooks/dense_baselines.ipynb out.ipynb -k minilib -p profile test -p mcq_n 20"): Shell({
        ".venv/bin/papermill notebooks/dense_baselines.ipynb out.ipynb -k minilib -p profile test -p mcq_n 20":
            Papermill("the first example a user copies; nbval runs this notebook on this profile in full "
                      "(tests/notebooks/dense_baselines.yaml, make test), a full run takes 1-1.5 minutes here"),
        '.venv/bin/papermill notebooks/SparseGPT_one_shot.ipynb out.ipynb -k minilib -y "{sweep_sparsities: [0.5, 0.6], owl_sparsities: [0.6]}"':
            Papermill("a default-profile run (the timing table in the README gives its wall time)"),
        ".venv/bin/papermill notebooks/dense_baselines.ipynb out.ipynb -k minilib -p model gpt2 -p mcq_n 500": Skip(HUB),
        ".venv/bin/python -m minilib.runner sweep sweeps/anatomy-grid.yaml": Append("--dry-run", DRY),
    }),
    ("README.md", "from minilib.models import load"): Python(
        "hub ids replaced by the tiny models of the same families, the placeholder folder by one the prelude "
        "saves; the GGUF line is left out (dequantising the 135M asset takes a minute here; "
        "tests/eval/test_integration_real_models.py::test_gguf_path_gives_the_same_logits_as_the_cached_conversion "
        "loads that file)",
        prelude=textwrap.dedent("""
            from minilib.models import load as _load, save_model as _save
            _m = _load("tiny-llama"); _save(_m.model, _m.tokenizer, "saved")
        """),
        replace=(('load("gpt2")', 'load("tiny-gpt2")'), ('load("facebook/opt-125m")', 'load("tiny-opt")'),
                 ('load("bert-base-uncased",', 'load("tiny-bert",'),
                 ('"/path/to/any/saved/folder"', '"saved"'),
                 ('gguf = load("/path/to/model.gguf")', '# gguf: left out (see the reason)')),
        cwd="tmp"),
    ("README.md", ".venv/bin/python -m minilib.figures --only SparseGPT_one_shot dense_baselines --figures /tmp/figs"): Shell({
        ".venv/bin/python -m minilib.figures --only SparseGPT_one_shot dense_baselines --figures /tmp/figs": RUN,
        ".venv/bin/python -m minilib.figures --paper --figures /tmp/paper": RUN,
        ".venv/bin/python -m minilib.figures": RUN,   # into $MINILIB_FIGURES (the test's tmp folder), not figures/
    }),
    ("README.md", "minilib/           the library: the base layer (assets, models, data, eval, hooks, io, device), the"):
        Text("the repository tree"),
    # ---------------------------------------------------------------- docs/anatomy.md
    ("docs/anatomy.md", "make reproduce"): Shell({
        "make reproduce": Make("--dry-run", DRY),
        ".venv/bin/python -m minilib.runner reproduce --only BERT_anatomy GPT2_anatomy BERT_pruning_baseline "
        "GPT2_pruning_baseline BERT_pruning_strategy GPT2_pruning_strategy": Append("--dry-run", DRY),
        ".venv/bin/python -m minilib.runner sweep sweeps/anatomy-grid.yaml": Append("--dry-run", DRY),
        ".venv/bin/python benchmarks/bench_structured.py --model minilm-l6":
            Replace("minilm-l6", "tiny-bert", "the tiny BERT and one timing round on 16 tokens: the benchmark's code "
                    "path and arguments, not its medians", also=Append("--repeats 1 --seqlen 16", "")),
        ".venv/bin/python -m tools.tables":
            Skip("writes the tables of README/docs; tests/test_tables.py runs the same command with --check"),
        ".venv/bin/papermill notebooks/GPT2_anatomy.ipynb out.ipynb -k minilib -p profile paper":
            Skip("the paper profile runs the hub model gpt2 on a GPU; offline its check cell stops by design "
                 "(tests/test_paper_plan.py plans it)"),
    }),
    # ---------------------------------------------------------------- docs/architecture.md
    ("docs/architecture.md", "load -> data -> calibrate -> score -> mask -> apply -> evaluate -> results -> figures"):
        Text("a diagram"),
    ("docs/architecture.md", "minilib/"): Text("the package tree"),
    ("docs/architecture.md", "from minilib.prune import (mask_neuron_weights, mask_neurons, prune_model, remove_neurons,"): Python(
        "`model`, `tok`, `calib`, `texts` come from the prose: a tiny GPT-2, random windows, four labelled texts",
        prelude=textwrap.dedent(f"""
            import torch
            from minilib.models import load
            model, tok, _ = load("tiny-gpt2")
            calib = torch.randint(0, 1000, (8, 32), generator=torch.Generator().manual_seed(0))
            texts = {TINY_TEXTS}
        """)),
    # ---------------------------------------------------------------- docs/contextual.md
    ("docs/contextual.md", "from minilib.calib import collect_l1_stats, L1Stats                        # toolkit: L1 neuron statistics"):
        Python(),
    # ---------------------------------------------------------------- docs/export.md
    ("docs/export.md", "from transformers import AutoModelForCausalLM, AutoTokenizer"): Python(
        "`calib_ids` comes from the prose: 4,000 tokens of the wiki calib split; a tiny Llama (same family and "
        "code path) for SmolLM2, whose export stock transformers loads in tests/export",
        prelude=textwrap.dedent("""
            from minilib.models import load as _load
            from minilib.data import corpus_splits
            calib_ids = corpus_splits(_load("tiny-llama").tokenizer, "wiki")["calib"][:4000]
        """), replace=(('load("smollm2-135m")', 'load("tiny-llama")'),), cwd="tmp"),
    ("docs/export.md", "from minilib.export import export_compressed, load_compressed"): Python(
        "`m` and `windows` come from the prose: a tiny Llama (a 2:4, 4-bit SparseGPT pass on SmolLM2 takes "
        "minutes on 1 thread) and four random 32-token windows",
        prelude=textwrap.dedent("""
            import torch
            from minilib.models import load
            m = load("tiny-llama")
            windows = torch.randint(0, 1000, (4, 32), generator=torch.Generator().manual_seed(0))
        """), cwd="tmp"),
    # ---------------------------------------------------------------- docs/jupyterlab.md
    ("docs/jupyterlab.md", "make lab"): Shell({
        "make lab": Skip("starts a JupyterLab server (tests/notebooks/test_browser.py runs one)"),
        "make lab LAB_PORT=8890": Skip("starts a JupyterLab server"),
        "make lab LAB_ARGS=--no-browser": Skip("starts a JupyterLab server"),
    }),
    ("docs/jupyterlab.md", ".venv/bin/papermill notebooks/dense_baselines.ipynb out.ipynb -k minilib --cwd notebooks -p profile test"): Shell({
        ".venv/bin/papermill notebooks/dense_baselines.ipynb out.ipynb -k minilib --cwd notebooks -p profile test":
            Papermill("the same run as the README's first example, which runs in full"),
        ".venv/bin/papermill notebooks/GPT2_anatomy.ipynb out.ipynb -k minilib --cwd notebooks -p profile test "
        "-p dataset ../data/example_classification.jsonl -p n_train 8 -p n_test 2":
            Papermill("a full run takes about 45 s; the check cell reads the dataset path relative to --cwd"),
    }),
    # ---------------------------------------------------------------- docs/sparsegpt.md
    ("docs/sparsegpt.md", "from minilib.data import calibration_set, corpus_splits, eval_windows"): Python(
        "a tiny Llama and 4 x 32-token windows (the widest input is 128) (32 x 512 tokens on SmolLM2 take minutes); the GPU call on the "
        "CPU ('auto': CUDA where present)",
        replace=(('load("smollm2-135m")', 'load("tiny-llama")'), ("nsamples=32, seqlen=512", "nsamples=4, seqlen=32"),
                 ('["dev"], 512, 8)', '["dev"], 32, 2)'), ('device="cuda"', 'device="auto"')),
        cwd="tmp"),
    # ---------------------------------------------------------------- docs/sweeps.md
    ("docs/sweeps.md", ".venv/bin/python -m minilib.runner sweep sweeps/anatomy-grid.yaml --dry-run"): Shell({
        ".venv/bin/python -m minilib.runner sweep sweeps/anatomy-grid.yaml --dry-run": RUN,
        ".venv/bin/python -m minilib.runner sweep sweeps/anatomy-grid.yaml": Append("--dry-run", DRY),
        ".venv/bin/python -m minilib.runner sweep sweeps/anatomy-grid.yaml --keep-going --workers 2 --threads 1":
            Append("--dry-run", DRY),
        ".venv/bin/python -m minilib.runner sweep SPEC --scheduler tcp://host:8786":
            Skip("a placeholder spec and a running Dask cluster"),
        "make reproduce": Make("--dry-run", DRY),
        "make reproduce PROFILE=test": Make("--dry-run", "--dry-run: the test profile of all nine notebooks takes minutes"),
        ".venv/bin/python -m minilib.runner summary runs/sweeps/anatomy-grid/table.csv --metrics acc --by protocol method ratio":
            Skip("needs a sweep's table.csv; the same summary is the Python block below, run on one"),
        ".venv/bin/python -m minilib.runner prepare-tests build/nbtest":
            Replace("build/nbtest", "{tmp}/nbtest", "writes into tmp, not build/"),
    }),
    ("docs/sweeps.md", "name: anatomy-grid                 # optional; default: the file's stem. Runs go to runs/sweeps/<name>/"):
        Text("a spec sample with every key (its notebooks and `after` names are illustrative); parsed as YAML"),
    ("docs/sweeps.md", "1  done   BERT_pruning_baseline__3f0c...  {\"n_test\": 600, \"seed\": 0}"): Text("output sample"),
    ("docs/sweeps.md", "[runner] anatomy-grid: 12 of 12 runs to run on 1 CPU worker(s), 2 thread(s) per run"):
        Text("output sample"),
    ("docs/sweeps.md", ".venv/bin/dask scheduler --port 8786 &"): Shell({
        ".venv/bin/dask scheduler --port 8786 &": Skip("starts a Dask scheduler (a server)"),
        "CUDA_VISIBLE_DEVICES=0 .venv/bin/dask worker tcp://head:8786 --nthreads 1 --resources GPU=1 &":
            Skip("a Dask worker for a remote scheduler, on a GPU"),
        ".venv/bin/python -m minilib.runner sweep sweeps/anatomy-grid.yaml --scheduler tcp://head:8786 --resources GPU=1":
            Skip("needs the cluster of the two lines above"),
    }),
    ("docs/sweeps.md", "# sweep_on_slurm.py -- run from the repository root on the login node: .venv/bin/python sweep_on_slurm.py"):
        Skip("needs Slurm; tests/test_runner.py::test_docs_slurm_example_builds_a_gpu_job_script builds its job script"),
    ("docs/sweeps.md", "import pandas as pd"): Python(
        "needs a sweep's table.csv: made in the prelude from the real results with `collect`",
        prelude=SWEEP_TABLE, cwd="tmp"),
    ("docs/sweeps.md", "[reproduce] profile 'default': 9 notebooks, 9 to run (estimated 2h20m of notebook time); results -> results, figures -> figures"):
        Text("output sample"),
    ("docs/sweeps.md", ".venv/bin/papermill notebooks/dense_baselines.ipynb /tmp/dense.ipynb -k minilib -p profile test -y 'mcq_sets: [sciq, piqa]'"): Shell({
        ".venv/bin/papermill notebooks/dense_baselines.ipynb /tmp/dense.ipynb -k minilib -p profile test -y 'mcq_sets: [sciq, piqa]'":
            Papermill("the README's first example runs the same notebook in full"),
        "cat > /tmp/params.yaml <<EOF": RUN,
        ".venv/bin/papermill notebooks/BERT_pruning_baseline.ipynb /tmp/bert.ipynb -k minilib -f /tmp/params.yaml":
            Papermill("the default profile takes about 5 minutes"),
    }),
    ("docs/sweeps.md", "from minilib.runner import plan_sweep, print_plan, execute_plan, run_sweep, reproduce"): Python(
        "execute_plan would run the 14 notebooks of the grid (hours): only the plan and its fields; " + SEEN_IN_TESTS,
        replace=(("result = execute_plan(plan, opts)",
                  "assert plan.runs and all(r.status and r.run_dir for r in plan.runs)\n"
                  "import inspect; assert {'options', 'after_run'} <= set(inspect.signature(execute_plan).parameters)\n"
                  "assert {'workers', 'threads', 'keep_going', 'client', 'scheduler'} <= "
                  "set(ExecuteOptions.__dataclass_fields__) and opts.keep_going"),
                 ("result.table, result.table_path, result.done, result.ran, result.failed, result.skipped, result.ok",
                  "pass"))),
}


# --- the blocks -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    path: str
    line: int
    lang: str
    text: str

    @property
    def id(self):
        return f"{self.path}:{self.line}"

    @property
    def key(self):
        if self.lang in ("bash", "sh", "shell"):
            cmds = commands(self.text)
            return (self.path, cmds[0].key if cmds else "")
        first = next((l.strip() for l in self.text.splitlines() if l.strip()), "")
        return (self.path, first)


FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")


def doc_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_blocks(path: Path) -> list[Block]:
    rel = str(path.relative_to(ROOT))
    out, cur = [], None
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if cur is None and m:
            cur = (i, m.group(2), m.group(3).lower(), [])
        elif cur is not None and line.strip().startswith(cur[1]) and not line.strip().strip(cur[1][0]):
            out.append(Block(rel, cur[0], cur[2], textwrap.dedent("\n".join(cur[3]))))
            cur = None
        elif cur is not None:
            cur[3].append(line)
    assert cur is None, f"{rel}:{cur[0]}: fenced block not closed"
    return out


ALL_BLOCKS = [b for f in doc_files() for b in fenced_blocks(f)]


@dataclass
class Command:
    key: str                  # the tokens, comments stripped, joined by one space (shlex-quoted)
    tokens: list
    body: str = ""            # a heredoc's lines (with its terminator)
    raw: str = ""             # the command as written (continuations joined)


SHELL_OPS = {">", ">>", "<", "|", "&", "&&", "||", ";", "2>", "2>&1"}
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


def commands(text: str) -> list[Command]:
    """The commands of a shell block: continuation lines joined, whole-line comments dropped,
    heredocs kept with their command."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and i < len(lines):
            parts[-1] = parts[-1].rstrip()[:-1]
            parts.append(lines[i])
            i += 1
        head = " ".join(parts)
        body = ""
        m = HEREDOC.search(head)
        if m:
            end = [j for j in range(i, len(lines)) if lines[j].strip() == m.group(2)]
            assert end, f"heredoc {m.group(2)} not closed"
            body = "\n".join(lines[i:end[0] + 1])
            i = end[0] + 1
        tokens = shlex.split(head, comments=True)
        out.append(Command(" ".join(tokens), tokens, body, head))
    return out


def _norm(key: str) -> str:
    try:
        return " ".join(shlex.split(key, comments=True))
    except ValueError:
        return key.strip()


NORM_BLOCKS = {(f, _norm(k)): v for (f, k), v in BLOCKS.items()}
assert len(NORM_BLOCKS) == len(BLOCKS), "two BLOCKS keys are the same command"


def entry_for(block):
    return NORM_BLOCKS.get((block.key[0], _norm(block.key[1])))


# --- running --------------------------------------------------------------------------------------------

def _env(tmp_path):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               MINILIB_FIGURES=str(tmp_path / "figures"), HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def _run(args, cwd, env, timeout=600):
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def _tmpify(tok: str, tmp) -> str:
    return str(tmp) + tok[4:] if tok.startswith("/tmp/") else tok


def _papermill_output(tokens):
    """Index of papermill's output notebook (its second positional argument)."""
    takes = {"-p": 2, "--parameters": 2, "-r": 2, "--parameters_raw": 2, "-y": 1, "--parameters_yaml": 1,
             "-f": 1, "--parameters_file": 1, "-k": 1, "--kernel": 1, "--cwd": 1, "-b": 1, "--parameters_base64": 1,
             "-l": 1, "--language": 1, "--engine": 1, "--log-level": 1, "--execution-timeout": 1,
             "--start-timeout": 1, "--start_timeout": 1}
    pos, i = [], 1
    while i < len(tokens):
        t = tokens[i]
        if t in takes:
            i += 1 + takes[t]
            continue
        if not t.startswith("-"):
            pos.append(i)
        i += 1
    assert len(pos) >= 2, f"papermill without an output notebook: {shlex.join(tokens)}"
    return pos[1]


def _option(tokens, *names):
    for i, t in enumerate(tokens[:-1]):
        if t in names:
            return tokens[i + 1]
    return None


RAN: dict[str, str] = {}   # command line -> the block it passed in (this session)


def shell_script(block: Block, entry: Shell, tmp_path) -> tuple[str, list[str]]:
    """The bash script a Shell entry runs for ``block``, and the lines saying what was done to each command."""
    by_key = {_norm(k): v for k, v in entry.commands.items()}
    script, said = ["set -euo pipefail"], []
    for c in commands(block.text):
        action = by_key.get(_norm(c.key))
        assert action is not None, (f"{block.id}: command not in BLOCKS[{block.key!r}]: {c.key!r} -- classify it "
                                    f"(run as written, transformed with a reason, or skipped with a reason)")
        said.append(f"{type(action).__name__}: {c.key}  ({getattr(action, 'why', '')})")
        if isinstance(action, Skip):
            continue
        toks = [_tmpify(t, tmp_path) for t in c.tokens]
        if Path(toks[0]).name == "papermill":
            k = _papermill_output(toks)
            toks[k] = str(tmp_path / Path(toks[k]).name)
        if isinstance(action, Replace):
            new = action.new.format(tmp=tmp_path)
            assert action.old in toks, f"{block.id}: {action.old!r} not in {c.key!r}"
            toks = [new if t == action.old else t for t in toks]
            action = action.also or RUN
        if isinstance(action, Append):
            toks = toks + shlex.split(action.args)
        if isinstance(action, Make):
            assert toks[0] == "make", c.key
            p = subprocess.run(["make", "-n", "-s", "-o", "setup", *toks[1:]], cwd=ROOT, capture_output=True,
                               text=True)
            assert p.returncode == 0, f"{block.id}: {c.key}: make -n failed:\n{p.stdout}{p.stderr}"
            recipe = [l for l in p.stdout.replace("\\\n", " ").splitlines() if l.strip()]
            assert len(recipe) == 1, f"{block.id}: expected one recipe line for {c.key!r}, got {recipe}"
            line = f"{recipe[0].strip()} {action.args}"
            script.append(f"# ran already in {RAN[line]}: {line}" if line in RAN else line)
            continue
        if isinstance(action, Papermill):
            out = toks[_papermill_output(toks)]
            cwd = _option(toks, "--cwd") or "."
            kernel = _option(toks, "-k", "--kernel") or ""
            script.append(shlex.join(toks + ["--prepare-only"]))
            script.append(shlex.join([PY, str(Path(__file__).resolve()), "check-notebook", out, cwd, kernel]))
            continue
        if any(t in SHELL_OPS or t.startswith("<<") for t in c.tokens):  # redirections, heredocs: as written
            assert isinstance(action, Run), f"{block.id}: only Run for a command with shell operators"
            line = c.raw.replace("/tmp/", f"{tmp_path}/")
            if c.body:
                line += "\n" + c.body.replace("/tmp/", f"{tmp_path}/")
        else:
            line = shlex.join(toks)
        if line in RAN:  # the same command, transformed the same way, already passed in this session
            line = f"# ran already in {RAN[line]}: {line}"
        script.append(line)
    return "\n".join(script) + "\n", said


def python_script(block: Block, entry: Python) -> str:
    code = block.text
    for old, new in entry.replace:
        assert old in code, f"{block.id}: replacement {old!r} does not occur in the block any more"
        code = code.replace(old, new)
    return entry.prelude + "\n# ---- the documented block ----\n" + code + "\n"


def check_notebook(nb_path: str, cwd: str, kernel: str) -> None:
    """Run the parameters cell, papermill's injected cell and the check cell (``resolve``) of a prepared
    notebook, in ``cwd``; the kernel must exist."""
    import nbformat
    from jupyter_client.kernelspec import find_kernel_specs
    if kernel:
        assert kernel in find_kernel_specs(), f"no Jupyter kernel {kernel!r} (papermill -k)"
    nb = nbformat.read(nb_path, as_version=4)
    os.chdir(cwd)
    g = {"__name__": "__main__"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, f"{nb_path}:cell", "exec"), g)
        if "resolve(" in cell.source:
            print("parameters checked:", {k: g[k] for k in ("profile", "model") if k in g})
            return
    raise AssertionError(f"{nb_path}: no check cell (minilib.params.resolve) found")


def _runs_snapshot():
    runs = ROOT / "runs"
    return {p for p in runs.glob("*/*")} if runs.is_dir() else set()


@pytest.fixture
def clean_runs():
    before = _runs_snapshot()
    before_top = {p for p in (ROOT / "runs").glob("*")} if (ROOT / "runs").is_dir() else set()
    yield
    for p in _runs_snapshot() - before:
        shutil.rmtree(p, ignore_errors=True)
    for p in ({p for p in (ROOT / "runs").glob("*")} if (ROOT / "runs").is_dir() else set()) - before_top:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def execute(block: Block, entry, tmp_path) -> tuple[int, str]:
    env = _env(tmp_path)
    if isinstance(entry, Shell):
        script, said = shell_script(block, entry, tmp_path)
        if script.strip() == "set -euo pipefail":
            pytest.skip("; ".join(said))
        rc, out = _run(["bash", "-c", script], ROOT, env)
        if rc == 0:
            RAN.update(dict.fromkeys(script.splitlines()[1:], block.id))
        return rc, "\n".join(said) + "\n--- script\n" + script + "--- output\n" + out
    if isinstance(entry, Python):
        f = tmp_path / "block.py"
        f.write_text(python_script(block, entry))
        cwd = tmp_path if entry.cwd == "tmp" else ROOT
        rc, out = _run([str(ROOT / PY), str(f)], cwd, env)
        return rc, f"--- {f}\n{f.read_text()}--- output\n{out}"
    raise TypeError(entry)


# --- the tests ------------------------------------------------------------------------------------------

def test_blocks_found():
    files = {b.path for b in ALL_BLOCKS}
    assert "README.md" in files and len(ALL_BLOCKS) >= 20, [b.id for b in ALL_BLOCKS]


def test_every_block_is_classified():
    """A new block (or a block whose first command changed) must get an entry in BLOCKS."""
    missing = [f"{b.id}: {b.key!r}" for b in ALL_BLOCKS if entry_for(b) is None]
    assert not missing, "blocks in no category of BLOCKS (tests/test_doc_commands.py):\n" + "\n".join(missing)
    for b in ALL_BLOCKS:
        e = entry_for(b)
        if b.lang in ("bash", "sh", "shell"):
            assert isinstance(e, (Shell, Xfail)) or isinstance(e, Skip), f"{b.id}: a shell block needs Shell(...)"
        elif b.lang == "python":
            assert isinstance(e, (Python, Skip, Xfail)), f"{b.id}: a Python block needs Python(...) or Skip(...)"
        else:
            assert isinstance(e, Text), f"{b.id}: a block without a command language ({b.lang or 'none'}) is Text(...)"


def test_no_stale_entries():
    keys = {(b.key[0], _norm(b.key[1])) for b in ALL_BLOCKS}
    stale = [k for k in NORM_BLOCKS if k not in keys]
    assert not stale, f"BLOCKS entries whose block is gone or changed: {stale}"


def test_shell_commands_are_all_classified():
    for b in ALL_BLOCKS:
        e = entry_for(b)
        e = e.block if isinstance(e, Xfail) else e
        if isinstance(e, Shell):
            keys = {_norm(c.key) for c in commands(b.text)}
            unknown = keys - {_norm(k) for k in e.commands}
            stale = {_norm(k) for k in e.commands} - keys
            assert not unknown and not stale, f"{b.id}: unclassified {unknown}, stale {stale}"


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_documented_block_runs(block, tmp_path, clean_runs):
    entry = entry_for(block)
    if entry is None:
        pytest.fail(f"{block.id}: not in BLOCKS (see test_every_block_is_classified)")
    if isinstance(entry, Text):
        if block.lang == "yaml":
            import yaml
            assert yaml.safe_load(block.text), f"{block.id}: not YAML"
        return
    if isinstance(entry, Skip):
        pytest.skip(entry.why)
    if isinstance(entry, Xfail):
        rc, out = execute(block, entry.block, tmp_path)
        assert rc != 0, f"{block.id} runs now: remove its Xfail ({entry.why})\n{out[-3000:]}"
        assert entry.match in out, f"{block.id} fails, but not with {entry.match!r}:\n{out[-6000:]}"
        pytest.xfail(entry.why)
    rc, out = execute(block, entry, tmp_path)
    assert rc == 0, f"{block.id}: the documented block failed (exit {rc}):\n{out[-8000:]}"


def test_the_test_can_fail(tmp_path):
    """A broken command and a broken snippet fail here (the runner never swallows an exit status)."""
    b = Block("x.md", 1, "bash", f"{PY} -m minilib.runner sweep sweeps/reproduce-anatomy.yaml --dry-run\n")
    rc, out = execute(b, Shell({b.key[1]: RUN}), tmp_path)
    assert rc == 2 and "placeholders" in out
    b = Block("x.md", 1, "bash", "true\nfalse\ntrue\n")
    assert execute(b, Shell({"true": RUN, "false": RUN}), tmp_path)[0] != 0
    b = Block("x.md", 1, "python", "from minilib.models import no_such_name\n")
    assert execute(b, Python(), tmp_path)[0] != 0


if __name__ == "__main__" and sys.argv[1:2] == ["check-notebook"]:
    check_notebook(*sys.argv[2:5])
