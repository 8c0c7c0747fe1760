#!/usr/bin/env bash
# TAP: no argument crashes a backend or raises an internal error (issue 15, class 4). Calls of every
# function of crm are generated from pg_proc (test/lib/arg_sweep.sql; new functions are covered
# without editing this file): each argument in turn NULL, empty, 1 MB, extreme numbers, odd arrays,
# malformed JSON, composite rows of NULLs, the others left at benign values; plus every argument
# NULL. They run as five logins: a superuser, an RM principal, a crm_app login acting as the RM, an
# admin principal (crm_admin) and a login that is not a principal. Each call runs in a subtransaction
# that is rolled back (so calls that drop, shred or erase leave the sweep's database as it was) under
# a statement_timeout; an ordinary error is fine (the test prints how many calls ran to their end, were
# refused or failed). The test fails, naming the call, on a lost connection (crash or FATAL), a server
# restart, a signal in the server log, an XX000, or an error message (with detail and hint) over 2 kB.
# make test runs the reduced value set; CRM_SWEEP_FULL=1 runs the full one.
set -u
source "$(dirname "$0")/lib/tap.bash"
here=$(cd "$(dirname "$0")" && pwd)
db=crm_arg_sweep
full=${CRM_SWEEP_FULL:-0}
[ "$full" = 1 ] && set_sql=true || set_sql=false
tmp=$(mktemp -d /tmp/crm_sweep.XXXXXX)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
log=${PGDATA:+$(dirname "$PGDATA")/server.log}

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >"$tmp/setup.out" 2>&1 <<'SQL' || { cat "$tmp/setup.out"; echo "not ok 1 - set-up"; echo "1..1"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sweep_rm') THEN CREATE ROLE sweep_rm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sweep_app') THEN CREATE ROLE sweep_app LOGIN IN ROLE crm_app; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sweep_nobody') THEN CREATE ROLE sweep_nobody LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sweep_admin') THEN CREATE ROLE sweep_admin LOGIN; END IF;
END $$;
SELECT crm.add_org_unit('Sweep HQ') AS hq \gset
SELECT crm.add_principal('sweep_rm', 'Sweep RM', :hq) AS rm \gset
SELECT crm.add_principal('sweep_admin', 'Sweep Admin', :hq, ARRAY['admin']) AS admin \gset
GRANT crm_admin TO sweep_admin;   -- the business-administration API is granted to crm_admin
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, mobile)
  VALUES (:rm, 'Sweep Customer', 'id_card', '11010519491231002X', '13800000000');
SELECT crm.add_field('customer', 'passport_no', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
UPDATE crm_data.customer SET passport_no = 'E00000001';
SELECT crm.add_wall('sweep_wall', 'customer', $$segment = 'corporate'$$, ARRAY[:rm]::bigint[]);
SELECT crm.create_rule('sweep_rule', 'customer', 'update', 'NEW.aum > OLD.aum',
  '[{"type": "create_task", "assignee": "owner", "title": "up {{name}}"}]', '{"run_as": "sweep_rm"}');
SQL
psql -X -q -v ON_ERROR_STOP=1 -d $db -f "$here/lib/arg_sweep.sql" >"$tmp/setup.out" 2>&1 || { cat "$tmp/setup.out"; echo "not ok 1 - set-up of the generator"; echo "1..1"; exit 1; }
psql -X -qAt -d $db -c "SELECT * FROM sweep.calls($set_sql)" >"$tmp/calls.sql"
total=$(wc -l <"$tmp/calls.sql")
echo "# $total calls per login ($([ "$full" = 1 ] && echo full || echo reduced) value set)"
started() { psql -X -qAt -d postgres -c "SELECT pg_postmaster_start_time()" 2>/dev/null; }
wait_up() { local i; for i in $(seq 1 120); do started >/dev/null && [ -n "$(started)" ] && return 0; sleep 0.5; done; return 1; }

# sweep LOGIN ACT_AS: runs every call; resumes after a lost connection at the next call. Prints the
# failures, one per line.
sweep() {
  local who=$1 act=$2 from=1 rc line errs
  while [ "$from" -le "$total" ]; do
    tail -n +"$from" "$tmp/calls.sql" | PGOPTIONS="-c statement_timeout=5s -c lock_timeout=2s -c client_min_messages=error" \
      psql -X -qAt -U "$who" -d $db -v act_as="$act" -f - >"$tmp/out" 2>"$tmp/err"
    rc=$?
    grep -v '^$' "$tmp/out"
    [ "$rc" = 0 ] && break
    # psql stops at a lost connection: "psql:<stdin>:N: ..." names the call
    line=$(grep -oE '^psql:<stdin>:[0-9]+:' "$tmp/err" | tail -1 | grep -oE '[0-9]+')
    if [ -z "$line" ]; then echo "psql failed: $(head -c 300 "$tmp/err")"; break; fi
    echo "connection lost ($(grep -m1 -oE 'server closed[^.]*|terminat[^.]*|FATAL:[^.]*' "$tmp/err")) in: $(sed -n "$((from + line - 1))p" "$tmp/calls.sql" | cut -c1-400)"
    wait_up || { echo "server did not come back"; break; }
    from=$((from + line))
  done
}

t0=$(started)
logpos=0; [ -n "$log" ] && [ -f "$log" ] && logpos=$(stat -c %s "$log")
for who in sweep_nobody:'' sweep_rm:'' sweep_app:sweep_rm sweep_admin:'' postgres:''; do
  login=${who%%:*}; act=${who#*:}
  s=$(date +%s)
  sweep "$login" "$act" >"$tmp/fail.$login" 2>&1
  nfail=$(grep -c . "$tmp/fail.$login")
  [ -n "${CRM_SWEEP_OUT:-}" ] && cp "$tmp/fail.$login" "$CRM_SWEEP_OUT.$login"
  [ "$nfail" = 0 ] || head -40 "$tmp/fail.$login" | sed 's/^/#   /'
  psql -X -qAt -d $db -c "SELECT format('# %s: %s calls ran to the end, %s refused for lack of privilege, %s other errors, %s timed out',
      '$login', count(*) FILTER (WHERE st = 'SWEEP'), count(*) FILTER (WHERE st = '42501'),
      count(*) FILTER (WHERE st NOT IN ('SWEEP', '42501', '57014')), count(*) FILTER (WHERE st = '57014'))
    FROM sweep.outcome WHERE login = '$login'"
  ok "$nfail" "0" "$total calls as $login${act:+ acting as $act}: no crash, no XX000, no message over 2 kB ($(($(date +%s) - s)) s)"
done
ok "$(started)" "$t0" "the server never restarted (pg_postmaster_start_time unchanged)"
if [ -n "$log" ] && [ -f "$log" ]; then
  ok "$(tail -c +$((logpos + 1)) "$log" | grep -cE 'terminated by signal|was terminated by exception|PANIC')" "0" \
     "the server log shows no backend terminated by a signal during the sweep"
fi
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
finish
