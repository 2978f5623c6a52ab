"""driftcheck.files: the one writer every report, stats file and generated module goes through,
and the one bounded reader of regular files."""

from __future__ import annotations

import os
import stat

import pytest

from driftcheck.errors import BadInput
from driftcheck.files import read_regular, write_atomic, write_files


def test_a_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "new.md", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.md").stat().st_mode) == 0o640


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o664, 0o400])
def test_an_existing_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "report.md"
    path.write_text("old\n")
    path.chmod(mode)
    write_atomic(path, "new\n")
    assert path.read_text() == "new\n" and stat.S_IMODE(path.stat().st_mode) == mode
    assert os.listdir(tmp_path) == ["report.md"]


def test_nothing_is_replaced_when_one_target_is_not_a_regular_file(tmp_path):
    good, link = tmp_path / "a.md", tmp_path / "b.md"
    good.write_text("old a\n")
    link.symlink_to(tmp_path / "elsewhere.md")
    with pytest.raises(BadInput, match="symlink"):
        write_files({good: "new a\n", link: "new b\n"})
    assert good.read_text() == "old a\n" and link.is_symlink() and not (tmp_path / "elsewhere.md").exists()
    assert sorted(os.listdir(tmp_path)) == ["a.md", "b.md"]


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_a_path_that_names_no_file_is_bad_input(tmp_path, name):
    with pytest.raises(BadInput):
        write_atomic(tmp_path / name if name else name, "x")


def test_a_directory_is_never_replaced(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(BadInput, match="directory"):
        write_atomic(tmp_path / "d", "x")
    assert (tmp_path / "d").is_dir()


def test_read_regular(tmp_path):
    path = tmp_path / "f.py"
    path.write_bytes(b"x = 1\n")
    assert read_regular(path, 100) == b"x = 1\n"
    assert read_regular(tmp_path / "absent.py", 100) is None
    with pytest.raises(BadInput, match="limit"):
        read_regular(path, 3)
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="FIFO"):
        read_regular(fifo, 100)
    with pytest.raises(BadInput, match="character device"):
        read_regular("/dev/zero", 100)
    link = tmp_path / "link.py"
    link.symlink_to(path)
    assert read_regular(link, 100) == b"x = 1\n"
