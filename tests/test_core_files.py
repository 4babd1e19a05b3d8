"""_core/files.py: outputs are written whole or not at all, never through a planted link, and
an error names the output, not the temporary file."""

import errno
import os
import stat

import pytest

from bitscout._core.files import atomic, write_text


def test_a_link_planted_at_the_old_predictable_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "precision.json"
    # the name every earlier version wrote through: .NAME.PID.tmp
    (tmp_path / f".{out.name}.{os.getpid()}.tmp").symlink_to(victim)
    write_text(out, "{}")
    assert victim.read_text() == "precious"
    assert out.read_text() == "{}"


def test_a_link_at_the_output_itself_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "summary.json"
    out.symlink_to(victim)
    write_text(out, "new")
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and out.read_text() == "new"


def test_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_an_error_on_the_temporary_file_names_the_output_and_leaves_nothing(tmp_path):
    out = tmp_path / "trials.csv"
    with pytest.raises(OSError) as caught, atomic(out) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(out)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_cannot_be_written_names_the_output(tmp_path):
    out = tmp_path / "missing" / "report.md"
    with pytest.raises(OSError) as caught, atomic(out):
        pass
    assert caught.value.filename == str(out)
