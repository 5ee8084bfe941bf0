# Set-up and everyday commands. Every target creates the virtual environment if it is missing.
PY := .venv/bin/python
ARGS ?=

.PHONY: run test bench calibrate ui loop

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: .venv/.installed  ## one engine run of the aggressive profile, recorded in MLflow
	$(PY) -m paraphina.run +profile=aggressive $(ARGS)

test: .venv/.installed  ## the whole test suite (what CI runs)
	$(PY) -m pytest $(ARGS)

bench: .venv/.installed  ## engine throughput and peak memory
	$(PY) -m paraphina.bench $(ARGS)

calibrate: .venv/.installed  ## the calibration table of the default market (spec section 9)
	$(PY) -m paraphina.calibrate $(ARGS)

ui: .venv/.installed  ## the MLflow UI on the project's store
	$(PY) -m paraphina.tracking.ui $(ARGS)

LOOP_GRID := "experiment.grid.q0.values=[0]" "experiment.grid.loss_limit.values=[3000,4500]" \
	"experiment.grid.band.values=[150,200,300,400]" \
	"+experiment.grid.delta={key: engine.risk.delta_hard_limit_usd_base, values: [47500,60000,85000]}" seeds=200
loop: .venv/.installed  ## the research loop: presets per tier from a band x delta-limit x loss-limit grid, installed as the live profiles, validated on fresh seeds
	$(PY) -m paraphina.experiments.exp04 $(LOOP_GRID)
	$(PY) -m paraphina.experiments.exp07 experiment.envelope=true experiment.install=true
	$(PY) -m paraphina.experiments.exp08 target=decisive experiment.decisive.planned_fraction=0.75
	$(PY) -m paraphina.experiments.exp10
	$(PY) -m paraphina.experiments.exp13 target=decisive
