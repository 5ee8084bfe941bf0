"""JSONL files on disk: plain, or gzip-compressed when the name ends with .gz (day-long telemetry)."""
from __future__ import annotations

import gzip
import io
import os
from typing import IO, BinaryIO


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """Whether a JSONL file is gzip-compressed: its name ends with .gz (`run.jsonl.gz`)."""
    return os.fspath(path).endswith(".gz")


def open_jsonl_writer(final_path: str | os.PathLike[str], temporary: str | os.PathLike[str]) -> IO[str]:
    """A text file at `temporary` for the JSONL file that will be moved to `final_path`: gzip-compressed (fast
    level, no time stamp or name in the header, so the same rows give the same bytes) when `final_path` is
    a .gz name."""
    if not is_gzip(final_path):
        return open(temporary, "w", encoding="utf-8")
    return _GzipText(open(temporary, "wb"))


class _GzipText(io.TextIOWrapper):
    """Text written through gzip into a file this object owns (GzipFile leaves a given file object open)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=1, mtime=0),
                         encoding="utf-8")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()
