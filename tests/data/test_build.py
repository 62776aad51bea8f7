"""End to end: `rejoinder data build` on synthetic and bundled corpora, both engines."""

import json
import shutil

import pyarrow.dataset as pads
import pytest
import zstandard

from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.data.filters import FILTERS
from rejoinder.data.records import SPLITS, read_dialogues
from rejoinder.data.reddit import RedditOptions
from rejoinder.data.stages import split_of
from rejoinder.errors import RejoinderError
from rejoinder.testing.reddit import BLOCKED_SUBREDDITS, synth_reddit


def rows(out, split):
    table = pads.dataset(str(out / split), format="parquet").to_table()
    return sorted(table.to_pylist(), key=lambda r: r["id"])


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """A synthetic month of Reddit, with bad lines and a subreddit blocklist."""
    root = tmp_path_factory.mktemp("reddit")
    synth_reddit(6000, root / "RC.zst", submissions_out=root / "RS.zst", seed=3)
    # Append bad records as a second zstd frame: a dump can hold several.
    bad = b"\n".join(
        [
            b'{"id": "zz1", "body": "unterminated',
            b'{"id": "zz2", "parent_id": "t3_x", "link_id": "t3_x", "body": "caf\xe9"}',
            b'{"id": "zz3", "parent_id": "t3_x", "link_id": "t3_x", "subreddit": "a"}',
            b'{"id": "zz4", "parent_id": "t3_x", "link_id": "t3_x", "body": 7, "subreddit": "a"}',
        ]
    )
    with open(root / "RC.zst", "ab") as f:
        f.write(zstandard.ZstdCompressor().compress(bad + b"\n"))
    (root / "blocked.txt").write_text("\n".join(BLOCKED_SUBREDDITS) + "\n")
    return root


def reddit_config(dump, out, **kw):
    return BuildConfig(
        sources=[
            Source("reddit", {"comments": [dump / "RC.zst"], "submissions": [dump / "RS.zst"]})
        ],
        out=str(out),
        filter_options={"subreddit_blocklist": str(dump / "blocked.txt"), "bland_count": 20},
        reddit=RedditOptions(title=True),
        valid=0.1,
        test=0.1,
        explain=2,
        **kw,
    )


@pytest.fixture(scope="module")
def built(dump, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "reddit"
    return out, build(reddit_config(dump, out))


def test_reddit_build_writes_splits_and_an_honest_manifest(built):
    out, manifest = built
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test", "train", "valid"]
    assert list(out.parent.iterdir()) == [out]  # the work files went with the build
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["dialogues"] == manifest["dialogues"]
    counts = {s: len(rows(out, s)) for s in ("train", "valid", "test")}
    assert counts == {s: manifest["dialogues"][s] for s in counts} and all(counts.values())
    # The synthetic dump provokes every filter; each counts what it dropped, by name.
    assert set(manifest["dropped"]) == set(FILTERS) and all(manifest["dropped"].values())
    # Nothing vanished: what came in is what went out plus what was dropped.
    assert manifest["counts"]["dialogues in: reddit"] == (
        manifest["dialogues"]["total"] + sum(manifest["dropped"].values())
    )
    assert manifest["bad_input"]["malformed json"] == 1
    assert manifest["bad_input"]["invalid utf-8"] == 1
    assert manifest["bad_input"]["missing field: body"] == 1
    assert manifest["bad_input"]["wrong type: body"] == 1
    assert manifest["counts"]["comment lines read"] == 6004
    assert all(len(v) <= 2 for k, v in manifest["samples"].items() if k.startswith("dropped:"))


def test_no_thread_crosses_splits_and_rows_have_the_schema(built):
    out, _ = built
    seen = {}
    for split in ("train", "valid", "test"):
        for row in rows(out, split):
            assert seen.setdefault(row["group"], split) == split
            assert row["source"] == "reddit" and len(row["turns"]) >= 2
            assert set(row["turns"][0]) == {"text", "speaker", "emotion", "act"}
            assert split_of(row["group"], 0.1, 0.1) == split


def test_builds_are_deterministic(built, dump, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    build(reddit_config(dump, again))
    for split in ("train", "valid", "test"):
        assert rows(out, split) == rows(again, split)


def test_the_datasets_library_reads_it(built):
    datasets = pytest.importorskip("datasets")
    out, manifest = built
    loaded = datasets.load_dataset("parquet", data_dir=str(out))
    assert loaded["train"].num_rows == manifest["dialogues"]["train"]
    assert loaded["train"][0]["turns"][0]["text"]


def test_other_sources_together(tmp_path):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        '["Hello there", "Hi! How are you?", "Fine."]\n'
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],'
        ' "style": "terse"}\nnot json\n'
    )
    qa = tmp_path / "qa.tsv"
    qa.write_text("你好吗\t我很好\nno tab here\n")
    out = tmp_path / "mixed"
    assert (
        main(
            [
                "data",
                "build",
                "jsonl",
                str(chats),
                "qa",
                str(qa),
                "chatterbot",
                "--language",
                "chinese",
                "--out",
                str(out),
                "--valid",
                "0",
                "--test",
                "0",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bad_input"] == {"malformed json": 1, "no tab": 1}
    assert manifest["dropped"] == {}  # filters are off by default outside Reddit
    got = {r["id"]: r for r in rows(out, "train")}
    assert got["chats-2"]["turns"][1]["speaker"] == "assistant"
    assert json.loads(got["chats-2"]["meta"]) == {"style": "terse"}
    assert got["qa-1"]["turns"][1]["text"] == "我很好"
    assert any(r["source"] == "chatterbot" for r in got.values())


def test_bad_requests_leave_nothing_behind(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            ["data", "build", "reddit", "--comments", str(tmp_path / "nope.zst"), "--out", str(out)]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no output, no temporary directory
    assert main(["data", "build", "reddit", "--out", str(out)]) == 2
    assert main(["data", "build", "usenet", "--out", str(out)]) == 2
    assert main(["data", "build", "chitchat", "--filters", "url,spam", "--out", str(out)]) == 2
    out.mkdir()
    (out / "kept").write_text("an earlier output")
    with pytest.raises(RejoinderError, match="already exists"):
        build(BuildConfig(sources=[Source("chitchat")], out=str(out)))


def test_a_truncated_dump_is_counted_not_fatal(dump, tmp_path):
    cut = tmp_path / "cut.zst"
    data = (dump / "RC.zst").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    manifest = build(
        BuildConfig(sources=[Source("reddit", {"comments": [cut]})], out=str(tmp_path / "o"))
    )
    assert manifest["bad_input"]["truncated file"] == 1
    assert 0 < manifest["counts"]["comment lines read"] < 6000


def test_buckets_grow_with_the_dump_so_memory_does_not(tmp_path):
    from rejoinder.data.engines.files import BUCKET_BYTES, bucket_count

    sizes = [1 << 20, 1 << 30, 4 << 30]  # sparse files: no disk is used
    counts = []
    for size in sizes:
        path = tmp_path / f"RC_{size}.zst"
        with open(path, "wb") as f:
            f.truncate(size)
        counts.append(bucket_count([str(path)]))
    assert counts[0] == 1 and counts[0] < counts[1] < counts[2]
    # Each bucket holds about BUCKET_BYTES of (decompressed) comments.
    assert (4 << 30) * 8 / counts[2] <= BUCKET_BYTES


def test_show_prints_counts_filters_and_dialogues(built, capsys):
    out, manifest = built
    assert main(["data", "show", str(out), "-n", "2"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {manifest['dialogues']['total']} dialogues" in text
    assert "dropped by filter:" in text and "url" in text
    assert "dropped:bland: " in text  # --explain kept samples, and show prints them
    assert text.count("[train] reddit-") == 2


def test_spark_gives_the_same_dataset(built, dump, tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs Java")
    out, manifest = built
    spark_out = tmp_path / "spark"
    spark_manifest = build(reddit_config(dump, spark_out, engine="spark", master="local[2]"))
    for split in ("train", "valid", "test"):
        assert rows(out, split) == rows(spark_out, split)
    for key in ("dialogues", "dropped", "bad_input", "counts"):
        assert spark_manifest[key] == manifest[key], key


def test_read_dialogues_gives_back_what_was_written(built):
    out, manifest = built
    for split in SPLITS:
        dialogues = read_dialogues(out, split)
        assert len(dialogues) == manifest["dialogues"][split]
        by_id = {r["id"]: r for r in rows(out, split)}
        for d in dialogues:
            assert d.texts == [t["text"] for t in by_id[d.id]["turns"]]
    assert len(read_dialogues(out, "train", limit=3)) == 3
    with pytest.raises(RejoinderError, match="no manifest.json"):
        read_dialogues(out / "train", "train")


def test_a_failed_build_leaves_the_old_dataset(tmp_path):
    qa = tmp_path / "qa.tsv"
    qa.write_text("How are you?\tFine, thanks.\n")
    out = tmp_path / "kept"
    build(BuildConfig(sources=[Source("qa", {"path": str(qa)})], out=str(out)))
    before = rows(out, "train") + rows(out, "valid") + rows(out, "test")
    missing = Source("qa", {"path": str(tmp_path / "nope.tsv")})
    with pytest.raises(RejoinderError, match="no such file"):
        build(BuildConfig(sources=[missing], out=str(out), force=True))
    assert rows(out, "train") + rows(out, "valid") + rows(out, "test") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "qa.tsv"]
