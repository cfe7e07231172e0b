"""Faults a user meets: each is one line, leaves nothing half-written, and says the way back."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from documented import documented
from helpers import (
    IDX_NAMES,
    ROOT,
    free_port,
    make_project,
    run,
    shrunk_params,
    train_cmd,
    train_one,
    write_idx_folder,
    write_params,
)

from pipeline.checkpoint import load_checkpoint
from pipeline.engine import batches
from pipeline.errors import PipelineError
from pipeline.params import ParamsError, validate


def test_a_last_batch_of_one_joins_the_batch_before():
    assert [len(b) for b in batches(torch.arange(10), 3)] == [3, 3, 4]
    assert [len(b) for b in batches(torch.arange(9), 3)] == [3, 3, 3]
    assert [len(b) for b in batches(torch.arange(1), 3)] == [1]
    assert torch.equal(torch.cat(batches(torch.arange(10), 3)), torch.arange(10))


def test_batch_norm_trains_when_the_split_leaves_a_batch_of_one(split_dir):
    # 500 training images in batches of 499: PyTorch's batch norm raised on the last batch of one
    params = validate(shrunk_params("unused", **{"tracking.enabled": False, "train.batch_size": 499}))
    _, history = train_one(params, "batchnorm", split_dir, 0)
    assert len(history) == 2


def test_batch_norm_with_batches_of_one_is_refused():
    with pytest.raises(
        ParamsError, match=r"train.batch_size must be >= 2 for variant batchnorm, which uses batch norm; got 1"
    ):
        validate(shrunk_params("unused", **{"train.batch_size": 1}))


def test_a_training_split_smaller_than_one_batch_is_one_line(split_dir, tmp_path):
    params = write_params(tmp_path, **{"tracking.enabled": False, "train.batch_size": 501})
    result = subprocess.run(train_cmd(params, split_dir, tmp_path), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: the training split holds 500 images, fewer than one batch (train.batch_size 501): "
        "lower train.batch_size or data.val_size"
    ]
    documented("fewer than one batch", result.stderr)
    assert not (tmp_path / "models").exists()


def test_a_damaged_checkpoint_is_one_line_naming_it_and_the_way_back(tmp_path):
    path = tmp_path / "models" / "vanilla" / "seed0.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])  # truncated, as by a full disk
    with pytest.raises(PipelineError) as error:
        load_checkpoint(path, "cpu")
    message = str(error.value)
    assert message.startswith(f"{path} cannot be read (") and "\n" not in message
    assert "dvc " not in message  # no dvc.lock records a file outside a project: no way back is promised


def test_a_checkpoint_holding_a_python_object_is_refused_without_running_it(tmp_path):
    """A crafted pickle (it would run a command when unpickled): refused in one line naming the object, the
    command never runs, and no restore advice for a file outside the project."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, path)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.predict", str(path), "--out", str(tmp_path / "p.csv")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "ran").exists() and not (tmp_path / "p.csv").exists()
    assert result.stderr.splitlines() == [
        f"error: {path} is not a checkpoint this pipeline wrote: it holds a Python object, not only tensors and "
        "numbers (Trying to load unsupported GLOBAL posix.system whose module posix is blocked.), and is not loaded"
    ]
    documented("is not a checkpoint this pipeline wrote", result.stderr)


def test_a_file_that_is_not_a_checkpoint_of_this_version_is_one_line(tmp_path):
    path = tmp_path / "models" / "vanilla" / "seed3.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(3)}, "variant": "vanilla"}, path)  # an older or foreign file
    with pytest.raises(PipelineError) as error:
        load_checkpoint(path, "cpu")
    message = str(error.value)
    assert message.startswith(f"{path} is not a checkpoint of this version (keys ['state_dict', 'variant'], ")
    assert "dvc " not in message and "\n" not in message  # outside a project: no way back is promised


@pytest.mark.parametrize(
    "kill, code",
    [
        (lambda pid: os.killpg(pid, signal.SIGINT), 130),  # what Ctrl-C sends: every process of the group
        (lambda pid: os.kill(pid, signal.SIGTERM), 143),  # `kill <pid>`, a scheduler: the stage's process only
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_an_interrupt_is_one_line_and_leaves_no_output_or_process(split_dir, tmp_path, kill, code):
    params = write_params(tmp_path, **{"tracking.enabled": False, "train.epochs": 200})
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            train_cmd(params, split_dir, tmp_path, "vanilla"),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    deadline = time.monotonic() + 120
    while " epoch " not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    kill(proc.pid)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    # run by hand, not by DVC: nothing was removed, so there is nothing to restore and no command to offer
    assert stderr.splitlines() == ["interrupted: the stage stopped before it finished; it wrote nothing half-way"]
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
    group = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert group == []  # nothing of the stage lives on


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A tiny project (vanilla and mlp) after `dvc repro`, its results committed: what a user has."""
    tmp = tmp_path_factory.mktemp("faults")
    write_idx_folder(tmp / "mirror")
    params = shrunk_params(tmp / "mirror", **{"tracking.enabled": False})
    params["variants"] = {name: params["variants"][name] for name in ("vanilla", "mlp")}
    repo, env = make_project(tmp, params)
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results"], repo, env)
    return repo, env


@pytest.fixture
def committed_fresh(committed):
    """`committed`, put back as committed after the test, so a failure does not spill into the next test."""
    yield committed
    repo, env = committed
    run(["git", "checkout", "HEAD", "--", "."], repo, env)
    run(["dvc", "checkout", "--force"], repo, env)


VANILLA = ["data/models/vanilla/seed0.pt"]  # the output of train@vanilla-0


def restore_command(log):
    """The command the stage's one line offers to bring back what DVC removed."""
    lines = [line for line in log.splitlines() if line.startswith(("error: ", "interrupted: "))]
    assert len(lines) == 1, log
    match = re.search(r"DVC removed the stage's previous outputs before it ran: restore them with `([^`]+)`$", lines[0])
    assert match, lines[0]
    return match[1]


def edit_params(repo, **changes):
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def check_restored(repo, env, log, before):
    """Run the printed command; the outputs are back byte for byte, and DVC agrees they are current."""
    assert not (repo / VANILLA[0]).exists()  # DVC removed it before the stage ran
    run(["bash", "-c", restore_command(log)], repo, env)
    assert {p: (repo / p).read_bytes() for p in VANILLA} == before
    run(["git", "checkout", "params.yaml"], repo, env)
    # the outputs are current: only `check` runs again (it validated the edited params, a marker of its own)
    again = run(["dvc", "repro"], repo, env).stdout
    assert "Running stage 'check'" in again and "Running stage 'train@" not in again, again


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill, codes",
    [
        # Ctrl-C: the terminal's whole process group. DVC runs a stage through $SHELL -c: bash execs the
        # command, and DVC sees the stage's 130; dash (/bin/sh, used when SHELL is unset) waits and dies
        # of the SIGINT itself, so DVC says "exited with -2". The stage's own line is the same either way.
        (lambda dvc, stage: os.killpg(dvc, signal.SIGINT), ("130", "-2")),
        (lambda dvc, stage: os.kill(stage, signal.SIGTERM), ("143",)),  # `kill <pid>` of the stage (DVC passes none on)
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_an_interrupted_dvc_stage_names_the_command_that_restores_its_outputs(committed_fresh, tmp_path, kill, codes):
    repo, env = committed_fresh
    before = {p: (repo / p).read_bytes() for p in VANILLA}
    edit_params(repo, **{"train.epochs": 300})
    log = tmp_path / "dvc.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["dvc", "repro", "train@vanilla-0"], cwd=repo, env=env, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while " epoch " not in log.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
        time.sleep(0.2)
    # the Python process, not a shell that may wrap it
    found = subprocess.run(
        ["pgrep", "-g", str(proc.pid), "-f", r"^python\S* -m pipeline\.train"], capture_output=True, text=True
    )
    stage = int(found.stdout.split()[0])
    kill(proc.pid, stage)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30  # when a shell wrapped the stage, DVC may return before the stage's clean-up
    while os.path.exists(f"/proc/{stage}") and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert proc.returncode != 0 and any(f"exited with {code}\n" in text for code in codes), text
    assert "interrupted: the stage stopped before it finished" in text and "Traceback" not in text
    documented("interrupted: the stage stopped", text)
    check_restored(repo, env, text, before)


@pytest.mark.slow
def test_a_failing_dvc_stage_names_the_command_that_restores_its_outputs(committed_fresh):
    repo, env = committed_fresh
    before = {p: (repo / p).read_bytes() for p in VANILLA}
    edit_params(repo, **{"train.lr": 1.0e12})  # diverges in its first epoch
    result = run(["dvc", "repro", "train@vanilla-0"], repo, env, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "error: vanilla/seed0: the loss diverged" in text, text
    documented("error: ...; DVC removed the stage's previous outputs", text)
    check_restored(repo, env, text, before)


@pytest.mark.slow
def test_a_failing_stage_whose_outputs_no_cache_holds_says_to_re_create_them(committed_fresh, tmp_path):
    """A clone whose DVC cache lacks the outputs (here: a cache folder of its own, empty): no command would bring
    them back as dvc.lock records them, so the line names none but `dvc repro` and says why."""
    repo, env = committed_fresh
    run(["dvc", "cache", "dir", "--local", str(tmp_path / "empty-cache")], repo, env)
    try:
        edit_params(repo, **{"train.lr": 1.0e12})  # diverges in its first epoch
        result = run(["dvc", "repro", "train@vanilla-0"], repo, env, check=False)
    finally:
        (repo / ".dvc/config.local").unlink()
    line = documented("neither git nor this clone's DVC cache", result.stdout + result.stderr)
    assert line.startswith("error: vanilla/seed0: the loss diverged") and f"holds {VANILLA[0]} as" in line


def test_a_full_disk_is_one_line_naming_the_output_and_a_rerun_succeeds(split_dir, tmp_path):
    """A 300 KB tmpfs holds one mlp checkpoint (~250 KB): the second seed's write fails."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], check=True)
    try:
        params = write_params(tmp_path, **{"tracking.enabled": False})
        commands = [train_cmd(params, split_dir, tmp_path, seed=seed) for seed in (0, 1)]
        for command in commands:  # the checkpoints onto the small disk; the run config stays in tmp_path
            command[-1] = str(disk / "models" / Path(command[-1]).name)
        subprocess.run(commands[0], cwd=ROOT, check=True, capture_output=True, timeout=180)
        full = subprocess.run(commands[1], cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert full.returncode == 2, full.stderr
        (line,) = full.stderr.splitlines()
        where = re.escape(str(disk / "models"))
        assert re.match(rf"error: no space left on the device holding {where}/seed1\.pt: ", line), line
        assert "MB free, this write needs 0.2 MB" in line and f"`df -h {disk / 'models'}`" in line
        documented("no space left on the device", line)
        assert sorted(p.name for p in (disk / "models").iterdir()) == ["seed0.pt"]  # nothing half-written
        subprocess.run(["mount", "-o", "remount,size=10m", str(disk)], check=True)
        subprocess.run(commands[1], cwd=ROOT, check=True, capture_output=True, timeout=180)
        assert sorted(p.name for p in (disk / "models").iterdir()) == ["seed0.pt", "seed1.pt"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_dvc_cache_is_one_line_and_the_printed_commit_keeps_the_trained_outputs(tmp_path):
    """`make run` with a DVC cache on a tmpfs 64 KB larger than the data: the checkpoint (~250 KB) trains but
    cannot be cached. One line names the cache, its free space and the outputs' size; DVC's temp files are gone
    from the cache; once there is room, the printed `dvc commit --force ...` records it and nothing trains
    again."""
    write_idx_folder(tmp_path / "mirror")
    params = shrunk_params(tmp_path / "mirror", **{"tracking.enabled": False, "train.seeds": [0]})
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    repo, env = make_project(tmp_path, params)
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(cache)], check=True)
    try:
        run(["dvc", "cache", "dir", str(cache)], repo, env)
        run(["dvc", "repro", "split", "check"], repo, env)  # the data, cached
        used = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        subprocess.run(["mount", "-o", f"remount,size={used // 1024 + 64}k", str(cache)], check=True)
        result = run([sys.executable, "scripts/repro.py"], repo, env, check=False)
        assert result.returncode != 0
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
        assert re.fullmatch(
            rf"error: the DVC cache {re.escape(str(cache))} is full \(\d+\.\d MB free; the outputs of "
            r"train@vanilla-0 take 0\.\d MB\): DVC could not keep them in the cache; they are in the workspace\. "
            r"Free space there or move the cache \(`dvc cache dir <folder>`\), then "
            r"`dvc commit --force train@vanilla-0` caches and records them without running them again"
            r"(; the \d temp file\(s\) DVC left in the cache were removed)?",
            line,
        ), line
        documented("is full (", line)
        assert not [f for f in cache.rglob("*.tmp")]
        checkpoint = (repo / "data/models/vanilla/seed0.pt").read_bytes()
        subprocess.run(["mount", "-o", "remount,size=20m", str(cache)], check=True)
        run(["bash", "-c", re.search(r"then `([^`]+)`", line)[1]], repo, env)
        assert "train@vanilla-0" not in run(["dvc", "status"], repo, env).stdout
        assert (repo / "data/models/vanilla/seed0.pt").read_bytes() == checkpoint
    finally:
        subprocess.run(["umount", str(cache)], check=True)


def test_damaged_labels_are_named_and_not_blamed_on_val_size(tmp_path):
    """A label file whose values are not 0..9 (a wrong file, a bit flip) is one line naming it and the way back."""
    raw = tmp_path / "raw" / "FashionMNIST" / "raw"
    write_idx_folder(raw, gz=False)
    labels = raw / IDX_NAMES[("train", "labels")]
    data = bytearray(labels.read_bytes())
    data[8:] = bytes([200]) * (len(data) - 8)  # every label 200
    labels.write_bytes(bytes(data))
    params = write_params(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.split", "--params", str(params), "--raw", str(tmp_path / "raw"),
         "--out", str(tmp_path / "split")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    where = tmp_path / "raw"
    assert line.startswith(f"error: FashionMNIST's train labels in {where} are damaged (label values 200..200")
    assert "val_size" not in line and "dvc " not in line  # outside a project: no way back is promised


@pytest.mark.slow
def test_a_damaged_checkpoint_names_the_command_that_restores_it(committed_fresh):
    """In the project: `dvc checkout` when the cache holds what dvc.lock records (the test runs it); once the
    damaged file is itself what dvc.lock records, only the stage's re-run can bring it back."""
    repo, env = committed_fresh
    path = repo / VANILLA[0]
    good = path.read_bytes()
    path.unlink()  # a new file, not one the cache may share
    path.write_bytes(good[:2000])
    predict = [sys.executable, "-m", "pipeline.predict", VANILLA[0], "--out", "p.csv"]
    (line,) = run(predict, repo, env, check=False).stderr.splitlines()
    assert line.startswith(f"error: {VANILLA[0]} cannot be read (")
    documented("cannot be read (...); restore it", line)
    assert line.endswith(
        f"; restore it with `dvc checkout --force {VANILLA[0]}` or re-run its stage with "
        "`dvc repro --force train@vanilla-0`"
    )
    run(["bash", "-c", re.search(r"restore it with `([^`]+)`", line)[1]], repo, env)
    assert path.read_bytes() == good
    path.unlink()
    path.write_bytes(good[:2000])
    run(["dvc", "commit", "--force", "train@vanilla-0"], repo, env)  # dvc.lock now records the damaged file
    (line,) = run(predict, repo, env, check=False).stderr.splitlines()
    assert line.endswith(
        "; re-run its stage with `dvc repro --force train@vanilla-0` (dvc.lock records this damaged file)"
    )
    assert run(["dvc", "repro", "--force", "train@vanilla-0"], repo, env).returncode == 0
    run(predict, repo, env)


def damage_labels(folder):
    """Every training label 200 (a wrong file, a bit flip), written as a new file."""
    labels = folder / IDX_NAMES[("train", "labels")]
    data = bytearray(labels.read_bytes())
    data[8:] = bytes([200]) * (len(data) - 8)
    labels.unlink()
    labels.write_bytes(bytes(data))


@pytest.mark.slow
def test_raw_files_damaged_in_the_workspace_are_restored_by_the_printed_checkout(committed_fresh):
    repo, env = committed_fresh
    damage_labels(repo / "data/raw/FashionMNIST/raw")
    result = run(["dvc", "repro", "--single-item", "--force", "split"], repo, env, check=False)  # upstream not re-run
    (line,) = [x for x in (result.stdout + result.stderr).splitlines() if x.startswith("error: ")]
    assert (
        "; restore them with `dvc checkout --force data/raw` or re-run its stage with `dvc repro --force download`;"
        in line
    )
    assert line.endswith(
        "DVC removed the stage's previous outputs before it ran: restore them with `dvc checkout data/split`"
    )
    documented("restore them with `dvc checkout --force data/raw`", line)
    run(["bash", "-c", re.search(r"restore them with `([^`]+)`", line)[1]], repo, env)
    assert run(["dvc", "repro", "--single-item", "--force", "split"], repo, env).returncode == 0


@pytest.mark.slow
def test_raw_files_damaged_at_their_source_get_the_step_that_repairs_them(tmp_path):
    """The source itself serves a damaged file (checksums off): a checkout or a re-fetch would bring it back
    damaged, so the line says what does repair it."""
    write_idx_folder(tmp_path / "mirror", gz=False)
    damage_labels(tmp_path / "mirror")
    params = shrunk_params(tmp_path / "mirror", **{"tracking.enabled": False})
    repo, env = make_project(tmp_path, params)
    result = run(["dvc", "repro", "split"], repo, env, check=False)
    (line,) = [x for x in (result.stdout + result.stderr).splitlines() if x.startswith("error: ")]
    assert "are damaged (label values 200..200" in line and line.endswith(
        "; they are what stage download fetched, so the source gave them damaged (a checkout or a fetch from the "
        "same source brings back the same files): with data.verify_checksums: true download refuses files that "
        "fail their pinned checksums and tries the next of data.sources; or fix data.sources; then "
        "`dvc repro --force download`"
    )
    documented("they are what stage download fetched", line)


def test_stages_that_fail_alike_under_repro_say_so_once(tmp_path):
    """Two train stages at once, both refused by the same MLflow store (nothing listens at its address): the
    store's one line is printed once, the second stage says it failed the same way."""
    params = shrunk_params(tmp_path / "mirror", **{"tracking.enabled": True})
    write_idx_folder(tmp_path / "mirror")
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    repo, env = make_project(tmp_path, params)
    env = {**env, "PIPELINE_WORKERS": "2", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    result = run([sys.executable, "scripts/repro.py"], repo, env, check=False)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).splitlines()
    refusals = [line for line in lines if line.startswith("  error: MLflow store http://127.0.0.1:")]
    assert len(refusals) == 1, lines
    failed = sorted(line.split(" failed")[0] for line in lines if " failed (" in line or " failed the same way" in line)
    assert failed == ["train@vanilla-0", "train@vanilla-1"], lines
    assert sum(" failed the same way (" in line for line in lines) == 1
