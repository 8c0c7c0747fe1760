#!/usr/bin/env bash
# TAP: blind-index key rotation (CALL crm.rotate_blind_index_key). While the blind indexes are
# rebuilt, crm.find() finds records under the old and the new key and a unique searchable field
# refuses a value held under the old key; the rebuild rewrites no history (no audit event, no
# updated_at, the ciphertext untouched); a backend killed (SIGKILL) in the middle, a master key
# missing from the key file, a missing key file: clear errors, nothing lost, and a retry completes.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_bidx_rotate
N=${CRM_TEST_BIDX_CUSTOMERS:-2000}
tmp=$(mktemp -d /tmp/crm_bidx_rotate.XXXXXX)
chmod 755 "$tmp"
keys=$(psql -X -qAt -d postgres -c "SHOW crm.keyring")
cp -p "$keys" "$tmp/keys.orig"
owner=$(stat -c %U "$keys")
put_keys() { printf '%s\n' "$1" >"$keys"; chmod 600 "$keys"; [ "$(id -u)" = 0 ] && chown "$owner" "$keys"; true; }
newkey() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
cleanup() { [ -e "$keys.away" ] && mv "$keys.away" "$keys"; cp -p "$tmp/keys.orig" "$keys"; [ "$(id -u)" = 0 ] && chown "$owner" "$keys"; rm -rf "$tmp"; }
trap cleanup EXIT
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1

psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<SQL || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT count(*) FROM crm.generate_demo_data($N, 17);
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'br_officer') THEN CREATE ROLE br_officer LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'br_rm') THEN CREATE ROLE br_rm LOGIN; END IF;
END \$\$;
SELECT crm.add_role('br_officer');
SELECT crm.grant_object('br_officer', '*', ARRAY['read', 'create', 'edit'], 'all');
SELECT crm.add_principal('br_officer', 'Officer', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), ARRAY['br_officer']);
SELECT crm.add_principal('br_rm', 'RM', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), ARRAY['rm']);
SELECT crm.add_field('customer', 'passport', 'text', '{"encrypted": true, "searchable": true, "unique": true, "sensitivity": "sensitive"}');
SELECT crm.set_field_access('customer', 'passport', 'br_officer', 'write');
UPDATE crm_data.customer SET passport = 'E' || lpad(id::text, 8, '0');
-- a rule that fires on every update of a customer (the rebuild must not set it off)
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'br_ruler') THEN CREATE ROLE br_ruler LOGIN; END IF;
END \$\$;
SELECT crm.add_principal('br_ruler', 'Ruler', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), ARRAY['admin']);
SELECT crm.create_rule('br_rule', 'customer', 'update', 'true', '[{"type": "create_task", "assignee": "owner", "title": "touched {{name}}"}]', '{"run_as": "br_ruler"}');
SQL
su() { psql -X -qAt -v VERBOSITY=verbose -d $db "$@" 2>&1; }
as() { local who=$1; shift; psql -X -qAt -v VERBOSITY=verbose -U "$who" -d $db "$@" 2>&1; }
pp() { printf 'E%08d' "$1"; }
# every record found by its own passport through crm.find (as the officer): how many are not
unfound() {
  as br_officer -c "SELECT count(*) FROM crm_data.customer c
                    WHERE NOT EXISTS (SELECT 1 FROM crm.find('customer', 'passport', c.passport) f WHERE f.id = c.id)"
}
# every blind index is the one the newest key gives (as the maintenance role, from the ids)
stale() { su -c "SELECT count(*) FROM crm_data.customer c WHERE c.crm_bidx_passport IS DISTINCT FROM crm._blind_index('customer', 'passport', 'E' || lpad(c.id::text, 8, '0'))"; }
history() { su -c "SELECT md5(string_agg(id || passport || updated_at || coalesce(updated_by, 0), ',' ORDER BY id)) FROM crm_data.customer"; }
events() { su -c "SELECT count(*) FROM crm.audit_log WHERE object = 'customer' AND action IN ('INSERT', 'UPDATE', 'DELETE')"; }
tasks() { su -c "SELECT count(*) FROM crm_data.task WHERE title LIKE 'touched %'"; }
bidx_keys() { su -c "SELECT string_agg(subject, ',' ORDER BY id) FROM crm.data_key WHERE subject LIKE 'blind\_index%'"; }

ok "$(unfound)|$(stale)|$(bidx_keys)" "0|0|blind_index" "before: every record is found by its value, under the one blind-index key"
su -c "UPDATE crm_data.customer SET aum = aum + 1 WHERE id = 1" >/dev/null
ok "$(tasks)" "1" "(the rule fires on an update of a customer)"
hist0=$(history); ev0=$(events); tasks0=$(tasks); old_bidx=$(su -c "SELECT md5(string_agg(encode(crm_bidx_passport, 'hex'), ',' ORDER BY id)) FROM crm_data.customer")

# permissions
ok "$(as br_rm -c "CALL crm.rotate_blind_index_key()" | grep -c 'permission denied for procedure rotate_blind_index_key')" "1" "an RM may not rotate the blind-index key"
ok "$(as br_rm -c "SELECT crm._bidx_rotation_begin(10)" | grep -c 'permission denied')" "1" "nor call its steps"
ok "$(su -c "CALL crm.rotate_blind_index_key(0)" | grep -c '22023: blind-index rebuild batch size must be between 1 and 1000000, not 0')" "1" "a batch size of 0 is refused (22023)"
ok "$(bidx_keys)" "blind_index" "(and began nothing)"

# half way, step by step: the first 100 records re-indexed, the rest still under the old key
v=$(su -c "SELECT crm._bidx_rotation_begin(100)")
ok "$v|$(bidx_keys)" "2|blind_index,blind_index:2" "a rotation under way: key version 2 next to the old key"
su -c "SELECT crm._bidx_rotation_wait($v)" >/dev/null
ok "$(su -c "SELECT crm._bidx_rebuild_step($v, 100)")|$(su -c "SELECT last_id, rows_done FROM crm.bidx_rebuild WHERE version = $v")" "customer|100|100" "one batch: 100 records re-indexed, progress recorded"
ok "$(stale)" "$((N - 100))" "the other records are still indexed under the old key"
ok "$(as br_officer -c "SELECT (SELECT count(*) FROM crm.find('customer', 'passport', '$(pp 50)')) || ',' || (SELECT count(*) FROM crm.find('customer', 'passport', '$(pp 1500)'))")" "1,1" \
   "crm.find finds a re-indexed record and one not yet re-indexed"
ok "$(unfound)" "0" "every record is found half way"
ok "$(su -c "SELECT crm._bidx_rotation_finish($v)" | grep -c '55000: the blind indexes of object "customer" are not yet rebuilt under key version 2')" "1" \
   "the old key cannot be retired before the rebuild is done (55000)"
ok "$(as br_officer -c "INSERT INTO crm_data.customer (name, passport) VALUES ('Dup old', '$(pp 1500)')" | grep -c '23505: duplicate value in unique field customer.passport')" "1" \
   "a unique field refuses a value held under the old key (23505)"
ok "$(as br_officer -c "INSERT INTO crm_data.customer (name, passport) VALUES ('Dup new', '$(pp 50)')" | grep -c '23505')" "1" \
   "and one held under the new key"
newid=$(as br_officer -c "INSERT INTO crm_data.customer (name, passport) VALUES ('New', 'E99999999') RETURNING id" | head -1)
ok "$(su -c "SELECT crm_bidx_passport = crm._blind_index('customer', 'passport', 'E99999999') FROM crm_data.customer WHERE id = $newid")|$(as br_officer -c "SELECT count(*) FROM crm.find('customer', 'passport', 'E99999999')")" "t|1" \
   "a record written during the rotation is indexed under the new key, and found"
su -c "DELETE FROM crm_data.customer WHERE id = $newid" >/dev/null
ev0=$(events)

# a master key missing from the key file: clear error, nothing lost, a retry completes
put_keys "k2 $(newkey)"
out=$(su -c "CALL crm.rotate_blind_index_key(100)")
ok "$(echo "$out" | grep -c 'F0000: master key "k1" is not in the crm key file')" "1" "the master key the data keys need is gone from the file: a clear error (F0000)"
ok "$(su -c "SELECT last_id FROM crm.bidx_rebuild WHERE version = $v")" "100" "the failed batch left the progress as it was"
ok "$(as br_officer -c "SELECT count(*) FROM crm.find('customer', 'passport', '$(pp 1500)')" | grep -c 'F0000')" "1" "crm.find errors too (never a wrong answer)"
cp -p "$tmp/keys.orig" "$keys"
# a missing key file
mv "$keys" "$keys.away"
ok "$(su -c "CALL crm.rotate_blind_index_key(100)" | grep -c '58P01: could not read crm key file')" "1" "a missing key file: a clear error (58P01)"
mv "$keys.away" "$keys"

# SIGKILL of the rotating backend in the middle: a record it needs is locked, so it waits there
( psql -X -q -d $db -c "BEGIN" -c "SELECT id FROM crm_data.customer WHERE id = 1200 FOR UPDATE" -c "SELECT pg_sleep(60)" -c "COMMIT" >/dev/null 2>&1 & )
( psql -X -q -d $db -c "CALL crm.rotate_blind_index_key(100)" >"$tmp/call.out" 2>&1 & )
pid=
for i in $(seq 1 100); do
  pid=$(su -c "SELECT pid FROM pg_stat_activity WHERE datname = '$db' AND query LIKE 'CALL crm.rotate_blind_index_key%' AND wait_event_type = 'Lock' LIMIT 1")
  [ -n "$pid" ] && break; sleep 0.2
done
progress=$(su -c "SELECT last_id FROM crm.bidx_rebuild WHERE version = $v")
ok "$progress" "1100" "the rotation committed batches up to record 1100, then waited on a locked record"
ok "$([ -n "$pid" ] && kill -9 "$pid" && echo killed)" "killed" "the rotating backend is killed (SIGKILL)"
for i in $(seq 1 50); do psql -X -qAt -d $db -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.3; done
ok "$(su -c "SELECT last_id FROM crm.bidx_rebuild WHERE version = $v")|$(bidx_keys)" "1100|blind_index,blind_index:2" "after recovery: the committed batches stay done, both keys are still there"
ok "$(unfound)" "0" "every record is still found"
ok "$(su -c "CALL crm.rotate_blind_index_key(100)" | grep -c 'blind-index key version 2 is now the only one (1 older')" "1" "a retry goes on from there and completes"
ok "$(bidx_keys)|$(stale)|$(unfound)" "blind_index:2|0|0" "the old key is retired; every record is indexed under the new key and found"
ok "$(su -c "SELECT md5(string_agg(encode(crm_bidx_passport, 'hex'), ',' ORDER BY id)) FROM crm_data.customer" | grep -c "$old_bidx")" "0" "(the blind indexes did change)"
ok "$(history)|$(events)|$(tasks)" "$hist0|$ev0|$tasks0" "no history rewritten: ciphertext, updated_at/by and the audit log of the records are as they were; the rule did not fire"
ok "$(su -c "SELECT sum(rows_done) >= $N AND bool_and(finished_at IS NOT NULL) FROM crm.bidx_rebuild WHERE version = $v")" "t" "the progress table says done"

# a second rotation in one call, by a crm_admin login (the example of docs/encryption.md)
psql -X -q -d $db -c "DROP ROLE IF EXISTS br_admin" -c "CREATE ROLE br_admin LOGIN" -c "GRANT crm_admin TO br_admin" >/dev/null 2>&1
ok "$(as br_admin -c "CALL crm.rotate_blind_index_key();" | grep -c 'version 3 is now the only one')|$(bidx_keys)|$(stale)|$(unfound)" "1|blind_index:3|0|0" "a second rotation in one call, by a crm_admin"
ok "$(as br_admin -c "SELECT version, object, last_id, rows_done, finished_at FROM crm.bidx_rebuild;" | cut -d'|' -f1,2,4 | tr '\n' ' ')" "2|customer|$N 3|customer|$N " \
   "crm.bidx_rebuild shows each rotation: every record re-indexed once (the batch the crash cut short was rolled back)"
ok "$(as br_officer -c "SELECT count(*) FROM crm.find('customer', 'passport', ' e00000777 ')")" "1" "crm.find still normalises the value it looks for"
pg_dump -d $db -f "$tmp/d.sql" 2>/dev/null
ok "$(grep -c -e 'E00000777' -e 'E00001500' "$tmp/d.sql")" "0" "a dump after the rotations holds no plaintext of the encrypted field"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
