"""The probe of issue 32, kept as a test: every key of params.yaml given by `-S` a value of the wrong type, one
out of range and an empty one, through what `make run` and the README's experiments use (scripts/repro.py
--exp -S: validated before any dvc command). Each bad value is one line naming the key, params.yaml is left
byte for byte, and what each printed is the table in docs/troubleshooting.md (compared here)."""

import importlib.util
import re
import shutil
from pathlib import Path

import yaml
from helpers import ROOT

spec = importlib.util.spec_from_file_location("repro", ROOT / "scripts/repro.py")
repro = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repro)

KEPT = " (the -S values were not applied: the params files are as they were); nothing ran"
SECTIONS = ("data", "model", "train", "evaluate", "report", "tracking")


def leaves(node, prefix=""):
    """{dotted key: value} of params.yaml's settings, and two variants' own (batchnorm's switch, dropout's rate)."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in leaves(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def bad_values(value):
    """(kind, -S value) to try for a key whose good value is `value`."""
    if isinstance(value, bool):
        return [("wrong type", "3"), ("empty", "''")]
    if isinstance(value, int | float):
        return [("wrong type", "abc"), ("out of range", "-1"), ("empty", "''")]
    if isinstance(value, list):
        return [("wrong type", "5"), ("out of range", "[-1]"), ("empty", "[]")]
    return [("wrong type", "5"), ("out of range", "nosuch"), ("empty", "''")]


def probes():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = {k: v for s in SECTIONS for k, v in leaves(params[s], f"{s}.").items()}
    keys |= leaves(params["variants"]["batchnorm"], "variants.batchnorm.")
    keys |= leaves(params["variants"]["dropout"]["model"], "variants.dropout.model.")
    return [(key, kind, value) for key, good in keys.items() for kind, value in bad_values(good)]


def probe(tmp_path, key, value):
    """What `scripts/repro.py --exp -S key=value` prints before any dvc command (None: accepted)."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    before = (project / "params.yaml").read_bytes()
    try:
        repro.validate_first(project, [f"{key}={value}"])
    except SystemExit as e:
        assert (project / "params.yaml").read_bytes() == before  # put back byte for byte
        return str(e.code)
    return None


def table(tmp_path):
    rows = []
    for key, kind, value in probes():
        said = probe(tmp_path, key, value)
        shown = "accepted" if said is None else f"`{said.removesuffix(KEPT)}`"
        rows.append(f"| `-S {key}={value}` | {kind} | {shown} |")
    return rows


def test_every_key_with_a_bad_value_is_one_line_naming_it_and_the_doc_shows_what_each_printed(tmp_path):
    rows = table(tmp_path)
    for row in rows:
        key = re.match(r"\| `-S ([^=]+)=", row)[1]
        said = row.rsplit("| ", 2)[1]
        if said.startswith("`"):  # refused: one line, naming the key
            assert said.startswith("`error: ") and "\n" not in said and key.split(".", 1)[1] in said, row
    doc = (ROOT / "docs/troubleshooting.md").read_text()
    shown = doc.split("<!-- probe:start -->\n", 1)[1].split("<!-- probe:end -->", 1)[0].splitlines()
    assert shown[2:] == rows, "docs/troubleshooting.md's probe table differs: `python tests/test_probe.py` prints it"
    accepted = [row for row in rows if row.endswith("| accepted |")]
    assert len(accepted) == len(ACCEPTED) and all(any(a in row for a in ACCEPTED) for row in accepted), accepted


# Values the pipeline can use, accepted on purpose: any text names an MLflow experiment.
ACCEPTED = ["`-S tracking.experiment=nosuch`"]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(table(Path(tmp))))
