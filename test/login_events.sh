#!/usr/bin/env bash
# TAP: LOGIN means a session really started; every refused connection attempt is exactly one
# LOGIN_FAILED with its reason and SQLSTATE, and no LOGIN: no such role (trust succeeds before the
# role lookup), a role that may not log in, a bad password, pg_hba.conf "reject", no pg_hba.conf
# entry, too many connections for the role / for the database, no CONNECT privilege, reserved
# superuser slots, "sorry, too many clients already", no such database. A psql password probe
# (the client hangs up when asked for a password) is no event; a session ended by
# pg_terminate_backend is not a failed login. Runs its own small cluster (max_connections = 6).
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
dir=$(mktemp -d /tmp/crm_login_events.XXXXXX)
holders=()
cleanup() {
  for p in "${holders[@]}"; do kill "$p" 2>/dev/null; done
  [ "$failed" = 0 ] || grep -E 'crm|FATAL' "$dir/server.log" | tail -40 | sed 's/^/# /'
  crm_stop_cluster "$dir"; rm -rf "$dir"
}
trap cleanup EXIT
crm_start_cluster "$dir" >/dev/null || { echo "not ok 1 - cluster"; exit 1; }
cat >>"$PGDATA/postgresql.conf" <<'CONF'
max_connections = 6
superuser_reserved_connections = 1
CONF
# first matching line wins: lt_rej is rejected everywhere; lt_ghost_pw (no such role) has a password line; over TCP only members of lt_tcp (and
# postgres) have a line at all, so lt_nohba has none
cat >"$PGDATA/pg_hba.conf" <<'HBA'
local all lt_rej             reject
host  all lt_rej 127.0.0.1/32 reject
local all all                trust
host  all postgres 127.0.0.1/32 trust
host  all +lt_tcp 127.0.0.1/32 scram-sha-256
host  all lt_ghost_pw 127.0.0.1/32 scram-sha-256
HBA
as_pg $PGBIN/pg_ctl -D "$PGDATA" -m fast -w restart -l "$dir/server.log" >/dev/null
db=lt
export PGPASSFILE=$dir/no-such-pgpass PGCONNECT_TIMEOUT=10
psql -X -q -d postgres -c "CREATE DATABASE $db" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
CREATE ROLE lt_tcp NOLOGIN;
CREATE ROLE lt_users NOLOGIN;
REVOKE CONNECT ON DATABASE lt FROM PUBLIC;
GRANT CONNECT ON DATABASE lt TO lt_users;
CREATE ROLE lt_good LOGIN PASSWORD 'right-password' IN ROLE lt_tcp, lt_users;
CREATE ROLE lt_badpw LOGIN PASSWORD 'right-password' IN ROLE lt_tcp, lt_users;
CREATE ROLE lt_probe LOGIN PASSWORD 'right-password' IN ROLE lt_tcp, lt_users;
CREATE ROLE lt_nodb LOGIN PASSWORD 'right-password' IN ROLE lt_tcp, lt_users;
CREATE ROLE lt_rej LOGIN IN ROLE lt_users;
CREATE ROLE lt_nohba LOGIN PASSWORD 'right-password' IN ROLE lt_users;
CREATE ROLE lt_nologin NOLOGIN IN ROLE lt_users;
CREATE ROLE lt_one LOGIN CONNECTION LIMIT 1 IN ROLE lt_users;
CREATE ROLE lt_dbfull LOGIN IN ROLE lt_users;
CREATE ROLE lt_hold LOGIN IN ROLE lt_users;
CREATE ROLE lt_noconn LOGIN;
CREATE ROLE lt_reserved LOGIN IN ROLE lt_users;
CREATE ROLE lt_many LOGIN IN ROLE lt_users;
CREATE ROLE lt_term LOGIN IN ROLE lt_users;
CREATE ROLE lt_sentinel LOGIN IN ROLE lt_users;
CREATE ROLE lt_closed LOGIN IN ROLE lt_users;
CREATE ROLE lt_quiet LOGIN PASSWORD 'right-password' IN ROLE lt_tcp, lt_users;
SQL
su() { psql -X -qAt -d $db "$@" 2>&1; }
try() { psql -X -qAt -w "$@" -c "SELECT 1" >/dev/null 2>&1; }   # one connection attempt
# a superuser session that stays open (one of the slots): it counts and ends the others, which
# works also when every slot is taken
coproc CTL { psql -X -qAt -d postgres 2>&1; }
ctl() { local line; echo "$1" >&"${CTL[1]}"; read -r -t 30 line <&"${CTL[0]}"; echo "$line"; }
# hold N more sessions open as USER on DB; returns once they are all running
hold() {
  local user=$1 dbn=$2 count=$3 i want
  want=$(( $(ctl "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)';") + count ))
  for i in $(seq 1 "$count"); do
    psql -X -qAt -U "$user" -d "$dbn" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
    holders+=($!)
  done
  for i in $(seq 1 100); do
    [ "$(ctl "SELECT count(*) >= $want FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)';")" = t ] && return 0
    sleep 0.1
  done
  return 1
}
release() {
  ctl "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)';" >/dev/null
  for p in "${holders[@]}"; do wait "$p" 2>/dev/null; done
  holders=()
}

# the attempts
PGPASSWORD=right-password try -h 127.0.0.1 -U lt_good -d $db
PGPASSWORD=wrong-password try -h 127.0.0.1 -U lt_badpw -d $db
try -h 127.0.0.1 -U lt_probe -d $db                       # no password: the client hangs up
try -U lt_ghost -d $db                                     # trust, but no such role
PGPASSWORD=any-password try -h 127.0.0.1 -U lt_ghost_pw -d $db   # password, no such role
try -U lt_nologin -d $db
try -U lt_rej -d $db
PGPASSWORD=right-password try -h 127.0.0.1 -U lt_nohba -d $db
try -U lt_noconn -d $db
PGPASSWORD=right-password try -h 127.0.0.1 -U lt_nodb -d lt_no_such_db
hold lt_one $db 1; try -U lt_one -d $db; release
psql -X -q -d postgres -c "ALTER DATABASE $db CONNECTION LIMIT 2" >/dev/null
hold lt_hold $db 2; try -U lt_dbfull -d $db; release
psql -X -q -d postgres -c "ALTER DATABASE $db CONNECTION LIMIT -1" >/dev/null
psql -X -q -d postgres -c "ALTER DATABASE $db ALLOW_CONNECTIONS false" >/dev/null
try -U lt_closed -d $db
psql -X -q -d postgres -c "ALTER DATABASE $db ALLOW_CONNECTIONS true" >/dev/null
# 6 slots, 1 reserved: with 5 taken (the controlling session and 4) a non-superuser is refused;
# with all 6 taken everyone is
hold postgres postgres 4; try -U lt_reserved -d $db; hold postgres postgres 1; try -U lt_many -d $db; release
# a started session ended by an administrator (a FATAL after the start)
psql -X -qAt -U lt_term -d $db -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
term=$!
for i in $(seq 1 100); do
  [ "$(psql -X -qAt -d postgres -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'lt_term' AND query = 'SELECT pg_sleep(60)'" 2>/dev/null)" = 1 ] && break
  sleep 0.1
done
wait $term 2>/dev/null
# a failed password while FATALs are not logged (emit_log_hook never sees them): still recorded
psql -X -q -d postgres -c "ALTER SYSTEM SET log_min_messages = panic" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
PGPASSWORD=wrong-password try -h 127.0.0.1 -U lt_quiet -d $db
psql -X -q -d postgres -c "ALTER SYSTEM RESET log_min_messages" -c "SELECT pg_reload_conf()" >/dev/null
try -U lt_sentinel -d $db

# the log: the sentinel's LOGIN comes after every other event in the queue (first in, first out)
for i in $(seq 1 150); do
  [ "$(su -c "SELECT count(*) > 0 FROM crm.audit_log WHERE action = 'LOGIN' AND session_user_name = 'lt_sentinel'")" = t ] && break
  sleep 0.2
done
ok "$(su -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN' AND session_user_name = 'lt_sentinel'")" "1" \
   "a login: one LOGIN (the worker wrote the events within 30 s)"
# failed|logins|sqlstate|method|local|reason of a user's events
ev() {
  su -c "SELECT count(*) FILTER (WHERE action = 'LOGIN_FAILED') || '|' || count(*) FILTER (WHERE action = 'LOGIN') || '|' ||
                coalesce(string_agg(concat_ws('|', coalesce(detail ->> 'sqlstate', '-'), coalesce(detail ->> 'method', '-'), detail ->> 'local', detail ->> 'reason'), ';')
                           FILTER (WHERE action = 'LOGIN_FAILED'), '')
         FROM crm.audit_log WHERE action IN ('LOGIN', 'LOGIN_FAILED') AND session_user_name = '$1'"
}
ok "$(su -c "SELECT detail ->> 'method', detail ->> 'local', client_addr FROM crm.audit_log WHERE action = 'LOGIN' AND session_user_name = 'lt_good'")" \
   "scram-sha-256|false|127.0.0.1" "a password login over TCP: LOGIN with method, address"
ok "$(ev lt_good)" "0|1|" "... exactly one LOGIN and no LOGIN_FAILED"
ok "$(ev lt_badpw)" '1|0|28P01|scram-sha-256|false|password authentication failed for user "lt_badpw"' \
   "bad password: one LOGIN_FAILED (not one from the hook and one from the FATAL), 28P01"
ok "$(ev lt_probe)" "0|0|" "a client that hangs up when asked for a password (psql's probe): no event"
ok "$(ev lt_ghost)" '1|0|28000|trust|true|role "lt_ghost" does not exist' \
   "no such role (trust succeeded first): LOGIN_FAILED, no LOGIN"
ok "$(ev lt_ghost_pw)" '1|0|28P01|scram-sha-256|false|password authentication failed for user "lt_ghost_pw"' \
   "no such role, password method: the same message as a bad password"
ok "$(ev lt_nologin)" '1|0|28000|trust|true|role "lt_nologin" is not permitted to log in' "a NOLOGIN role: LOGIN_FAILED"
ok "$(ev lt_rej)" '1|0|28000|reject|true|pg_hba.conf rejects connection for host "[local]", user "lt_rej", database "lt", no encryption' \
   "pg_hba.conf reject: LOGIN_FAILED"
ok "$(ev lt_nohba)" '1|0|28000|implicit reject|false|no pg_hba.conf entry for host "127.0.0.1", user "lt_nohba", database "lt", no encryption' \
   "no pg_hba.conf entry: LOGIN_FAILED (method: implicit reject)"
ok "$(ev lt_noconn)" '1|0|42501|trust|true|permission denied for database "lt"' "no CONNECT privilege: LOGIN_FAILED"
ok "$(ev lt_one)" '1|1|53300|trust|true|too many connections for role "lt_one"' \
   "too many connections for the role: LOGIN_FAILED (the session holding the slot: its LOGIN)"
ok "$(ev lt_dbfull)" '1|0|53300|trust|true|too many connections for database "lt"' "too many connections for the database: LOGIN_FAILED"
ok "$(ev lt_closed)" '1|0|55000|trust|true|database "lt" is not currently accepting connections' \
   "a database not accepting connections: LOGIN_FAILED (recorded in it all the same)"
ok "$(ev lt_reserved)" '1|0|53300|trust|true|remaining connection slots are reserved for non-replication superuser connections' \
   "reserved superuser slots: LOGIN_FAILED"
ok "$(ev lt_many)" '1|0|53300|-|true|sorry, too many clients already' \
   "sorry, too many clients already (before the backend has a PGPROC): LOGIN_FAILED"
ok "$(ev lt_quiet)" '1|0|-|scram-sha-256|false|authentication failed' \
   "a bad password with log_min_messages = panic (no FATAL reaches the log hook): LOGIN_FAILED at exit, no message"
ok "$(ev lt_term)" "0|1|" "a started session ended by pg_terminate_backend: its LOGIN, no LOGIN_FAILED"
ok "$(su -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN' AND session_user_name LIKE 'lt%'
               AND session_user_name NOT IN ('lt_good', 'lt_one', 'lt_hold', 'lt_term', 'lt_sentinel')")" "0" \
   "no LOGIN for any refused attempt"
ok "$(ev lt_nodb)" '1|0|3D000|scram-sha-256|false|database "lt_no_such_db" does not exist' \
   "no such database: LOGIN_FAILED, recorded in every crm database (needs the WAL-based queue)"
finish
