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
