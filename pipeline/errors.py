"""The one exception type a stage turns into a one-line error and exit code 2."""
import sys


class PipelineError(Exception):
    """Bad input or an unreachable source: the message names what and what is valid."""


def run_stage(main):
    """Run a stage's main(); a PipelineError becomes `error: <message>` and exit 2."""
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
