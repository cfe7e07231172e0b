"""The one exception type a stage turns into a one-line error and exit code 2."""

import sys


class PipelineError(Exception):
    """Bad input or an unreachable source: the message names what and what is valid."""


def run_stage(main):
    """Run a stage's main(); a PipelineError or a missing input becomes `error: <message>`, exit 2; Ctrl-C exits 130."""
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: outputs are replaced only when complete, so none is half-written
        print("interrupted: the stage stopped and left its previous outputs as they were", file=sys.stderr)
        sys.exit(130)
    except FileNotFoundError as e:  # an input path given on the command line, or not yet made
        print(f"error: {e.filename}: no such file; the earlier stages make it (dvc repro)", file=sys.stderr)
        sys.exit(2)
