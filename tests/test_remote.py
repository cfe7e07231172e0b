"""A team's DVC remote for real: moto's S3 server on 127.0.0.1, DVC's own S3 plugin, clones through a bare git repo."""

import hashlib
import sys

import pytest
from helpers import ROOT, S3_CREDENTIALS, make_project, run, s3_server, shrunk_params, write_idx_folder

pytestmark = pytest.mark.slow
BUCKET = "team-dvc"


@pytest.fixture(scope="module")
def s3_url():
    with s3_server(BUCKET) as url:
        yield url


def s3_env(env):
    """Credentials from the environment, as a user would keep them (never in .dvc/config)."""
    return {**env, **S3_CREDENTIALS}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def team(tmp_path_factory, s3_url):
    """A shrunk project reproduced, with the S3 remote and a bare git 'origin', everything pushed."""
    tmp = tmp_path_factory.mktemp("team")
    write_idx_folder(tmp / "mirror")
    params = shrunk_params(tmp / "mirror", **{"tracking.enabled": False})
    params["variants"] = {k: params["variants"][k] for k in ("vanilla", "dropout")}
    repo, env = make_project(tmp, params)
    env = s3_env(env)
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/store"], repo, env)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3_url], repo, env)
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results"], repo, env)
    run(["git", "init", "-q", "--bare", "-b", "main", str(tmp / "origin.git")], tmp, env)
    run(["git", "remote", "add", "origin", str(tmp / "origin.git")], repo, env)
    run(["git", "push", "-q", "origin", "main"], repo, env)
    pushed = run(["dvc", "push", "--run-cache"], repo, env).stdout
    yield tmp, repo, env, pushed


def clone(tmp, env, name):
    run(["git", "clone", "-q", str(tmp / "origin.git"), str(tmp / name)], tmp, env)
    return tmp / name


def test_a_fresh_clone_pulls_everything_and_trains_nothing(team):
    tmp, repo, env, pushed = team
    assert "pushed" in pushed
    mate = clone(tmp, env, "mate")
    run(["dvc", "pull"], mate, env)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], mate, env).stdout
    again = run(["dvc", "repro"], mate, env).stdout
    assert "Running stage" not in again, again
    for seed in (0, 1):
        path = f"data/models/vanilla/seed{seed}.pt"
        assert digest(mate / path) == digest(repo / path)

    # a checkpoint lost locally comes back bit-identical from the remote
    (mate / "data/models/vanilla/seed0.pt").unlink()
    run(["dvc", "pull", "data/models/vanilla/seed0.pt"], mate, env)
    assert digest(mate / "data/models/vanilla/seed0.pt") == digest(repo / "data/models/vanilla/seed0.pt")


def test_experiments_travel_through_git_and_the_remote(team):
    tmp, repo, env, _ = team
    run(["dvc", "exp", "run", "-n", "drop05", "-S", "variants.dropout.model.dropout=0.5"], repo, env)
    metrics = (repo / "metrics/dropout.json").read_text()
    checkpoint = digest(repo / "data/models/dropout/seed0.pt")
    run(["git", "checkout", "--", "."], repo, env)
    run(["dvc", "checkout"], repo, env)
    run(["dvc", "exp", "push", "origin", "drop05"], repo, env)

    mate = clone(tmp, env, "mate3")
    run(["dvc", "exp", "pull", "origin", "drop05"], mate, env)
    assert "drop05" in run(["dvc", "exp", "show", "--md"], mate, env).stdout
    run(["dvc", "exp", "apply", "drop05"], mate, env)
    run(["dvc", "pull"], mate, env)
    assert (mate / "metrics/dropout.json").read_text() == metrics
    assert digest(mate / "data/models/dropout/seed0.pt") == checkpoint
    assert "Running stage" not in run(["dvc", "repro"], mate, env).stdout


def test_a_run_pushed_with_its_outputs_is_restored_from_the_run_cache_for_a_teammate(team):
    """`dvc push --run-cache` alone leaves a run's outputs behind (docs/team.md); the script sends them too."""
    tmp, repo, env, _ = team
    run(
        ["dvc", "exp", "run", "-S", "variants.dropout.model.dropout=0.6"], repo, env
    )  # run, not shared as an experiment
    metrics = (repo / "metrics/dropout.json").read_text()
    run(["git", "checkout", "--", "."], repo, env)
    run(["dvc", "checkout"], repo, env)
    pushed = run([sys.executable, str(ROOT / "scripts/push_run_cache.py")], repo, env).stdout
    assert "0 failed" in pushed, pushed

    mate = clone(tmp, env, "mate4")
    restored = run(["dvc", "exp", "run", "--pull", "-S", "variants.dropout.model.dropout=0.6"], mate, env).stdout
    assert "Stage 'train@dropout-0' is cached - skipping run" in restored, restored
    assert "Running stage 'train@" not in restored and "Running stage 'evaluate@" not in restored
    assert (mate / "metrics/dropout.json").read_text() == metrics


def test_an_unreachable_remote_fails_with_dvcs_message_and_loses_nothing(team):
    tmp, repo, env, _ = team
    before = digest(repo / "data/models/vanilla/seed0.pt")
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", "http://127.0.0.1:9"], repo, env)
    try:
        result = run(["dvc", "push"], repo, env, check=False)
        assert result.returncode != 0 and "ERROR" in result.stderr + result.stdout
    finally:
        (repo / ".dvc/config.local").unlink()
    assert digest(repo / "data/models/vanilla/seed0.pt") == before


@pytest.mark.parametrize(
    "bucket, credentials, dvc_says",
    [
        ("no-such-bucket", True, "NoSuchBucket"),  # docs/team.md's first step not taken: the bucket
        (BUCKET, False, "Unable to locate credentials"),  # no AWS_* in the environment
    ],
    ids=["no-bucket", "no-credentials"],
)
def test_make_push_failing_is_dvcs_message_and_one_line(team, s3_url, bucket, credentials, dvc_says):
    tmp, repo, env, _ = team
    env = env if credentials else {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env = {**env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"), "AWS_CONFIG_FILE": str(tmp / "none")}
    run(["dvc", "remote", "add", "--local", "elsewhere", f"s3://{bucket}/store"], repo, env)
    run(["dvc", "remote", "modify", "--local", "elsewhere", "endpointurl", s3_url], repo, env)
    try:
        result = run(
            [sys.executable, str(ROOT / "scripts/push_run_cache.py"), "-r", "elsewhere"], repo, env, check=False
        )
    finally:
        run(["dvc", "remote", "remove", "--local", "elsewhere"], repo, env)
    text = result.stdout + result.stderr
    assert result.returncode == 1 and dvc_says in text and "Traceback" not in text, text
    assert result.stderr.rstrip().splitlines()[-1] == (
        "error: `dvc push --run-cache` failed (its message above); see docs/team.md, 'The remote'"
    )
