# orbit-packager: `make demo` runs the main job, `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

IMAGE ?= orbit-packager:$(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' packager/__init__.py)

.PHONY: install test lint typecheck pytest demo clean docker-image docker-test acceptance mutate bench

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	bash scripts/install-system-deps.sh --test
	$(BIN)/pytest

test: lint typecheck pytest

# The image with the whole toolchain (Dockerfile). Behind a TLS-inspecting proxy, pip in the
# builder stage needs the proxy's CA: the bundle named by $$PIP_CERT is handed to that stage only.
# DOCKER_BUILD_FLAGS adds flags, e.g. make docker-image DOCKER_BUILD_FLAGS=--no-cache
docker-image:
	@rm -f docker/extra-ca/pip-cert.pem
	@if [ -n "$$PIP_CERT" ] && [ -f "$$PIP_CERT" ]; then cp "$$PIP_CERT" docker/extra-ca/pip-cert.pem; fi
	docker build $(DOCKER_BUILD_FLAGS) --network host --build-arg SOURCE_HASH=$$($(PY) scripts/source_hash.py) -t $(IMAGE) .
	@rm -f docker/extra-ca/pip-cert.pem
	@docker image inspect --format '$(IMAGE): {{.Size}} bytes' $(IMAGE)

# Builds the image, then runs the Docker tests (every format inside the image and through
# --tooling docker, byte-compared with native builds); a missing engine fails here, not skips.
docker-test: install docker-image
	bash scripts/install-system-deps.sh --test
	ORBIT_PACKAGER_REQUIRE_DOCKER=1 ORBIT_PACKAGER_TEST_IMAGE=$(IMAGE) $(BIN)/pytest -m docker tests/test_docker.py

# Our deb and rpm installed for real on a booted systemd in Docker (tests/acceptance). Needs a
# Docker engine (as root: bash ../shared/tools/start-docker.sh); without one it fails, never skips.
acceptance: install
	bash scripts/install-system-deps.sh --test
	$(BIN)/pytest -v -m acceptance tests/acceptance

# Mutation run (mutate/: our own catalogue of meaningful mutants, each run against the tests mapped
# to its file; results cached in .mutate-cache/). Slow, so not part of `make test`. Flags go in
# MUTATE_FLAGS, e.g. make mutate MUTATE_FLAGS="-j 1 --module packager/repo/keys.py --limit 20"
mutate: install
	nice -n 19 $(BIN)/python -m mutate $(MUTATE_FLAGS)

# Benchmarks (bench/, issue 18): each measure against its baseline, run interleaved; one line per
# measure with its goal, exit 1 when a goal is missed. Timings are noisy, so not part of `make
# test` (tests/test_bench_smoke.py runs one round on small inputs). Flags go in BENCH_FLAGS, e.g.
# make bench BENCH_FLAGS="--only deb --rounds 9"; BENCH_DIR places the inputs (about 2.5 GB).
bench: install
	$(BIN)/python -m bench $(BENCH_FLAGS)

demo: install
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) dist build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Fresh Debian 12 and 13 containers with only git, make and ca-certificates, as root and as a
# user with sudo, clone the committed HEAD and run `make demo` and `make test` in it
# (scripts/fresh-test.sh; needs a Docker engine). FRESH_TEST=trixie-root runs one combination.
.PHONY: fresh-test
fresh-test:
	bash scripts/fresh-test.sh $(FRESH_TEST)
