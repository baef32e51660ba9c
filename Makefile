# The README's two commands are `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: demo test install install-test bench clean download-models gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,neural,onnx]'

## The main job: embedded broker + worker; the sample portrait + speech submitted as a render request, the
## completion event printed, everything stopped again (cli/demo.py).
demo: install
	@mkdir -p $(OUT)
	$(BIN)/python -m cli.demo $(OUT)

## The test suite (what .ci/run runs).
test: install-test
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

## Neural checkpoints into MODEL_ROOT (see README "Neural engines"); needs network access to their hosts.
download-models: install
	$(BIN)/avatar-renderer models download

## Everything that needs an NVIDIA GPU in one command (gpu tests, bench --wav2lip, bench --hq): out/gpu-check.json.
## Uses the machine's own CUDA torch; see README "GPU check". Not part of `make test` (CI has no GPU).
gpu-check:
	bash .ci/gpu-check

bench: install
	$(BIN)/avatar-renderer bench --out $(OUT)/bench.json

clean:
	rm -rf $(VENV) $(OUT) *.egg-info
