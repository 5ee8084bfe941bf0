"""Files written in one step: a failed or stopped writer leaves the old file whole and no temporary behind."""
from __future__ import annotations

from pathlib import Path

import pytest

from paraphina.core.files import replace_atomically


def test_a_new_file_replaces_the_old_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "table.csv"
    replace_atomically(path, lambda temporary: temporary.write_text("a\n1\n"))
    replace_atomically(path, lambda temporary: temporary.write_text("a\n2\n"))
    assert path.read_text() == "a\n2\n" and sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]


def test_a_writer_stopped_half_way_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("old\n")

    def half_then_stop(temporary: Path) -> None:
        temporary.write_text("ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(path, half_then_stop)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
