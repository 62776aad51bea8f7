"""atomic_directory: an output appears complete, with ordinary permissions, or not at all."""

import pytest

from rejoinder.atomic import atomic_directory


def test_the_output_gets_the_permissions_of_any_new_directory(tmp_path):
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "file").write_text("x")
    (tmp_path / "plain").mkdir()
    mode = (tmp_path / "out").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777


def test_a_failure_leaves_the_old_output_and_no_temporary(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("kept")
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "new").write_text("half")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["old"]


def test_an_output_is_checked_one_way_before_any_work(tmp_path):
    from rejoinder.atomic import check_out
    from rejoinder.errors import RejoinderError

    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty", force=False) == tmp_path / "empty"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RejoinderError, match="already exists; choose another --out, or --force"):
        check_out(tmp_path / "full", force=False)
    assert check_out(tmp_path / "full", force=True) == tmp_path / "full"
    with pytest.raises(RejoinderError, match="is the input"):
        check_out(tmp_path / "full", force=True, source=tmp_path / "full" / ".." / "full")
