#!/usr/bin/env bash
# TAP: the audit log under load and crashes. Every UPDATE adds 1 to a customer's aum, so the
# committed changes are exactly sum(aum) - start; each must have its audit entry and nothing else
# may. 8 clients writing for 30 s; an immediate shutdown in the middle of a write load; a backend
# killed with SIGKILL inside an audited transaction. After each, the chain seals and verifies.
set -u
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/../scripts/cluster.sh"
db=crm_audit_crash
dir=${CRM_TEST_DIR:?run through make test}
secs=${CRM_AUDIT_CRASH_SECONDS:-30}
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'acr_rm') THEN CREATE ROLE acr_rm LOGIN; END IF;
END $$;
SELECT crm.add_org_unit('ACR HQ') AS hq \gset
SELECT crm.add_principal('acr_rm', 'RM', :hq, ARRAY['rm']) AS rm \gset
INSERT INTO crm_data.customer (owner_id, name, aum) SELECT :rm, 'c' || g, 0 FROM generate_series(1, 200) g;
SQL
q() { psql -X -qAt -d $db "$@" 2>&1; }
script=$(mktemp)
trap 'rm -f "$script"' EXIT
cat >"$script" <<'PGB'
\set id random(1, 200)
UPDATE crm_data.customer SET aum = aum + 1 WHERE id = (SELECT min(id) FROM crm_data.customer) - 1 + :id;
PGB
chmod 644 "$script"
# committed changes vs audit entries of changes to aum
check() {
  q -c "SELECT (SELECT sum(aum)::bigint FROM crm_data.customer) || '|' ||
               (SELECT count(*) FROM crm.audit_log WHERE action = 'UPDATE' AND object = 'customer' AND detail -> 'fields' ? 'aum')"
}
equal() { local a=${1%|*} b=${1#*|}; [ "$a" = "$b" ] && [ "$a" -gt 0 ] && echo same || echo "$1"; }
verify() { q -c "SELECT crm.audit_seal()" >/dev/null; sleep 0.3; q -c "SELECT crm.audit_seal()" >/dev/null; q -c "SELECT ok || '|' || coalesce(problem, '') FROM crm.audit_verify()"; }
wait_ready() { for i in $(seq 1 60); do $PGBIN/pg_isready -q -h "$PGHOST" -p "$PGPORT" -d $db && return 0; sleep 0.5; done; return 1; }

# 8 clients, 30 s
pgbench -n -c 8 -j 2 -T "$secs" -f "$script" $db >/dev/null 2>&1
ok "$(equal "$(check)")" "same" "8 clients for ${secs}s: audit entries == committed changes, exactly"
ok "$(verify)" "true|" "and the chain verifies"

# immediate shutdown in the middle of a write load
pgbench -n -c 4 -j 2 -T 60 -f "$script" $db >/dev/null 2>&1 &
bench=$!
sleep 4
as_pg $PGBIN/pg_ctl -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
wait $bench 2>/dev/null
as_pg $PGBIN/pg_ctl -D "$dir/data" -o "-p $PGPORT" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1
wait_ready
ok "$?" "0" "the server restarts after an immediate shutdown under write load"
ok "$(equal "$(check)")" "same" "after crash recovery: every committed change has its entry, no uncommitted one does"
ok "$(verify)" "true|" "and the chain verifies"

# SIGKILL of a backend inside an audited transaction (the postmaster resets every backend)
before=$(check)
( psql -X -q -d $db -c "BEGIN" -c "UPDATE crm_data.customer SET aum = aum + 1000 WHERE id = (SELECT min(id) FROM crm_data.customer)" \
       -c "SELECT pg_sleep(30)" -c "COMMIT" >/dev/null 2>&1 & )
for i in $(seq 1 50); do
  pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE datname = '$db' AND query LIKE 'SELECT pg_sleep(30)%' LIMIT 1")
  [ -n "$pid" ] && break; sleep 0.2
done
ok "$([ -n "$pid" ] && kill -9 "$pid" && echo killed)" "killed" "a backend in the middle of an audited transaction is killed (SIGKILL)"
sleep 1; wait_ready
ok "$(check)" "$before" "after recovery: neither the change nor its audit entry exists"
ok "$(verify)" "true|" "and the chain verifies"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
