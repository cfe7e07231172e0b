"""Push the DVC run-cache *and* the outputs its records point to, so a teammate's `dvc exp run --pull` restores.

`dvc push --run-cache` (DVC 3.67) sends the run records (.dvc/cache/runs) but only the
objects the workspace uses (dvc/repo/push.py collects the records it pushed and does
nothing with them; a maintainer on treeverse/dvc#10472: "I don't think this operation
directly pushes/pulls anything except the runs files"). So a run of another
configuration, and every `cache: false` metrics or plots file (DVC copies those into
the local cache when it records a run), never reaches the remote, and the teammate's
DVC finds the record but not its outputs, and trains again. This script pushes the
records with DVC's own command, then the outputs of every record, through DVC's own
stage-cache and data-cloud code. On the teammate's side nothing new is needed:
`dvc pull --run-cache` (or `dvc exp run --pull`) fetches both.

    python scripts/push_run_cache.py [-r REMOTE] [--project study]

The small-CNN study is a DVC project of its own (study/.dvc): `--project study`
pushes its outputs to the main project's remotes, which it copies into
study/.dvc/config.local first (git-ignored; credentials stay in the environment).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # pipeline/, from any working folder


def run_records(cache_dir):
    """(key, value) of every run record in the local run-cache."""
    runs = Path(cache_dir) / "runs"
    return [(record.parent.name, record.name) for record in sorted(runs.glob("*/*/*")) if record.is_file()]


def share_remotes(project):
    """Give the DVC project in `project` the remotes (and default remote) of the one here, in its config.local."""
    listed = subprocess.run(["dvc", "config", "--list"], capture_output=True, text=True, check=True).stdout
    settings = [line.split("=", 1) for line in listed.splitlines() if line.startswith(("remote.", "core.remote="))]
    for key, value in settings:
        subprocess.run(["dvc", "config", "--local", key, value], cwd=project, check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--remote", help="the DVC remote (default: the default remote)")
    parser.add_argument("--project", help="another DVC project to push, with this one's remotes (study)")
    args = parser.parse_args()
    if args.project:
        share_remotes(args.project)
        os.chdir(args.project)
    remote = ["-r", args.remote] if args.remote else []
    if subprocess.run(["dvc", "push", "--run-cache", *remote]).returncode:
        # DVC said why (no bucket, no credentials, a wrong endpoint): docs/team.md has each way out
        sys.exit("error: `dvc push --run-cache` failed (its message above); see docs/team.md, 'The remote'")

    from pipeline.dvc_internals import push_run_records
    from pipeline.errors import PipelineError

    try:
        records, transferred, failed, skipped = push_run_records(run_records, remote=args.remote)
    except PipelineError as e:  # another DVC than the one whose internals pipeline/dvc_internals.py reads
        sys.exit(f"error: {e}")
    except Exception as e:  # the remote went away between the two pushes: one line, not a traceback
        sys.exit(f"error: pushing the run records' outputs failed ({type(e).__name__}: {str(e).splitlines()[0]})")
    for record, e in skipped:
        print(f"skipped run record {record[1][:12]}: {type(e).__name__}: {e}", file=sys.stderr)
    print(f"{len(records)} run records: {len(transferred)} outputs pushed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
