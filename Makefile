# Makefile for durable_cluster (PGXS)
#
#   make && make install     build and install into the PostgreSQL found by pg_config
#   make demo                throw-away server with 3 nodes and the tutorial (scripts/demo.sh)
#   make test                whole suite: pg_regress, TAP, client examples; as root or not
#                            (test/run_tests.sh)
#   make bench               throughput against what an application would write instead (bench/throughput.sh), then
#                            failover and hand-off times (bench/failover.sh), then the
#                            cost of forwarding to another server (bench/forward.sh)
#   make soak                memory of every long-lived process under a mixed load,
#                            SOAK_DURATION seconds (default 600; bench/soak.sh)
#   make installcheck        the suite against an already installed extension; needs a
#                            server started with shared_preload_libraries = 'durable_cluster'

EXTENSION = durable_cluster
MODULE_big = durable_cluster
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA = $(wildcard sql/durable_cluster--*.sql)

# PostgreSQL 15's pg_config when none is in PATH (Debian puts only the
# client's in PATH), so that "make demo" on a fresh machine says nothing
# about a missing pg_config before it has installed one
PG_CONFIG ?= $(shell command -v pg_config 2>/dev/null || echo /usr/lib/postgresql/15/bin/pg_config)
# the version of the SQL objects the library serves: the control file's
DC_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" durable_cluster.control)
PG_CPPFLAGS = -I$(srcdir)/include -I$(libpq_srcdir) -DDC_VERSION='"$(DC_VERSION)"'
SHLIB_LINK = $(libpq)

REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/durable_cluster--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --use-existing

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

# Builds from different directories are byte for byte the same: the
# source path the compiler records (debug information, __FILE__ in elog)
# is the project's name, not where the tree happens to be.  So a user's
# "make test" can tell that what root installed is this very build.
PG_CFLAGS = -ffile-prefix-map=$(CURDIR)=durable_cluster

# Without PGXS (no server headers yet) only demo and test work: they
# install the packages first.
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else ifeq ($(filter demo test,$(MAKECMDGOALS)),)
$(error $(PG_CONFIG) not found: install postgresql-server-dev-15, or run "make demo" as root, which does)
endif

# The TAP tests run under test/tap_run.pl instead of prove: one line as
# each file starts and ends, with its time, and a short report on failure
PROVE = $(PERL) $(srcdir)/test/tap_run.pl

# pg_regress runs in the database the nodes serve by default
# (durable_cluster.database); set after PGXS, which defines its own.
CONTRIB_TESTDB = postgres

# PGXS tracks no header dependencies: rebuild everything when a header
# changes (shared-memory structs must agree between files)
$(OBJS): $(wildcard include/*.h) durable_cluster.control

.PHONY: demo test bench soak
demo:
	bash scripts/demo.sh

test:
	bash test/run_tests.sh

# throughput against the alternatives, then failover and hand-off times
bench:
	bash bench/throughput.sh
	bash bench/failover.sh
	bash bench/forward.sh

soak:
	bash bench/soak.sh
