"""The one exception type a stage turns into a one-line error and exit code 2."""

import signal
import sys


class PipelineError(Exception):
    """Bad input or an unreachable source: the message names what and what is valid."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a job scheduler, `timeout`): unwinds like Ctrl-C, so temp outputs and workers go too."""


def _raise_terminated(signum, frame):
    raise Terminated


def run_stage(main):
    """Run a stage's main(); a PipelineError or a missing input becomes `error: <message>`, exit 2.

    Ctrl-C exits 130 and SIGTERM 143 (128 + the signal), both after the same clean-up.
    Without the handler SIGTERM would kill the process on the spot and leave its
    temp folder and worker processes behind (DVC does not pass it on to a stage
    either: killing `dvc repro` leaves the stage running).
    """
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:  # outputs are replaced only when complete, so none is half-written
        print("interrupted: the stage stopped and left its previous outputs as they were", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT))
    except FileNotFoundError as e:  # an input path given on the command line, or not yet made
        print(f"error: {e.filename}: no such file; the earlier stages make it (dvc repro)", file=sys.stderr)
        sys.exit(2)
