# crm: PGXS build. The version lives in crm.control only.
EXTENSION    = crm
EXTVERSION   = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" crm.control)
MODULE_big   = crm
OBJS         = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PG_CPPFLAGS  = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -DCRM_VERSION=\"$(EXTVERSION)\"
SHLIB_LINK   = -lcrypto

# The install script is assembled from src/sql/*.sql in name order.
DATA_built   = crm--$(EXTVERSION).sql
DATA         = $(wildcard crm--*--*.sql)
EXTRA_CLEAN  = crm--$(EXTVERSION).sql results regression.diffs regression.out tmp_check

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=pgcrypto

PG_CONFIG   ?= pg_config
PGXS        := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
# postgresql-client-15 ships pg_config and pgxs.mk too: only the server headers tell that a build
# can work (make test and make demo install what is missing: scripts/cluster.sh)
PG_SERVER_H := $(shell $(PG_CONFIG) --includedir-server 2>/dev/null)/postgres.h
ifeq ($(wildcard $(PGXS)),)
all install installcheck uninstall:
	@echo "$(PG_CONFIG) does not name a PostgreSQL with PGXS: apt-get install postgresql-server-dev-15, or pass PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config (make test and make demo install what is missing)" >&2; exit 1
else ifeq ($(wildcard $(PG_SERVER_H)),)
all install installcheck uninstall:
	@echo "PostgreSQL server headers are missing: no $(PG_SERVER_H) ($(PG_CONFIG) --includedir-server). postgresql-client-15 ships pg_config and pgxs.mk but not the headers: apt-get install postgresql-server-dev-15 (make test and make demo install what is missing)" >&2; exit 1
else
include $(PGXS)
endif

# every source includes src/crm.h: a change there (e.g. a struct's layout) rebuilds them all
$(OBJS): src/crm.h src/copies_int.h src/auditq_int.h

crm--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

.PHONY: test demo bench
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash scripts/bench.sh
