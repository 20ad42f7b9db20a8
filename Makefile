# Diffusion Land Cover — one command per job. See README.md.
SHELL := /bin/bash
PY := .venv/bin/python
QGIS_PLUGIN_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins

.PHONY: help setup test package install uninstall demo screenshots desktop-check clean

help:
	@echo "make setup    install QGIS/GDAL (apt, as root) and .venv with the pinned requirements"
	@echo "make test     run the test suite headless"
	@echo "make demo     run the demo through qgis_process"
	@echo "make package  build dist/diffusion_landcover.zip (Plugins > Install from ZIP)"
	@echo "make install  link this checkout into QGIS_PLUGIN_DIR=$(QGIS_PLUGIN_DIR)"
	@echo "make desktop-check  the ZIP in a clean QGIS profile, real desktop under Xvfb, one-step run (~1-2 min)"
	@echo "make screenshots    docs/screenshots/ from the real desktop and the reports rendered by Chromium"

setup:
	@scripts/setup.sh

test:
	@test -x $(PY) || { echo "no .venv: run 'make setup' first" >&2; exit 1; }
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

package:
	@/usr/bin/env python3 scripts/package.py

install:
	@scripts/install.sh "$(QGIS_PLUGIN_DIR)"

uninstall:
	@if [ -L "$(QGIS_PLUGIN_DIR)/diffusion_landcover" ]; then rm "$(QGIS_PLUGIN_DIR)/diffusion_landcover" && echo "removed link"; fi

demo:
	@scripts/demo.sh

screenshots:
	$(PY) scripts/screenshots.py
	$(PY) scripts/report_screenshots.py

desktop-check: package
	$(PY) scripts/desktop_check.py --zip dist/diffusion_landcover.zip

clean:
	rm -rf dist .qgis-profile
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
