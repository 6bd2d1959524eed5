"""Generated tables: README.md and docs/*.md match results/*.json (tools.tables), and block filling."""

import json
from pathlib import Path

import pytest

from tools import tables
from tools.tables import TableError, collect_tables, fill, find_blocks

ROOT = Path(__file__).resolve().parent.parent


def test_repository_tables_match_their_results():
    """A table in README/docs that no longer matches its JSON fails here: run `python -m tools.tables`."""
    stale, errors = tables.run(tables.documents(), ROOT / "results", check=True)
    assert not errors, "\n".join(errors)
    assert not stale, "stale tables (run `python -m tools.tables`):\n" + "\n".join(stale)


def test_every_study_table_is_collected_and_documented():
    found = collect_tables()
    assert {"dense_perplexity", "dense_mcq", "dense_verdict"} <= set(found)
    used = {b.name for p in tables.documents() for b in find_blocks(p.read_text(), str(p))}
    assert {"dense_perplexity", "dense_mcq", "dense_verdict"} <= used


FAKE = {"t1": lambda d: "| a |\n|---|\n| " + (Path(d) / "x.json").read_text().strip() + " |",
        "t2": lambda d: "two"}


def test_fill_replaces_block_bodies_and_reports_stale(tmp_path):
    (tmp_path / "x.json").write_text("1.5")
    text = "intro\n<!-- table:t1 -->\n| a |\n|---|\n| 1.4 |\n<!-- /table -->\nmiddle\n<!-- table:t2 -->\n" \
           "two\n<!-- /table -->\nend\n"
    new, stale, errors = fill(text, FAKE, tmp_path, "doc.md")
    assert not errors
    assert stale == ["doc.md:2: table 't1' does not match its results"]          # t2 is already current
    assert new == text.replace("| 1.4 |", "| 1.5 |")
    again, stale2, _ = fill(new, FAKE, tmp_path, "doc.md")
    assert again == new and stale2 == []                                         # idempotent
    empty = "<!-- table:t2 --><!-- /table -->"
    assert fill(empty, FAKE, tmp_path)[0] == "<!-- table:t2 -->\ntwo\n<!-- /table -->"


def test_missing_function_or_json_is_an_error_naming_it(tmp_path):
    text = "<!-- table:nope -->\nold\n<!-- /table -->\n\n<!-- table:t1 -->\nold\n<!-- /table -->\n"
    new, stale, errors = fill(text, FAKE, tmp_path, "doc.md")   # no x.json in tmp_path
    assert new == text and stale == []                           # broken blocks keep their old body
    assert errors[0].startswith("doc.md:1: no table named 'nope'")
    assert errors[1].startswith("doc.md:5: table 't1': its results JSON is missing")


def test_a_table_reading_through_common_load_names_the_missing_json(tmp_path):
    from minilib.tables.common import load
    tables = {"d": lambda results: str(load(results, "dense_baselines"))}
    _, _, errors = fill("<!-- table:d -->\nold\n<!-- /table -->\n", tables, tmp_path, "doc.md")
    assert errors[0].startswith("doc.md:1: table 'd': its results JSON is missing")
    assert "dense_baselines.json is missing" in errors[0]


@pytest.mark.parametrize("text,msg", [
    ("<!-- table:t1 -->\nno end\n", "doc.md:1: block 'table:t1' is not closed"),
    ("x\n<!-- /table -->\n", "doc.md:2: '<!-- /table -->' without an opening"),
    ("<!-- table:t1 -->\n<!-- table:t2 -->\n<!-- /table -->\n", "contains another block 'table:t2'"),
])
def test_malformed_blocks(text, msg):
    with pytest.raises(TableError, match=msg):
        find_blocks(text, "doc.md")
    assert msg.split(":")[-1].strip() in fill(text, FAKE, Path("."), "doc.md")[2][0]


def test_cli_check_and_rewrite(tmp_path, capsys):
    res = tmp_path / "results"
    res.mkdir()
    (res / "dense_baselines.json").write_text(json.dumps({
        "notebook": "dense_baselines", "parameters": {"model": "m"}, "metrics": {},
        "records": [{"kind": "mcq", "task": "sciq", "split": "validation", "lmeval_split": "test", "n": 100,
                     "n_total": 1000, "acc": 0.7, "acc_norm": 0.6, "chance": 0.25}]}))
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n<!-- table:dense_verdict -->\nold\n<!-- /table -->\n")
    args = ["--results", str(res), str(doc)]
    assert tables.main(args + ["--check"]) == 1
    err = capsys.readouterr().err
    assert "stale:" in err and "dense_verdict" in err
    assert tables.main(args) == 0
    body = doc.read_text()
    assert "**Above chance**: sciq 0.700 [0.604, 0.781]" in body and "Not resolved" not in body
    assert tables.main(args + ["--check"]) == 0
