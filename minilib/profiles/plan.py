"""Size a notebook's profile against the embedded data, before any model compute.

``plan(notebook, profile="paper", **overrides)`` resolves the notebook's parameters exactly as its check
cell does (its own ``parameters`` cell, then ``minilib.params.resolve`` with the profile and the
overrides: ``papermill -p`` values), then sizes what every parameter consumes, with the functions the
experiment itself calls (``minilib.data.corpus_splits``, ``calibration_windows``,
``minilib.eval.bytes.text_chunks``, ``load_mcq``, ``decision_task``'s split):

* the tokens of every corpus split the notebook reads, counted with the model's tokenizer or, for a hub
  model (no hub here), an embedded one that stands in for it (``Plan.tokenizer`` says which);
* calibration windows (random, seeded) against the non-overlapping windows the split holds, and the
  share of the drawn tokens that repeat another window's (the seeded draw itself);
* evaluation windows and text chunks asked for against what the test/dev split holds (the experiment
  silently takes fewer);
* fine-tuning steps: ``min(ft_steps, epochs x windows // batch)`` (``minilib.train.finetune``);
* MCQ items and classification examples asked for against the set's size and split;
* the hub: a hub model replaced by its embedded fallback.

Each defect is a ``Problem`` naming the parameter and what the data allows; ``Plan.ok`` is true when
there is none.  ``Plan.notes`` are sizes worth knowing that are not defects (e.g. few windows).

    python -m minilib.profiles.plan                      # every notebook's paper profile (exit 1 on problems)
    python -m minilib.profiles.plan contextual_pruning --profile default
    python -m minilib.profiles.plan --offline --allow-fallback   # as offline with MINILIB_ALLOW_FALLBACK=1
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from minilib.params import ROOT, HubFallbackWarning, HubUnreachableError, ParameterError, check_relations, resolve
from minilib.profiles import NOTEBOOKS, notebook_params

# Kinds of problem (``Problem.kind``)
FT_CAPPED = "ft_steps_capped"      # fine-tuning stops at epochs x batches before ft_steps
EXCEEDS_SPLIT = "exceeds_split"    # more windows / chunks than the split holds (silently fewer)
CALIB_OVERLAP = "calib_overlap"    # calibration windows that must, or do, largely repeat tokens
EXCEEDS_SET = "exceeds_set"        # more MCQ items / examples than the set (or its split) holds
HUB_FALLBACK = "hub_fallback"      # the hub model is replaced by (or would need) its embedded fallback
TOO_SHORT = "too_short"            # a split shorter than one window or batch: the run stops with an error
TOO_LONG = "too_long"              # a window longer than the model's positions: the run stops with an error
BAD_VALUE = "bad_value"            # parameters that contradict each other: the run stops with an error
KINDS = (FT_CAPPED, EXCEEDS_SPLIT, CALIB_OVERLAP, EXCEEDS_SET, HUB_FALLBACK, TOO_SHORT, TOO_LONG, BAD_VALUE)

# Seeded random calibration windows (SparseGPT/Wanda's protocol, ``calibration_windows``) overlap by
# chance even when they fit.  A draw expected to repeat more than this share of its tokens is reported
# (the expectation over seeds: smooth in the number of windows, unlike one draw).  It is reached near
# 0.6x the split's tokens (a draw of the whole split repeats 37%); 128 x 2048 from TinyStories' 31k-token
# calib split repeats 88%, 32 x 2048 from the 146k tokens of C4's calib split 19%.
MAX_CALIB_OVERLAP = 0.25
# fewer evaluation units than this (windows, chunks) give a wide bootstrap interval: a note
FEW_UNITS = 10


@dataclass(frozen=True)
class Problem:
    """One defect: ``param`` is the parameter to change, ``kind`` one of ``KINDS``."""

    param: str
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Plan:
    """What a profile asks of the data, and what the data allows."""

    notebook: str
    profile: str
    params: dict                         # the resolved parameters (results_path/figures_dir left out)
    model: str                           # the model the run would load
    tokenizer: str                       # what the token counts were made with
    sizes: list[dict] = field(default_factory=list)  # rows: what, param, asked, available, unit
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> dict[str, list[str]]:
        """``kind -> [param, ...]`` of the problems."""
        out: dict[str, list[str]] = {}
        for p in self.problems:
            out.setdefault(p.kind, []).append(p.param)
        return out

    def report(self) -> str:
        lines = [f"{self.notebook} ({self.profile}): model {self.model!r}; tokens counted with {self.tokenizer}"]
        for r in self.sizes:
            asked = "" if r["asked"] is None else f"{_n(r['asked'])} asked, "
            lines.append(f"  {r['what']} [{r['param']}]: {asked}{_n(r['available'])} {r['unit']}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  PROBLEM ({p.kind}): {p.message}" for p in self.problems]
        lines.append(f"  -> {'plans clean' if self.ok else f'{len(self.problems)} problem(s)'}")
        return "\n".join(lines)

    __str__ = report


def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


# --- the notebook's own parameters cell --------------------------------------------------------

def notebook_defaults(notebook: str) -> dict:
    """The values of the notebook's ``parameters`` cell (``notebooks/<notebook>.py``), as papermill sees
    them before injecting its own."""
    path = ROOT / "notebooks" / f"{notebook}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the planner reads the notebook's parameters cell from the repository's "
                                "notebooks/ folder")
    src = path.read_text(encoding="utf-8")
    marker = '# %% tags=["parameters"]\n'
    if marker not in src:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    ns: dict = {}
    exec(compile(src.split(marker, 1)[1].split("\n# %%", 1)[0], str(path), "exec"), ns)  # plain literals
    return {k: v for k, v in ns.items() if not k.startswith("__")}


# --- tokenizers and model facts (no weights) ---------------------------------------------------

_GPT2_BPE = re.compile(r"^(gpt2(-medium|-large|-xl)?|distilgpt2|facebook/opt-[\w.]+|microsoft/phi-(1|1_5|2))$")
_CODEGEN = re.compile(r"^microsoft/phi-")
_BERT_UNCASED = re.compile(r"^((google-bert/)?bert-(base|large)-uncased|distilbert-base-uncased)$")
_ENCODER = re.compile(r"bert|minilm|roberta|electra|deberta", re.I)
# max positions of the paper profiles' hub models (their config.json; not readable offline)
HUB_MAX_POSITIONS = {"gpt2": 1024, "facebook/opt-125m": 2048, "microsoft/phi-1_5": 2048, "bert-base-uncased": 512}

_TOKENIZERS: dict = {}


def _load_tokenizer(key: str):
    if key not in _TOKENIZERS:
        if key == "gpt2-bpe":
            from minilib.models.tokenizers import gpt2_tokenizer
            tok = gpt2_tokenizer()
        elif key == "wordpiece":
            from transformers import AutoTokenizer

            from minilib import assets
            tok = AutoTokenizer.from_pretrained(assets.fetch("minilm-l6"))
        elif key.startswith("embedded:"):
            from transformers import AutoTokenizer

            from minilib.models.loading import EMBEDDED
            tok = AutoTokenizer.from_pretrained(str(EMBEDDED[key.split(":", 1)[1]]()))
        else:  # a local folder
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(key.split(":", 1)[1])
        _TOKENIZERS[key] = tok
    return _TOKENIZERS[key]


def widest_input(cfg) -> int | None:
    """The widest input of the model's linear layers, from its config: the FFN's inner width (or the
    hidden size if larger); None when the config names neither."""
    hidden = next((getattr(cfg, k) for k in ("hidden_size", "n_embd", "d_model") if getattr(cfg, k, None)), None)
    inner = next((getattr(cfg, k) for k in ("intermediate_size", "ffn_dim", "n_inner", "encoder_ffn_dim")
                  if getattr(cfg, k, None)), None)
    if inner is None and hidden and getattr(cfg, "model_type", "") == "gpt2":
        inner = 4 * hidden  # GPT-2's n_inner=None
    widths = [w for w in (hidden, inner) if w]
    return max(widths) if widths else None


def model_facts(model: str) -> dict:
    """``{"tokenizer": key, "tokenizer_desc", "is_decoder", "max_positions"}`` for a model name, without
    loading weights: embedded and tiny models and local folders from their config; hub ids from their
    name (GPT-2's BPE stands in for gpt2, OPT and phi; MiniLM's WordPiece for uncased BERT; SmolLM2's
    tokenizer for any other hub id)."""
    from minilib.models.loading import EMBEDDED
    from minilib.models.tiny import TINY, TOKENIZER
    if model in TINY:
        from minilib.models.adapters import adapter_for
        from minilib.models.tiny import _configs
        key = "gpt2-bpe" if TOKENIZER[model] == "gpt2" else "wordpiece"
        cfg = _configs(50257 if key == "gpt2-bpe" else 30522, 0)[model]()
        a = adapter_for(cfg)
        return {"tokenizer": key, "tokenizer_desc": f"{'GPT-2 BPE' if key == 'gpt2-bpe' else 'WordPiece'} "
                f"(the tiny model's own)", "is_decoder": a.is_decoder, "max_positions": a.max_positions(cfg),
                "widest_input": widest_input(cfg)}
    folder = None
    if model in EMBEDDED:
        folder, key, desc = str(EMBEDDED[model]()), f"embedded:{model}", f"{model}'s own tokenizer (embedded)"
    elif Path(model).expanduser().is_dir():
        folder = str(Path(model).expanduser())
        key, desc = f"local:{folder}", f"the tokenizer of {folder}"
    if folder is not None:
        from transformers import AutoConfig

        from minilib.models.adapters import adapter_for
        cfg = AutoConfig.from_pretrained(folder)
        a = adapter_for(cfg)
        return {"tokenizer": key, "tokenizer_desc": desc, "is_decoder": a.is_decoder,
                "max_positions": a.max_positions(cfg), "widest_input": widest_input(cfg)}
    maxpos = HUB_MAX_POSITIONS.get(model)
    if _GPT2_BPE.match(model):
        desc = f"GPT-2 BPE (embedded), standing in for {model!r}'s tokenizer" + (
            " (CodeGen's: the same BPE plus tokens for runs of spaces, so equal counts on prose and fewer "
            "tokens on code)" if _CODEGEN.match(model) else " (the same BPE)")
        return {"tokenizer": "gpt2-bpe", "tokenizer_desc": desc, "is_decoder": True, "max_positions": maxpos}
    if _ENCODER.search(model):
        same = bool(_BERT_UNCASED.match(model))
        return {"tokenizer": "wordpiece", "is_decoder": False, "max_positions": maxpos,
                "tokenizer_desc": f"MiniLM's WordPiece (embedded), standing in for {model!r}'s"
                                  + (" (the same uncased vocabulary)" if same else " (an approximation)")}
    return {"tokenizer": "embedded:smollm2-135m", "is_decoder": True, "max_positions": maxpos,
            "tokenizer_desc": f"SmolLM2-135M's tokenizer (embedded), standing in for {model!r}'s (an approximation)"}


# --- data sizes (cached per process) -----------------------------------------------------------

_SPLITS: dict = {}
_MCQ: dict = {}
_CLASS: dict = {}


def _splits(tok_key: str, corpus: str):
    if (tok_key, corpus) not in _SPLITS:
        from minilib.data import corpus_splits
        _SPLITS[(tok_key, corpus)] = corpus_splits(_load_tokenizer(tok_key), corpus)
    return _SPLITS[(tok_key, corpus)]


def _part_tokens(tok_key: str, corpora: str, split: str) -> int:
    """Tokens of the ``split`` part of a corpus, or of several joined by '+' (``studies.sparsegpt.corpus_part``)."""
    return sum(len(_splits(tok_key, c.strip())[split]) for c in str(corpora).split("+"))


def mcq_size(name: str) -> tuple[int, str]:
    """``(items, split)`` of an MCQ set as ``load_mcq`` reads it by default."""
    if name not in _MCQ:
        from minilib.data import load_mcq
        try:
            from minilib.data.tasks import default_mcq_split
            split = default_mcq_split(name)
        except (KeyError, ValueError):
            split = "file"
        _MCQ[name] = (len(load_mcq(name)), split)
    return _MCQ[name]


def classification_split(name: str, seed: int, test_fraction: float = 0.2) -> tuple[int, int, int]:
    """``(total, train, test)`` examples of a classification set as ``decision_task`` splits it."""
    if name not in _CLASS:
        from minilib.data import load_classification
        _CLASS[name] = len(load_classification(name))
    total = _CLASS[name]
    n_test = int(round(test_fraction * total))  # ClassificationSet.split
    return total, total - n_test, n_test


# --- the planner -------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, plan: Plan, facts: dict):
        self.plan, self.facts = plan, facts
        self.tok = facts["tokenizer"]
        self.P = plan.params

    def size(self, what, param, asked, available, unit):
        self.plan.sizes.append({"what": what, "param": param, "asked": asked, "available": available, "unit": unit})

    def problem(self, param, kind, message):
        self.plan.problems.append(Problem(param, kind, message))

    def note(self, message):
        self.plan.notes.append(message)

    def tokens(self, corpora: str, split: str) -> int:
        return _part_tokens(self.tok, corpora, split)

    # -- checks shared by the studies --

    def seqlen_fits(self, param: str, seqlen: int):
        maxpos = self.facts.get("max_positions")
        if maxpos and seqlen > maxpos:
            self.problem(param, TOO_LONG, f"{param} = {seqlen}: {self.plan.model!r} has {maxpos} positions; "
                                          f"at most {maxpos}")

    def eval_windows(self, corpus: str, split: str, seqlen_param: str, windows_param: str | None,
                     asked: int | None, what: str = "evaluation windows"):
        """Non-overlapping windows of ``split`` (``eval_windows``/``to_windows``; ``asked`` None or 0 = all)."""
        seqlen = self.P[seqlen_param]
        n = self.tokens(corpus, split)
        avail = n // seqlen
        where = f"the {split} split of {corpus!r}"
        self.size(f"{what}: {where} ({n:,} tokens)", windows_param or seqlen_param, asked or None, avail,
                  f"windows of {seqlen}")
        if avail < 1:
            self.problem(seqlen_param, TOO_SHORT, f"{seqlen_param} = {seqlen}: {where} holds {n:,} tokens, "
                                                  f"fewer than one window; at most {n}")
        elif asked and asked > avail:
            self.problem(windows_param, EXCEEDS_SPLIT,
                         f"{windows_param} = {asked}: {where} holds {avail} non-overlapping windows of {seqlen_param} "
                         f"= {seqlen} ({n:,} tokens); the run would silently score {avail}: at most {avail}")
        used = min(asked, avail) if asked else avail
        if 0 < used < FEW_UNITS:
            self.note(f"{what} of {where}: {used} window(s) of {seqlen} (a wide bootstrap interval)")
        return used

    def calibration(self, corpus: str, split: str, n_param: str, len_param: str, seed: int):
        """Seeded random windows (``minilib.data.calibration_windows``): fit and overlap."""
        import torch

        from minilib.data import calibration_windows
        n, seqlen = self.P[n_param], self.P[len_param]
        T = self.tokens(corpus, split)
        slots = T // seqlen
        where = f"the {split} split of {corpus!r}"
        self.size(f"calibration windows: {where} ({T:,} tokens)", n_param, n, slots,
                  f"non-overlapping windows of {seqlen}")
        if T < seqlen:
            self.problem(len_param, TOO_SHORT, f"{len_param} = {seqlen}: {where} holds {T:,} tokens, fewer than "
                                               f"one calibration window; at most {T}")
            return
        # the experiment's own draw, on token positions: the distinct positions are the distinct tokens
        drawn = calibration_windows(torch.arange(T), n, seqlen, seed)
        distinct = int(torch.unique(drawn).numel())
        expected = expected_repeat(T, n, seqlen)
        self.size(f"calibration tokens drawn: {where}", n_param, n * seqlen, distinct,
                  f"distinct tokens (seed {seed}; {expected:.0%} repeated expected)")
        if n > slots or expected > MAX_CALIB_OVERLAP:
            fit = max_calibration_windows(T, seqlen)
            why = (f"only {slots} non-overlapping windows fit, so the draw must overlap" if n > slots
                   else f"{slots} non-overlapping windows fit, but seeded random windows overlap by chance")
            self.problem(n_param, CALIB_OVERLAP,
                         f"{n_param} = {n} windows of {len_param} = {seqlen} from {where} ({T:,} tokens; the draw is "
                         f"{n * seqlen / T:.1f}x the split): {why}. Random windows repeat {expected:.0%} of their "
                         f"tokens in expectation (this seed: {1 - distinct / (n * seqlen):.0%}, covering "
                         f"{distinct / T:.0%} of the split), more than {MAX_CALIB_OVERLAP:.0%}: at most {fit} windows "
                         f"of {seqlen} (or shorter windows, or a larger corpus)")
        elif expected > 0.05:
            self.note(f"calibration from {where}: random windows repeat {expected:.0%} of their tokens in expectation")

    def mcq(self, name: str, param: str, asked: int | None, what: str = "MCQ items"):
        total, split = mcq_size(name)
        self.size(f"{what}: {name!r} ({split} split)", param, asked or None, total, "items")
        if asked and asked > total:
            self.problem(param, EXCEEDS_SET, f"{param} = {asked}: MCQ set {name!r} holds {total:,} items ({split} "
                                             f"split); load_mcq would use all {total:,}: at most {total:,}")


def expected_repeat(T: int, n: int, seqlen: int) -> float:
    """The expected share of the ``n * seqlen`` tokens of ``n`` uniformly random windows of ``seqlen``
    (``calibration_windows``: starts in ``[0, T - seqlen]``) that repeat a token another window drew."""
    import numpy as np
    if n < 1 or T < seqlen:
        return 0.0
    starts = T - seqlen + 1

    def covered(p, weight=1.0):  # P(position p is drawn) summed: 1 - P(no window start covers it)
        covering = np.minimum(p, starts - 1) - np.maximum(0, p - seqlen + 1) + 1  # starts whose window holds p
        return weight * float(np.sum(1.0 - (1.0 - covering / starts) ** n))

    if T <= 4 * seqlen:
        distinct = covered(np.arange(T))
    else:  # every position between the two edges is held by seqlen starts
        edge = np.arange(seqlen - 1)
        distinct = covered(edge) + covered(T - 1 - edge) + covered(np.array([seqlen - 1]), T - 2 * (seqlen - 1))
    return 1.0 - distinct / (n * seqlen)


def max_calibration_windows(T: int, seqlen: int) -> int:
    """The most random windows of ``seqlen`` from ``T`` tokens expected to repeat at most
    ``MAX_CALIB_OVERLAP`` of their tokens (and no more than fit without overlap)."""
    lo, hi = 0, max(0, T // seqlen)
    while lo < hi:  # expected_repeat grows with n
        mid = (lo + hi + 1) // 2
        if expected_repeat(T, mid, seqlen) <= MAX_CALIB_OVERLAP:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _plan_dense(c: _Ctx):
    P = c.P
    c.seqlen_fits("seqlen", P["seqlen"])
    for corpus in P["corpora"]:
        c.eval_windows(corpus, "test", "seqlen", "max_windows", P["max_windows"])
    for s in P["mcq_sets"]:
        c.mcq(s, "mcq_n", P["mcq_n"])


def _plan_sparsegpt(c: _Ctx):
    P = c.P
    for p in ("seqlen", "eval_seqlen", "budget_seqlen"):
        c.seqlen_fits(p, P[p])
    # calibration_pool + budget_windows: nsamples distinct non-overlapping windows per calibration seed
    T = c.tokens(P["calib_corpus"], "calib")
    slots = T // P["seqlen"]
    c.size(f"calibration pool: the calib split of {P['calib_corpus']!r} ({T:,} tokens)", "nsamples", P["nsamples"],
           slots, f"non-overlapping windows of {P['seqlen']}")
    if P["nsamples"] > slots:
        c.problem("nsamples", EXCEEDS_SPLIT,
                  f"nsamples = {P['nsamples']}: the calib split of {P['calib_corpus']!r} holds {slots} non-overlapping "
                  f"windows of seqlen = {P['seqlen']} ({T:,} tokens); the notebook stops with an error")
    c.eval_windows(P["eval_corpus"], "test", "eval_seqlen", "eval_windows", P["eval_windows"])
    if P["heldout_windows"]:
        c.eval_windows(P["calib_corpus"], "dev", "seqlen", "heldout_windows", P["heldout_windows"],
                       what="held-out windows")
    c.mcq(P["mcq_set"], "mcq_n", P["mcq_n"])
    # SparseGPT's Hessian of a layer is full rank only from as many calibration tokens as the layer's
    # inputs (minilib.calib.accumulators refuses fewer): the main draw and every budget of the sweep
    widest = c.facts.get("widest_input")
    draws = [("nsamples", P["nsamples"], P["seqlen"])] + [("budget_nsamples", b, P["budget_seqlen"])
                                                         for b in P["budget_nsamples"] or []]
    for name, n, seqlen in draws:
        if widest and n * seqlen < widest:
            c.problem(name, BAD_VALUE, f"{name}: {n} windows x {seqlen} tokens = {n * seqlen:,} calibration tokens, "
                      f"fewer than the widest layer input ({widest:,}): SparseGPT stops with an error (its Hessian "
                      f"cannot be full rank); at least {-(-widest // seqlen)} windows of {seqlen}")
    if P["budget_nsamples"]:  # calibration_pool + budget_windows: distinct non-overlapping windows
        T = c.tokens(P["budget_corpus"], "calib")
        slots = T // P["budget_seqlen"]
        big = max(P["budget_nsamples"])
        c.size(f"budget pool: the calib split of {P['budget_corpus']!r} ({T:,} tokens)", "budget_nsamples", big,
               slots, f"non-overlapping windows of {P['budget_seqlen']}")
        if big > slots:
            c.problem("budget_nsamples", EXCEEDS_SPLIT,
                      f"budget_nsamples = {P['budget_nsamples']}: the calib split of {P['budget_corpus']!r} holds "
                      f"{slots} non-overlapping windows of budget_seqlen = {P['budget_seqlen']} ({T:,} tokens); "
                      f"budget_sweep stops with an error: at most {slots} (join more corpora with '+')")


def _plan_contextual(c: _Ctx):
    from minilib.eval.bytes import text_chunks
    from minilib.eval.bytes import split_text
    P = c.P
    for p in ("seqlen", "eval_seqlen", "ft_seqlen"):
        c.seqlen_fits(p, P[p])
    tok = _load_tokenizer(c.tok)
    steps_needed = []
    for d in P["domains"]:
        sp = _splits(c.tok, d)
        for split, param in (("test", "test_chunks"), ("dev", "dev_chunks")):
            text = split_text(tok, sp[split])
            avail = len(text_chunks(text, P["chunk_bytes"]))
            nbytes = len(text.encode("utf-8", errors="surrogatepass"))
            c.size(f"{split} chunks: the {split} split of {d!r} ({nbytes:,} bytes)", param, P[param], avail,
                   f"chunks of <= {P['chunk_bytes']} bytes")
            if P[param] > avail:
                c.problem(param, EXCEEDS_SPLIT,
                          f"{param} = {P[param]}: the {split} split of {d!r} holds {avail} chunks of chunk_bytes = "
                          f"{P['chunk_bytes']} ({nbytes:,} bytes); run_domain would silently score {avail}: at most "
                          f"{avail} for {d!r}")
            elif P[param] < FEW_UNITS:
                c.note(f"{split} chunks of {d!r}: {P[param]} (a wide bootstrap interval)")
        c.calibration(d, "calib", "calib_windows", "seqlen", P["seed"])
        # fine-tuning (minilib.train.finetune): non-overlapping ft_seqlen windows of the train split
        n = len(sp["train"])
        windows = n // P["ft_seqlen"]
        per_epoch = windows // P["ft_batch"]
        steps = min(P["ft_steps"], per_epoch * P["epochs"])
        c.size(f"fine-tuning steps on {d!r} (train split: {n:,} tokens, {windows} windows of {P['ft_seqlen']}, "
               f"{per_epoch} batches of {P['ft_batch']} per epoch)", "ft_steps", P["ft_steps"], per_epoch * P["epochs"],
               f"steps in epochs = {P['epochs']}")
        if per_epoch < 1:
            c.problem("ft_batch", TOO_SHORT, f"ft_batch = {P['ft_batch']}: the train split of {d!r} holds {windows} "
                                             f"windows of ft_seqlen = {P['ft_seqlen']} ({n:,} tokens), fewer than one "
                                             f"batch; finetune stops with an error: at most {windows}")
            continue
        need = math.ceil(P["ft_steps"] / per_epoch)
        steps_needed.append((need, d, per_epoch))
        if steps < P["ft_steps"]:
            c.problem("ft_steps", FT_CAPPED,
                      f"ft_steps = {P['ft_steps']} is capped by epochs = {P['epochs']} on {d!r}: its train split holds "
                      f"{n:,} tokens = {windows} windows of ft_seqlen = {P['ft_seqlen']} = {per_epoch} batches of "
                      f"ft_batch = {P['ft_batch']} per epoch, so fine-tuning stops after {steps} steps; ft_steps binds "
                      f"with epochs >= {need} (or ft_steps <= {per_epoch * P['epochs']})")
        if P["ft_eval_every"] > steps:
            c.note(f"ft_eval_every = {P['ft_eval_every']} > the {steps} steps on {d!r}: the dev split is scored "
                   "before the first step and at the last only")
        mcq = P["mcq_sets"].get(d)
        if mcq:
            c.mcq(mcq, "mcq_n", P["mcq_n"], what=f"MCQ items of {d!r}")
    if P["prune_embeddings"]:
        c.note("fine-tuning windows are counted on the base tokenizer; the pruned vocabulary spells the tokens it "
               "dropped in byte tokens, so the pruned model's train text is at least as long")
    if steps_needed:
        need, d, _ = max(steps_needed, key=lambda t: (t[0], -t[2]))
        c.note(f"ft_steps = {P['ft_steps']} binds in every domain from epochs >= {need} ({d!r} is the smallest)")


def _plan_task(c: _Ctx):
    """Anatomy and structured pruning: the classification task (``decision_task``), fine-tuning, perplexity."""
    P = c.P
    total, train, test = classification_split(P["dataset"], P["seed"])
    c.size(f"train examples: {P['dataset']!r} ({total:,} examples, 80/20 split)", "n_train", P["n_train"], train,
           "examples")
    c.size(f"test examples: {P['dataset']!r}", "n_test", P["n_test"], test, "examples")
    for param, avail, part in (("n_train", train, "train"), ("n_test", test, "test")):
        if P[param] > avail:
            c.problem(param, EXCEEDS_SET, f"{param} = {P[param]:,}: {P['dataset']!r} holds {total:,} examples, split "
                                          f"80/20 (seed {P['seed']}) into {train:,} train and {test:,} test; "
                                          f"decision_task would silently use {avail:,}: at most {avail:,}")
    if "finetuned" in P["protocols"]:
        n = min(P["n_train"], train)
        c.size("fine-tuning examples (the first of the train part)", "ft_n_train", P["ft_n_train"], n, "examples")
        if P["ft_n_train"] > n:
            c.problem("ft_n_train", EXCEEDS_SET, f"ft_n_train = {P['ft_n_train']:,}: the train part holds {n:,} "
                                                 f"examples (n_train = {P['n_train']:,}); fine-tuning would "
                                                 f"silently use {n:,}: at most {n:,}")
        steps = math.ceil(n / P["ft_batch_size"]) * P["ft_epochs"]
        c.size("fine-tuning steps (ft_epochs x ceil(examples / ft_batch_size))", "ft_epochs", None, steps, "steps")
    if "ppl_corpus" in P and c.facts["is_decoder"]:
        c.seqlen_fits("ppl_seqlen", P["ppl_seqlen"])
        c.eval_windows(P["ppl_corpus"], "test", "ppl_seqlen", "ppl_windows", P["ppl_windows"],
                       what="perplexity windows")


_PLANNERS = {"dense_baselines": _plan_dense, "SparseGPT_one_shot": _plan_sparsegpt,
             "contextual_pruning": _plan_contextual}


def plan(notebook: str, profile: str = "paper", *, hub: bool | None = True, allow_fallback: bool | None = None,
         **overrides) -> Plan:
    """Resolve ``notebook``'s parameters for ``profile`` (its parameters cell, then ``overrides`` as
    ``papermill -p`` would set them) and size them against the data; see the module docstring.

    ``hub``: True (default) plans the run where the hub is reachable (the paper profiles' setting: hub
    models, counted with an embedded stand-in tokenizer); False as offline; None probes the hub as the
    notebook would.  Offline, a hub model is a ``hub_fallback`` problem: with the fallback allowed
    (``allow_fallback`` or ``MINILIB_ALLOW_FALLBACK``) the plan sizes the embedded fallback, without it
    ``resolve`` would stop and the plan still sizes the fallback, to report the rest."""
    spec, profiles = notebook_params(notebook)
    values = {**notebook_defaults(notebook), "profile": profile, **overrides}
    tmp = Path(tempfile.gettempdir()) / "minilib-plan" / notebook  # checked for writability, never created
    values.update(results_path=str(tmp / "results.json"), figures_dir=str(tmp / "figures"))
    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HubFallbackWarning)
        try:
            params = resolve(notebook, values, spec, profiles, verbose=False, hub=hub, allow_fallback=allow_fallback,
                             relations=False)
        except HubUnreachableError as e:
            params = resolve(notebook, values, spec, profiles, verbose=False, hub=hub, allow_fallback=True,
                             relations=False)
            problems.append(Problem(e.name, HUB_FALLBACK,
                                    f"{e.name}: the hub model {e.hub!r} of the {profile!r} profile is not reachable "
                                    f"and the fallback is not allowed: resolve stops (HubUnreachableError). With "
                                    f"MINILIB_ALLOW_FALLBACK=1 the embedded {e.offline!r} would run the {profile} "
                                    f"settings (sized below)"))
    stopped = bool(problems)  # resolve stopped at the hub: its second pass warns of the fallback it sized
    for w in caught:
        if issubclass(w.category, HubFallbackWarning):
            if stopped:
                continue
            m = w.message
            problems.append(Problem(m.name, HUB_FALLBACK,
                                    f"{m.name}: the hub is not reachable, so the embedded {m.offline!r} replaces the "
                                    f"hub model {m.hub!r} with the {profile!r} profile's settings (fallback allowed): "
                                    "the run is not the paper model's"))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    try:  # parameters that contradict each other: the run would stop in its check cell
        check_relations(spec, params)
    except ParameterError as e:
        problems.append(Problem(e.name or "parameters", BAD_VALUE, str(e)))
    model = params.get("model", "?")
    facts = model_facts(model)
    shown = {k: v for k, v in params.items() if k not in ("results_path", "figures_dir")}
    p = Plan(notebook, profile, shown, model, facts["tokenizer_desc"], problems=problems)
    planner = _PLANNERS.get(notebook, _plan_task)
    planner(_Ctx(p, facts))
    return p


def plan_all(profile: str = "paper", **kw) -> dict[str, Plan]:
    """``plan`` of every notebook."""
    return {name: plan(name, profile, **kw) for name in NOTEBOOKS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib.profiles.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help=f"default: all ({', '.join(NOTEBOOKS)})")
    ap.add_argument("--profile", default="paper", help="test | default | paper (default: paper)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--offline", action="store_true", help="plan as where the hub is not reachable")
    g.add_argument("--probe", action="store_true", help="probe the hub, as the notebook would")
    ap.add_argument("--allow-fallback", action="store_true", help="as with MINILIB_ALLOW_FALLBACK=1")
    a = ap.parse_args(argv)
    hub = False if a.offline else None if a.probe else True
    bad = 0
    for name in a.notebooks or list(NOTEBOOKS):
        p = plan(name, a.profile, hub=hub, allow_fallback=True if a.allow_fallback else None)
        print(p.report(), flush=True)
        bad += len(p.problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
