"""Files that readers never see half-written: each is written beside its place and moved there in one step."""
from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path
from typing import Callable

from paraphina.core.names import PART_SUFFIX

WRITTEN_BY = re.compile(rf"\.(\d+)(?:@([^@/]+))?(?:{re.escape(PART_SUFFIX)}|\.[0-9a-f]{{32}}\.tmp)$")
"""The writer (pid, host; older telemetry parts: pid only) in the name of a file still being written."""


def writer_tag() -> str:
    """`<pid>@<host>`: names a file still being written after its writer, so `tracking.clean` can remove what a
    killed one left on this host (and only on it: a sweeps folder may be shared between machines)."""
    return f"{os.getpid()}@{socket.gethostname()}"


def replace_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write` on a temporary file next to `path`, then move it over `path` (one rename: a reader, or a
    concurrent writer of the same file, sees the old file or a whole new one; a stopped command leaves the old)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one per writer (writer_tag); the writer creates it, so it gets the usual permissions (mkstemp's: owner-only)
    temporary = path.with_name(f".{path.name}.{writer_tag()}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
