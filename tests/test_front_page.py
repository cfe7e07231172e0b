"""The front page says what is there: README.md's stage map is dvc.yaml's stages and modules, its results table
is the committed metrics, and every relative link in README.md and docs/ leads to a file."""

import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_front_page_is_short():
    assert len(README.splitlines()) <= 100


def test_the_stage_map_is_dvc_yamls_stages_and_the_modules_their_commands_run():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    modules = {name: re.search(r"python -m pipeline\.(\w+)", str(stage))[1] for name, stage in stages.items()}
    rows = markdown_table(README, "| stage | module |")
    mapped = {row[0].strip("`"): row[1].strip("`") for row in rows}
    assert mapped == {name: f"pipeline/{module}.py" for name, module in modules.items()}
    diagram = README[README.index("## The stage map") :].split("```")[1]
    assert all(name in diagram for name in stages)


def test_the_results_table_is_the_committed_metrics():
    rows = markdown_table(README, "| variant | params |")
    variants = yaml.safe_load((ROOT / "params.yaml").read_text())["variants"]
    assert [row[0] for row in rows] == list(variants)
    for row in rows:
        metrics = json.loads((ROOT / "metrics" / f"{row[0]}.json").read_text())
        assert row[1] == f"{metrics['parameters']:,}"
        shown = re.fullmatch(r"\*\*([\d.]+)%\*\* ± ([\d.]+) \[([\d.]+), ([\d.]+)\]", row[2])
        assert shown, row[2]
        keys = ("test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high")
        assert [float(x) for x in shown.groups()] == [round(metrics[key] * 100, 2) for key in keys]
        assert metrics["seeds"] == 8 == len(yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["seeds"])


@pytest.mark.parametrize("page", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))])
def test_every_relative_link_leads_to_a_file(page):
    path = ROOT / page if page == "README.md" else ROOT / "docs" / page
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{page}: {target}"
