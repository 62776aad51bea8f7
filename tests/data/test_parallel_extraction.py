"""The local engine's parallel extraction: reader processes parse blocks of lines, and the
dataset is the one a single reader makes, bad lines counted wherever they fall."""

import functools
import json
import multiprocessing
import random
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.data.engines import files, local, reading
from rejoinder.data.records import RawDialogue, arrow_schema, dialogue_table
from rejoinder.data.reddit import RedditOptions, read_reddit_file
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError
from rejoinder.testing.reddit import synth_reddit

# Bad lines, each in the dump several times and far apart, so that they fall in
# different blocks: (reason they are counted under, line).
BAD = [
    ("malformed json", b'{"id": "b%d", "body": "unterminated'),
    ("not a json object", b"[%d, 2]"),
    ("missing field: body", b'{"id":"b%d","parent_id":"t3_q","link_id":"t3_q","subreddit":"s"}'),
    ("invalid utf-8", b'{"id": "b%d", "parent_id": "t3_q", "link_id": "t3_q", "body": "caf\xe9"}'),
]  # fmt: skip
COPIES = 7  # of each bad line: more than the 5 samples a reason keeps
COMMENTS = 3000


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """A synthetic dump (comments and submissions) with bad lines spread through it."""
    root = tmp_path_factory.mktemp("parallel")
    synth_reddit(COMMENTS, root / "RC.ndjson", submissions_out=root / "RS.zst", seed=11)
    lines = (root / "RC.ndjson").read_bytes().splitlines(keepends=True)
    step = len(lines) // (len(BAD) * COPIES + 1)
    for n in range(len(BAD) * COPIES):
        _, line = BAD[n % len(BAD)]
        lines.insert((n + 1) * step + n, line % n + b"\n")
    (root / "RC.zst").write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines)))
    return root


def small_parts(monkeypatch) -> None:
    """Blocks of a few kilobytes (over a hundred of them), and an odd number of buckets, so
    that two workers split the last one's threads."""
    monkeypatch.setattr(reading, "BLOCK_BYTES", 4 << 10)
    monkeypatch.setattr(files, "BUCKET_BYTES", 600 << 10)


@pytest.fixture(scope="module")
def parallel(dump, tmp_path_factory):
    """The dump built by two workers, both reading: (manifest, output directory)."""
    out = tmp_path_factory.mktemp("parallel-build") / "ds"
    with pytest.MonkeyPatch.context() as monkeypatch:
        small_parts(monkeypatch)
        return built(dump, out, monkeypatch, workers=2), out


def config(dump, out):
    source = {"comments": [dump / "RC.zst"], "submissions": [dump / "RS.zst"]}
    return BuildConfig(
        sources=[Source("reddit", source)],
        out=str(out),
        reddit=RedditOptions(title=True),
        filter_options={"bland_count": 20},
        valid=0.1,
        test=0.1,
        explain=2,
    )


def built(dump, out, monkeypatch, workers: int, readers: int | None = None) -> dict:
    """Builds with `workers` processes, `readers` of them parsing (all, by default)."""
    monkeypatch.setenv("REJOINDER_WORKERS", str(workers))
    read = reading.read_dumps if readers is None else functools.partial(_read_dumps_with, readers)
    monkeypatch.setattr(local, "read_dumps", read)
    return build(config(dump, out))


def _read_dumps_with(readers, files_, report, work_dir, buckets, _workers):
    return reading.read_dumps(files_, report, work_dir, buckets, readers)


def timeless(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("created", "seconds")}


def dataset_files(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


@pytest.mark.parametrize("readers", [1, 3])
def test_parallel_readers_give_the_dataset_one_reader_gives(
    dump, parallel, tmp_path, monkeypatch, readers
):
    many, out = parallel
    small_parts(monkeypatch)
    one = built(dump, tmp_path / "one", monkeypatch, workers=2, readers=readers)
    assert files.bucket_count([str(dump / "RC.zst"), str(dump / "RS.zst")]) % 2 == 1
    assert many["counts"]["comment lines read"] > 0
    assert timeless(many) == timeless(one)
    assert dataset_files(out) == dataset_files(tmp_path / "one")
    assert len(dataset_files(out)) == 6  # two parts of each split
    written = json.loads((out / "manifest.json").read_text())
    assert timeless(written) == timeless(many)


def test_bad_lines_in_different_blocks_are_all_counted(dump, parallel, monkeypatch):
    manifest, _ = parallel
    small_parts(monkeypatch)
    blocks = list(reading.blocks(str(dump / "RC.zst"), Report()))
    assert len(blocks) > 2 * len(BAD) * COPIES  # bad lines are ~100 lines apart
    assert sum(block.count(b"\n") for block in blocks) == COMMENTS + len(BAD) * COPIES
    for reason, line in BAD:
        assert manifest["bad_input"][reason] == COPIES, reason
        # The samples are the first lines in the dump, as one reader keeps them.
        numbers = [n for n in range(len(BAD) * COPIES) if BAD[n % len(BAD)][1] == line][:5]
        samples = [str((line % n + b"\n")[:120])[:200] for n in numbers]
        assert manifest["samples"][f"bad_input:{reason}"] == samples
    read = manifest["counts"]["comment lines read"]
    assert read == COMMENTS + len(BAD) * COPIES
    assert manifest["counts"]["comments parsed"] == read - len(BAD) * COPIES


def test_one_process_makes_the_same_rows(dump, parallel, tmp_path, monkeypatch):
    """With one worker, one part holds the buckets in order; with two, part p holds the
    buckets whose number is p modulo 2, in the same order (the last bucket's threads
    were walked by both workers and put back in order)."""
    two, out = parallel
    small_parts(monkeypatch)
    one = built(dump, tmp_path / "one", monkeypatch, workers=1)
    buckets = files.bucket_count([str(dump / "RC.zst"), str(dump / "RS.zst")])
    assert buckets % 2 == 1
    drop = ("created", "seconds", "samples")
    assert {k: v for k, v in one.items() if k not in drop} == {
        k: v for k, v in two.items() if k not in drop
    }
    for split in ("train", "valid", "test"):
        ones = pq.read_table(tmp_path / "one" / split / "part-00000.parquet").to_pylist()
        assert not (tmp_path / "one" / split / "part-00001.parquet").exists()
        for part in (0, 1):
            rows = pq.read_table(out / split / f"part-{part:05d}.parquet")
            mine = [r for r in ones if zlib.crc32(r["group"].encode()) % buckets % 2 == part]
            assert rows.to_pylist() == mine
            assert mine or split != "train"


def test_a_reader_that_fails_stops_the_build(dump, tmp_path, monkeypatch):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the failing parser reaches the readers by fork")

    def failing(lines, kind, report):
        raise ValueError("parser broke")
        yield  # a generator, as parse_lines is

    monkeypatch.setattr(reading, "parse_lines", failing)
    monkeypatch.setenv("REJOINDER_WORKERS", "2")
    with pytest.raises(RejoinderError, match="(?s)a reader process failed.*parser broke"):
        build(config(dump, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("given", ["0", "two", "-1"])
def test_a_bad_worker_count_is_refused(monkeypatch, given):
    monkeypatch.setenv("REJOINDER_WORKERS", given)
    with pytest.raises(RejoinderError, match="REJOINDER_WORKERS"):
        local.worker_count()
    monkeypatch.setenv("REJOINDER_WORKERS", "3")
    assert local.worker_count() == 3


def test_buckets_give_each_threads_records_in_the_order_of_the_dump(dump, tmp_path, monkeypatch):
    small_parts(monkeypatch)
    dumps = [("submissions", str(dump / "RS.zst")), ("comments", str(dump / "RC.zst"))]
    expected: list[list[tuple]] = [[] for _ in range(5)]
    for kind, path in dumps:
        for link_id, record in read_reddit_file(path, kind, Report()):
            expected[zlib.crc32(link_id.encode()) % 5].append(record)
    assert all(len(b) > 100 for b in expected)
    for readers in (1, 3):
        work = tmp_path / f"readers-{readers}"
        work.mkdir()
        got = reading.read_dumps(dumps, Report(), work, 5, readers)
        assert [list(reading.bucket_records(files_)) for files_ in got] == expected
        assert not any(work.iterdir())  # read back, the bucket files are gone


def test_dialogue_tables_are_the_tables_of_their_rows():
    """The local engine writes dialogues a column at a time; the table must be the one
    their rows make, whatever the texts (empty, not ASCII) and the fields left out."""
    rng = random.Random(5)
    words = ["", "a", "word", "caf\u00e9", "\u4e2d\u6587", "x" * 50, None]

    def text() -> str:
        return " ".join(w for w in rng.choices(words, k=rng.randrange(4)) if w is not None)

    dialogues = []
    for i in range(300):
        n = rng.randrange(5)
        labelled = rng.random() < 0.3
        dialogues.append(
            RawDialogue(
                id=f"d{i}",
                source=rng.choice(["reddit", "dailydialog"]),
                group=rng.choice(["g", "h\u00e9"]),
                texts=[text() for _ in range(n)],
                speakers=[rng.choice(words) for _ in range(n)],
                emotions=[rng.choice(words) for _ in range(n)] if labelled else None,
                acts=[rng.choice(["inform", None]) for _ in range(n)] if labelled else None,
                meta=rng.choice([None, '{"k": "v"}']),
            )
        )
    schema = arrow_schema()
    for some in (dialogues, dialogues[:1], [d for d in dialogues if not d.texts]):
        columns = list(zip(*[d.to_row() for d in some], strict=True))
        rows = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
            schema=schema,
        )
        table = dialogue_table(some)
        table.validate(full=True)
        assert table.equals(rows)
