"""The ``BERT_anatomy`` / ``GPT2_anatomy`` notebooks' parameters and profiles (``minilib.params``);
``TASK_SPEC`` / ``TASK_PROFILES`` (the task and fine-tuning settings) are shared with the pruning
notebooks (``minilib.profiles.structured``).  The experiment is ``minilib.studies.anatomy``."""

from __future__ import annotations

from minilib.params import Float, HubOr, Int, List, Str
from minilib.studies.anatomy import DECISION_STATES, PROTOCOLS


def _check_template(v):
    from minilib.params import ParameterError
    if "{text}" not in v:
        raise ParameterError(f"parameter 'template' = {v!r}: must contain '{{text}}'")


def _check_dataset(v):
    """An embedded classification set, or a ``.jsonl`` file that exists (checked with the parameters, not
    in the cell that loads it)."""
    from pathlib import Path

    from minilib.data.tasks import CLASSIFICATION_SETS
    from minilib.params import ParameterError
    allowed = f"one of {', '.join(CLASSIFICATION_SETS)} (embedded) or a .jsonl file of text, label rows"
    if v in CLASSIFICATION_SETS:
        return
    p = Path(v).expanduser()
    if v.endswith(".jsonl"):
        if not p.is_file():
            raise ParameterError(f"parameter 'dataset' = {v!r}: the file {p.resolve()} does not exist ({allowed})")
    elif p.is_file():
        raise ParameterError(f"parameter 'dataset' = {v!r}: a classification file must be JSON lines with the "
                             f"suffix .jsonl ({allowed})")
    else:
        raise ParameterError(f"parameter 'dataset' = {v!r}: not an embedded set nor a file; allowed: {allowed}")


TASK_SPEC = {
    "model": Str(),
    "dataset": Str(check=_check_dataset, help="'sarcasm', 'sst2' or a .jsonl with text,label"),
    "template": Str(check=_check_template),
    "n_train": Int(2),
    "n_test": Int(1),
    "seed": Int(0),
    "batch_size": Int(1),
    "max_length": Int(8),
    "protocols": List(Str(PROTOCOLS), min_len=1, help="'head-only' (frozen model, logistic head) and/or "
                                                          "'finetuned' (task fine-tuning, its own head)"),
    "ft_method": Str(("full", "lora")),
    "ft_n_train": Int(2, help="examples of the train part used for fine-tuning (at most n_train)"),
    "ft_epochs": Int(1),
    "ft_batch_size": Int(1),
    "ft_lr": Float(0.0, 1.0, help="learning rate of the fine-tuned body (the head: 1e-3)"),
    "ft_init": Str(("probe", "random"), help="head start: the head-only classifier, or random"),
    "lora_r": Int(1),
}
SPEC = {**TASK_SPEC, "anatomy_dir": Str(help="'' = $MINILIB_CACHE/anatomy"),
        "decision_state": Str(DECISION_STATES, help="'head': the vector the head reads (after the final norm); "
                                                    "'residual': before it")}

_FT = {
    "BERT": {"test": dict(ft_method="full", ft_n_train=64, ft_epochs=1, ft_batch_size=16, ft_lr=5e-5, ft_init="probe"),
             "default": dict(ft_method="full", ft_n_train=1500, ft_epochs=1, ft_batch_size=16, ft_lr=5e-5,
                             ft_init="probe"),
             "paper": dict(ft_method="full", ft_n_train=20000, ft_epochs=2, ft_batch_size=8, ft_lr=5e-5,
                           ft_init="random")},
    "GPT2": {"test": dict(ft_method="lora", ft_n_train=64, ft_epochs=1, ft_batch_size=16, ft_lr=1e-3, ft_init="probe"),
             "default": dict(ft_method="lora", ft_n_train=300, ft_epochs=1, ft_batch_size=16, ft_lr=1e-3,
                             ft_init="probe"),
             "paper": dict(ft_method="full", ft_n_train=20000, ft_epochs=2, ft_batch_size=8, ft_lr=5e-5,
                           ft_init="random")},
}
_BASE = {
    "BERT": {
        "test": dict(model="minilm-l6", dataset="sst2", n_train=64, n_test=64, batch_size=32),
        "default": dict(model="minilm-l6", dataset="sarcasm", n_train=1500, n_test=1000, batch_size=64),
        "paper": dict(model=HubOr("bert-base-uncased", "minilm-l6"), dataset="sarcasm", n_train=20000, n_test=2000,
                      batch_size=64),
    },
    "GPT2": {
        "test": dict(model="tiny-gpt2", dataset="sst2", n_train=64, n_test=64, batch_size=32),
        # 1,000 test items like BERT (a +-0.03 accuracy interval); the pruning notebooks' sizing: minilib.profiles.structured
        "default": dict(model="smollm2-135m", dataset="sarcasm", n_train=600, n_test=1000, batch_size=32),
        "paper": dict(model=HubOr("gpt2", "smollm2-135m"), dataset="sarcasm", n_train=20000, n_test=2000,
                      batch_size=32),
    },
}
# The decoder's default runs ``head-only`` alone, in the anatomy and the pruning notebooks: its short LoRA
# run (300 examples, 1 epoch, 19 steps) did not change the model (0.739 against 0.732 head-only on 1,000
# test items, commit 6a86cb8's results/GPT2_anatomy.json; 0.745 against 0.750 on 200 before), so it was
# no fine-tuned protocol, and it took ~290 of GPT2_anatomy's 460 s (the default's 45-minute budget buys
# resolution elsewhere).  One long enough to change the model is the paper profile's (full, 20,000
# examples x 2 epochs); the test profile still exercises the LoRA path.
_PROTOCOLS = {"BERT": {"test": list(PROTOCOLS), "default": list(PROTOCOLS), "paper": list(PROTOCOLS)},
              "GPT2": {"test": list(PROTOCOLS), "default": ["head-only"], "paper": list(PROTOCOLS)}}
TASK_PROFILES = {fam: {p: {**_BASE[fam][p], **_FT[fam][p], "protocols": _PROTOCOLS[fam][p], "lora_r": 8}
                       for p in ("test", "default", "paper")} for fam in ("BERT", "GPT2")}
NOTEBOOKS = {f"{fam}_anatomy": (SPEC, TASK_PROFILES[fam]) for fam in ("BERT", "GPT2")}
