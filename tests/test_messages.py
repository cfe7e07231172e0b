"""What the user is told is what happened: a bad `-S` value is refused by scripts/repro.py before DVC runs
anything (issue 32): one line naming the key, the params file as it was, nothing removed."""

import ast
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from documented import documented, listed
from helpers import ROOT, free_port, make_project, run, shrunk_params, wait_for_url, write_idx_folder

SAID = "(the -S values were not applied: the params files are as they were); nothing ran"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("messages")
    write_idx_folder(tmp / "mirror")
    return make_project(tmp, shrunk_params(tmp / "mirror"))


@pytest.mark.parametrize(
    "setting, line",
    [
        ("train.seeds=[0,0]", "train.seeds must list each value once; 0 appears 2 times in [0, 0]"),
        ("train.seeds=[]", "train.seeds must not be empty, got []"),
        ("train.seeds=[-1]", "train.seeds[0] must be >= 0, got -1"),
        ("train.seeds=[0.5]", "train.seeds[0] must be an integer, got 0.5"),
        (
            "train.seeds=[99999999999999999999]",
            "train.seeds[0] must be <= 9223372036854775807, got 99999999999999999999",
        ),
        ("train.lr=abc", "train.lr must be a number, got 'abc'"),
        ("model.dropot=0.5", "Could not override 'model.dropot'. To append to your config use +model.dropot=0.5"),
    ],
)
def test_a_bad_set_param_is_one_line_and_changes_nothing(project, setting, line):
    repo, env = project
    before = (repo / "params.yaml").read_bytes()
    result = run([sys.executable, "scripts/repro.py", "--exp", "-S", setting], repo, env, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {line} {SAID}\n")
    if setting == "train.seeds=[0,0]":
        documented("must list each value once", result.stderr)
    assert (repo / "params.yaml").read_bytes() == before
    assert run(["git", "status", "--porcelain"], repo, env).stdout == ""  # no dvc.lock, no output, no exp


def test_a_params_file_dvc_cannot_read_is_one_line_naming_it(project):
    repo, env = project
    before = (repo / "params.yaml").read_text()
    try:
        for text, line in (
            ("", "params.yaml must be a mapping of sections (data, train, variants, ...); it is empty"),
            ("- 1\n", "params.yaml must be a mapping of sections (data, train, variants, ...); got a list"),
            ("train:\n\tlr: 0.1\n", "params.yaml is not valid YAML"),
            ("train: {lr: 0.1}\ntrain: {lr: 0.2}\n", "params.yaml is not valid YAML"),
        ):
            (repo / "params.yaml").write_text(text)
            result = run([sys.executable, "scripts/repro.py"], repo, env, check=False)
            assert result.returncode == 1 and result.stderr.startswith(f"error: {line}"), result.stderr
            assert result.stderr.count("\n") == 1 and result.stderr.endswith("; nothing ran\n")
            if text == "":
                documented("it is empty", result.stderr)
            if text == "train:\n\tlr: 0.1\n":
                documented("is not valid YAML", result.stderr)
        (repo / "params.yaml").unlink()
        result = run([sys.executable, "scripts/repro.py"], repo, env, check=False)
        assert result.stderr.startswith("error: params file ") and "params.yaml not found; nothing ran" in result.stderr
        documented("not found; nothing ran", result.stderr)
    finally:
        (repo / "params.yaml").write_text(before)


def test_make_ui_on_a_taken_port_is_one_line_and_no_link():
    """`make ui PORT=N` where another server listens: one line, not a link to the other server and a UI that
    logs `address already in use` and never exits (issue 31)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "scripts/mlflow-ui.py", "--port", str(port)], cwd=ROOT, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"error: port {port} on 127.0.0.1 is taken (another server?): choose another, --port N\n"


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "kill"])
def test_ctrl_c_on_make_ui_stops_the_whole_server_in_one_line(tmp_path, stop):
    """`make ui` (scripts/mlflow-ui.py) serving, then Ctrl-C (SIGINT to its process group, as a terminal sends it)
    or `kill` (SIGTERM to it alone): its last line says the UI stopped, no traceback (MLflow's job runner printed
    one), nothing listens any more and no process of it is left (its own `mlflow ui` outlived the Ctrl-C before,
    and a SIGTERM until this test: a test that stopped it so left it running). Run by the venv's python with the
    venv's bin/ off PATH, as `python scripts/mlflow-ui.py` is in a shell that did not activate it: its server is
    that interpreter's MLflow."""
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PATH": path}
    ui = subprocess.Popen(
        [sys.executable, "scripts/mlflow-ui.py", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's, even in a background job
    )  # fmt: skip
    try:
        wait_for_url(f"http://127.0.0.1:{port}/", ui)
        if stop == "ctrl-c":
            os.killpg(ui.pid, signal.SIGINT)
        else:
            os.kill(ui.pid, signal.SIGTERM)
        out, err = ui.communicate(timeout=60)
    finally:  # a failure leaves no server behind (the UI's `mlflow ui` has a process group of its own)
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", f"--port {port}"])
    assert ui.returncode == {"ctrl-c": 130, "kill": 143}[stop] and "Traceback" not in out + err, err
    assert out.splitlines()[-1] == f"stopped the MLflow UI at http://127.0.0.1:{port}"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing answers there
    assert subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True).stdout == b""


def test_lock_entries_of_stages_that_no_longer_exist_are_dropped_and_the_rest_kept_byte_for_byte(project):
    """A seed taken out of train.seeds leaves its train stage's entry in dvc.lock (DVC keeps it); a failed
    stage's restore advice read such entries as outputs that existed (issue 32). scripts/repro.py drops them."""
    from scripts.repro import prune_lock

    repo, env = project
    run(["dvc", "repro", "check"], repo, env)
    lock = repo / "dvc.lock"
    kept = lock.read_text()
    stale = "  train@vanilla-9:\n    cmd: python -m pipeline.train --seed 9\n    outs:\n    - path: data/models/x.pt\n"
    lock.write_text(kept + stale)
    try:
        assert prune_lock(repo) == ["train@vanilla-9"]
        assert lock.read_text() == kept
        assert prune_lock(repo) == []
    finally:
        run(["git", "checkout", "--", "."], repo, env)
        run(["git", "clean", "-fdq"], repo, env)


def test_every_message_the_troubleshooting_page_lists_is_produced_by_a_test():
    """Each message in docs/troubleshooting.md's table has a test that makes the pipeline print it and compares
    it with the page (a `documented("<part of it>", printed)` call: tests/documented.py)."""
    fragments = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "documented":
                fragment = node.args[0]
                assert isinstance(fragment, ast.Constant), f"{path.name}:{node.lineno}: the fragment is a literal"
                fragments.setdefault(fragment.value, []).append(f"{path.name}:{node.lineno}")
    messages = listed()
    assert len(messages) >= 25
    for fragment, where in fragments.items():
        assert sum(fragment in m for m in messages) == 1, f"{where}: {fragment!r} is not in exactly one message"
    untested = [m for m in messages if not any(f in m for f in fragments)]
    assert not untested, "no test produces:\n" + "\n".join(untested)
