"""`rejoinder quickstart` runs every stage once, then reuses what is finished."""

import json

from rejoinder.quickstart import Recipe, quickstart

TINY = Recipe(
    size="tiny",
    tokenizer="bpe:300",
    max_tokens=64,
    batch_tokens=1024,
    max_steps=4,
    max_dialogues=300,
    eval_contexts=4,
    eval_seconds=10,
)


def test_quickstart_runs_every_stage_then_reuses_them(tmp_path, capfd):
    # capfd, not capsys: Lightning, imported here first, keeps the stderr it found.
    out = tmp_path / "qs"
    result = quickstart(minutes=3, out=out, chat=False, recipe=TINY)
    for path in ["data/manifest.json", "plan.json", "forward/rejoinder.json",
                 "reverse/rejoinder.json", "report/metrics.json", "report/report.md",
                 "report/metrics.png", "report/perplexity.png"]:  # fmt: skip
        assert (out / path).is_file(), path
    assert set(result["systems"]) == {"nucleus", "mmi"}
    assert result["perplexity"]["per_word"] > 1
    reverse = json.loads((out / "reverse" / "rejoinder.json").read_text())
    assert reverse["format"]["reverse"] is True
    # One vocabulary for both models, as MMI needs.
    assert (out / "forward" / "tokenizer.json").read_text() == (
        out / "reverse" / "tokenizer.json"
    ).read_text()
    printed = capfd.readouterr().out
    assert "conversation 3" in printed and "mmi" in printed

    again = quickstart(minutes=3, out=out, chat=False, recipe=TINY)
    said = capfd.readouterr().err
    assert said.count("already") == 4  # data, both models, the evaluation
    assert again["systems"] == result["systems"]
