"""Files that readers never see half-written: each is written beside its place and moved there in one step."""
from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Callable


def replace_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write` on a temporary file next to `path`, then move it over `path` (one rename: a reader, or a
    concurrent writer of the same file, sees the old file or a whole new one; a stopped command leaves the old)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one per writer on any host, named by its process so `tracking.clean` can remove what a killed one left;
    # the writer creates it, so it gets the usual permissions (mkstemp's would be owner-only)
    temporary = path.with_name(f".{path.name}.{os.getpid()}@{socket.gethostname()}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
