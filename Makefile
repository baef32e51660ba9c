# The README's two commands are `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: demo test install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

## The main job: render the portrait and speech clip shipped in engines/samples/.
demo: install
	@mkdir -p $(OUT)
	$(BIN)/avatar-renderer render --face engines/samples/portrait.jpg --audio engines/samples/speech.wav --out $(OUT)/sample.mp4

## The test suite (what .ci/run runs).
test: install-test
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/avatar-renderer bench --out $(OUT)/bench.json

clean:
	rm -rf $(VENV) $(OUT) *.egg-info
