"""How the stages write files: atomically, under the names their readers parse.

Atomic writes: a stage that fails leaves the old file or none, never half a file.

A temp file or folder is named `.<name>.<pid>.<random>.tmp` beside its target,
so that the next write into the same folder can tell one left by a killed
process (SIGKILL, OOM: no clean-up ran) from one still being written, and
removes it.
"""

import errno
import io
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(folder):
    """Remove the `.<name>.<pid>.<random>.tmp` entries in `folder` whose process no longer exists."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.glob(".*.tmp"):
        parts = entry.name.rsplit(".", 3)  # ['.<name>', '<pid>', '<random>', 'tmp']
        if len(parts) == 4 and parts[1].isdigit() and not process_alive(int(parts[1])):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def no_space(path, needed=None):
    """The one-line error for a full disk: the path, the free space and what the write needed."""
    folder = next(p for p in (Path(path).parent, *Path(path).parents) if p.exists() and p.is_dir() or p == Path("."))
    free = shutil.disk_usage(folder).free
    need = f", this write needs {needed / 1e6:.1f} MB" if needed else ""
    return PipelineError(
        f"no space left on the device holding {path}: {free / 1e6:.1f} MB free{need}; free some space "
        f"(`df -h {folder}`) and run the stage again (nothing half-written was kept)"
    )


@contextmanager
def atomic_path(path, needed=None):
    """Yield a temp path beside `path`; move it over `path` only on success.

    The caller may turn the temp file into a folder (see atomic_folder). A full
    disk becomes one line naming `path` (and `needed`, the bytes to write).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):  # mkstemp makes it 0600; give it the usual mode
            os.chmod(tmp, 0o644)
        if os.path.isdir(tmp) and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise no_space(path, needed) from None
        raise
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
        try:
            yield tmp
        except PipelineError as e:  # a full disk while writing inside: name the output, not the temp folder
            raise PipelineError(str(e).replace(str(tmp), str(path))) from None


def write_bytes(path, data):
    """`data` into `path`, atomically; a full disk is one line naming the path and the space needed."""
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def write_json(path, data):
    write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def file_md5(path):
    """The MD5 of a file's bytes: DVC's hash of it, as dvc.lock records it."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


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
    write_bytes(path, buffer.getvalue())


# A per-seed value in a metrics or history file is `<metric>_seed<k>` (test_acc_seed3): seed_key
# writes that name and per_seed reads it, for every stage, the MLflow mirror and `make compare`.
SEED_KEY = re.compile(r"^(?P<metric>\w+?)_seed(?P<seed>\d+)$")


def seed_key(metric, seed):
    return f"{metric}_seed{seed}"


def split_seed_key(key):
    """'test_acc_seed3' -> ('test_acc', 3); None for a key that names no seed."""
    match = SEED_KEY.match(key)
    return (match["metric"], int(match["seed"])) if match else None


def per_seed(record, metric):
    """{seed: value} of `metric` in a flat record (metrics, or one epoch of a history), by seed."""
    values = {}
    for key, value in record.items():
        parts = split_seed_key(key)
        if parts and parts[0] == metric:
            values[parts[1]] = value
    return dict(sorted(values.items()))


def flatten(prefix, value):
    """{'a': {'b': 1}} -> {'a.b': 1}: params by dotted name, as DVC and MLflow show them."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: value}
