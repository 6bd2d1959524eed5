"""The embedded real models and data, with bounds measured on this protocol (and a margin)."""

import pytest
import torch

from minilib import assets
from minilib.data import corpus_splits, load_mcq
from minilib.eval import mcq_accuracy, perplexity
from minilib.models import load

pytestmark = pytest.mark.integration


def test_smollm2_is_the_real_model(smollm2):
    m = smollm2
    assert m.adapter.family == "llama" and len(m.adapter.blocks(m.model)) == 30
    assert sum(p.numel() for p in m.model.parameters()) == 134_515_008
    ids = m.tokenizer("The capital of France is", return_tensors="pt")
    out = m.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in m.tokenizer.decode(out[0, ids.input_ids.shape[1]:])


def test_smollm2_wiki_perplexity_in_range(smollm2):
    """Dense SmolLM2-135M (Q4_1 weights, dequantised) on the held-out wiki test split, 8 x 512
    tokens: measured 10.97."""
    sp = corpus_splits(smollm2.tokenizer, "wiki")
    ppl = perplexity(smollm2.model, sp["test"], seqlen=512, max_windows=8)
    assert 9.0 < ppl < 13.0


def test_smollm2_sciq_well_above_chance(smollm2):
    """Measured acc 0.70 on the first 100 SciQ items (chance 0.25): the 95% interval excludes chance."""
    res = mcq_accuracy(smollm2.model, smollm2.tokenizer, load_mcq("sciq", n=40))
    assert res["acc"] > 0.5 and res["acc_ci95_low"] > res["chance"]
    assert res["acc_ci95_low"] < res["acc"] < res["acc_ci95_high"]


def test_minilm_embeds_paraphrases_closer(minilm):
    """all-MiniLM-L6-v2 is a sentence encoder: a paraphrase is nearer than an unrelated sentence."""
    model, tok, ad = minilm
    assert ad.family == "bert" and not ad.is_decoder
    s = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    enc = tok(s, return_tensors="pt", padding=True)
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    sim = (e @ e.T).numpy()
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3


def test_gguf_path_gives_the_same_logits_as_the_cached_conversion(smollm2):
    gguf = assets.fetch("smollm2-135m") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    direct = load(gguf)
    ids = smollm2.tokenizer("Offline models load the same way.", return_tensors="pt").input_ids
    with torch.no_grad():
        a = direct.model(input_ids=ids).logits
        b = smollm2.model(input_ids=ids).logits
    assert torch.equal(a, b)
    assert direct.tokenizer("hello world").input_ids == smollm2.tokenizer("hello world").input_ids


def test_seqlen_above_max_positions_is_refused(smollm2):
    with pytest.raises(ValueError, match="maximum positions \\(8192\\)"):
        perplexity(smollm2.model, torch.zeros(20000, dtype=torch.long), seqlen=10000)
