"""A reader following one page of the docs: every shell block of the page, in order, run as typed, on a shrunk
project; where the page shows what a command prints, the printout compared with it.

sybil collects the blocks (a fenced ```bash, ```console or ```diff block; `<!-- skip: next "why" -->` before a
block marks it as one that cannot run here, with the reason the test reports). The reader keeps a shell's state
from block to block, as a terminal does: the folder a block `cd`s into and the variables it exports.

- ```bash: the block runs as one script under `set -e`: the first command that fails fails the page.
- ```console: each `$ ` line (with its `\\` continuation lines) runs on its own; the lines after it, up to the
  next `$ `, are what it prints (stdout and stderr, as a terminal shows them), compared after masking:
  every number is a number (a shrunk project's accuracies are not the real data's), and so is a 7-digit hex
  revision; a run of spaces is one space, a run of dashes is `---` (a table's widths follow its numbers) and
  blank lines are layout; a line `...` stands for any lines,
  and `...` inside a line for any text. Rows and columns are never masked: a table with another row count or
  column count fails.
  A command whose comment says `until Ctrl-C` (a server) gets SIGINT once it has printed the lines shown
  before the page's first `...`, as the reader stops it. A command whose comment says `in a terminal of its
  own` (a server the page's later commands use) runs on beside them once it has printed the lines shown: the
  reader's shell goes on without it, and the page's end (`Reader.stop`) stops it as Ctrl-C would.
- ```diff: applied with `git apply` at the project's root, as a reader applies a patch the page shows.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from sybil import Document
from sybil.parsers.markdown import CodeBlockParser, SkipParser

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


REVISION = re.compile(r"\b[0-9a-f]{7}\b")  # a commit's or an experiment's short hash


def normalise(line, masks=()):
    for pattern, replacement in masks:
        line = re.sub(pattern, replacement, line)
    line = NUMBER.sub("0", REVISION.sub("<rev>", line))
    line = re.sub(r"-{3,}", "---", line)
    return re.sub(r"\s+", " ", line).strip()


def shown_output_pattern(expected, masks=()):
    """A regex over the normalised printout: each shown line in order, `...` lines as any lines."""
    parts = []
    for line in filter(str.strip, expected):  # blank lines are layout, not output
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            text = normalise(line, masks)
            parts.append(".*?".join(re.escape(piece) for piece in text.split("...")) + r"\n")
    return re.compile("".join(parts))


def printout(text, masks=()):
    """What a command printed, normalised line by line, blank lines dropped."""
    return "".join(f"{normalise(line, masks)}\n" for line in text.splitlines() if line.strip())


def console_commands(source):
    """[(command, [shown output lines])] of a console block."""
    commands = []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i]
            commands.append((command, []))
        elif commands:
            commands[-1][1].append(line)
        # a `...` before the first command: earlier commands of the page, already run
        i += 1
    return commands


class Reader:
    """The shell state of one reader (folder, environment) and what ran, was skipped, and printed."""

    def __init__(self, cwd=None, env=None, substitutions=None, masks=(), timeout=540):
        """With no `cwd`, a survey: the blocks are listed (`ran`), not run."""
        self.cwd, self.env = (Path(cwd), dict(env)) if cwd else (None, None)
        for inherited in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):  # from `make test`: a reader's shell has none
            (self.env or {}).pop(inherited, None)
        self.substitutions = substitutions or {}
        self.masks = masks
        self.timeout = timeout
        self.ran, self.skipped, self.sessions = [], [], []
        self.seconds = {}  # each command's wall time, printed at the page's end (pytest shows it on a failure)
        self.printed = {}  # what each command printed, for a test's checks beyond what the page shows
        self.scripts = {}  # and what it ran
        self.state = Path(tempfile.mkdtemp(prefix="reader-")) if cwd else None

    def shell(self, script, where, until_shown=None, own_terminal=False):
        """Run `script` in bash from the reader's folder and environment; carry its last folder and exports on.

        With `until_shown` (a pattern over the normalised printout), the command is one that runs until the
        reader presses Ctrl-C: once what it printed matches, it gets SIGINT, as from a terminal; or, with
        `own_terminal`, it goes on running (in a terminal of its own) and the reader's shell goes on without it."""
        for shown, used in self.substitutions.items():
            script = script.replace(shown, used)
        state, started = self.state, time.monotonic()
        wrapped = f"trap 'pwd > {state}/cwd; env -0 > {state}/env' EXIT\nset -e -o pipefail\n{script}\n"
        with tempfile.NamedTemporaryFile("w+", dir=state, delete=not own_terminal) as out:  # beside the state
            proc = subprocess.Popen(
                ["bash", "-c", wrapped],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # Ctrl-C works even where this test runs as a background job (which ignores SIGINT, and so
                # would every process it starts)
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            deadline = time.monotonic() + self.timeout
            if until_shown is not None:  # a server prints its first lines in a minute or two, not more
                deadline = time.monotonic() + min(self.timeout, 180)
                while proc.poll() is None and time.monotonic() < deadline:
                    if until_shown.match(printout(Path(out.name).read_text(), self.masks)):
                        break
                    time.sleep(0.5)
                if own_terminal:
                    printed = Path(out.name).read_text()
                    if _group_has_members(proc.pid):  # stopped at the page's end, even if it did not start as shown
                        self.sessions.append(proc.pid)
                    if proc.poll() is not None or not until_shown.match(printout(printed, self.masks)):
                        raise AssertionError(f"{where}: did not start as shown\n--- printed:\n{printed[-6000:]}")
                    self.ran.append(where)
                    self.seconds[where] = time.monotonic() - started
                    return printed
                os.killpg(proc.pid, signal.SIGINT)
                deadline = time.monotonic() + 60
            try:
                proc.wait(max(deadline - time.monotonic(), 1))
                hung = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                hung = True
            out.seek(0)
            printed = out.read()
        if not hung and _group_has_members(proc.pid):  # it left something running (a `... &`): stopped at the
            self.sessions.append(proc.pid)  # page's end. A group that has ended is not kept: its id may be reused
        if hung:
            after = "Ctrl-C" if until_shown else f"{self.timeout} s"
            raise AssertionError(f"{where}: still running after {after}\n--- printed:\n{printed[-6000:]}")
        if proc.returncode != 0 and until_shown is None:
            raise AssertionError(f"{where}: exited {proc.returncode}:\n{script}\n--- printed:\n{printed[-6000:]}")
        self.cwd = Path((state / "cwd").read_text().strip())
        self.env = dict(item.split("=", 1) for item in (state / "env").read_text().split("\0") if "=" in item)
        self.ran.append(where)
        self.seconds[where] = time.monotonic() - started
        self.printed[where], self.scripts[where] = printed, script
        return printed

    def bash(self, example):
        if self.cwd is None:
            return self.ran.append(f"{os.path.relpath(example.path)}:{example.line}")
        self.shell(example.parsed, f"{os.path.relpath(example.path)}:{example.line}")

    def console(self, example):
        if self.cwd is None:
            return self.ran.append(f"{os.path.relpath(example.path)}:{example.line}")
        for command, shown in console_commands(example.parsed):
            where = f"{os.path.relpath(example.path)}:{example.line}: $ {command.splitlines()[0]}"
            until, own_terminal = None, "in a terminal of its own" in command
            if own_terminal:  # every line shown, then it runs on
                until = shown_output_pattern([*shown, "..."], self.masks)
            elif "until Ctrl-C" in command:  # what it prints before the first `...`, then Ctrl-C
                head = shown[: shown.index("...")] if "..." in shown else shown
                until = shown_output_pattern([*head, "..."], self.masks)
            printed = self.shell(command, where, until, own_terminal)
            if not shown_output_pattern(shown, self.masks).fullmatch(printout(printed, self.masks)):
                raise AssertionError(
                    f"{where}: prints what the page does not show.\n--- the page:\n"
                    + "\n".join(shown)
                    + f"\n--- printed:\n{printed[-6000:]}"
                )

    def diff(self, example):
        where = f"{os.path.relpath(example.path)}:{example.line}"
        if self.cwd is None:
            return self.ran.append(where)
        result = subprocess.run(
            ["git", "apply", "-"], cwd=self.cwd, input=example.parsed, text=True, capture_output=True
        )
        assert result.returncode == 0, f"{where}: the patch does not apply: {result.stderr}"
        self.ran.append(where)

    def read(self, page, stop=True):
        """Run every block of `page` in order; return self (ran, skipped: [(where, reason)]). With `stop=False`,
        what the page left running (its server) runs on until `stop()`."""
        self.page_read = Path(page)
        parsers = [
            SkipParser(),
            CodeBlockParser("bash", self.bash),
            CodeBlockParser("console", self.console),
            CodeBlockParser("diff", self.diff),
        ]
        try:
            for example in Document.parse(str(page), *parsers).examples():
                try:
                    example.evaluate()
                except unittest.SkipTest as skip:
                    self.skipped.append((f"{os.path.relpath(example.path)}:{example.line}", str(skip)))
        except BaseException:
            self.stop()
            raise
        if stop:
            self.stop()
        if self.seconds:
            print("".join(f"{seconds:6.1f} s  {where.splitlines()[0]}\n" for where, seconds in self.seconds.items()))
        return self

    def printed_under(self, heading):
        """What the commands of the page's section `## <heading>` printed, joined (the page read last)."""
        page = self.page_read.read_text().splitlines()
        start = page.index(f"## {heading}") + 1
        end = next((i for i in range(start, len(page)) if page[i].startswith("## ")), len(page)) + 1
        lines = {where: int(where.split(":")[1]) for where in self.printed}
        return "".join(text for where, text in self.printed.items() if start <= lines[where] <= end)

    def printed_by(self, command):
        """What the blocks or commands that ran `command` printed, joined."""
        return "".join(self.printed[where] for where, script in self.scripts.items() if command in script)

    def stop(self):
        """End what the page's commands left running (a server in a terminal of its own, or started with `&`) as
        Ctrl-C would; wait a minute for each to exit, then end what is left of it (SIGTERM, then SIGKILL)."""
        for pid in self.sessions:
            try:
                os.killpg(pid, signal.SIGINT)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                try:  # reap it if it is our child; a zombie has exited
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    pass
                time.sleep(0.2)
            for what_is_left in (signal.SIGTERM, signal.SIGKILL):  # a `... &` job ignores SIGINT, as in bash
                try:
                    os.killpg(pid, what_is_left)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
        self.sessions = []
        if self.state is not None:  # the shell's state and the printouts of commands left running
            shutil.rmtree(self.state, ignore_errors=True)


def _group_has_members(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
