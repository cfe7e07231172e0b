"""`make decide`: add seeds in rounds until every comparison is better, worse or equivalent, or the cap.

The rounds stop at the seed counts in report.looks (e.g. [3, 5, 8]). The report
tests every comparison at (1 - report.confidence) / len(report.looks): a
Bonferroni split of the error rate over the looks, so reading the verdicts at
each of them, and stopping at the first that decides, keeps the chance of any
false "better", "worse" or "equivalent" in the whole sequence at most
1 - report.confidence (Holm handles the comparisons within one look). A count
that is not a look is never read: the first round moves to the next look.

Each round is a DVC experiment (`scripts/repro.py --exp -S train.seeds=[...]`,
named decide-<n>seeds), so every look's table stays reproducible and
`dvc exp show` lists them; the seeds added train, the others come from the
cache. The workspace ends at the last round: review report.md, then commit.

    python scripts/decide.py [--cd study]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml


def undecided(project):
    """{variant: seeds needed (or None)} of the comparisons comparison.json calls undecided."""
    comparison = json.loads((project / "comparison.json").read_text())
    return {name: row["seeds_needed"] for name, row in comparison.items() if row["verdict"] == "undecided"}


def repro(project, *args):
    """scripts/repro.py's exit status. Not subprocess.run: on Ctrl-C it kills the child at once, before repro.py,
    which got the same SIGINT, has stopped its stages and said where each one stopped."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("repro.py")), "--cd", str(project), *args])
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cd", default=".", help="the DVC project's folder (default: here; the study: study)")
    args = parser.parse_args()
    project = Path(args.cd).resolve()
    committed = (project / "params.yaml").read_bytes()
    try:
        return rounds(project)
    except KeyboardInterrupt:  # Ctrl-C reached repro.py and every stage too: each said above where it stopped
        seeds = yaml.safe_load((project / "params.yaml").read_text())["train"]["seeds"]
        where = os.path.relpath(project / "params.yaml")
        moved = (project / "params.yaml").read_bytes() != committed
        print(
            f"interrupted: make decide stopped at train.seeds={seeds}"
            + (
                f" ({where} holds the interrupted round's seeds: `make decide` resumes there, "
                f"`git checkout {where}` goes back)"
                if moved
                else ""
            ),  # fmt: skip
            file=sys.stderr,
            flush=True,
        )
        return 130


def rounds(project):
    """The rounds, from the seeds params.yaml holds now; the exit status."""
    while True:
        params = yaml.safe_load((project / "params.yaml").read_text())
        seeds, looks = params["train"]["seeds"], params["report"]["looks"]
        if len(seeds) in looks:
            if repro(project):  # this look's table, up to date
                return 1
            open_ = undecided(project)
            if not open_:
                print(f"decided at {len(seeds)} seeds per variant: every comparison is better, worse or equivalent")
                return 0
            print(f"{len(seeds)} seeds: undecided: {', '.join(open_)}")
        later = [n for n in looks if n > len(seeds)]
        if not later:
            print(f"the last look (report.looks: {looks}) is reached: left undecided at {len(seeds)} seeds")
            return 0
        new = seeds + list(range(max(seeds) + 1, max(seeds) + 1 + later[0] - len(seeds)))
        print(f"round: train.seeds={new} ({len(new) - len(seeds)} new seed(s) per variant)", flush=True)
        setting = "train.seeds=[" + ",".join(map(str, new)) + "]"
        name = f"decide-{len(new)}seeds"
        taken = subprocess.run(["dvc", "exp", "list", "--name-only"], cwd=project, capture_output=True, text=True)
        named = [] if name in taken.stdout.split() else ["-n", name]  # a second decide from the same commit
        if repro(project, "--exp", "-S", setting, *named):
            return 1


if __name__ == "__main__":
    sys.exit(main())
