#!/usr/bin/env bash
# TAP: rollback-proof events are complete and durable (issue 16). An RM reads ID numbers of its own
# customers (unmasked for it), so every statement makes exactly one READ_SENSITIVE event, counted by
# session_user_name; each phase uses its own RM so that the counts do not mix.
#  1. overflow: a burst of ~20,000 statements from 8 clients -> events == statements;
#  2. writer failure: the database read-only for a few seconds, then a statement_timeout of 1 ms on
#     the database -> every event arrives;
#  3. crash: kill -9 of an idle backend, then an immediate shutdown, during reads (pgbench -l counts
#     the statements that returned to their client) -> each of them has its event, none twice;
#  4. no "audit queue overflow" (or other loss) entry in any of these runs.
# Runs its own cluster with synchronous_commit = on. Waits are bounded polls (at most ~60 s each).
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
N=${CRM_DURABLE_STATEMENTS:-20000}       # overflow burst, split over 8 clients
tmp=$(mktemp -d /tmp/crm_durable.XXXXXX)
chmod 755 "$tmp"
dir=$tmp/c
trap 'crm_stop_cluster "$dir"; rm -rf "$tmp"' EXIT
crm_start_cluster "$dir" >/dev/null || { echo "not ok 1 - a cluster for the durability runs"; echo "1..1"; exit 1; }
db=crm_durable
# the test's own sessions are immune to the faults it injects into everyone else's
q() { PGOPTIONS="-c statement_timeout=0 -c default_transaction_read_only=off" psql -X -qAt -d "$1" "${@:2}" 2>&1; }
q postgres -c "ALTER SYSTEM SET synchronous_commit = on" -c "SELECT pg_reload_conf()" -c "CREATE DATABASE $db" >/dev/null
q $db -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" -c "SELECT crm.generate_demo_data(2000, 42)" >/dev/null
rms=$(q $db -c "SELECT count(*) FROM crm.principal WHERE login IN ('demo_rm_00001','demo_rm_00002','demo_rm_00003','demo_rm_00004','demo_rm_00005')")
[ "$rms" = 5 ] || { echo "not ok 1 - set-up: demo bank with 5 RMs (got '$rms')"; echo "1..1"; exit 1; }
# a new session sees a reloaded setting once the postmaster has processed SIGHUP: poll for it
setting_is() {  # name value: wait (at most 30 s) until a new session of an RM shows it
  local i v
  for i in $(seq 1 60); do
    v=$(psql -X -qAt -U demo_rm_00001 -d $db -c "SHOW $1" 2>&1); [ "$v" = "$2" ] && { echo "$v"; return 0; }; sleep 0.5
  done; echo "$v"; return 1
}
ok "$(setting_is synchronous_commit on)" "on" "the cluster runs with synchronous_commit = on"

# each statement reads 5 of the RM's own customers' ID numbers (one READ_SENSITIVE event)
script=$tmp/read.sql
cat >"$script" <<'PGB'
\set off random(0, 90)
SELECT id, id_number FROM crm_data.customer ORDER BY id LIMIT 5 OFFSET :off;
PGB
chmod 644 "$script"
ok "$(psql -X -qAt -U demo_rm_00001 -d $db -c "SELECT count(*) FILTER (WHERE id_number NOT LIKE '%*%') FROM crm_data.customer" 2>&1)" "100" \
  "the RM reads its 100 customers' ID numbers unmasked"
events() { q $db -c "SELECT count(*) FROM crm.audit_log WHERE action = 'READ_SENSITIVE' AND session_user_name = '$1' AND application_name = 'pgbench'"; }
# drain RM WANT [MODE]: poll until the RM's event count reaches WANT (MODE "min": at least WANT, then
# 3 s without change so that late duplicates show) or stops growing for 15 s; at most 60 s
drain() {
  local got last=-1 still=0 i
  for i in $(seq 1 120); do
    got=$(events "$1")
    if [ "${3:-}" = min ]; then [ "$got" -ge "$2" ] 2>/dev/null && [ "$still" -ge 6 ] && break
    else [ "$got" = "$2" ] && break; fi
    if [ "$got" = "$last" ]; then still=$((still + 1)); else still=0; last=$got; fi
    [ "$still" -ge 30 ] && break
    sleep 0.5
  done
  echo "$got"
}
processed() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1"; }
bench() {  # RM CLIENTS TRANSACTIONS OUT [pgbench options]
  local rm=$1 c=$2 t=$3 out=$4; shift 4
  pgbench -n -M prepared -U "$rm" -c "$c" -j 2 -t "$t" -f "$script" "$@" $db >"$out" 2>&1
}

# MAINTENANCE entries saying events were dropped ("audit queue overflow" today), for the diagnostics
losses() {
  q $db -c "SELECT count(*) || ' entries, ' || coalesce(sum((detail ->> 'lost_events')::bigint), 0) || ' events'
              FROM crm.audit_log WHERE action = 'MAINTENANCE'
               AND (detail ? 'lost_events' OR detail ->> 'operation' ~* 'overflow|lost|dropped')"
}

# 1. overflow: a burst from 8 clients
per=$((N / 8))
bench demo_rm_00001 8 "$per" "$tmp/burst.out"
stmts=$(processed "$tmp/burst.out")
ok "$stmts" "$((per * 8))" "burst: 8 clients ran $((per * 8)) sensitive reads (pgbench processed ${stmts:-none})"
got=$(drain demo_rm_00001 "$stmts")
ok "$got" "$stmts" "burst of 8 clients: events $got == statements $stmts"
echo "# loss entries after the burst: $(losses)"

# 2a. writer failure: the database is read-only for a few seconds while the RM reads
q postgres -c "ALTER SYSTEM SET default_transaction_read_only = on" -c "SELECT pg_reload_conf()" >/dev/null
ok "$(setting_is default_transaction_read_only on)" "on" "the cluster is read-only (default_transaction_read_only = on, reloaded)"
bench demo_rm_00002 2 250 "$tmp/ro.out"
ro=$(processed "$tmp/ro.out")
ok "$ro" "500" "read-only: the RM's 500 sensitive reads all ran (pgbench processed ${ro:-none})"
sleep 3   # the fault lasts a few seconds (not a synchronization: what follows polls)
echo "# events while read-only: $(events demo_rm_00002) of $ro"
q postgres -c "ALTER SYSTEM RESET default_transaction_read_only" -c "SELECT pg_reload_conf()" >/dev/null
ok "$(setting_is default_transaction_read_only off)" "off" "read-write again (reset, reloaded)"
got=$(drain demo_rm_00002 "$ro")
ok "$got" "$ro" "after a read-only spell: events $got == statements $ro"

# 2b. a statement_timeout of 1 ms on the database (the RM's own sessions are exempt from it)
q $db -c "ALTER DATABASE $db SET statement_timeout = '1ms'" >/dev/null
ok "$(psql -X -qAt -d $db -c 'SHOW statement_timeout' 2>&1)" "1ms" "the database has statement_timeout = 1ms"
PGOPTIONS="-c statement_timeout=0" bench demo_rm_00003 2 250 "$tmp/st.out"
st=$(processed "$tmp/st.out")
ok "$st" "500" "statement_timeout: the RM's 500 sensitive reads all ran (pgbench processed ${st:-none})"
got=$(drain demo_rm_00003 "$st")
ok "$got" "$st" "with statement_timeout = 1ms on the database: events $got == statements $st"
q $db -c "ALTER DATABASE $db RESET statement_timeout" >/dev/null
got=$(drain demo_rm_00003 "$st")
ok "$got" "$st" "after the reset: events $got == statements $st"

# 3. crashes during reads. pgbench -l logs each transaction once its result is back at the client:
# those are the statements that returned; each must have its event after the restart, and no
# statement more than one (at most one statement per client was in flight: completed + 4).
completed() { cat "$1"/log* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ { n++ } END { print n + 0 }'; }
wait_ready() { local i; for i in $(seq 1 120); do $PGBIN/pg_isready -q -h "$PGHOST" -p "$PGPORT" -d $db && return 0; sleep 0.5; done; return 1; }
wait_events() {  # RM MIN: poll (at most 30 s) until the RM has MIN events: the reads are under way
  local i; for i in $(seq 1 60); do [ "$(events "$1")" -ge "$2" ] 2>/dev/null && return 0; sleep 0.5; done; return 1
}
# 4 clients at 200 statements/s in all: a steady load that today's queue holds (512 slots drained each
# second), so that what is missing afterwards was lost by the crash, not by an overflow
crash_run() {  # RM NAME HOW: 4 clients read; HOW crashes the server; then count
  local rm=$1 name=$2 how=$3 d=$tmp/$2 ret got
  mkdir -p "$d"; chmod 777 "$d"
  pgbench -n -M prepared -U "$rm" -c 4 -j 2 -R 200 -T 60 -l --log-prefix="$d/log" -f "$script" $db >"$d/out" 2>&1 &
  local pgb=$!
  wait_events "$rm" 300
  ok "$?" "0" "$name: the reads are under way ($(events "$rm") events so far)"
  $how
  wait $pgb 2>/dev/null
  wait_ready
  ok "$?" "0" "$name: the server is back"
  ret=$(completed "$d")
  ok "$([ "$ret" -ge 200 ] && echo yes)" "yes" "$name: $ret statements returned to their clients before the crash"
  got=$(drain "$rm" "$ret" min)
  ok "$([ "$got" -ge "$ret" ] && echo yes)" "yes" "$name: events $got >= statements returned $ret"
  ok "$([ "$got" -le $((ret + 4)) ] && echo yes)" "yes" "$name: events $got <= statements returned $ret + 4 in flight (none twice)"
  echo "# loss entries after $name: $(losses)"
}
kill_backend() {
  # an idle session of its own, outside the reads: its backend is killed with SIGKILL
  exec 9> >(PGAPPNAME=durable_victim psql -X -q -d $db >/dev/null 2>&1)
  local pid i
  for i in $(seq 1 60); do
    pid=$(q $db -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'durable_victim' AND state = 'idle'")
    [ -n "$pid" ] && break; sleep 0.5
  done
  ok "$([ -n "$pid" ] && kill -9 "$pid" && echo killed)" "killed" "kill -9: an idle backend is killed during the reads (the postmaster restarts every backend)"
  exec 9>&-
}
immediate() {
  as_pg $PGBIN/pg_ctl -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
  ok "$?" "0" "immediate shutdown during the reads"
  as_pg $PGBIN/pg_ctl -D "$PGDATA" -o "-p $PGPORT" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1
}
crash_run demo_rm_00004 kill9 kill_backend
crash_run demo_rm_00005 immediate immediate

# 4. no silent loss: no entry saying events were dropped
lost=$(losses)
ok "$lost" "0 entries, 0 events" "no audit loss recorded (\"audit queue overflow\" entries: $lost)"
q $db -c "SELECT crm.audit_seal()" >/dev/null
ok "$(q $db -c "SELECT ok || '|' || coalesce(problem, '') FROM crm.audit_verify()")" "true|" "the chain verifies"
finish
