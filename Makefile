# The two commands of the README: `make run` and `make test`. Both set up
# .venv from the pinned requirements first (once; again when they change).
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup data run study study-wide sweep tune decide push test test-fast exps ui

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The default data source is Debian's dataset-fashion-mnist: install it when missing and we can.
data:
	@scripts/ensure-data.sh

# `dvc repro`, with the seeds' train stages as many at once as the cores allow (scripts/repro.py).
# With a DVC remote configured, the committed results' data and models are pulled first, so
# only what nobody pushed trains. Then the verdicts and the table of report.md.
PULL = $(shell dvc remote list 2>/dev/null | grep -q . && echo --pull)

run: setup data
	python scripts/repro.py $(PULL)
	@sed -n '/^## Verdicts/,/^## Figures/p' report.md | grep -v '^## Figures'

# The small-CNN study (docs/study.md): a DVC project of its own in study/, on the main split.
# Its 21 rows take about five hours on 2 cores (docs/study.md), so never part of `make run`.
study: setup data
	dvc repro $(PULL) split
	python scripts/repro.py --cd study $(PULL)
	@sed -n '/^## Verdicts/,/^## Figures/p' study/report.md | grep -v '^## Figures'

# The study's wide rows (4 conv blocks from 64, 128, 512 channels; docs/study.md): a DVC project of its
# own in study/wide/, out of reach of 2 cores. Run it with RAY_ADDRESS set (a Ray cluster) or on a GPU.
study-wide: setup data
	dvc repro $(PULL) split
	python scripts/repro.py --cd study/wide $(PULL)
	@sed -n '/^## Verdicts/,/^## Figures/p' study/wide/report.md | grep -v '^## Figures'

# The seed's sweep (docs/sweep.md): LeNet-5, activation x batch norm x dropout, 3 seeds per cell;
# a DVC project of its own in sweep/, on the main split. About half an hour on 2 cores.
sweep: setup data
	dvc repro $(PULL) split
	python scripts/repro.py --cd sweep $(PULL)
	@sed -n '/^## Verdicts/,/^## Figures/p' sweep/report.md | grep -v '^## Figures'

# Every variant tuned with the same budget (tune/params.yaml, docs/tuning.md), then its best
# setting trained on the standard seeds: a DVC project of its own in tune/, on the main split and
# run configs. The main pipeline's results (committed) are the shared-setting side of tune/tuning.md.
tune: setup data
	dvc repro $(PULL) split
	python scripts/repro.py --cd tune $(PULL)
	@sed -n '/^## Tuned vs shared/,$$p' tune/tuning.md

# Add seeds in rounds (report.looks) until every comparison is decided or the last look;
# each round a DVC experiment (scripts/decide.py). `make decide STUDY=1` for the study.
decide: setup data
	$(if $(STUDY),dvc repro split && )python scripts/decide.py $(if $(STUDY),--cd study)
	@sed -n '/^## Verdicts/,/^## Table/p' $(if $(STUDY),study/)report.md | grep -v '^## Table'

# dvc push --run-cache, plus the outputs of every recorded run, which DVC leaves behind
# (docs/team.md): a teammate's `dvc exp run --pull` of a configuration you ran then trains nothing.
# The study's and the sweep's outputs too, when this clone trained or pulled any
# (a checkpoint in <project>/data/models; git keeps only a .gitignore there), to the same remote.
push: setup
	python scripts/push_run_cache.py
	@for p in study study/wide sweep; do if [ -n "$$(find $$p/data/models -name '*.pt' 2>/dev/null | head -n 1)" ]; then python scripts/push_run_cache.py --project $$p; fi; done

test: setup data
	@scripts/ensure-test-services.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest

# The edit-test loop: every test but those marked slow (the real dvc, mlflow and servers end to end).
test-fast: setup data
	$(VENV)/bin/python -m pytest -m "not slow"

# The experiments table, narrowed to what differs and to the mean accuracies over seeds;
# `make exps REV=<commit>` for the experiments of an older commit, `make exps STUDY=1` for the study's.
# comparison.json's columns but the verdict: DVC names them <variant>.<key> when no other file has the key
COMPARED := diff|ci_low|ci_high|boot_low|boot_high|p|p_holm|p_tost|p_tost_holm|seeds_needed
exps: setup
	@dvc $(if $(STUDY),--cd study) exp show --only-changed --md $(if $(REV),--rev $(REV)) \
	  --drop 'metrics/[^:]*:(?!(test|val)_acc_mean$$).*|comparison.json:[^.]*[.](?!verdict$$).*|[^.:/]+[.]($(COMPARED))$$|(data|plots)/|metrics$$|pipeline/|Created|[.][.]/params.yaml:'

# `mlflow ui` on the local store, printing the page to open per experiment: its training runs with the
# mean accuracies as columns (plain `mlflow ui` opens the GenAI overview; scripts/mlflow-ui.py says why).
ui: setup
	@python scripts/mlflow-ui.py $(if $(PORT),--port $(PORT))
