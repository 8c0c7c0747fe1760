#!/usr/bin/env bash
# Encryption at rest, measured side by side in one run on the same rows:
#  - reading 100,000 encrypted ID numbers (one data key per customer) vs the same numbers in plaintext,
#    in a warm session (pgbench) and in a fresh session (every data key unwrapped once);
#  - writing them (encrypting, one new data key per customer);
#  - the blind-index lookup behind crm.find(): its plan, and its speed vs an indexed plaintext lookup.
set -euo pipefail
N=${CRM_BENCH_CRYPT_CUSTOMERS:-100000}
T=${CRM_BENCH_SECONDS:-8}
R=${CRM_BENCH_ROUNDS:-3}
db=crm_bench_crypt
q() { psql -X -qAt -d $db "$@"; }
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
q -c "SELECT * FROM crm.generate_demo_data($N, 7)" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_officer') THEN CREATE ROLE bench_officer LOGIN; END IF;
END $$;
SELECT crm.add_role('bench_officer');
SELECT crm.grant_object('bench_officer', '*', ARRAY['read'], 'all');
SELECT crm.add_principal('bench_officer', 'Officer', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), ARRAY['bench_officer']);
SELECT crm.add_field('customer', 'id_enc', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
SELECT crm.set_field_access('customer', 'id_number', 'bench_officer', 'read');
SELECT crm.set_field_access('customer', 'id_enc', 'bench_officer', 'read');
CREATE INDEX ON crm_data.customer (id_number);
SQL
# writing: plaintext copy vs encrypted copy of the same values (superuser; the trigger encrypts)
q -c "ALTER TABLE crm_data.customer ADD COLUMN id_copy text" >/dev/null
w_plain=$( { echo '\timing on'; echo "UPDATE crm_data.customer SET id_copy = id_number WHERE id_number IS NOT NULL;"; } | q 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
w_enc=$( { echo '\timing on'; echo "UPDATE crm_data.customer SET id_enc = id_number WHERE id_number IS NOT NULL;"; } | q 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
q -c "ALTER TABLE crm_data.customer DROP COLUMN id_copy" -c "VACUUM ANALYZE crm_data.customer" >/dev/null
rows=$(q -c "SELECT count(id_enc) FROM crm_data.customer")
keys=$(q -c "SELECT count(*) FROM crm.data_key WHERE customer_id IS NOT NULL")
sample=$(q -c "SELECT id_number FROM crm_data.customer WHERE id_number IS NOT NULL ORDER BY id LIMIT 1 OFFSET 777")
same=$(psql -X -qAt -U bench_officer -d $db -c "SELECT count(*) FROM crm_data.customer WHERE id_enc IS DISTINCT FROM id_number")

dir=$(mktemp -d)
echo "SELECT id_enc FROM crm_data.customer WHERE id_number IS NOT NULL;" > "$dir/enc.sql"
echo "SELECT id_number FROM crm_data.customer WHERE id_number IS NOT NULL;" > "$dir/plain.sql"
echo "SELECT id FROM crm.find('customer', 'id_enc', '$sample');" > "$dir/find.sql"
echo "SELECT id FROM crm_data.customer WHERE id_number = '$sample';" > "$dir/eq.sql"
tps() { pgbench -n -M prepared -U bench_officer -c 1 -T "$T" -f "$1" $db 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
pair() {  # fileA fileB: medians of tpsA, tpsB and per-round tpsA/tpsB
  local as=() bs=() rs=() a b
  for i in $(seq 1 "$R"); do
    a=$(tps "$1"); b=$(tps "$2"); as+=("$a"); bs+=("$b"); rs+=("$(python3 -c "print($a/$b)")")
  done
  python3 -c "import statistics as s; print(f'{s.median([${as[*]/%/,}]):.2f} {s.median([${bs[*]/%/,}]):.2f} {s.median([${rs[*]/%/,}]):.3f}')"
}
read e_tps p_tps read_ratio < <(pair "$dir/enc.sql" "$dir/plain.sql")
read eq_tps f_tps find_ratio < <(pair "$dir/eq.sql" "$dir/find.sql")
# blind-index key rotation: crm.find while two keys are in use (begun, nothing rebuilt yet: every
# lookup hashes under both), the rebuild of every crm_bidx_* column (timed), crm.find after it
v=$(q -c "SELECT crm._bidx_rotation_begin(1000)")
read eq_tps2 f_tps2 find_ratio2 < <(pair "$dir/eq.sql" "$dir/find.sql")
rot_ms=$( { echo '\timing on'; echo "CALL crm.rotate_blind_index_key(1000);"; } | q 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
rot_rows=$(q -c "SELECT sum(rows_done) FROM crm.bidx_rebuild WHERE version = $v")
rot_keys=$(q -c "SELECT string_agg(subject, ',') FROM crm.data_key WHERE subject LIKE 'blind%'")
read eq_tps3 f_tps3 find_ratio3 < <(pair "$dir/eq.sql" "$dir/find.sql")
# a fresh session: every customer's data key is read and unwrapped once
cold() { { echo '\timing on'; echo "SELECT count(v) FROM (SELECT $1 AS v FROM crm_data.customer WHERE id_number IS NOT NULL) s;"; } |
         psql -X -qAt -U bench_officer -d $db 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'; }
c_plain=$(cold id_number); c_enc=$(cold id_enc)
# (crm._blind_index is not granted to readers: the hash is computed here as the superuser)
h=$(q -c "SELECT encode(crm._blind_index('customer', 'id_enc', '$sample'), 'hex')")
plan=$(psql -X -qAt -U bench_officer -d $db -c "EXPLAIN (COSTS OFF) SELECT t.id FROM crm_data.customer t WHERE t.crm_bidx_id_enc = ANY (ARRAY['\\x$h'::bytea]) ORDER BY t.id")
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db"
rm -rf "$dir"
cat <<MD
## Encryption at rest (\`bench/crypt.sh\`, $N customers, ${T}s pgbench runs, $R interleaved rounds, medians)

$rows customers carry their ID number twice: in plaintext (\`id_number\`) and encrypted (\`id_enc\`,
AES-256-CBC + HMAC under $keys per-customer data keys). A principal who may read both reads them
(rows where the two differ after decryption: $same).

| reading $rows values | plaintext | encrypted | encrypted rows/s ÷ plaintext rows/s |
|---|---|---|---|
| warm session (pgbench, data keys cached), queries/s | $p_tps ($(python3 -c "print(f'{$p_tps*$rows:,.0f}')") rows/s) | $e_tps ($(python3 -c "print(f'{$e_tps*$rows:,.0f}')") rows/s) | **$read_ratio** |
| fresh session (each data key fetched and unwrapped once), ms | $c_plain | $c_enc | **$(python3 -c "print(f'{$c_plain/$c_enc:.3f}')")** |

Writing the same values (one UPDATE of all rows, superuser): plaintext $w_plain ms, encrypted
$w_enc ms (includes making $keys data keys): encrypted speed ÷ plaintext speed **$(python3 -c "print(f'{$w_plain/$w_enc:.3f}')")**.

Equality search: \`crm.find('customer', 'id_enc', …)\` through the blind index vs
\`WHERE id_number = …\` on an indexed plaintext column: $f_tps vs $eq_tps queries/s (crm.find
runs at **$(python3 -c "print(f'{1/$find_ratio:.3f}')")** of the plain lookup's speed: PL/pgSQL, dynamic SQL, HMAC, the row as jsonb). Plan of the blind-index query crm.find() runs, for this reader:

\`\`\`
$plan
\`\`\`

Blind-index key rotation (\`CALL crm.rotate_blind_index_key(1000)\`): $rot_rows records re-indexed in
$(python3 -c "print(f'{$rot_ms/1000:.1f}')") s ($(python3 -c "print(f'{$rot_rows/($rot_ms/1000):,.0f}')") records/s, committed batches of 1,000); keys after: $rot_keys.
crm.find ÷ the plain lookup, each pair measured in interleaved rounds like the one above:

| blind-index keys | crm.find q/s | plain lookup q/s | crm.find ÷ plain |
|---|---|---|---|
| one (before the rotation) | $f_tps | $eq_tps | **$(python3 -c "print(f'{1/$find_ratio:.3f}')")** |
| two (rotation under way: hashed under both) | $f_tps2 | $eq_tps2 | **$(python3 -c "print(f'{1/$find_ratio2:.3f}')")** |
| one (after the rotation) | $f_tps3 | $eq_tps3 | **$(python3 -c "print(f'{1/$find_ratio3:.3f}')")** |

Command: \`make bench\` (or \`bash bench/crypt.sh\` against a running cluster with crm.keyring set).
MD
