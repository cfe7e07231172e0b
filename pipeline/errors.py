"""How a stage fails: one line on stderr, an exit code, and the command that brings back what DVC removed.

DVC deletes a stage's outputs before it runs the command (dvc/stage/__init__.py,
Stage.run -> remove_outs; `persist: true` would keep them but takes the stage
out of the run-cache, which `dvc exp run` and a team's `dvc pull` rely on).
A stage that then fails cannot keep its previous outputs, so its message says
how to get them back: `dvc checkout <path>` for the cached ones (data/...),
`git checkout HEAD -- <path>` for the ones git keeps (metrics/, plots/,
report.md), as recorded in dvc.lock, which a failed stage leaves unchanged.
"""

import errno
import gc
import os
import re
import signal
import subprocess
import sys
from pathlib import Path


class PipelineError(Exception):
    """Bad input or an unreachable source: the message names what and what is valid."""


def first_line(error, limit=200):
    """The first line of an exception's message (its type's name when it has none), for a one-line report."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a job scheduler, `timeout`): unwinds like Ctrl-C, so temp outputs and workers go too."""


def _raise_terminated(signum, frame):
    raise Terminated


_OUTPUTS = []  # the paths the running stage writes (declare_outputs)


def declare_outputs(*paths):
    """The stage's outputs, as given on its command line: what a failure's message offers to restore."""
    _OUTPUTS[:] = [str(p) for p in paths]


def _git(*args, cwd):
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except OSError:
        return None


def restore_hint(paths=None, cwd="."):
    """'; DVC removed ...: restore them with `...`' for the declared outputs DVC deleted, or ''.

    Only under DVC (DVC_ROOT set) in its own workspace: a stage run by hand, or
    in a queued experiment's temp copy, writes atomically and removes nothing.
    """
    root = os.environ.get("DVC_ROOT")
    cwd = Path(cwd).resolve()
    if not root or not cwd.is_relative_to(Path(root).resolve()):
        return ""
    missing = [p for p in (_OUTPUTS if paths is None else paths) if not (cwd / p).exists()]
    lock = cwd / "dvc.lock"
    if not missing or not lock.is_file():
        return ""
    recorded = _lock_outs(lock.read_text())
    missing = [p for p in missing if os.path.normpath(p) in recorded]
    if not missing:  # never produced: nothing to bring back
        return ""
    tracked = _git("ls-tree", "-r", "--name-only", "HEAD", "--", *missing, cwd=cwd)
    in_git = sorted(p for p in missing if tracked and tracked.returncode == 0 and _in(p, tracked.stdout))
    cached = [p for p in missing if p not in in_git]
    lost = [p for p in cached if not _in_cache(recorded[os.path.normpath(p)], cwd)]
    if in_git:  # git's copy is the one dvc.lock records only if the committed dvc.lock records the same
        committed = _git("show", "HEAD:./dvc.lock", cwd=cwd)
        at_head = _lock_outs(committed.stdout) if committed and committed.returncode == 0 else {}
        lost += [p for p in in_git if at_head.get(os.path.normpath(p)) != recorded[os.path.normpath(p)]]
    if lost:  # no command brings these back as they were
        return (
            f"; DVC removed the stage's previous outputs before it ran, and neither git nor this clone's DVC cache "
            f"holds {', '.join(lost)} as dvc.lock records them: re-create them with `dvc repro` (or `dvc pull`, "
            "if a remote holds them) once the cause is fixed"
        )
    commands = [f"dvc checkout {' '.join(cached)}"] if cached else []
    if in_git:
        commands.append(f"git checkout HEAD -- {' '.join(in_git)}")
    top = _git("rev-parse", "--show-toplevel", cwd=cwd)
    prefix = ""
    if top and top.returncode == 0 and Path(top.stdout.strip()).resolve() != cwd:
        prefix = f"cd {cwd.relative_to(Path(top.stdout.strip()).resolve())} && "
    restore = prefix + " && ".join(commands)
    return f"; DVC removed the stage's previous outputs before it ran: restore them with `{restore}`"


def recorded(path):
    """What the nearest dvc.lock above `path` records for it: (project folder, stage, md5, whether the file or
    folder in the workspace is that version, whether the project's cache holds it), or None when no dvc.lock
    records it (a file outside any project, or one no stage wrote)."""
    path = Path(path).resolve()
    project = next((d for d in path.parents if (d / "dvc.lock").is_file()), None)
    if project is None:
        return None
    rel = os.path.relpath(path, project)
    for stage, out, md5 in _lock_entries((project / "dvc.lock").read_text()):
        if os.path.normpath(out) == rel and md5:
            return project, stage, md5, _workspace_is(path, md5, project), _in_cache(md5, project)
    return None


def _workspace_is(path, md5, project):
    """Whether the file (or folder) at `path` is the version DVC recorded as `md5` (a folder: its .dir listing)."""
    import hashlib

    def md5_of(file):
        return hashlib.md5(file.read_bytes()).hexdigest() if file.is_file() else None

    if not md5.endswith(".dir"):
        return md5_of(path) == md5
    try:
        from pipeline.dvc_internals import cache_listing

        listing = cache_listing(project, md5)
    except Exception:  # no listing in the cache: whether it matches cannot be shown
        return False
    files = sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()) if path.is_dir() else []
    return files == sorted(e["relpath"] for e in listing) and all(
        md5_of(path / e["relpath"]) == e["md5"] for e in listing
    )


def way_back(path, damaged_at_source=""):
    """How to get a damaged `path` back, from what is really in dvc.lock, the workspace and the cache: `dvc
    checkout` when the cache holds the recorded version and the workspace is not it; the stage's re-run when it
    is (the recorded version itself is damaged: `damaged_at_source`, if given, says what repairs it instead);
    '' for a file no dvc.lock records (outside the project, or written by hand): nothing can be promised."""
    found = recorded(path)
    if found is None:
        return ""
    project, stage, _, is_recorded, cached = found
    here = Path.cwd().resolve()
    prefix = "" if project == here else f"cd {os.path.relpath(project, here)} && "
    rel = os.path.relpath(Path(path).resolve(), project)
    if is_recorded and damaged_at_source:
        return damaged_at_source
    rerun = f"`{prefix}dvc repro --force {stage}`"
    if cached and not is_recorded:  # --force: DVC asks before it replaces a file that differs from dvc.lock's
        return f"restore it with `{prefix}dvc checkout --force {rel}` or re-run its stage with {rerun}"
    return f"re-run its stage with {rerun}" + (" (dvc.lock records this damaged file)" if is_recorded else "")


def _lock_entries(text):
    """[(stage, output path, md5)] of a dvc.lock's text."""
    import yaml

    stages = (yaml.safe_load(text) or {}).get("stages", {})
    return [(name, out["path"], out.get("md5")) for name, stage in stages.items() for out in stage.get("outs", [])]


def _lock_outs(text):
    """{output path: md5} of a dvc.lock's text."""
    return {path: md5 for _, path, md5 in _lock_entries(text)}


def _in_cache(md5, cwd):
    """Whether the DVC cache of the project at cwd holds the object dvc.lock records (a folder's .dir listing)."""
    if not md5:
        return False
    try:
        from pipeline.dvc_internals import cache_has

        return cache_has(cwd, md5)  # reads the config (the study shares the main cache); takes no lock
    except Exception:  # DVC not importable here, or another version: say what cannot be shown to work
        return False


def _in(path, listing):
    """Whether git's listing (`git ls-tree` prints paths relative to the working folder) holds path or under it."""
    target = os.path.normpath(path)
    return any(n == target or n.startswith(target + "/") for n in listing.splitlines())


def _fail(first, code):
    print(_existing_df(first) + restore_hint(), file=sys.stderr)
    sys.exit(code)


def _existing_df(message):
    """A full disk's `df -h <folder>` names the nearest folder that still exists now.

    io.no_space names the folder it wrote into; by the time the message is
    printed the temp folder is gone (removed on the way out), and so may be
    the output folder (DVC removed it before the stage ran).
    """
    match = re.search(r"\(`df -h ([^`]+)`\)", message)
    if not match:
        return message
    folder = Path(match[1])
    existing = next(p for p in (folder, *folder.parents) if p.is_dir() or p == Path("."))
    return message.replace(f"`df -h {folder}`", f"`df -h {existing}`")


def run_stage(main):
    """Run a stage's main(), the last thing its process does; a PipelineError, a missing input or an OS
    error becomes one line, exit 2.

    Ctrl-C exits 130 and SIGTERM 143 (128 + the signal), both after the same clean-up.
    Without the handler SIGTERM would kill the process on the spot and leave its
    temp folder and worker processes behind (DVC does not pass it on to a stage
    either: killing `dvc repro` leaves the stage running).

    What the imports made lives as long as the process (torch's 180,000 objects, 550,000 with dynamo's and
    MLflow's), so it is frozen out of the cyclic garbage collector before main(), and everything again
    before the interpreter's collections at exit, which would walk it all for nothing (gc.freeze). A shrunk
    train stage, 3 runs each (AMD EPYC, 2026-12-06): 3.90 s of CPU -> 2.59 s with tracking off, 6.50 ->
    4.35 s with it on.
    """
    signal.signal(signal.SIGTERM, _raise_terminated)
    gc.freeze()
    try:
        main()
    except PipelineError as e:
        _fail(f"error: {e}", 2)
    except KeyboardInterrupt as e:  # outputs are replaced only when complete, so none is half-written
        code = 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        _fail("interrupted: the stage stopped before it finished; it wrote nothing half-way", code)
    except FileNotFoundError as e:  # an input path given on the command line, or not yet made
        _fail(f"error: {e.filename}: no such file; the earlier stages make it (dvc repro)", 2)
    except OSError as e:  # a full disk outside our writes, a folder where a file should be, no permission
        if e.errno == errno.ENOSPC:
            _fail(f"error: no space left on the device{f' holding {e.filename}' if e.filename else ''}", 2)
        _fail(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", 2)
    finally:  # also on the way out through _fail's sys.exit
        gc.freeze()
