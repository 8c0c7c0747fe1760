#!/usr/bin/env bash
# TAP: smaller hardening items of issue 15, each tried the way an attacker would: names with quotes,
# backslashes and newlines in audit events; values too big for an audit entry; the raw blind index
# (an equality oracle) out of reach; mapping source ids needs edit access; the subject-export
# helper is neither an open door nor a SQL injection point.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_hardening
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
# a pooled app whose login name holds a quote, a backslash, a newline, a tab and a JSON escape
weird=$'hd_app"q\\b\nnl\t\\u0000'
weird_sql=${weird//\"/\"\"}
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<SQL || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hd_rm1') THEN CREATE ROLE hd_rm1 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hd_rm2') THEN CREATE ROLE hd_rm2 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hd_app') THEN CREATE ROLE hd_app LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hd_comp') THEN CREATE ROLE hd_comp LOGIN; END IF;
END \$\$;
DROP ROLE IF EXISTS "$weird_sql";
CREATE ROLE "$weird_sql" LOGIN IN ROLE crm_app;
GRANT crm_app TO hd_app;
SELECT crm.add_org_unit('HD HQ') AS hq \gset
SELECT crm.add_principal('hd_rm1', 'RM 1', :hq) AS rm1 \gset
SELECT crm.add_principal('hd_rm2', 'RM 2', :hq) AS rm2 \gset
SELECT crm.add_principal('hd_comp', 'Compliance', :hq, ARRAY['compliance']) AS comp \gset
SELECT crm.add_field('customer', 'hd_note', 'text', '{}');
SELECT crm.add_field('customer', 'hd_passport', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
INSERT INTO crm_data.customer (owner_id, name, hd_passport) VALUES (:rm1, 'rm1 customer', 'E12345678');
INSERT INTO crm_data.customer (owner_id, name) VALUES (:rm2, 'rm2 customer');
-- rm2 may read (not edit) rm1's customer
SELECT crm.share('customer', (SELECT id FROM crm_data.customer WHERE name = 'rm1 customer'), 'hd_rm2', 'read', NULL, 'cover');
SQL
[ $? = 0 ] || { echo "not ok 1 - set-up"; exit 1; }
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
q() { psql -X -qAt -d $db -c "$1" 2>&1; }
c1=$(q "SELECT id FROM crm_data.customer WHERE name = 'rm1 customer'")
c2=$(q "SELECT id FROM crm_data.customer WHERE name = 'rm2 customer'")
rm1=$(q "SELECT id FROM crm.principal WHERE login = 'hd_rm1'")
rm2=$(q "SELECT id FROM crm.principal WHERE login = 'hd_rm2'")

# 1. a name with a quote, a backslash and a newline in an ACT_AS event, queued with a plain one
as "$weird" -c "BEGIN" -c "SELECT crm.act_as($rm1)" -c "COMMIT" >/dev/null
as hd_app -c "BEGIN" -c "SELECT crm.act_as($rm2)" -c "COMMIT" >/dev/null
for i in $(seq 1 40); do
  [ "$(q "SELECT count(*) FROM crm.audit_log WHERE action = 'ACT_AS' AND record_id IN ($rm1, $rm2)")" = 2 ] && break; sleep 0.25
done
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE action = 'ACT_AS' AND record_id = $rm1 AND detail->>'app_login' = E'hd_app\"q\\\\b\\nnl\\t\\\\u0000'")" "1" \
   "an ACT_AS by a login named with a quote, a backslash, a newline, a tab and a literal \\u0000 is recorded, its name intact"
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE action = 'ACT_AS' AND record_id = $rm2 AND detail->>'app_login' = 'hd_app'")" "1" \
   "and the event queued with it is recorded too"
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE detail ? 'invalid_detail' OR detail->>'operation' = 'audit queue overflow'")" "0" \
   "no event needed rescuing and none was lost"
out=$(q "SELECT crm.add_field('customer', 'a\"b', 'text', '{}')")
ok "$(echo "$out" | grep -c '^ERROR')" "1" "a field name with a quote is refused with an error"
out=$(q "SELECT crm.create_object(E'x\\\\y', 'X', 'private', '{}')")
ok "$(echo "$out" | grep -c '^ERROR')" "1" "an object name with a backslash is refused with an error"

# 1b. DENIED events of statements that escaping makes long, or that are cut inside a character
ctl=$(printf '\001%.0s' $(seq 1 400))
as hd_rm1 -c "SELECT * FROM crm.data_key WHERE 'hd_marker_ctl$ctl' IS NOT NULL" >/dev/null
pad=$(printf 'x%.0s' $(seq 1 985))
as hd_rm1 -c "SELECT * FROM crm.data_key WHERE 'hd_marker_utf$pad中中中' IS NOT NULL" >/dev/null
for i in $(seq 1 40); do
  [ "$(q "SELECT count(*) FROM crm.audit_log WHERE action = 'DENIED' AND detail->>'statement' LIKE '%hd_marker_%'")" = 2 ] && break; sleep 0.25
done
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE action = 'DENIED' AND detail->>'statement' LIKE '%hd_marker_ctl%' AND (detail->>'truncated')::boolean")" "1" \
   "a refused statement that escaping makes too long is still a DENIED event, cut and marked truncated"
ok "$(q "SELECT count(*) FROM crm.audit_log WHERE action = 'DENIED' AND detail->>'statement' LIKE '%hd_marker_utf%' AND right(detail->>'statement', 1) IN ('x', '中')")" "1" \
   "a statement cut at its 1000th byte is cut at a character boundary (the entry stays valid UTF-8)"

# 2. bounded entries: a 1 MB value is audited as its hash and length
q "UPDATE crm_data.customer SET hd_note = repeat('x', 1048576) WHERE id = $c2" >/dev/null
ok "$(q "SELECT pg_column_size(detail) < 4096, (detail->'fields'->'hd_note'->>'new_bytes')::int, length(detail->'fields'->'hd_note'->>'new_sha256'), detail->'fields'->'hd_note' ? 'new'
          FROM crm.audit_log WHERE object = 'customer' AND record_id = $c2 AND action = 'UPDATE' ORDER BY id DESC LIMIT 1")" \
   "t|1048576|64|f" "a 1 MB value makes an entry of under 4 kB: its SHA-256 and length, not the value"
ok "$(q "SELECT detail->'fields'->'hd_note'->>'new_sha256' = encode(sha256(convert_to(repeat('x', 1048576), 'UTF8')), 'hex')
          FROM crm.audit_log WHERE object = 'customer' AND record_id = $c2 AND action = 'UPDATE' ORDER BY id DESC LIMIT 1")" \
   "t" "the hash is the value's SHA-256, so an auditor holding the value can match it"
q "UPDATE crm_data.customer SET hd_note = 'short' WHERE id = $c2" >/dev/null
ok "$(q "SELECT detail->'fields'->'hd_note'->>'new' || ' ' || (detail->'fields'->'hd_note'->>'old_bytes') FROM crm.audit_log WHERE object = 'customer' AND record_id = $c2 AND action = 'UPDATE' ORDER BY id DESC LIMIT 1")" \
   "short 1048576" "a short value is recorded as it is (and the huge old one by its length)"
ok "$(psql -X -qAt -d $db -c "SET crm.audit_max_value_bytes = 100" -c "UPDATE crm_data.customer SET hd_note = repeat('y', 101) WHERE id = $c2" \
        -c "SELECT (detail->'fields'->'hd_note'->>'new_bytes') FROM crm.audit_log WHERE object = 'customer' AND record_id = $c2 AND action = 'UPDATE' ORDER BY id DESC LIMIT 1" 2>&1)" \
   "101" "crm.audit_max_value_bytes sets the bound"
ok "$(as hd_rm1 -c "SET crm.audit_max_value_bytes = 1000000000" | grep -c 'permission denied')" "1" "and only a superuser may raise it"

# 3. the raw blind index is an equality oracle: nobody but crm's own code computes it
ok "$(q "SELECT has_function_privilege('crm_user', 'crm._blind_index(text, text, text)', 'EXECUTE')")" "f" "crm_user may not call crm._blind_index"
ok "$(as hd_rm1 -c "SELECT crm._blind_index('customer', 'hd_passport', 'E12345678')" | grep -c 'permission denied')" "1" "an RM calling it is refused"
ok "$(as hd_rm1 -c "SELECT count(*) FROM crm.find('customer', 'hd_passport', 'E12345678')")" "1" "crm.find still finds the RM's own customer"
ok "$(as hd_rm2 -c "SELECT count(*) FROM crm._bidx_lookup('customer', 'hd_passport', 'E12345678')")" "0" \
   "the lookup behind it finds nothing the caller may not read unmasked (rm2's share shows the passport masked)"
ok "$(as hd_rm1 -c "SELECT crm._bidx_lookup('customer', 'name', 'x')" | grep -c 'has no blind index')" "1" "and refuses a field without a blind index"

# 4. mapping source ids to records needs edit access, not just a read share
ok "$(as hd_rm2 -c "SELECT crm._external_refs_add('customer', 'core', ARRAY['X1'], ARRAY[$c1]::bigint[])" | grep -c 'may not edit')" "1" \
   "rm2 (read share only) may not map a source id to rm1's customer"
ok "$(as hd_rm2 -c "SELECT crm._external_ref_add('customer', 'core', 'X1', $c1)" | grep -c 'may not edit')" "1" "nor one at a time"
as hd_rm1 -c "SELECT crm._external_ref_add('customer', 'core', 'X2', $c1)" >/dev/null
ok "$(as hd_rm2 -c "SELECT crm._external_ref_add('customer', 'core', 'X2', $c2)" | grep -c 'may not edit')" "1" \
   "nor re-point rm1's source id to its own customer"
ok "$(q "SELECT record_id FROM crm.external_ref WHERE external_id = 'X2'")" "$c1" "the mapping is unchanged"
ok "$(as hd_rm2 -c "SELECT crm.upsert('customer', 'core', 'X3', '{\"name\": \"mapped by rm2\"}') > 0")" "t" "an upsert of rm2's own still maps its source id"

# 5. the subject-export helper: for compliance only, and its field is a name, never SQL
ok "$(as hd_rm1 -c "SELECT crm._subject_rows('customer', 'id', ARRAY[$c1]::bigint[])" | grep -c 'permission denied')" "1" \
   "an RM may not call the subject-export helper directly"
ok "$(as hd_comp -c "SELECT crm._subject_rows('customer', 'true OR t.id', ARRAY[$c1]::bigint[])" | grep -c 'does not exist')" "1" \
   "a condition smuggled in as the field is refused"
ok "$(as hd_comp -c "SELECT jsonb_array_length(crm._subject_rows('customer', 'id', ARRAY[$c1]::bigint[]))")" "1" "compliance gets the row"
# 6. explain_access tells a walled principal nothing about the records behind the wall
q "SELECT crm.add_wall('hd_wall', 'customer', \$\$name = 'rm1 customer'\$\$, ARRAY[$rm2]::bigint[])" >/dev/null
ok "$(as hd_rm2 -c "SELECT count(*) FROM crm_data.customer WHERE id = $c1")" "0" "the wall hides rm1's customer from rm2 despite the share"
ok "$(as hd_rm2 -c "SELECT string_agg(DISTINCT array_to_string(because, '; '), ' | ') FROM crm.explain_access($rm2, 'customer', $c1)")" \
   "you cannot read this record" "explain_access tells rm2 neither the share nor the wall nor what the wall matched"

# 7. the field guard reads a default as add_field wrote it, whatever the writer's DateStyle
q "SELECT crm.add_field('customer', 'hd_review', 'date', '{\"default\": \"03/04/2026\"}')" >/dev/null
q "SELECT crm.set_field_access('customer', 'hd_review', 'rm', 'read', 'read')" >/dev/null
ok "$(as hd_rm1 -c "INSERT INTO crm_data.customer (owner_id, name, hd_review) VALUES ($rm1, 'dated', '2026-04-03')" | grep -c 'permission denied to write field')" "1" \
   "an RM may not write a read-only date field"
ok "$(as hd_rm1 -c "SET DateStyle = 'ISO, DMY'" -c "INSERT INTO crm_data.customer (owner_id, name, hd_review) VALUES ($rm1, 'dated', '2026-04-03')" | grep -c 'permission denied to write field')" "1" \
   "not even with DateStyle set so that the default (03/04/2026) reads as that date"
ok "$(as hd_rm1 -c "SET DateStyle = 'ISO, DMY'" -c "INSERT INTO crm_data.customer (owner_id, name) VALUES ($rm1, 'dated')" 2>&1)" "" \
   "while leaving it at its default still works"

# 8. a date helper never returns a date that cannot be stored
ok "$(q "SELECT crm.next_anniversary('5874897-02-28'::date, '5874897-12-30'::date)" | grep -c 'date out of range')" "1" \
   "crm.next_anniversary past the last storable date is an error, not an unstorable date"

# 9. no copies through the catalogs or an expression index (an RM with a schema of its own)
q "CREATE SCHEMA hd AUTHORIZATION hd_rm1" >/dev/null
as hd_rm1 >/dev/null <<'SQL'
CREATE FUNCTION hd.note(t text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN EXECUTE format('COMMENT ON SCHEMA hd IS %L', t); RETURN 1; END $$;
CREATE FUNCTION hd.leaky(k int) RETURNS text LANGUAGE plpgsql IMMUTABLE AS
  $$ DECLARE x text; BEGIN SELECT string_agg(name, ',') INTO x FROM crm_data.customer; RETURN x; END $$;
CREATE TABLE hd.k (k int); INSERT INTO hd.k VALUES (1);
SQL
ok "$(as hd_rm1 -c "SELECT hd.note(string_agg(name, ',')) FROM crm_data.customer" | grep -c 'COMMENT inside a query reading crm_data is not allowed')" "1" \
   "DDL run by a function inside a query over crm_data (a comment keeping what it read) is refused"
ok "$(q "SELECT coalesce(obj_description('hd'::regnamespace, 'pg_namespace'), 'none')")" "none" "and nothing was stored"
ok "$(as hd_rm1 -c "SELECT hd.note('plain words')")" "1" "the same DDL outside such a query works"
ok "$(as hd_rm1 -c "CREATE INDEX ON hd.k (hd.leaky(k))" | grep -c 'not allowed')" "1" \
   "an expression index whose function reads crm_data is refused (index-only scans would hand its values to anyone)"
ok "$(as hd_rm1 -c "CREATE INDEX ON hd.k (k)" 2>&1)" "" "a plain index on one's own table works"
ok "$(as hd_rm1 -c "SELECT lo_from_bytea(0, convert_to(string_agg(name, ','), 'UTF8')) FROM crm_data.customer" | grep -c 'large object inside a query reading crm_data')" "1" \
   "a large object made from what a query over crm_data reads is refused"
ok "$(as hd_rm1 -c "SELECT lo_from_bytea(0, 'just bytes') > 0")" "t" "a large object made from anything else works"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
psql -X -q -d postgres -c "DROP ROLE IF EXISTS \"$weird_sql\"" >/dev/null 2>&1
finish
