"""Atomic writes: a stage that fails leaves the old file or none, never half a file."""

import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; move it over `path` only on success.

    The caller may turn the temp file into a folder (see atomic_folder).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):  # mkstemp makes it 0600; give it the usual mode
            os.chmod(tmp, 0o644)
        if os.path.isdir(tmp) and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(path):
    """Yield an empty temp folder beside `path`; it replaces `path` (a folder) only if the block succeeds."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        tmp.mkdir()
        yield tmp


def write_json(path, data):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def save_torch(path, obj):
    """torch.save, byte-for-byte reproducible.

    torch.save names the archive inside the file after the file it writes to;
    saving straight to the random temp name would make equal tensors hash
    differently in DVC (and miss its run-cache). A buffer has a fixed name.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
