# The README's two commands: `make run` (install + main job) and `make test` (install + test suite).
PYTHON ?= python3.11
# Where the CPU build of torch comes from on a machine that has no local wheel (PyTorch's CPU index).
TORCH_CPU_INDEX ?=
# ONNX Runtime build: cpu (onnxruntime) or gpu (onnxruntime-gpu, CUDA provider); a venv holds one, never both.
ONNXRUNTIME ?= cpu
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# MusiCNN's published weights, converted from the musicnn wheel (cached in .cache/wheels/) when missing.
MUSICNN_WEIGHTS := weights/musicnn-msd/model.safetensors weights/musicnn-mtt/model.safetensors
# The ranker's query encoder (GET /recommend?q=): the packaged all-MiniLM-L6-v2 exported to ONNX with MusiCNN's
# tag names' vectors (training/export_text_encoder.py); the ranker answers 422 query_unavailable without it.
QUERY_ENCODER := weights/minilm-l6-v2/model.onnx

.PHONY: install browser run test lint frappe clean

ORT_STAMP := $(VENV)/.onnxruntime-$(ONNXRUNTIME)

install: $(STAMP) $(ORT_STAMP) $(MUSICNN_WEIGHTS) $(QUERY_ENCODER) browser

# Headless Chromium + chromedriver from Debian for the browser tests (tests/browser): installed when missing and
# this is root with apt-get; otherwise a note, never a failure (those tests then skip and say why).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium + chromium-driver (apt-get) for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			>/dev/null 2>&1 || echo "note: could not install chromium; the browser tests will skip"; \
	else \
		echo "note: no chromium/chromedriver (apt-get install chromium chromium-driver); the browser tests will skip"; \
	fi

# torch goes in first, pinned: with no CUDA the machine's local CPU wheel of 2.13.0 is taken, so
# the later `pip install -e` finds torch satisfied and never resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA present: installing torch==2.13.0"; \
		$(PY) -m pip install --quiet torch==2.13.0; \
	else \
		echo "no CUDA: installing torch==2.13.0 (CPU build)"; \
		$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX)); \
	fi
	$(PY) -m pip install --quiet -e ".[serving,training,dev]"
	touch $(STAMP)

# The chosen ONNX Runtime build; switching (make install ONNXRUNTIME=gpu) removes the other one first.
$(ORT_STAMP): | $(STAMP)
	$(if $(filter $(ONNXRUNTIME),cpu gpu),,$(error ONNXRUNTIME=$(ONNXRUNTIME): expected cpu or gpu))
	$(PY) -m pip uninstall --quiet --yes onnxruntime onnxruntime-gpu
	$(PY) -m pip install --quiet -e ".[onnx-$(ONNXRUNTIME)]"
	rm -f $(VENV)/.onnxruntime-*
	touch $@

# ...and exported to ONNX, so the embedder (the default encoder's only user at serving time) runs torch-free.
$(MUSICNN_WEIGHTS): | $(STAMP) $(ORT_STAMP)
	$(PY) -m encore.audio.musicnn_weights --out weights
	$(PY) -m training.export_audio_encoder --encoder musicnn --weights-dir weights

$(QUERY_ENCODER): | $(STAMP) $(MUSICNN_WEIGHTS)
	$(PY) -m pip install --quiet -e ".[text]"
	$(PY) -m training.export_text_encoder --weights-dir weights

# The demo stack on the embedded default (SQLite online store): build world + bundle once, then serve.
export ENCORE_API_KEY ?= encore-dev-key
run: install
	$(PY) -m training.bootstrap
	$(PY) -m services.stack

# The BARS Frappe reproduction of the foundation issue (about 15-30 min on 2 cores); the second five models
# take longer (estimate 45-60 min, mostly AFM's attention over 45 field pairs in fp32).
frappe: $(STAMP)
	$(PY) training/run_benchmark.py --dataset frappe --models LR,FM,DeepFM,DCNv2,MaskNet --seeds 2021 --out results/frappe
	$(PY) training/run_benchmark.py --dataset frappe --models FFM,AFM,WideDeep,NFM,DCN --seeds 2021 --out results/frappe_5a

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
