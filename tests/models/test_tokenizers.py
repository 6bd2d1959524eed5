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



def test_malformed_tiktoken_files_name_file_and_line(tmp_path):
    import base64

    import pytest

    from minilib import assets
    from minilib.models.tokenizers import tiktoken_to_hf

    def b64(b):
        return base64.b64encode(b).decode()
    f = tmp_path / "gpt2.tiktoken"
    cases = [
        (f"{b64(b'a')} 0\n{b64(b'b')}\n", r"gpt2\.tiktoken:2: expected '<base64 token> <rank>'"),
        (f"{b64(b'a')} 0\n{b64(b'b')} one\n", r"gpt2\.tiktoken:2: expected"),
        (f"{b64(b'a')} 0\n!!notbase64 1\n", r"gpt2\.tiktoken:2: expected"),
        (f"{b64(b'a')} 0\n\n{b64(b'a')} 1\n", r"gpt2\.tiktoken:3: duplicate token b'a'"),
        (f"{b64(b'a')} 0\n{b64(b'b')} 1\n", r"has 2 tokens, expected 50256"),
        ("".join(f"{b64(bytes([i % 256]) * (1 + i // 256))} {i + (i == 7)}\n" for i in range(50256)),
         r"ranks are not 0..50255, each once"),
    ]
    for text, match in cases:
        f.write_text(text)
        with pytest.raises(assets.AssetError, match=match):
            tiktoken_to_hf(f, tmp_path)
    f.write_bytes(b"\xff\xfe 0\n")
    with pytest.raises(assets.AssetError, match="cannot read the tiktoken file"):
        tiktoken_to_hf(f, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2.tiktoken"]  # nothing written
