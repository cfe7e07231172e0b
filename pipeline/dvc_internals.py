"""Everything this project reads from DVC's Python internals, in one place, for the DVC it was written for.

DVC's public Python API (dvc.api) reads files and params; it has no stage graph, no
cache lookup, no run-cache and no `-S` parser. What scripts/repro.py, scripts/push_run_cache.py
and a stage's failure message (pipeline/errors.py) need from those lives here, each call
against DVC 3.67 (requirements.txt pins 3.67.1). On another DVC version `check_version`
fails in one line before any of it runs: read each function below against that DVC's
source, then add the version to WRITTEN_FOR. tests/test_dvc_internals.py runs every
function against the real DVC.
"""

from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError

WRITTEN_FOR = ("3.67",)  # major.minor of the DVC versions whose internals were read


def check_version():
    """One line when the installed DVC is not one this module was written for."""
    import dvc

    version = dvc.__version__
    if not version.startswith(tuple(f"{v}." for v in WRITTEN_FOR)):
        raise PipelineError(
            f"pipeline/dvc_internals.py was written for DVC {', '.join(WRITTEN_FOR)} and this is DVC {version}: "
            "check its functions against this DVC's source, then add the version to WRITTEN_FOR (or install the "
            "pinned one: pip install -r requirements.txt)"
        )


@contextmanager
def repo(project):
    """dvc.repo.Repo of the project folder (it takes no lock until a command does)."""
    check_version()
    from dvc.repo import Repo

    with Repo(str(project)) as opened:
        yield opened


def stage_graph(project):
    """({stage name: set of the names of the stages it depends on, transitively}) of the project's dvc.yaml."""
    import networkx as nx

    with repo(project) as opened:
        graph = opened.index.graph  # edges point from a stage to the stages it depends on
        return {stage.name: {up.name for up in nx.descendants(graph, stage)} for stage in graph}


def stage_outputs(project, names):
    """The paths of the cached outputs of the stages named."""
    with repo(project) as opened:
        return [Path(o.fs_path) for s in opened.index.stages if s.name in names for o in s.outs if o.use_cache]


def cache_dir(project):
    """The project's DVC cache folder (`dvc cache dir`; its objects are under files/md5/, its run-cache in runs/)."""
    with repo(project) as opened:
        objects = Path(opened.cache.local.path)
    return objects.parents[1] if objects.parts[-2:] == ("files", "md5") else objects


def cache_has(project, md5):
    """Whether the project's cache holds the object `md5` (a folder's: its .dir listing)."""
    with repo(project) as opened:
        return opened.cache.local.exists(md5)


def cache_listing(project, md5):
    """The .dir listing (a list of {"md5", "relpath"}) of a folder output `md5` from the project's cache."""
    import json

    with repo(project) as opened:
        return json.loads(Path(opened.cache.local.oid_to_path(md5)).read_text())


def apply_overrides(path, overrides):
    """`dvc exp run -S` semantics (Hydra's override grammar) applied to one params file."""
    check_version()
    from dvc.utils.hydra import apply_overrides as apply

    apply(path, overrides)


def push_run_records(records_of, remote=None):
    """Push the outputs of every run-cache record to the remote: (records, transferred, failed, skipped), where
    `records_of(path)` lists the records under the run-cache folder, and skipped names the records whose outputs
    are gone from the local cache."""
    with repo(".") as opened:
        records = records_of(opened.cache.legacy.path)
        objects, skipped = set(), []
        for record in records:
            try:
                for objs in opened.stage_cache.get_used_objs([record]).values():
                    objects |= objs
            except Exception as e:  # an output gone from the local cache (dvc gc): skip that record
                skipped.append((record, e))
        result = opened.cloud.push(objects, remote=remote)
        return records, result.transferred, result.failed, skipped
