# distmat: `make demo` runs the main job, `make test` the whole test suite.
# Both create .venv with the embedded MPI (the `mpich` wheel) when it is missing.
# On a cluster: make test EXTRAS=test MPIEXEC=mpiexec  (mpi4py built against the system MPI).

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= test,mpich
BIN := $(VENV)/bin
MPIEXEC ?= $(BIN)/mpiexec
RANKS ?= 1 2 3 4
BIG_RANKS ?= 6 8
TEST_TIMEOUT ?= 120
OUTER_TIMEOUT ?= 1200
DEMO_RANKS ?= 2
# One BLAS thread per rank: ranks fill the cores.
RUN_ENV := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
MPI_PYTEST := $(BIN)/python -m mpi4py -m pytest --with-mpi -q --color=no -p no:randomly \
	--timeout=$(TEST_TIMEOUT) --timeout-method=thread

.PHONY: all venv test test-unit test-mpi demo lint clean bench-matmul bench-solve bench-sparse \
	bench-factor

all: test

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/.installed

test: test-unit test-mpi

test-unit: venv
	$(BIN)/python -m pytest -q --color=no -p no:randomly --timeout=$(TEST_TIMEOUT) tests/unit

test-mpi: venv
	@set -e; for n in $(RANKS); do \
	  echo "== MPI test suite on $$n rank(s) =="; \
	  $(RUN_ENV) timeout -k 10 $(OUTER_TIMEOUT) $(MPIEXEC) -n $$n $(MPI_PYTEST) tests/mpi; \
	done
	@set -e; for n in $(BIG_RANKS); do \
	  echo "== MPI grid sweep (tests marked 'grids') on $$n ranks =="; \
	  $(RUN_ENV) timeout -k 10 $(OUTER_TIMEOUT) $(MPIEXEC) -n $$n $(MPI_PYTEST) -m grids tests/mpi; \
	done

demo: venv
	$(RUN_ENV) $(BIN)/distmat-launch run configs/demo.toml --np $(DEMO_RANKS) --mpiexec $(MPIEXEC) \
	  --timeout 600 --out results/demo

# SUMMA matmul benchmark on 1, 2 and 4 ranks (4 oversubscribes 2 cores): GFLOP/s against
# p x single-thread numpy, ledger bytes against the SUMMA model.  Extra flags: BENCH_ARGS=...
# The OpenBLAS kernel overrides are dropped for this command only, so OpenBLAS picks its own.
BENCH_RANKS ?= 1 2 4
BENCH_ARGS ?=
bench-matmul: venv
	@set -e; for n in $(BENCH_RANKS); do \
	  echo "== matmul benchmark on $$n rank(s) =="; \
	  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(RUN_ENV) timeout -k 10 3600 \
	    $(MPIEXEC) -n $$n $(BIN)/python -m mpi4py -m distmat.bench.matmul $(BENCH_ARGS); \
	done

# Dense solver benchmark on 1 and 2 ranks: LU, Cholesky and mixed-precision solves, GFLOP/s
# against p x single-thread scipy, scaled residuals; rows appended to results/solve.jsonl.
SOLVE_RANKS ?= 1 2
SOLVE_ARGS ?= --n 2048 4096
bench-solve: venv
	@set -e; for n in $(SOLVE_RANKS); do \
	  echo "== dense solver benchmark on $$n rank(s) =="; \
	  $(RUN_ENV) timeout -k 10 3600 $(MPIEXEC) -n $$n $(BIN)/python -m mpi4py -m \
	    distmat.bench.solve $(SOLVE_ARGS); \
	done

# Block-sparse benchmark on 2 ranks: SpMM (block densities 1% and 10%, blocksize 32 and 64,
# 8 and 64 right-hand sides), sparse x sparse with and without filtering, CG on a 2D Poisson
# matrix (10^6 unknowns) and a block operator; ratios to single-process scipy in the same run.
SPARSE_ARGS ?= --n 16384 --out results/sparse.jsonl
bench-sparse: venv
	@mkdir -p results
	$(RUN_ENV) timeout -k 10 7200 $(MPIEXEC) -n 2 $(BIN)/python -m mpi4py -m \
	  distmat.bench.sparse $(SPARSE_ARGS)

# Factorization benchmark on 2 ranks: TSQR (m = 10^6, n = 32) against numpy.linalg.qr on one
# process, blocked Householder QR (n = 2048) against p x scipy, randomized svds and NMF against
# the same algorithm in numpy on one process; rows appended to results/qr.jsonl, svds.jsonl.
QR_ARGS ?= --m 1000000 --n 32 --square 2048
SVDS_ARGS ?= --m 20000 --n 2000 --k 20
bench-factor: venv
	$(RUN_ENV) timeout -k 10 3600 $(MPIEXEC) -n 2 $(BIN)/python -m mpi4py -m distmat.bench.qr \
	  $(QR_ARGS)
	$(RUN_ENV) timeout -k 10 3600 $(MPIEXEC) -n 2 $(BIN)/python -m mpi4py -m distmat.bench.svds \
	  $(SVDS_ARGS)

lint: venv
	$(BIN)/ruff check distmat launch tests examples

clean:
	rm -rf $(VENV) build *.egg-info
