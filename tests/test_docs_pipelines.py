"""The docs are tests (tests/test_docs.py): docs/extending.md, study.md and sweep.md, read block
by block on a copy of the reproduced shrunk project (conftest.py builds it once for both files)."""

import pytest
from pages import copy_of, options, read, setup_extending, setup_study

pytestmark = pytest.mark.slow


def test_extending_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    setup_extending(repo, env)
    read("docs/extending.md", repo, env, **options("docs/extending.md", repo))
    assert (repo / "confusions.json").is_file() and (repo / "metrics/tanh.json").is_file()


def test_study_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    setup_study(repo, env)
    read("docs/study.md", repo, env)
    assert (repo / "study/report.md").is_file()


def test_sweep_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    read("docs/sweep.md", repo, env)
    assert (repo / "sweep/report.md").is_file()
