"""The ``contextual_pruning`` notebook's parameters and profiles (``minilib.params``); the experiment
is ``minilib.studies.contextual``."""

from __future__ import annotations

from minilib.params import Bool, Dict, Float, HubOr, Int, List, Param, Str
from minilib.studies.contextual import NOTEBOOK, SCALES

SPEC = {
    "model": Str(),
    "domains": List(Str(), min_len=1),
    "mcq_sets": Dict(Param("str", optional=True)),
    "thresholds": List(Float(0.0), min_len=1),
    "scale": Str(choices=list(SCALES)),
    "prune_embeddings": Bool(),
    "min_count": Int(1),
    "mcq_n": Int(0, help="MCQ items per domain (0 = the whole set)"),
    "calib_windows": Int(1),
    "seqlen": Int(2),
    "test_chunks": Int(2),
    "dev_chunks": Int(1),
    "chunk_bytes": Int(16),
    "eval_seqlen": Int(2),
    "epochs": Int(1),
    "ft_steps": Int(0),
    "ft_seqlen": Int(2),
    "ft_batch": Int(1),
    "ft_lr": Float(0.0),
    "ft_eval_every": Int(1),
    "seed": Int(0),
}
PROFILES = {
    "test": dict(model="tiny-llama", domains=["tiny"], mcq_sets={"tiny": "piqa"}, thresholds=[0.0, 0.008],
                 scale="absolute", mcq_n=4, calib_windows=8, seqlen=32, test_chunks=4, dev_chunks=2, chunk_bytes=128,
                 eval_seqlen=64, ft_steps=2, ft_seqlen=32, ft_batch=2, ft_eval_every=1),
    # code: no MCQ in the default budget (MMLU computer-science questions are long: ~14k tokens per
    # evaluation of 24 items with the batched scorer, 4 evaluations per domain); the paper profile has it
    # two thresholds (vocabulary pruning alone, and ε = 0.1 with it) to shorten `make reproduce` on 2 CPU
    # cores: each threshold costs ~50 s per domain (prune, score, 6 fine-tuning steps, score, MCQ)
    "default": dict(model="smollm2-135m", domains=["wiki", "tiny", "code"],
                    mcq_sets={"wiki": "arc_easy", "tiny": "piqa", "code": None},
                    thresholds=[0.0, 0.1], scale="absolute", mcq_n=24, calib_windows=16, seqlen=128,
                    test_chunks=16, dev_chunks=6, chunk_bytes=512, eval_seqlen=256, ft_steps=6, ft_seqlen=128,
                    ft_batch=4, ft_eval_every=3),
    # paper: the reference code (tval2/contextual-pruning; docs/contextual.md) calibrates on 40 x 2,048
    # tokens, fine-tunes 5 steps on one 512-token sequence and measures 40 x 2,048 tokens, all of the same
    # text.  One value serves every domain, so the smallest split binds (python -m minilib.profiles.plan;
    # counts in GPT-2 BPE, phi-1.5's on prose):
    # * calibration: TinyStories' calib split holds 31k tokens, 15 windows of 2,048 (not 40): 8 random
    #   windows of 2,048 (16k tokens) repeat 21% of their tokens in expectation (the former 128 repeated
    #   88%, and 34-44% on code and wiki); wiki and code could take more;
    # * test and dev text: TinyStories' test and dev splits hold 26 kB each (~6k tokens, not 40 x 2,048):
    #   all of it, 28 chunks of 1,024 bytes (the former 2,048-byte chunks give 14, too few for the paired
    #   bootstrap); the former 400 x 2,048 bytes exceeded even wiki's test split (97 chunks);
    # * fine-tuning: the reference's 5 steps of one 512-token sequence, on train (early stopping on dev at
    #   every step); the former 1,000 steps of 8 x 512 were capped by the notebook's epochs = 1 at 4
    #   (TinyStories) to 41 (code) steps.  A larger recovery: -p epochs 250 -p ft_steps 1000 -p ft_batch 8
    #   (1,000 steps bind in every domain from 250 epochs, i.e. 250 passes over TinyStories' train split)
    "paper": dict(model=HubOr("microsoft/phi-1_5", "smollm2-135m"), domains=["wiki", "tiny", "code"],
                  mcq_sets={"wiki": "arc_easy", "tiny": "piqa", "code": "mmlu:high_school_computer_science"},
                  thresholds=[1e-5, 1e-3, 1e-1], scale="absolute", mcq_n=0, calib_windows=8, seqlen=2048,
                  test_chunks=28, dev_chunks=28, chunk_bytes=1024, eval_seqlen=1024, ft_steps=5, ft_seqlen=512,
                  ft_batch=1, ft_eval_every=1),
}
NOTEBOOKS = {NOTEBOOK: (SPEC, PROFILES)}
