#!/usr/bin/env bash
# TAP: scheduled rules outside one session. The scheduler worker (registered when preloaded) runs
# due rules of the databases in crm.scheduler_databases; one failing rule is recorded and does not
# stop the others; it does not spin; two overlapping runs of one rule make each task once; NOTIFY
# reaches a listener; the reference relay sends and marks messages; the worker is back after a
# restart and the server stops cleanly with it.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_rules_sched
here=$(cd "$(dirname "$0")/.." && pwd)
su() { psql -X -qAt -d $db "$@" 2>&1; }
# background workers without a database connection are not in pg_stat_activity: count processes by title
datadir=$(psql -X -qAt -d postgres -c "SHOW data_directory")
scheduler_procs() {  # children of this cluster's postmaster titled "crm scheduler"
  local pm n=0 d
  pm=$(head -1 "$datadir/postmaster.pid" 2>/dev/null)
  for d in /proc/[0-9]*; do
    { [ "$(awk '{print $4}' "$d/stat")" = "$pm" ] && tr '\0' ' ' < "$d/cmdline" | grep -q '^postgres: crm scheduler *$' && n=$((n + 1)); } 2>/dev/null
  done
  echo $n
}
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rs_admin') THEN CREATE ROLE rs_admin LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rs_relay') THEN CREATE ROLE rs_relay LOGIN; END IF;
END $$;
GRANT crm_connector TO rs_relay;
SELECT crm.add_org_unit('RS HQ') AS hq \gset
SELECT crm.add_principal('rs_admin', 'Admin', :hq, ARRAY['admin']) AS adm \gset
INSERT INTO crm_data.customer (owner_id, name, mobile, aum)
  SELECT :adm, 'C' || i, '1380000' || lpad(i::text, 4, '0'), i * 1000 FROM generate_series(1, 40) i;
INSERT INTO crm_data.consent (customer_id, purpose, channel, granted_at)
  SELECT id, 'marketing', 'any', now() - interval '1 day' FROM crm_data.customer;
CREATE FUNCTION public.rs_boom(id bigint) RETURNS void LANGUAGE plpgsql AS $f$ BEGIN RAISE EXCEPTION 'boom for %', id; END $f$;
SELECT crm.create_rule('rs_good', 'customer', 'schedule', 'aum > 20000',
  '[{"type": "create_task", "assignee": "owner", "title": "review {{name}}"}]', '{"run_as": "rs_admin", "cadence": "1 hour"}');
SELECT crm.create_rule('rs_bad', 'customer', 'schedule', 'aum > 0',
  '[{"type": "call", "function": "public.rs_boom"}]', '{"run_as": "rs_admin", "cadence": "1 hour"}');
-- a name that sorts first, so the failing rule runs before the good one
UPDATE crm.rule_state SET next_run_at = now() - interval '1 hour' WHERE rule = 'rs_bad';
SQL

ok "$(scheduler_procs)" "1" "the scheduler worker runs when crm is preloaded"
psql -X -q -d postgres -c "ALTER SYSTEM SET crm.scheduler_databases = '$db'" -c "ALTER SYSTEM SET crm.scheduler_interval = 1" -c "SELECT pg_reload_conf()" >/dev/null
for i in $(seq 1 30); do
  [ "$(su -c "SELECT count(*) FROM crm.rule_state WHERE runs > 0")" = "2" ] && break
  sleep 0.5
done
ok "$(su -c "SELECT runs, last_fired, last_error IS NULL FROM crm.rule_state WHERE rule = 'rs_good'")" "1|20|t" "the worker ran the due rule: 20 records fired"
ok "$(su -c "SELECT runs, last_error FROM crm.rule_state WHERE rule = 'rs_bad'")" "1|boom for 1" "the failing rule's error is recorded on it"
ok "$(su -c "SELECT count(*) FROM crm_data.task WHERE title LIKE 'review %'")" "20" "one task per matching record"
sleep 3
ok "$(su -c "SELECT sum(runs) FROM crm.rule_state")" "2" "it does not spin: nothing is due again within the hour"
ok "$(su -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'crm scheduler run' AND backend_start < now() - interval '3 seconds'")" "0" "no run lingers (each is a short process, started anew every interval)"

# overlapping runs: the second waits on the first's claims and then finds nothing new
su -c "UPDATE crm_data.customer SET aum = aum + 100000 WHERE name IN ('C1', 'C2', 'C3')" >/dev/null
# (made and put off in one transaction, so that the scheduler, still running here, does not run it today)
su -c "BEGIN; SET LOCAL crm.today = '2027-01-01'; SELECT crm.create_rule('rs_overlap', 'customer', 'schedule', 'aum > 100000', '[{\"type\": \"create_task\", \"assignee\": \"owner\", \"title\": \"overlap {{name}}\"}]', '{\"run_as\": \"rs_admin\"}'); UPDATE crm.rule_state SET next_run_at = now() + interval '1 day' WHERE rule = 'rs_overlap'; COMMIT;" >/dev/null
( su -c "BEGIN; SET LOCAL crm.today = '2027-01-01'; SELECT crm.run_rule('rs_overlap'); SELECT pg_sleep(2); COMMIT;" > /tmp/rs_a.$$ ) &
sleep 0.7
second=$(su -c "SET crm.today = '2027-01-01'; SELECT crm.run_rule('rs_overlap')")
wait
ok "$(head -1 /tmp/rs_a.$$)|$second" "3|0" "two overlapping runs: the first fires 3 records, the second none"
ok "$(su -c "SELECT count(*) FROM crm_data.task WHERE title LIKE 'overlap %'")" "3" "exactly one task per record and occurrence"
ok "$(su -c "SET crm.today = '2027-01-02'; SELECT crm.run_rule('rs_overlap')")" "3" "the next day is a new occurrence"
rm -f /tmp/rs_a.$$

# NOTIFY crm_outbox reaches a listener when a rule queues a message
su -c "SELECT crm.create_rule('rs_sms', 'customer', 'update', 'NEW.aum > OLD.aum', '[{\"type\": \"notify\", \"channel\": \"sms\", \"purpose\": \"marketing\", \"template\": \"AUM of {{name}} up\"}]', '{\"run_as\": \"rs_admin\"}')" >/dev/null
( psql -X -qAt -d $db -c "LISTEN crm_outbox" -c "SELECT pg_sleep(2)" > /tmp/rs_l.$$ 2>&1 ) &
sleep 0.7
su -c "UPDATE crm_data.customer SET aum = aum + 1 WHERE name = 'C5'" >/dev/null
wait
ok "$(grep -c 'Asynchronous notification "crm_outbox" with payload "rs_sms"' /tmp/rs_l.$$)" "1" "a listener hears crm_outbox"
rm -f /tmp/rs_l.$$

# the reference relay claims, prints, marks done; a failing channel backs off
relay=$(CRM_RELAY_ROUNDS=2 CRM_RELAY_POLL=1 timeout 30 bash "$here/scripts/outbox_relay.sh" -U rs_relay -d $db 2>&1)
ok "$(echo "$relay" | grep -c 'send    #[0-9]* sms to 13800000005: AUM of C5 up')" "1" "the relay prints what it would send"
ok "$(su -c "SELECT status FROM crm.outbox WHERE rule = 'rs_sms'")" "sent" "and marks it sent"
su -c "UPDATE crm_data.customer SET aum = aum + 1 WHERE name = 'C6'" >/dev/null
relay=$(CRM_RELAY_ROUNDS=2 CRM_RELAY_POLL=1 CRM_RELAY_FAIL=sms timeout 30 bash "$here/scripts/outbox_relay.sh" -U rs_relay -d $db 2>&1)
ok "$(su -c "SELECT status, attempts, next_attempt_at > now() FROM crm.outbox WHERE rule = 'rs_sms' AND status <> 'sent'")" "pending|1|t" "a failed send waits for its retry"
ok "$(psql -X -qAt -U rs_relay -d $db -c "SELECT count(*) FROM crm_data.customer" 2>&1 | grep -c 'permission denied')" "1" "the relay's role reads the outbox, not the customers"

# a restart: the scheduler stops with the server and is back after it
pgctl() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- $PGBIN/pg_ctl "$@"; else $PGBIN/pg_ctl "$@"; fi; }
start=$(date +%s)
pgctl -D "$datadir" -m fast -w -t 60 restart -o "-p $PGPORT" -l "$datadir/../server.log" >/dev/null 2>&1
ok "$(( $(date +%s) - start < 30 ))" "1" "a fast restart completes with the scheduler running"
for i in $(seq 1 20); do
  [ "$(scheduler_procs)" = "1" ] && break
  sleep 0.5
done
ok "$(scheduler_procs)" "1" "the scheduler is back after the restart"

psql -X -q -d postgres -c "ALTER SYSTEM RESET crm.scheduler_databases" -c "ALTER SYSTEM RESET crm.scheduler_interval" -c "SELECT pg_reload_conf()" >/dev/null
finish
