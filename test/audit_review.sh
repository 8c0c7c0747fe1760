#!/usr/bin/env bash
# TAP: defects a review found in the path of rollback-proof audit events (issue 16).
#  1. A plain login repeating a refused DROP DATABASE / ALTER DATABASE of another database does not
#     keep that database's audit writer away; a permitted ALTER DATABASE that fails lets it back at once.
#  2. Every batch the writer writes is sealed within crm.audit_interval (also when nothing else in
#     the database marks it for sealing).
#  3. ALTER DATABASE d SET role = x (or ALTER ROLE ... IN DATABASE d SET role / session_authorization):
#     d's writer still runs as the bootstrap superuser and writes its events.
#  4. Events are routed by database OID: after a rename, events of the database arrive under its new
#     name and nowhere else; events of a dropped database appear in no other database.
#  5. Four databases whose writers are stuck, each beyond its share of the hand-over slots: a healthy
#     database still gets its events (the stuck ones all theirs, once free).
#  6. A flood of failed logins naming a database: the audit worker does not scan pg_database for each.
#  7. The replication slot crm_audit invalidated by max_slot_wal_keep_size: a new slot, the loss
#     recorded in every database with crm (with the WAL range), events flow again.
set -u
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/../scripts/cluster.sh"
: "${CRM_TEST_DIR:?run through make test}"
db=crm_rev; other=crm_rev_other; mv1=crm_rev_mv; mv2=crm_rev_moved; gone=crm_rev_gone
stuck4=crm_rev_stuck4; healthy=crm_rev_healthy
# the test's own sessions: superuser, immune to role settings on the databases it attacks
q() { local d=$1; shift; PGOPTIONS="-c role=none" psql -X -qAt -d "$d" "$@" 2>&1; }
for d in $db $other $mv1 $mv2 $gone $stuck4 $healthy; do q postgres -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null; done
q postgres -c "DROP ROLE IF EXISTS rev_rm" -c "DROP ROLE IF EXISTS rev_plain" -c "DROP ROLE IF EXISTS rev_nobody" >/dev/null
q postgres -c "CREATE ROLE rev_plain LOGIN" -c "CREATE ROLE rev_nobody NOLOGIN" >/dev/null
for d in $db $other $mv1 $gone; do
  q postgres -c "CREATE DATABASE $d" >/dev/null
  q $d -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || { echo "not ok 1 - set-up of $d"; echo "1..1"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rev_rm') THEN CREATE ROLE rev_rm LOGIN; END IF;
END $$;
SELECT crm.add_org_unit('REV HQ') AS hq \gset
SELECT crm.add_principal('rev_rm', 'RM', :hq, ARRAY['rm']) AS rm \gset
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number)
  SELECT :rm, 'c' || g, 'id_card', '11010519491231002X' FROM generate_series(1, 3) g;
SQL
done
# read D APP: an RM's sensitive read (one READ_SENSITIVE event) as application APP
read_as() { PGAPPNAME=$2 psql -X -qAt -U rev_rm -d "$1" -c "SELECT id_number FROM crm_data.customer LIMIT 1" >/dev/null 2>&1; }
seen() { q "$1" -c "SELECT count(*) FROM crm.audit_log WHERE action = 'READ_SENSITIVE' AND application_name = '$2'"; }
# arrives D APP SECS: wait (at most SECS) until D has APP's event; prints the count
arrives() {
  local got=0 end=$((SECONDS + $3))
  while :; do got=$(seen "$1" "$2"); [ "$got" = 1 ] || [ $SECONDS -ge $end ] && break; sleep 0.2; done
  echo "$got"
}
writer_of() { q postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'crm audit writer' AND datname = '$1'"; }

# 1. refused DROP/ALTER DATABASE by a login that owns nothing: the writer keeps writing
read_as $db rev_warm; arrives $db rev_warm 20 >/dev/null
refused=$(psql -X -qAt -U rev_plain -d postgres -c "DROP DATABASE $db" 2>&1)
ok "$refused" "ERROR:  must be owner of database $db" "a plain login may not drop the database"
( end=$((SECONDS + 14))
  while [ $SECONDS -lt $end ]; do
    psql -X -qAt -U rev_plain -d postgres -c "DROP DATABASE $db" -c "ALTER DATABASE $db CONNECTION LIMIT 5" \
      -c "ALTER DATABASE $db RENAME TO rev_x" -c "CREATE DATABASE rev_y TEMPLATE $db" >/dev/null 2>&1
    sleep 0.1
  done ) &
loop=$!
sleep 2
read_as $db rev_dos1
ok "$(arrives $db rev_dos1 5)" 1 "while a plain login repeats refused DROP/ALTER/RENAME DATABASE, events arrive within 5 s"
sleep 3
read_as $db rev_dos2
ok "$(arrives $db rev_dos2 5)" 1 "... and again a few seconds later"
wait $loop
# a superuser's ALTER DATABASE that fails (no such tablespace): the writer is back at once
out=$(q postgres -c "ALTER DATABASE $db SET TABLESPACE rev_no_such_tablespace")
ok "$out" "ERROR:  tablespace \"rev_no_such_tablespace\" does not exist" "(a permitted ALTER DATABASE that fails)"
read_as $db rev_after_fail
ok "$(arrives $db rev_after_fail 5)" 1 "after a failed ALTER DATABASE, events arrive within 5 s"
# and one that succeeds still lets the statement go ahead (the writer leaves for it)
ok "$(q postgres -c "ALTER DATABASE $db RENAME TO ${db}_r" -c "ALTER DATABASE ${db}_r RENAME TO $db")" "" \
  "a superuser renames the database with its writer connected (the writer leaves for it)"

# 2. sealing: events written by the writer are sealed within the interval (4 s here, so that the
#    events below come in batches less than an interval apart)
q postgres -c "ALTER SYSTEM SET crm.audit_interval = '4s'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
for i in 1 2 3 4 5; do read_as $db rev_seal$i; arrives $db rev_seal$i 10 >/dev/null; done
ok "$(q $db -c "SELECT count(*) FROM crm.audit_log WHERE application_name LIKE 'rev_seal_' AND action = 'READ_SENSITIVE'")" 5 \
  "(five events written by the writer, one after the other)"
sleep 6
ok "$(q $db -c "SELECT ok::text || ' unsealed ' || unsealed FROM crm.audit_verify()")" "true unsealed 0" \
  "every entry the writer wrote is sealed within crm.audit_interval"
q postgres -c "ALTER SYSTEM RESET crm.audit_interval" -c "SELECT pg_reload_conf()" >/dev/null

# 3. ALTER DATABASE SET role / ALTER ROLE ... IN DATABASE SET role: the writer stays the bootstrap superuser
q postgres -c "ALTER DATABASE $db SET role = rev_nobody" >/dev/null
ok "$(PGOPTIONS= psql -X -qAt -d $db -c "SELECT current_user" 2>&1)" "rev_nobody" "(a superuser's session in the database now runs as rev_nobody)"
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit writer' AND datname = '$db'" >/dev/null
sleep 1
read_as $db rev_role1
ok "$(arrives $db rev_role1 10)" 1 "with ALTER DATABASE SET role on the database, its writer still writes its events"
q postgres -c "ALTER DATABASE $db RESET role" -c "ALTER ROLE postgres IN DATABASE $db SET role = rev_nobody" >/dev/null
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit writer' AND datname = '$db'" >/dev/null
sleep 1
read_as $db rev_role2
ok "$(arrives $db rev_role2 10)" 1 "with ALTER ROLE (the bootstrap superuser) IN DATABASE SET role, the writer still writes"
ok "$(q $db -c "SELECT count(*) FROM crm.audit_log WHERE action = 'MAINTENANCE' AND detail ->> 'operation' = 'audit event quarantined'")" 0 \
  "(nothing quarantined)"
q postgres -c "ALTER ROLE postgres IN DATABASE $db RESET role" -c "ALTER ROLE postgres IN DATABASE $db SET session_authorization = rev_nobody" >/dev/null
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit writer' AND datname = '$db'" >/dev/null
sleep 1
read_as $db rev_role3
ok "$(arrives $db rev_role3 10)" 1 "with ALTER ROLE (the bootstrap superuser) IN DATABASE SET session_authorization, the writer still writes"
q postgres -c "ALTER ROLE postgres IN DATABASE $db RESET session_authorization" >/dev/null

# 4. routing by database OID. The audit worker is stopped (SIGSTOP) while the event is made and its
#    database renamed, so that the event is still in WAL, naming the old name, when it is read.
worker=$(q postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'crm audit worker'")
read_as $mv1 rev_warm_mv; arrives $mv1 rev_warm_mv 20 >/dev/null
kill -STOP "$worker"
read_as $mv1 rev_renamed
q postgres -c "ALTER DATABASE $mv1 RENAME TO $mv2" >/dev/null
kill -CONT "$worker"
ok "$(arrives $mv2 rev_renamed 15)" 1 "an event of a database renamed before it was written arrives under the new name"
sleep 2
ok "$(seen $other rev_renamed)|$(seen $db rev_renamed)" "0|0" "... and in no other database"
# (DROP DATABASE waits for every process to release its files: the worker cannot be stopped here)
read_as $gone rev_dropped
q postgres -c "DROP DATABASE $gone WITH (FORCE)" >/dev/null
read_as $db rev_after_drop; arrives $db rev_after_drop 10 >/dev/null
sleep 1
ok "$(seen $other rev_dropped)|$(seen $db rev_dropped)|$(seen $mv2 rev_dropped)" "0|0|0" \
  "an event of a database dropped before it was written appears in no other database"

# 5. four databases whose writers are stuck (their logs locked), each with more events than its share
#    of the hand-over slots (512 of 2,048): a healthy database still gets its events at once, and
#    the stuck ones get all theirs, exactly once, when they are free again
stuck=($db $other $mv2 $stuck4)
q postgres -c "CREATE DATABASE $stuck4" >/dev/null
q $stuck4 -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT crm.add_org_unit('REV HQ') AS hq \gset
SELECT crm.add_principal('rev_rm', 'RM', :hq, ARRAY['rm']) AS rm \gset
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (:rm, 'c', 'id_card', '11010519491231002X');
SQL
script=$(mktemp); chmod 644 "$script"
echo "SELECT id_number FROM crm_data.customer LIMIT 1;" >"$script"
lockers=()
for d in "${stuck[@]}"; do
  PGOPTIONS="-c role=none" psql -X -q -d $d -c "BEGIN" -c "LOCK TABLE crm.audit_log IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
  lockers+=($!)
done
for d in "${stuck[@]}"; do
  for i in $(seq 1 50); do
    [ "$(q $d -c "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'audit_log' AND l.mode = 'AccessExclusiveLock' AND l.granted")" = 1 ] && break
    sleep 0.2
  done
done
total=0
for d in "${stuck[@]}"; do
  PGAPPNAME=rev_stuck pgbench -n -M prepared -U rev_rm -c 2 -j 2 -t 300 -f "$script" $d >"$script.out" 2>&1
  total=$((total + $(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$script.out")))
done
ok "$total" 2400 "(600 sensitive reads in each of four databases whose logs are locked)"
q postgres -c "CREATE DATABASE $healthy" >/dev/null
q $healthy -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
PGAPPNAME=rev_healthy psql -X -qAt -d $healthy -c "SELECT 1" >/dev/null
got=0
for i in $(seq 1 50); do
  got=$(q $healthy -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN' AND application_name = 'rev_healthy'")
  [ "$got" = 1 ] && break; sleep 0.2
done
ok "$got" 1 "with four databases stuck beyond their share of slots, a healthy database's events arrive within 10 s"
for p in "${lockers[@]}"; do kill $p 2>/dev/null; done
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()" >/dev/null
for p in "${lockers[@]}"; do wait $p 2>/dev/null; done
counts=""
for d in "${stuck[@]}"; do
  for i in $(seq 1 150); do
    c=$(q $d -c "SELECT count(*) FROM crm.audit_log WHERE action = 'READ_SENSITIVE' AND application_name = 'rev_stuck'")
    [ "$c" = 600 ] && break; sleep 0.4
  done
  counts="$counts$c "
done
ok "$counts" "600 600 600 600 " "once free, each stuck database gets its 600 events, exactly once"
rm -f "$script" "$script.out"

# 6. a flood of failed logins naming a database by name: the audit worker does not scan pg_database
#    for each (its scans show in pg_stat_all_tables once it exits and flushes its counts)
scans() { q postgres -c "SELECT seq_scan FROM pg_stat_all_tables WHERE relid = 'pg_database'::regclass"; }
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit worker'" >/dev/null
sleep 2
before=$(scans)
for i in $(seq 1 100); do
  psql -X -qAt "host=127.0.0.1 port=$PGPORT dbname=$db user=rev_guess password=wrong" -c "SELECT 1" >/dev/null 2>&1
done
got=0
for i in $(seq 1 100); do
  got=$(q $db -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN_FAILED' AND session_user_name = 'rev_guess'")
  [ "$got" = 100 ] && break; sleep 0.2
done
ok "$got" 100 "(100 failed logins naming the database are recorded there)"
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit worker'" >/dev/null
sleep 2
after=$(scans)
ok "$([ $((after - before)) -lt 30 ] && echo fewer)" fewer "the audit worker scanned pg_database far fewer times than once per failed login ($((after - before)) scans in all for 100)"

# 7. the replication slot invalidated (max_slot_wal_keep_size, a writer stuck meanwhile): the worker
#    makes a new slot, records the loss in every database with crm, and events flow again
q postgres -c "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
PGOPTIONS="-c role=none" psql -X -q -d $db -c "BEGIN" -c "LOCK TABLE crm.audit_log IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
locker=$!
sleep 1
read_as $db rev_before_loss
lost=""
for j in 1 2 3; do
  [ -n "$lost" ] && break
  q postgres -c "CREATE TEMP TABLE w AS SELECT g FROM generate_series(1, 20000) g" -c "SELECT pg_switch_wal()" -c "CHECKPOINT" >/dev/null
 for i in $(seq 1 25); do
  lost=$(q postgres -c "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'crm_audit'")
  [ "$lost" = lost ] && break
  [ -n "$(q $other -c "SELECT 1 FROM crm.audit_log WHERE action = 'MAINTENANCE' AND detail ->> 'reason' LIKE 'replication slot crm_audit was invalidated%' LIMIT 1")" ] && { lost=recorded; break; }
  lost=""; sleep 0.2
 done
done
ok "$([ "$lost" = lost ] || [ "$lost" = recorded ] && echo invalidated)" invalidated "(the slot crm_audit was invalidated)"
kill $locker 2>/dev/null
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()" >/dev/null
wait $locker 2>/dev/null
q postgres -c "ALTER SYSTEM RESET max_slot_wal_keep_size" -c "SELECT pg_reload_conf()" >/dev/null
for d in $db $other; do
  got=""
  for i in $(seq 1 100); do
    got=$(q $d -c "SELECT count(*) > 0 FROM crm.audit_log WHERE action = 'MAINTENANCE' AND detail ->> 'operation' = 'audit events lost'
                     AND detail ->> 'reason' = 'replication slot crm_audit was invalidated' AND (detail ->> 'wal_from')::pg_lsn < (detail ->> 'wal_to')::pg_lsn")
    [ "$got" = t ] && break; sleep 0.2
  done
  ok "$got" t "the loss is recorded in $d, with the range of WAL lost"
done
ok "$(q postgres -c "SELECT active AND wal_status <> 'lost' FROM pg_replication_slots WHERE slot_name = 'crm_audit'")" t "the worker holds a new, valid slot crm_audit"
read_as $db rev_after_loss
ok "$(arrives $db rev_after_loss 15)" 1 "events are written again after the loss"

# a WAL switch leaves the insert position just past the next segment's header, which is not
# written yet: the worker's flush of what was inserted must not ask for it (it failed, and the
# worker restarted, with "xlog flush request ... is not satisfied")
wpid() { q postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'crm audit worker'"; }
w0=$(wpid); errs=0
for i in 1 2 3 4 5; do
  q postgres -c "SELECT pg_switch_wal()" >/dev/null; sleep 0.5
done
w1=$(wpid)
ok "$([ -n "$w0" ] && [ "$w0" = "$w1" ] && echo same)" same "the audit worker survives WAL switches (pid $w0 -> $w1)"
read_as $db rev_after_switch
ok "$(arrives $db rev_after_switch 15)" 1 "events are written after the switches"

for d in $db $other $mv1 $mv2 $gone $stuck4 $healthy; do q postgres -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null; done
q postgres -c "DROP ROLE IF EXISTS rev_rm" -c "DROP ROLE IF EXISTS rev_plain" -c "DROP ROLE IF EXISTS rev_nobody" >/dev/null
finish
