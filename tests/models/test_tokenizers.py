"""The real GPT-2 tokenizer, rebuilt offline."""



from minilib.models.tokenizers import gpt2_tokenizer

# --- assets ---------------------------------------------------------------------------------------


def test_gpt2_tokenizer_is_the_real_one():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert tok("Hello world!").input_ids == [15496, 995, 0]
    assert tok("<|endoftext|>").input_ids == [50256]
    s = "The quick brown fox — naïve café 日本語"
    assert tok(s).input_ids[:4] == [464, 2068, 7586, 21831]
    assert tok.decode(tok(s).input_ids) == s

