# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data
DEMO   := recommender/demo/articles.jsonl
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test install build-demo serve bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

build-demo: install
	$(BIN)/related build --source $(DEMO) --data-dir $(DATA)

run: build-demo
	$(BIN)/related serve --data-dir $(DATA) --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/build_scale.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
