"""The messages docs/troubleshooting.md lists, checked where the tests meet them.

A test that makes the pipeline print one of them calls `documented(fragment, printed)`: the page's message
that contains `fragment` must match a line of what was printed, as the page shows it (`...` stands for any
text, `<name>` for any value, and numbers are numbers: an example's 0.2 MB is the test's 0.1 MB). So a message
that drifts from its page fails the test that produces it, and test_messages.py checks that every message the
page lists has such a test (`test_every_message_the_troubleshooting_page_lists_is_produced_by_a_test`).
"""

import re
from functools import cache

from helpers import ROOT

PAGE = ROOT / "docs/troubleshooting.md"
# A cell's code spans that are messages the pipeline prints (the rest name commands or DVC's own words)
STARTS = ("error: ", "interrupted: ", "warning: ", "MLflow: ", "...; ", "  train@")
NUMBER = re.compile(r"(?:(?<!\w)[-+])?\d+(?:\.\d+)?(?:e[-+]?\d+)?")  # a sign only where no word joins it


@cache
def listed():
    """Every message in the 'you see' column of the page's table, as the page writes it."""
    lines = PAGE.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| you see |")))
    messages = []
    for row in lines[start + 2 :]:
        if not row.startswith("| "):
            break
        cell = row[2:].split(" | ")[0]
        for span in re.findall(r"`((?:\\`|[^`])+)`", cell):
            span = span.replace("\\`", "`")
            if span.startswith(STARTS):
                messages.append(span)
    return messages


def pattern(message):
    """The page's message as a regex over a printed line whose numbers are masked."""
    parts = re.split(r"\.\.\.|<[a-z][a-z ]*>", NUMBER.sub("0", message))
    return re.compile(".*?".join(re.escape(part) for part in parts))


def documented(fragment, printed):
    """The line of `printed` that is the page's message containing `fragment`; fails if none is. `printed` is
    what a command printed, or a PipelineError raised in-process (a stage prints it as `error: <it>`:
    pipeline.errors.run_stage, tested apart)."""
    if isinstance(printed, BaseException):
        printed = f"error: {printed}"
    (message,) = [m for m in listed() if fragment in m] or [f"<no message on the page contains {fragment!r}>"]
    lines = [line.rstrip() for line in printed.splitlines()]
    found = [line for line in lines if pattern(message).fullmatch(NUMBER.sub("0", line))]
    assert found, f"docs/troubleshooting.md shows\n  {message}\nbut the printout has no such line:\n{printed[-3000:]}"
    return found[0]
