"""Stage `check`: validate the whole params.yaml before any other stage removes its outputs.

Reads params: all of params.yaml (so a key no other stage reads, such as
              tracking.enabled, is checked too).
Writes:       <out>, a marker whose content never changes. Every other stage
              depends on it, so DVC runs this stage first and stops at a bad
              value before it deletes any stage's outputs; and because the
              marker stays the same, passing the check re-runs nothing else.
              <configs>/<variant>.json, each variant's run config
              (params.RunConfig: all that one seed's training reads, but the
              seed). train@<variant>-<seed> depends on that file instead of on
              params keys, so a changed key re-runs exactly the runs that read
              it, and a new seed re-runs no other seed.
              Both are persistent outputs: DVC keeps them while this stage
              runs, so even a failed check removes nothing.
With --search (the tune pipeline, tune/dvc.yaml): also the search of
tune/params.yaml, against the variants' run configs (pipeline/search.py).
"""

import argparse
from pathlib import Path

from pipeline.errors import run_stage
from pipeline.io import atomic_path, write_json
from pipeline.params import ParamsError, load_params
from pipeline.search import load_search

MARKER = "params.yaml passed pipeline/params.py's checks\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--out", required=True, help="the marker file to write")
    parser.add_argument("--configs", help="folder to write each variant's run config to")
    parser.add_argument("--search", help="a search to check too (tune/params.yaml)")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        if args.search:
            load_search(args.search, {name: params.run_config(name) for name in params.variants}, params.train.seeds)
    except ParamsError as e:  # `dvc exp run -S` wrote the bad value into the workspace's params file
        bad = args.search if args.search and str(e).startswith(args.search) else args.params
        raise ParamsError(f"{e} (fix {bad}, or restore it: git checkout {bad})") from None
    if args.configs:
        write_configs(params, Path(args.configs))
    with atomic_path(args.out) as tmp:
        tmp.write_text(MARKER)


def write_configs(params, folder):
    """<folder>/<variant>.json for every variant (each written atomically), and no file for any other."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in params.variants:
        write_json(folder / f"{name}.json", params.run_config(name).model_dump())
    for stale in folder.glob("*.json"):  # a variant removed from params.yaml
        if stale.stem not in params.variants:
            stale.unlink()


if __name__ == "__main__":
    run_stage(main)
