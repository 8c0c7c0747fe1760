#!/usr/bin/env bash
# TAP: definition changes under load. Six pooled app connections (a crm_app login: act_as, UPDATE
# of managed records, masked SELECTs, SELECT *) run while an admin session loops adding and
# dropping sensitive fields (whose type changes from one round to the next), encrypted searchable
# fields, field levels, rules and walls. Fails on any backend crash (a client losing its
# connection, "terminated by signal", "corrupted", PANIC in the server log) and on any XX000.
# CRM_LOAD_SECONDS (default 45) sets how long the load runs; CRM_LOAD_CLIENTS (default 6) how many
# app connections. The summary (statements, definition changes, errors by SQLSTATE) is printed
# as TAP comments.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_ddl_load
secs=${CRM_LOAD_SECONDS:-45}
nclients=${CRM_LOAD_CLIENTS:-6}
work=$(mktemp -d /tmp/crm_ddl_load.XXXXXX)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

# the part of the server log written while this test runs (make test's cluster; others may have
# crashed it on purpose before)
log=
if [ -n "${CRM_TEST_DIR:-}" ] && [ -f "$CRM_TEST_DIR/server.log" ]; then log=$CRM_TEST_DIR/server.log; fi
logstart=0
[ -n "$log" ] && logstart=$(stat -c %s "$log")

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ld_app') THEN CREATE ROLE ld_app LOGIN IN ROLE crm_app; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ld_tl') THEN CREATE ROLE ld_tl; END IF;
  FOR i IN 1..5 LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ld_rm' || i) THEN EXECUTE format('CREATE ROLE %I', 'ld_rm' || i); END IF;
  END LOOP;
END $$;
SELECT crm.add_org_unit('LD HQ') AS hq \gset
SELECT crm.add_principal('ld_tl', 'TL', :hq, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('ld_rm' || i, 'RM ' || i, :hq, ARRAY['rm'], :tl) FROM generate_series(1, 5) i;
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, mobile, email, birthday, segment, aum)
SELECT p.id, '客户' || g, 'id_card', '11010519491231002X', '13800138000', 'c' || g || '@example.com', date '1980-01-01' + g,
       (ARRAY['mass', 'affluent', 'corporate'])[1 + g % 3], 1000 * g
  FROM generate_series(1, 300) g
  JOIN crm.principal p ON p.login = 'ld_rm' || (1 + g % 5);
SQL
q() { psql -X -qAt -d $db "$@" 2>&1; }
principals=($(q -c "SELECT id FROM crm.principal WHERE login LIKE 'ld\_%' ORDER BY id"))
ids=($(q -c "SELECT id FROM crm_data.customer ORDER BY id"))
ok "${#principals[@]} ${#ids[@]}" "6 300" "set-up: 6 principals (a team lead and 5 RMs), 300 customers"

# A statement that waits for an admin's definition change plans with a snapshot taken before it
# waited, and runs with one taken after: crm must read its field metadata as the table is now.
tl=${principals[0]}
c0=${ids[0]}
owner=$(q -c "SELECT owner_id FROM crm_data.customer WHERE id = $c0")
# until the admin's transaction holds its lock on the table (at most 20 s)
admin_holds_lock() {
  for i in $(seq 1 200); do
    [ "$(q -c "SELECT count(*) FROM pg_locks WHERE relation = 'crm_data.customer'::regclass AND mode = 'AccessExclusiveLock' AND granted")" = 1 ] && return 0
    sleep 0.1
  done
  return 1
}
psql -X -q -d $db -c "BEGIN" -c "SELECT crm.add_field('customer', 'ld_secret', 'text', '{\"sensitivity\": \"sensitive\"}')" \
     -c "UPDATE crm_data.customer SET ld_secret = 'S3CRET' WHERE id = $c0" -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null 2>&1 &
admin_holds_lock
ok "$(psql -X -qAt -U ld_app -d $db -c "SELECT crm.act_as($tl); SELECT ld_secret FROM crm_data.customer WHERE id = $c0" 2>&1 | tail -1)" \
   "****" "a read that waited for add_field of a sensitive field gets it masked (not the value committed meanwhile)"
wait
psql -X -q -d $db -c "BEGIN" -c "SELECT crm.drop_field('customer', 'ld_secret')" -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null 2>&1 &
admin_holds_lock
ok "$(psql -X -qAt -U ld_app -d $db -v VERBOSITY=verbose -c "SELECT crm.act_as($owner); SELECT count(*) FROM (SELECT * FROM crm_data.customer WHERE id = $c0) x" 2>&1 | tail -1)" \
   "1" "a read by the owner that waited for drop_field of a sensitive field runs (no XX000)"
wait

end=$((SECONDS + secs))
# a generator stays at most two rounds ahead of its psql (which echoes "tick N" after round N), so
# that the load stops on time and what was sent was run; it gives up when psql is gone
caught_up() {
  local f=$1 want=$2 got
  while [ $SECONDS -lt $((end + 60)) ]; do
    got=$(tac "$f" 2>/dev/null | grep -a -m1 '^tick ' || true); got=${got#tick }
    [ "${got:-0}" -ge "$want" ] && return 0
    sleep 0.02
  done
  return 1
}
# One pooled app connection: transactions that act as a random principal, update records (their
# own and others'; the fields that come and go included) and read them masked.
client() {
  local k=$1 n=0 p id r=0 begin
  {
    echo '\set VERBOSITY verbose'
    # half the clients keep their transaction going after an error (savepoints per statement)
    [ $((k % 2)) = 0 ] && echo '\set ON_ERROR_ROLLBACK on'
    # a third: REPEATABLE READ (a snapshot older than the definitions it meets), prepared statements
    begin="BEGIN;"
    if [ $((k % 3)) = 0 ]; then
      begin="BEGIN ISOLATION LEVEL REPEATABLE READ;"
      echo "PREPARE rd(bigint) AS SELECT * FROM crm_data.customer WHERE id >= \$1 ORDER BY id LIMIT 5;"
    fi
    while [ $SECONDS -lt $end ]; do
      r=$((r + 1))
      caught_up "$work/client$k.out" $((r - 2)) || break
      p=${principals[RANDOM % ${#principals[@]}]}
      id=${ids[RANDOM % ${#ids[@]}]}
      # (a write to a psql that is gone ends the loop)
      printf '%s\n' "$begin" "SELECT crm.act_as($p);" \
        "UPDATE crm_data.customer SET aum = aum + 1, segment = 'affluent' WHERE id = $id;" \
        "UPDATE crm_data.customer SET ld_sens = '$RANDOM', aum = aum + 1 WHERE id = ${ids[RANDOM % ${#ids[@]}]};" \
        "UPDATE crm_data.customer SET ld_enc = '1390013900$((RANDOM % 10))' WHERE owner_id = $p AND id % 7 = $((RANDOM % 7));" \
        "SELECT count(*), max(id_number), max(mobile) FROM crm_data.customer WHERE mobile = '13800138000';" \
        "$([ $((k % 3)) = 0 ] && echo "EXECUTE rd($id);" || echo "SELECT * FROM crm_data.customer WHERE id >= $id ORDER BY id LIMIT 5;")" \
        "SELECT id, ld_sens, ld_enc FROM crm_data.customer ORDER BY id DESC LIMIT 3;" \
        "COMMIT;" || break
      n=$((n + 8))
      # one query string (an implicit transaction): act_as, then a read
      echo "SELECT crm.act_as($p) \\; SELECT count(*), max(name) FROM crm_data.customer c WHERE c.aum > 0;" || break
      n=$((n + 2))
      echo "\\echo tick $r" || break
      echo "$n" >"$work/sent$k"
    done
  } | psql -X -q -U ld_app -d $db >"$work/client$k.out" 2>&1
  echo "rc $?" >>"$work/client$k.out"
}
# The admin: definitions change all the time (each call commits on its own, some in one transaction).
admin() {
  local round=0 n=0 t
  {
    echo '\set VERBOSITY verbose'
    while [ $SECONDS -lt $end ]; do
      round=$((round + 1))
      caught_up "$work/admin.out" $((round - 2)) || break
      case $((round % 3)) in 0) t=text;; 1) t=integer;; 2) t=date;; esac
      cat <<SQL || break
SELECT crm.add_field('customer', 'ld_sens', '$t', '{"sensitivity": "sensitive"}');
SELECT crm.set_field_access('customer', 'ld_sens', 'rm', 'masked', 'write');
SELECT crm.set_field_access('customer', 'mobile', 'rm', 'hidden', 'read');
SELECT crm.add_field('customer', 'ld_enc', 'cn_mobile', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
SELECT crm.create_rule('ld_rule', 'customer', 'update', 'NEW.aum > OLD.aum + 1', '[{"type": "notify", "channel": "email", "to": "owner", "template": "aum of {{name}} is {{aum}}"}]', '{"run_as": "ld_tl"}');
SELECT crm.add_wall('ld_wall', 'customer', \$\$segment = 'corporate'\$\$, '{}', '{}', ARRAY['team_lead'], 'load test');
SELECT crm.set_field_access('customer', 'id_number', 'team_lead', 'hidden');
SELECT crm.drop_wall('ld_wall');
BEGIN;
SELECT crm.drop_rule('ld_rule');
SELECT crm.reset_field_access('customer', 'mobile', 'rm');
SELECT crm.drop_field('customer', 'ld_sens');
COMMIT;
SELECT crm.drop_field('customer', 'ld_enc');
SELECT crm.reset_field_access('customer', 'id_number', 'team_lead');
SQL
      n=$((n + 13))
      echo "\\echo tick $round" || break
      echo "$n" >"$work/changes"
    done
  } | psql -X -q -d $db >"$work/admin.out" 2>&1
  echo "rc $?" >>"$work/admin.out"
}

for k in $(seq 1 "$nclients"); do client "$k" & done
admin &
wait

sent=0
for k in $(seq 1 "$nclients"); do
  s=$(cat "$work/sent$k" 2>/dev/null); sent=$((sent + ${s:-0}))
done
changes=$(cat "$work/changes" 2>/dev/null)
echo "# ${secs}s, $nclients clients: $sent app statements, ${changes:-0} definition changes"
echo "# app errors by SQLSTATE:"
cat "$work"/client*.out | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | sort | uniq -c | sed 's/^/#   /'
echo "# admin errors by SQLSTATE:"
sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' "$work/admin.out" | sort | uniq -c | sed 's/^/#   /'
xx=$(cat "$work"/*.out | grep -c 'ERROR:  XX000' || true)
[ "$xx" = 0 ] || echo "# XX000 errors:"; [ "$xx" = 0 ] || cat "$work"/*.out | grep -A2 'ERROR:  XX000' | sort | uniq -c | sort -rn | head -20 | sed 's/^/#   /'
lost=$(cat "$work"/*.out | grep -cE 'server closed the connection|connection to server was lost|terminating connection because of crash' || true)
rcs=$(cat "$work"/*.out | sed -n 's/^rc //p' | sort -u | tr '\n' ' ')
crashlog=0
if [ -n "$log" ]; then
  crashlog=$(tail -c +$((logstart + 1)) "$log" | grep -cE 'terminated by signal|corrupted|PANIC|was terminated by exception|server process .* exited with' || true)
  [ "$crashlog" = 0 ] || tail -c +$((logstart + 1)) "$log" | grep -E 'terminated by signal|corrupted|PANIC|exception|exited with' | head -5 | sed 's/^/#   /'
fi

ok "$((sent > 0 && ${changes:-0} > 0))" "1" "the load ran: app statements and definition changes were made"
ok "$lost" "0" "no app or admin connection was lost to a backend crash"
ok "$rcs" "0 " "every psql session ran to its end"
ok "$crashlog" "0" "the server log shows no crash, corruption or PANIC during the load"
ok "$xx" "0" "no statement raised an internal error (XX000)"
# the database is still consistent and usable afterwards
ok "$(q -c "SELECT count(*) FROM crm.field WHERE object = 'customer' AND name LIKE 'ld\_%'")" \
   "$(q -c "SELECT count(*) FROM pg_attribute WHERE attrelid = 'crm_data.customer'::regclass AND attname LIKE 'ld\_%' AND NOT attisdropped")" \
   "crm.field and the table agree on the fields that came and went"
ok "$(q -c "SELECT ok FROM crm.audit_verify()")" "t" "the audit chain verifies"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
