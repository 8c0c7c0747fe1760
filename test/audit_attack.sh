#!/usr/bin/env bash
# TAP: attacks on the path of rollback-proof audit events (WAL, audit worker, per-database writers).
#  1. A login with CREATEDB makes a database with a "crm" schema of its own (audit_log, _audit_intake,
#     a trigger named crm_append_only, made in another schema and renamed to crm). The writer runs as
#     the bootstrap superuser: it must not take that for crm, run its trigger or write to it.
#  2. A database owner sets default_transaction_read_only on the database: its writer still writes.
#  3. DROP EXTENSION crm in one database, then more events for it than the hand-over slots hold
#     (2,048): the events of the other databases are still written (nothing waits for the dropped
#     one), and CREATE EXTENSION again records its logins again.
#  4. A failed password on a physical replication connection (no database named) is recorded.
#  5. A failed password naming a dropped database is recorded (in every database with crm).
#  6. pg_terminate_backend() of the audit worker: it starts again (it used to exit for good).
#  7. A database being restored when the audit worker starts holds back no other database's events.
set -u
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/../scripts/cluster.sh"
: "${CRM_TEST_DIR:?run through make test}"
real=crm_atk_real; evil=crm_atk_evil; gone=crm_atk_gone; restoring=crm_atk_restoring
q() { local d=$1; shift; psql -X -qAt -d "$d" "$@" 2>&1; }
for d in $real $evil $gone $restoring; do q postgres -c "DROP DATABASE IF EXISTS $d" >/dev/null; done
q postgres -c "DROP ROLE IF EXISTS atk_mallory" >/dev/null
q postgres -c "CREATE ROLE atk_mallory LOGIN CREATEDB" >/dev/null
for d in $real $gone; do
  q postgres -c "CREATE DATABASE $d" >/dev/null
  q $d -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
done
logins() { q $real -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN' AND application_name = '$1'"; }
# log in to $real as application $1, then wait (up to $2 s) until that LOGIN is in its log
login_seen() {
  PGAPPNAME=$1 psql -X -qAt -d $real -c "SELECT 1" >/dev/null 2>&1
  for i in $(seq 1 $(($2 * 4))); do [ "$(logins "$1")" = 1 ] && { echo seen; return; }; sleep 0.25; done
  echo "not seen (LOGIN count $(logins "$1"))"
}

# 1. a fake crm schema of a CREATEDB login
q postgres -U atk_mallory -c "CREATE DATABASE $evil" >/dev/null
q $evil -U atk_mallory -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE SCHEMA fake;
CREATE TABLE fake.audit_log (id bigserial, logged_at timestamptz, principal_id bigint, session_user_name text,
  current_user_name text, client_addr inet, application_name text, action text, object text, record_id bigint,
  detail jsonb, ran_as name);
CREATE TABLE fake._audit_intake (sysid bigint PRIMARY KEY, lsn bigint NOT NULL);
CREATE FUNCTION fake.pwn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.ran_as := current_user;
  BEGIN EXECUTE 'ALTER ROLE atk_mallory SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
  RETURN NEW;
END $$;
CREATE TRIGGER crm_append_only BEFORE INSERT ON fake.audit_log FOR EACH ROW EXECUTE FUNCTION fake.pwn();
CREATE FUNCTION fake._audit_partitions() RETURNS void LANGUAGE sql AS $$ ALTER ROLE atk_mallory SUPERUSER $$;
ALTER SCHEMA fake RENAME TO crm;
SQL
ok "$(q $evil -U atk_mallory -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'crm'")" 1 \
  "set-up: a CREATEDB login made a schema crm with an audit_log in its own database"
for i in 1 2 3; do psql -X -qAt -d $evil -U atk_mallory -c "SELECT 1" >/dev/null; done
# its LOGINs come before this one in WAL: once this one is written, they have been dispatched
ok "$(login_seen atk_after_evil 30)" seen "a LOGIN in a real crm database after the fake one's is written"
sleep 3
ok "$(q postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'atk_mallory'")" f \
  "the writer ran none of the fake schema's code: the CREATEDB login is no superuser"
ok "$(q $evil -U atk_mallory -c "SELECT count(*) FROM crm.audit_log")" 0 "nothing was written into the fake audit_log"

# 2. default_transaction_read_only set on the database
q postgres -c "ALTER DATABASE $real SET default_transaction_read_only = on" >/dev/null
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit writer'
               AND datname = '$real'" >/dev/null
sleep 1
ok "$(PGOPTIONS='-c default_transaction_read_only=off' login_seen atk_readonly 20)" seen \
  "with default_transaction_read_only = on on its database, the writer still writes its events"
q postgres -c "ALTER DATABASE $real RESET default_transaction_read_only" >/dev/null

# 3. DROP EXTENSION crm in one database, then more of its events than the slots hold
q $gone -c "SET client_min_messages = warning" -c "BEGIN" -c "SELECT crm.uninstall('test: a dropped crm')" -c "DROP EXTENSION crm CASCADE" -c "COMMIT" >/dev/null
script=$(mktemp); echo "SELECT 1;" >"$script"; chmod 644 "$script"
trap 'rm -f "$script"' EXIT
pgbench -n -C -c 4 -j 2 -t 540 -f "$script" $gone >/dev/null 2>&1
ok "$(login_seen atk_after_drop 30)" seen \
  "2,160 logins to a database whose crm was dropped do not hold back the events of the others"
q $gone -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
PGAPPNAME=atk_back psql -X -qAt -d $gone -c "SELECT 1" >/dev/null
seen=0
for i in $(seq 1 80); do
  seen=$(q $gone -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN' AND application_name = 'atk_back'")
  [ "$seen" = 1 ] && break; sleep 0.25
done
ok "$seen" 1 "after CREATE EXTENSION crm again, its logins are recorded again"

# 4. a physical replication connection (replication=true) names no database: a failed password
#    there is still a LOGIN_FAILED (recorded in every database with crm)
psql -X -qAt "host=127.0.0.1 port=$PGPORT user=atk_guess password=wrong replication=true" -c "IDENTIFY_SYSTEM" >/dev/null 2>&1
got=0
for i in $(seq 1 60); do
  got=$(q $real -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN_FAILED' AND session_user_name = 'atk_guess'
                        AND detail ->> 'sqlstate' = '28P01'")
  [ "$got" = 1 ] && break; sleep 0.25
done
ok "$got" 1 "a failed password on a physical replication connection is a LOGIN_FAILED"

# 6. pg_terminate_backend() of the audit worker (a DBA ending "all other sessions"): it comes back,
#    and the LOGINs written before it went are not written again by a second writer
for i in 1 2 3; do PGAPPNAME=atk_before_kill psql -X -qAt -d $real -c "SELECT 1" >/dev/null; done
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit worker'" >/dev/null
sleep 1
ok "$(login_seen atk_after_kill 30)" seen "after pg_terminate_backend() of the audit worker, events are written again"
sleep 2
ok "$(logins atk_before_kill)" 3 "the LOGINs from just before it was ended are written once each"

# 5. a failed password naming a database that was just dropped: it does not exist, so it is
#    recorded in every database with crm (before, the dropped database's entry swallowed it)
q postgres -c "DROP DATABASE $gone WITH (FORCE)" >/dev/null
psql -X -qAt "host=127.0.0.1 port=$PGPORT dbname=$gone user=atk_guess2 password=wrong" -c "SELECT 1" >/dev/null 2>&1
got=0
for i in $(seq 1 80); do
  got=$(q $real -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN_FAILED' AND session_user_name = 'atk_guess2'
                        AND detail ->> 'sqlstate' = '28P01'")
  [ "$got" = 1 ] && break; sleep 0.25
done
ok "$got" 1 "a failed password naming a dropped database is a LOGIN_FAILED (in every database with crm)"

# 7. a database whose restore is under way (its log has no crm_append_only trigger yet) when the
#    audit worker starts: events for every database must not wait for the restore to end
q postgres -c "CREATE DATABASE $restoring" >/dev/null
q $restoring -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
q $restoring -c "DELETE FROM pg_trigger WHERE tgrelid = 'crm.audit_log'::regclass AND tgname = 'crm_append_only'" >/dev/null
q postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'crm audit worker'" >/dev/null
sleep 2
psql -X -qAt "host=127.0.0.1 port=$PGPORT dbname=atk_no_such_db user=atk_guess3 password=wrong" -c "SELECT 1" >/dev/null 2>&1
ok "$(login_seen atk_during_restore 30)" seen "a database being restored does not hold back the events of the others"
ok "$(q $real -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN_FAILED' AND session_user_name = 'atk_guess3'")" 1 \
  "nor those for every database (a failed login naming no database that exists)"

for d in $real $evil $gone $restoring; do q postgres -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null; done
q postgres -c "DROP ROLE IF EXISTS atk_mallory" >/dev/null
finish
