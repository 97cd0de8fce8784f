PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CLIP ?= ../shared/data/clips/liveportrait_d19.mp4
OUT ?= out/demo

.PHONY: demo test lint bench clean

$(BIN)/facecodec: requirements.txt pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps mediapipe==0.10.14
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

demo: $(BIN)/facecodec
	$(BIN)/facecodec demo $(CLIP) --out $(OUT)

test: $(BIN)/facecodec
	$(BIN)/python -m pytest -q

lint: $(BIN)/facecodec
	$(BIN)/ruff check facecodec tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out
