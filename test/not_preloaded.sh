#!/usr/bin/env bash
# TAP: without shared_preload_libraries crm still installs, says it is not preloaded, and fails
# closed: a principal sees no rows of a managed table and can write none. Runs its own cluster.
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
dir=$(mktemp -d /tmp/crm_nopreload.XXXXXX)
trap 'crm_stop_cluster "$dir"; rm -rf "$dir"' EXIT
crm_start_cluster "$dir" >/dev/null
sed -i "s/^shared_preload_libraries = 'crm'/shared_preload_libraries = ''/" "$PGDATA/postgresql.conf"
as_pg $PGBIN/pg_ctl -D "$PGDATA" -m fast -w restart -l "$dir/server.log" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
CREATE ROLE np_rm LOGIN;
SELECT crm.add_org_unit('NP HQ') AS hq \gset
SELECT crm.add_principal('np_rm', 'RM', :hq) AS rm \gset
INSERT INTO crm_data.customer (owner_id, name) VALUES (:rm, 'own customer');
SQL
ok "$(psql -X -qAt -d postgres -c 'SELECT crm.preloaded()')" "f" "crm.preloaded() says it is not preloaded"
ok "$(psql -X -qAt -U np_rm -d postgres -c 'SELECT crm.current_principal() IS NOT NULL')" "t" "the principal is still recognised"
ok "$(psql -X -qAt -U np_rm -d postgres -c 'SELECT count(*) FROM crm_data.customer')" "0" "but sees none of its own customers (fail closed)"
ok "$(psql -X -qAt -U np_rm -d postgres -c "INSERT INTO crm_data.customer (name) VALUES ('x')" 2>&1 | grep -c 'row-level security')" "1" "and can write none"
ok "$(psql -X -qAt -d postgres -c 'SELECT count(*) FROM crm_data.customer')" "1" "the superuser (maintenance role) still sees the data"
# DROP EXTENSION is guarded without the utility hook too (an event trigger that fires ALWAYS)
ok "$(psql -X -qAt -d postgres -c 'SET session_replication_role = replica' -c 'DROP EXTENSION crm CASCADE' 2>&1 | grep -m1 -o 'cannot drop extension crm while schema crm_data holds')" \
   "cannot drop extension crm while schema crm_data holds" "not preloaded: DROP EXTENSION crm CASCADE is still refused while business tables exist"
ok "$(psql -X -qAt -d postgres -c 'BEGIN' -c "SELECT crm.uninstall('not preloaded: test')" -c 'SET LOCAL client_min_messages = warning' \
        -c 'DROP EXTENSION crm CASCADE' -c 'COMMIT' -c "SELECT count(*) FROM pg_extension WHERE extname = 'crm'" 2>&1 | tail -1)" 0 \
   "not preloaded: crm.uninstall then DROP EXTENSION crm CASCADE works"
finish
