#!/usr/bin/env bash
# TAP: the path of rollback-proof audit events (WAL, the audit worker, one writer per database):
# a database that just got crm records its events at once; an event that cannot be stored is
# quarantined without costing the others of its batch; client addresses are numeric when
# log_hostname is on (audited writes and logins over TCP); DROP DATABASE is not held up by the
# database's audit writer; the worker's replication slot keeps the WAL of unwritten events.
set -u
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/../scripts/cluster.sh"
db=crm_audit_events
db2=crm_audit_events_late
db3=crm_audit_events_drop
dir=${CRM_TEST_DIR:?run through make test}
for d in $db $db2 $db3; do psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1; done
psql -X -q -d postgres -c "CREATE DATABASE $db" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aev_rm') THEN CREATE ROLE aev_rm LOGIN PASSWORD 'aev-secret-1'; END IF;
END $$;
SELECT crm.add_org_unit('AEV HQ') AS hq \gset
SELECT crm.add_principal('aev_rm', 'RM', :hq, ARRAY['rm']) AS rm \gset
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number)
  SELECT :rm, 'c' || g, 'id_card', '11010519491231002X' FROM generate_series(1, 5) g;
SQL
q() { psql -X -qAt -d "${2:-$db}" -c "$1" 2>&1; }
as_rm() { psql -X -qAt -U aev_rm -d $db "$@" 2>&1; }
# wait_for SQL [DB]: poll until it returns t (at most ~20 s)
wait_for() {
  for i in $(seq 1 100); do [ "$(q "$1" "${2:-$db}")" = t ] && return 0; sleep 0.2; done; return 1
}
reload() { q "SELECT pg_reload_conf()" postgres >/dev/null; sleep 1.5; }

# 1. a database gets crm after its writer found none: its events are recorded at once (not passed
#    over while the worker still remembers "no crm here")
psql -X -q -d postgres -c "CREATE DATABASE $db2" >/dev/null
q "SELECT 1" $db2 >/dev/null
wait_for "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'crm audit writer' AND datname = '$db2')" postgres
sleep 1
q "SET client_min_messages = warning; CREATE EXTENSION crm CASCADE" $db2 >/dev/null
psql -X -qAt -d $db2 -c "SELECT 1" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE action = 'LOGIN')" $db2
ok "$?" "0" "a login just after CREATE EXTENSION crm is recorded in that database"

# 2. quarantine: an event the writer cannot insert becomes a MAINTENANCE entry; its batch-mates
#    are written
q "ALTER SYSTEM SET crm.audit_writer_fault = 'DENIED'" postgres >/dev/null; reload
start=$(q "SELECT coalesce(max(id), 0) FROM crm.audit_log")
as_rm -c "SELECT id, id_number FROM crm_data.customer" -c "SELECT id_number FROM crm_data.customer LIMIT 1" \
      -c "TRUNCATE crm.audit_log" -c "SELECT id, id_number FROM crm_data.customer ORDER BY id DESC" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'MAINTENANCE' AND detail ->> 'operation' = 'audit event quarantined')"
ok "$(q "SELECT detail ->> 'action', detail ->> 'error' FROM crm.audit_log WHERE id > $start AND action = 'MAINTENANCE' AND detail ->> 'operation' = 'audit event quarantined'")" \
   "DENIED|audit event DENIED refused by crm.audit_writer_fault" "an event that cannot be inserted is quarantined, with the error"
ok "$(q "SELECT (detail ->> 'event')::jsonb ->> 'statement' FROM crm.audit_log WHERE id > $start AND action = 'MAINTENANCE' AND detail ? 'event'")" \
   "TRUNCATE crm.audit_log" "... and the quarantine entry keeps what the event said"
wait_for "SELECT count(*) = 3 FROM crm.audit_log WHERE id > $start AND action = 'READ_SENSITIVE' AND session_user_name = 'aev_rm'"
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE id > $start AND action = 'READ_SENSITIVE' AND session_user_name = 'aev_rm'")" "3" \
   "the other events of the session are all written"
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE id > $start AND action = 'DENIED'")" "0" "(the refused event is not in the log as DENIED)"
q "ALTER SYSTEM RESET crm.audit_writer_fault" postgres >/dev/null; reload

# 3. log_hostname = on: remote_host is a host name; crm records the numeric address
q "ALTER SYSTEM SET log_hostname = on" postgres >/dev/null; reload
start=$(q "SELECT coalesce(max(id), 0) FROM crm.audit_log")
out=$(PGPASSWORD=aev-secret-1 psql -X -qAt -h 127.0.0.1 -U aev_rm -d $db \
        -c "UPDATE crm_data.customer SET name = name || '+' WHERE id = (SELECT min(id) FROM crm_data.customer) RETURNING 'updated'" 2>&1)
ok "$out" "updated" "an audited write over TCP works with log_hostname = on"
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'LOGIN' AND session_user_name = 'aev_rm')"
ok "$(q "SELECT string_agg(DISTINCT host(client_addr), ',') FROM crm.audit_log WHERE id > $start AND session_user_name = 'aev_rm' AND action IN ('LOGIN', 'UPDATE')")" \
   "127.0.0.1" "its LOGIN and UPDATE entries hold the numeric address"
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE id > $start AND action = 'MAINTENANCE' AND detail ->> 'operation' = 'audit event quarantined'")" "0" \
   "(nothing quarantined for the address)"
q "ALTER SYSTEM RESET log_hostname" postgres >/dev/null; reload

# 4. DROP DATABASE is not refused for the audit writer connected to it
psql -X -q -d postgres -c "CREATE DATABASE $db3" >/dev/null
q "SET client_min_messages = warning; CREATE EXTENSION crm CASCADE" $db3 >/dev/null
psql -X -qAt -d $db3 -c "SELECT 1" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'crm audit writer' AND datname = '$db3')" postgres
ok "$?" "0" "(the database has its audit writer)"
ok "$(psql -X -q -d postgres -c "DROP DATABASE $db3" 2>&1)" "" "DROP DATABASE succeeds while the audit writer was connected"

# 5. the worker holds its replication slot, and WAL is kept no further back than needed
ok "$(q "SELECT active FROM pg_replication_slots WHERE slot_name = 'crm_audit'" postgres)" "t" "the audit worker holds the slot crm_audit"
lsn=$(q "SELECT pg_current_wal_lsn()" postgres)
wait_for "SELECT restart_lsn >= '$lsn'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'crm_audit'" postgres
ok "$?" "0" "the slot moves on once the events are written"

# 6. a database whose writer is stuck (its log locked) fills its share of the hand-over slots;
#    another database's events still arrive, and the stuck one's arrive in full once it is free
script=$(mktemp); chmod 644 "$script"
echo "SELECT id_number FROM crm_data.customer LIMIT 1;" >"$script"
psql -X -q -d $db -c "BEGIN" -c "LOCK TABLE crm.audit_log IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
locker=$!
wait_for "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'audit_log' AND l.mode = 'AccessExclusiveLock' AND l.granted)"
pgbench -n -M prepared -U aev_rm -c 2 -j 2 -t 1500 -f "$script" $db >"$script.out" 2>&1
stmts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$script.out")
ok "$stmts" "3000" "(3000 sensitive reads while the log is locked)"
mark=$(q "SELECT coalesce(max(id), 0) FROM crm.audit_log" $db2)
psql -X -qAt -d $db2 -c "SELECT 1" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $mark AND action = 'LOGIN')" $db2
ok "$?" "0" "another database's events arrive while one database's writer is stuck"
kill $locker 2>/dev/null; wait $locker 2>/dev/null
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$db' AND query LIKE '%pg_sleep(60)%'" postgres >/dev/null
wait_for "SELECT count(*) = 3000 FROM crm.audit_log WHERE action = 'READ_SENSITIVE' AND application_name = 'pgbench' AND session_user_name = 'aev_rm'"
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE action = 'READ_SENSITIVE' AND application_name = 'pgbench' AND session_user_name = 'aev_rm'")" "3000" \
   "once the log is free, the stuck database's events all arrive (exactly once)"
rm -f "$script" "$script.out"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db2" >/dev/null 2>&1
finish
