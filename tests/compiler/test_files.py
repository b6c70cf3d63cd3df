"""atomic_open: a file is replaced whole or not at all."""
import pytest

from ptqc.files import atomic_open


def test_a_clean_exit_replaces_the_file_and_an_error_leaves_the_old_one(tmp_path):
    path = tmp_path / "t.json"
    with atomic_open(path) as f:
        f.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("stopped mid-write")
    assert path.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # no temporary file left
    with atomic_open(tmp_path / "b.npy", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.npy").read_bytes() == b"\x00\x01"
