"""The ``contextual_pruning`` notebook's parameters and profiles (``minilib.params``); the experiment
is ``minilib.studies.contextual`` (``ContextualConfig`` takes the same names)."""

from __future__ import annotations

from minilib.params import Bool, Dict, Float, HubOr, Int, List, Param, Str
from minilib.studies.contextual import AUTHORS_THRESHOLDS, FFN_WIDTHS, NOTEBOOK, SCALES

SPEC = {
    "model": Str(),
    "domains": List(Str(), min_len=1),
    "mcq_sets": Dict(Param("str", optional=True)),
    "thresholds": List(Float(0.0), min_len=1,
                       help="ε of the settings that prune the vocabulary too (0: vocabulary only, > 0: both)"),
    "neuron_thresholds": List(Float(0.0), help="ε of the neuron-only settings (vocabulary untouched)"),
    "dense_finetune": Bool(help="the dense model fine-tuned with the same recipe (the recovery control)"),
    "scale": Str(choices=list(SCALES)),
    "prune_embeddings": Bool(),
    "ffn_widths": Str(choices=list(FFN_WIDTHS), help="'threshold': every neuron under ε (the authors' rule; widths "
                      "differ per layer) | 'equal': as many removed, one width per layer (survives an HF export)"),
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
    "coverage_tokens": List(Int(1), help="calib-prefix sizes (tokens) of the vocabulary coverage curve"),
    "coverage_min_counts": List(Int(1), help="min_count values of the coverage curve"),
    "coverage_eval_tokens": List(Int(1), help="calib-prefix sizes where the vocabulary-only model is scored"),
    "authors_domains": List(Str(), help="domains that also run the authors' protocol (same text for everything)"),
    "authors_thresholds": List(Float(0.0), help="ε of the authors'-protocol settings (as thresholds)"),
    "n_resamples": Int(100, help="bootstrap resamples of every reported interval"),
    "seed": Int(0),
}
PROFILES = {
    "test": dict(model="tiny-llama", domains=["tiny"], mcq_sets={"tiny": "piqa"}, thresholds=[0.0, 0.008],
                 neuron_thresholds=[1e-5, 0.008], dense_finetune=True, scale="absolute", mcq_n=4, calib_windows=8,
                 seqlen=32, test_chunks=12, dev_chunks=2, chunk_bytes=512, eval_seqlen=64, ft_steps=1, ft_seqlen=32,
                 ft_batch=2, ft_eval_every=1, n_resamples=200, coverage_tokens=[1024, 4096, 100_000],
                 coverage_min_counts=[1, 2],
                 coverage_eval_tokens=[1024], authors_domains=["tiny"], authors_thresholds=[0.0, 0.008]),
    # Sized on 2 CPU cores from a pilot on SmolLM2 (TinyStories), in CPU seconds measured while the cores
    # were shared, converted to minutes alone on 2 threads by the former default (wiki/tiny/code, ε = 0 and
    # 0.1, 16 test chunks: ~1,850 CPU s in those units, 8 min alone): scoring 32 test chunks of 512 bytes
    # ~71 s, 6 fine-tuning steps with 2 dev evaluations of 4 chunks ~132 s, L1 statistics ~59 s, 24 MCQ
    # items ~25 s, vocabulary counting for the whole coverage curve ~5 s.  Per domain: dense ~163, dense
    # fine-tuned ~204, each pruned setting scored before and after fine-tuning (+ MCQ) ~304 x 3 (the
    # authors' ε = 1e-5 and 1e-3 remove no FFN neuron of SmolLM2: recorded as the dense model, not scored),
    # one scored coverage point ~76: ~1,355; the authors' protocol on wiki (statistics, dense fine-tuned,
    # ε = 0 and 0.1) ~820.  About 3,550 units: ~15 min alone on 2 threads.  The resolution goes to 32 test
    # chunks (16 before; the floor of a test is 10) and two domains (code, whose MCQ set is too long for
    # this budget, is in the paper profile); ε = 0.05 is in the paper profile.
    "default": dict(model="smollm2-135m", domains=["wiki", "tiny"],
                    mcq_sets={"wiki": "arc_easy", "tiny": "piqa"},
                    thresholds=[0.0, 0.1], neuron_thresholds=list(AUTHORS_THRESHOLDS), dense_finetune=True,
                    scale="absolute", mcq_n=24, calib_windows=16, seqlen=128, test_chunks=32, dev_chunks=4,
                    chunk_bytes=512, eval_seqlen=256, ft_steps=6, ft_seqlen=128, ft_batch=4, ft_eval_every=6,
                    n_resamples=10_000,
                    coverage_tokens=[1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144],
                    coverage_min_counts=[1, 2, 4], coverage_eval_tokens=[2048], authors_domains=["wiki"],
                    authors_thresholds=[0.0, 0.1]),
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
                  thresholds=[0.0, 1e-5, 1e-3, 1e-1], scale="absolute", mcq_n=0, calib_windows=8, seqlen=2048,
                  test_chunks=28, dev_chunks=28, chunk_bytes=1024, eval_seqlen=1024, ft_steps=5, ft_seqlen=512,
                  ft_batch=1, ft_eval_every=1, n_resamples=10_000,
                  neuron_thresholds=[*AUTHORS_THRESHOLDS[:2], 0.05, AUTHORS_THRESHOLDS[2]], dense_finetune=True,
                  coverage_tokens=[2 ** k for k in range(10, 21)], coverage_min_counts=[1, 2, 4, 8],
                  coverage_eval_tokens=[2048, 16384, 131072], authors_domains=["wiki", "tiny", "code"],
                  authors_thresholds=[0.0, 1e-5, 1e-3, 1e-1]),
}
NOTEBOOKS = {NOTEBOOK: (SPEC, PROFILES)}
