"""Stage `check`: validate the whole params.yaml before any other stage removes its outputs.

Reads params: all of params.yaml (so a key no other stage reads, such as
              tracking.enabled, is checked too).
Writes:       <out>, a marker whose content never changes. Every other stage
              depends on it, so DVC runs this stage first and stops at a bad
              value before it deletes any stage's outputs; and because the
              marker stays the same, passing the check re-runs nothing else.
              The marker is a persistent output: DVC keeps it while this
              stage runs, so even a failed check removes nothing.
"""

import argparse

from pipeline.errors import run_stage
from pipeline.io import atomic_path
from pipeline.params import ParamsError, load_params

MARKER = "params.yaml passed pipeline/params.py's checks\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--out", required=True, help="the marker file to write")
    args = parser.parse_args()
    try:
        load_params(args.params)
    except ParamsError as e:  # `dvc exp run -S` wrote the bad value into the workspace's params.yaml
        raise ParamsError(f"{e} (fix {args.params}, or restore it: git checkout {args.params})") from None
    with atomic_path(args.out) as tmp:
        tmp.write_text(MARKER)


if __name__ == "__main__":
    run_stage(main)
