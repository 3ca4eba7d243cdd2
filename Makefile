# torchswitch: which parallelism strategy should I use on this cluster, and how does it scale?
# `make help` lists every target and variable. Variables left empty take bin/sweep's defaults.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := bin/_py
VENV := .venv
STAMP := $(VENV)/.ready

# ---- sweep variables (docs/sweeps.md) ---------------------------------------
# Each is a key of a sweep file in lower case (CONFIG=sweeps/x.yaml); one set here overrides the file's.
CONFIG ?=
NODES ?=
STRATEGIES ?=
LAYOUTS ?=
PROCS ?=
BACKEND ?=
MODEL ?=
DATASET ?=
DATA_SIZE ?=
DATA_DIR ?=
STEPS ?=
EPOCHS ?=
BATCH ?=
CHUNKS ?=
MICRO_BATCH ?=
SCHEDULE ?=
SYNC_EVERY ?=
OUTER ?=
OUTER_LR ?=
SYNC_OPTIM ?=
STALENESS ?=
SEQUENCE_PARALLEL ?=
TP ?=
PP ?=
SHARD ?=
STAGES ?=
BALANCE ?=
GPIPE_CHECKPOINT ?=
RECOMPUTE ?=
PRECISION ?=
OPTIMIZER ?=
LR ?=
WARMUP ?=
DEVICE ?=
PARTITION ?=
ACCOUNT ?=
TIME ?=
LINK ?=
LATENCY_US ?=
BANDWIDTH_GBPS ?=
MEMORY_FRACTION ?=
CHECKPOINT_EVERY ?=
FAULT ?=
SEED ?=
REPEATS ?=
SCALING ?=
SWEEP ?=
DRY_RUN ?=
NO_WAIT ?=
SERIAL ?=
WARM ?=
# ---- other targets' variables ----------------------------------------------
TARGET_ACC ?=
SVG ?=
A ?=
B ?=
TOLERANCES ?=
NODES_MAX ?=
GPU_MEM ?=
PLAN_ARGS ?=
CLUSTER_NODES ?= 4
BENCH ?= all
BENCH_ARGS ?=
PYTEST_ARGS ?=

# A loopback cluster started by `make cluster-up` answers every Slurm command made through make,
# unless SLURM_CONF is set already (a real cluster's).
ifeq ($(origin SLURM_CONF),undefined)
ifneq ($(wildcard .cluster/run/slurmctld.pid),)
export SLURM_CONF := $(CURDIR)/.cluster/slurm.conf
endif
endif

# Quote a value for the shell: 'it'\''s' (values reach bin/sweep verbatim, never the shell).
q = '$(subst ','\'',$(1))'
opt = $(if $(strip $(2)),$(1) $(call q,$(2)))
comma := ,

SWEEP_FLAGS = $(call opt,--config,$(CONFIG)) $(call opt,--nodes,$(NODES)) $(call opt,--strategies,$(STRATEGIES)) \
  $(call opt,--layouts,$(LAYOUTS)) $(call opt,--backend,$(BACKEND)) \
  $(call opt,--procs-per-node,$(PROCS)) $(call opt,--model,$(MODEL)) $(call opt,--dataset,$(DATASET)) \
  $(call opt,--data-size,$(DATA_SIZE)) $(call opt,--data-dir,$(DATA_DIR)) $(call opt,--steps,$(STEPS)) $(call opt,--epochs,$(EPOCHS)) \
  $(call opt,--global-batch,$(BATCH)) $(call opt,--chunks,$(CHUNKS)) $(call opt,--schedule,$(SCHEDULE)) \
  $(call opt,--micro-batch,$(MICRO_BATCH)) $(call opt,--recompute,$(RECOMPUTE)) \
  $(call opt,--stages,$(STAGES)) $(call opt,--balance,$(BALANCE)) $(call opt,--checkpoint,$(GPIPE_CHECKPOINT)) \
  $(call opt,--precision,$(PRECISION)) $(call opt,--optimizer,$(OPTIMIZER)) $(call opt,--lr,$(LR)) \
  $(call opt,--sync-every,$(SYNC_EVERY)) $(call opt,--outer,$(OUTER)) $(call opt,--outer-lr,$(OUTER_LR)) \
  $(call opt,--sync-optim,$(SYNC_OPTIM)) $(call opt,--staleness,$(STALENESS)) \
  $(call opt,--sequence-parallel,$(SEQUENCE_PARALLEL)) $(call opt,--tp,$(TP)) $(call opt,--pp,$(PP)) \
  $(call opt,--shard,$(SHARD)) $(call opt,--warmup,$(WARMUP)) $(call opt,--device,$(DEVICE)) $(call opt,--partition,$(PARTITION)) $(call opt,--account,$(ACCOUNT)) $(call opt,--time-limit,$(TIME)) \
  $(call opt,--link,$(LINK)) $(call opt,--latency-us,$(LATENCY_US)) $(call opt,--bandwidth-gbps,$(BANDWIDTH_GBPS)) \
  $(call opt,--memory-fraction,$(MEMORY_FRACTION)) $(call opt,--checkpoint-every,$(CHECKPOINT_EVERY)) $(call opt,--fault,$(FAULT)) \
  $(call opt,--seed,$(SEED)) $(call opt,--repeats,$(REPEATS)) $(call opt,--scaling,$(SCALING)) \
  $(call opt,--sweep,$(SWEEP)) $(if $(DRY_RUN),--dry-run) $(if $(NO_WAIT),--no-wait) $(if $(SERIAL),--serial) \
  $(if $(filter 0,$(WARM)),--cold)

.PHONY: help venv sweep plots report tensorboard compare project advise plan data bench test test-fast lint cluster-up cluster-down \
  cluster-status status cancel render clean

help: ## list targets and variables
	@echo "torchswitch — compare parallelism strategies and how they scale"
	@echo
	@echo "Targets:"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'
	@echo
	@echo "Sweep variables (make sweep VAR=value ...; empty = the sweep file's, else bin/sweep's default; ./bin/sweep --help)."
	@echo "A comma list is a sweep axis: the grid is the product of every list (LAYOUTS pairs NODES with PROCS)."
	@echo "  CONFIG           sweep file, e.g. sweeps/layouts-precision.yaml (keys: these variables in lower case)"
	@echo "  NODES            node counts (1,2)             STRATEGIES  strategies or all (ddp)"
	@echo "  LAYOUTS          NODESxPROCS list, e.g. 1x4,4x1 (instead of NODES x PROCS)   PROCS  ranks per node (1)"
	@echo "  BACKEND          auto|simulate|slurm|submitit (auto)"
	@echo "  MODEL            mlp|cnn|resnet18|resnet50|transformer, or module:function (mlp)"
	@echo "  DATASET          synthetic|digits|cifar10 (synthetic)   DATA_SIZE  training samples used (0 = all)"
	@echo "  STEPS / EPOCHS   training length (20 steps)    BATCH   global batch (64)"
	@echo "  CHUNKS           micro-batches (4)             SCHEDULE  gpipe|1f1b (1f1b)"
	@echo "  MICRO_BATCH      samples a rank computes at once: gradients accumulate over its share; pipelines:"
	@echo "                   the micro-batch size, share / MICRO_BATCH chunks (0 = the whole share; pipelines: chunks)"
	@echo "  RECOMPUTE        activation recomputation per block: none|full|selective (none); selective: attention only"
	@echo "  STAGES           pipeline stages (0 = automatic)   BALANCE  blocks per stage, e.g. 3,3, or params / time"
	@echo "  GPIPE_CHECKPOINT torchgpipe activation checkpointing: always|except_last|never (never)"
	@echo "  PRECISION        fp32|bf16|fp16 (fp32)         OPTIMIZER  sgd|adam (sgd)"
	@echo "  SYNC_EVERY       localsgd: steps between averages (1)   SYNC_OPTIM  optimizer state: keep|average (keep)"
	@echo "  OUTER            localsgd outer step: sgd|nesterov (sgd)   OUTER_LR  outer learning rate (1.0)"
	@echo "  STALENESS        asyncps: server versions a worker may lag (0)"
	@echo "  SEQUENCE_PARALLEL tp, mix: LayerNorms on a slice of the sequence: on|off (on)"
	@echo "  TP               mix: tensor-parallel ranks per stage (1)   PP  mix: pipeline stages (1)"
	@echo "  SHARD            mix: over the dp ranks: none|optim|full (none)"
	@echo "  LR               learning rate (0.05)          WARMUP  warm-up steps left out of timings (2)"
	@echo "  DEVICE           auto|cpu|cuda (auto)          DATA_DIR  where real data sets live (data)"
	@echo "  LINK             loopback|10gbe|100gbe|ib-hdr|nvlink|nvlink4|ib-ndr (loopback)   LATENCY_US BANDWIDTH_GBPS  override it"
	@echo "  MEMORY_FRACTION  GPU share per rank (even split)       CHECKPOINT_EVERY  steps between checkpoints (0)"
	@echo "  PARTITION ACCOUNT TIME   Slurm placement"
	@echo "  FAULT            raise@R:S or kill@R:S         SEED (0)  REPEATS (1)  SCALING strong|weak (strong)"
	@echo "  SWEEP            sweep name under logs/ (timestamp)   DRY_RUN=1  validate, run nothing   NO_WAIT=1"
	@echo "  SERIAL=1         Slurm: one job at a time (timings on the loopback cluster, whose nodes share cores)"
	@echo "  WARM=0           simulate: every rank in a fresh interpreter, not forked from the warm-start server"
	@echo "TARGET_ACC       validation accuracy for epochs/time to target (plots, report, tensorboard; default:"
	@echo "                 0.9 x the best any experiment of the sweep reached)"
	@echo "SVG=1            plots, report: every figure as SVG too (default: PNG only, what report.html embeds)"
	@echo "Other variables: A, B, TOLERANCES (compare); NODES_MAX, LINK, SCALING (project); SWEEP, NODES_MAX, LINK,"
	@echo "  GPU_MEM (advise); CLUSTER_NODES (cluster-up); PYTEST_ARGS (test, test-fast);"
	@echo "  BENCH=all|allreduce|pipeline|memory|analysis_load|projection|plan|overhead|startup, BENCH_ARGS (bench, e.g. --quick)"
	@echo "  plan: MODEL, NODES, PROCS, BATCH, CHUNKS, SCHEDULE, PRECISION, OPTIMIZER (adam), GPU_MEM,"
	@echo "  PLAN_ARGS (e.g. '--layers 32 --hidden 4096 --heads 32 --seq 2048 --vocab 32000' or '--params 7e9';"
	@echo "  a transformer's mix layout: '--tp 8 --pp 4 --shard optim --recompute selective'), GPU a100|h100|h200"
	@echo "  (its memory unless GPU_MEM is set), SEARCH=1 (rank every layout that fits; PLAN_ARGS='--top 5')"
	@echo "  defaults of project, advise, plan: NODES_MAX=1024 LINK=10gbe GPU_MEM=80GiB"

# The one way the repository gets on the path, for every launch path (simulate, srun, submitit,
# torchrun, the tests): a .pth file in the .venv naming this checkout. Nothing sets PYTHONPATH.
$(STAMP): requirements.txt
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/python -c 'import os, site; open(os.path.join(site.getsitepackages()[0], "torchswitch.pth"), "w").write(os.getcwd() + "\n")'
	@touch $(STAMP)

venv: $(STAMP) ## create/refresh .venv from requirements.txt

sweep: $(STAMP) ## run a grid of experiments (NODES, STRATEGIES, BACKEND, ...)
	$(PY) bin/sweep $(SWEEP_FLAGS)

plots: $(STAMP) ## summary.csv/json + PNG plots (+ report) of SWEEP (default: latest; TARGET_ACC; SVG=1 adds SVGs)
	$(PY) -m analysis.cli plots $(call opt,--sweep,$(SWEEP)) $(call opt,--target-acc,$(TARGET_ACC)) $(if $(SVG),--svg)

report: $(STAMP) ## report.html of SWEEP (default: latest; TARGET_ACC; SVG=1)
	$(PY) -m analysis.cli report $(call opt,--sweep,$(SWEEP)) $(call opt,--target-acc,$(TARGET_ACC)) $(if $(SVG),--svg)

tensorboard: $(STAMP) ## TensorBoard event files of SWEEP in logs/<sweep>/tensorboard/ (a run per experiment)
	$(PY) -m analysis.cli tensorboard $(call opt,--sweep,$(SWEEP)) $(call opt,--target-acc,$(TARGET_ACC))

compare: $(STAMP) ## compare sweep A against B; non-zero on regression (TOLERANCES=file)
	@test -n "$(A)" -a -n "$(B)" || { echo "error: give A=<sweep> B=<sweep>" >&2; exit 2; }
	$(PY) -m analysis.cli compare $(call q,$(A)) $(call q,$(B)) $(call opt,--tolerances,$(TOLERANCES))

project: $(STAMP) ## scaling projection of SWEEP to NODES_MAX nodes on LINK
	$(PY) -m analysis.projection $(call opt,--sweep,$(SWEEP)) $(call opt,--link,$(LINK)) $(call opt,--max-nodes,$(NODES_MAX)) \
	  $(call opt,--scaling,$(SCALING)) $(call opt,--latency-us,$(LATENCY_US)) $(call opt,--bandwidth-gbps,$(BANDWIDTH_GBPS))

advise: $(STAMP) ## the answer: best strategy per node count of SWEEP, measured and projected to NODES_MAX on LINK
	$(PY) bin/advise $(call opt,--sweep,$(SWEEP)) $(call opt,--link,$(LINK)) $(call opt,--max-nodes,$(NODES_MAX)) \
	  $(call opt,--gpu-mem,$(GPU_MEM))

plan: $(STAMP) ## memory fit per strategy and node count; SEARCH=1 ranks tp x pp x dp layouts (PLAN_ARGS, GPU, ...)
	$(PY) bin/plan $(call opt,--model,$(MODEL)) --nodes $(call q,$(or $(NODES),1$(comma)2)) $(call opt,--procs-per-node,$(PROCS)) \
	  $(call opt,--global-batch,$(BATCH)) $(call opt,--chunks,$(CHUNKS)) $(call opt,--schedule,$(SCHEDULE)) \
	  $(call opt,--precision,$(PRECISION)) $(call opt,--optimizer,$(OPTIMIZER)) $(call opt,--gpu,$(GPU)) $(if $(SEARCH),--search) \
	  $(call opt,--gpu-mem,$(GPU_MEM)) $(call opt,--sync-every,$(SYNC_EVERY)) $(call opt,--outer,$(OUTER)) \
	  $(call opt,--outer-lr,$(OUTER_LR)) $(call opt,--sync-optim,$(SYNC_OPTIM)) $(call opt,--staleness,$(STALENESS)) \
	  $(PLAN_ARGS)

data: $(STAMP) ## download CIFAR-10 into DATA_DIR/cifar-10-batches-py with torchvision (needs internet)
	$(PY) -m sweeper.download $(call opt,--data-dir,$(DATA_DIR))

bench: $(STAMP) ## benchmarks, printed as ratios measured in one run (BENCH=name for one)
	@set -e; for b in $(if $(filter all,$(BENCH)),allreduce pipeline memory analysis_load projection plan overhead startup,$(BENCH)); do \
	  echo "== bench/$$b"; $(PY) -m bench.$$b $(BENCH_ARGS); done

test: $(STAMP) ## every test: tests/unit, integration, slurm (Slurm tests need Slurm installed; fail in CI without)
	$(VENV)/bin/python -m pytest -q --durations=10 tests $(PYTEST_ARGS)

test-fast: $(STAMP) ## tests/unit only: in process, no launches, no Slurm (under a minute)
	$(VENV)/bin/python -m pytest -q tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

render: $(STAMP) ## re-render slurm/<strategy>.sbatch from the templates
	$(PY) -m slurm.render

cluster-up: $(STAMP) ## start a loopback Slurm cluster of CLUSTER_NODES nodes
	bin/cluster up --nodes $(call q,$(CLUSTER_NODES))

cluster-down: ## stop the loopback Slurm cluster
	bin/cluster down

cluster-status: ## state of the loopback Slurm cluster
	bin/cluster status

status: $(STAMP) ## Slurm state of SWEEP's jobs (default: the newest sweep)
	$(PY) -m slurm.track status $(call opt,--sweep,$(SWEEP))

cancel: $(STAMP) ## cancel SWEEP's Slurm jobs (default: the newest sweep)
	$(PY) -m slurm.track cancel $(call opt,--sweep,$(SWEEP))

clean: ## remove logs/ (keeps .venv and the logs/sbatch/ folder that sbatch scripts write into)
	rm -rf logs && mkdir -p logs/sbatch && touch logs/sbatch/.gitkeep
