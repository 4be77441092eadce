# One entry point per job; each creates or reuses .venv and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m shipei run examples/mlp.sp --target torch --check
	$(PY) -m shipei run examples/cnn.sp --target torch --check
	$(PY) -m shipei run examples/transformer.sp --target torch --check --dim B=2 --dim T=16
	$(PY) -m shipei train examples/digits_mlp.sp --target torch --lr 1e-2 --schedule cosine --warmup 20 --epochs 8

test: $(STAMP)
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(PY) -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(PY) benchmarks/compile_speed.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
