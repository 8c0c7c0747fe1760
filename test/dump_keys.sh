#!/usr/bin/env bash
# TAP: a dump without the key file reveals no key. The demo bank (with an encrypted, searchable
# field) is dumped with pg_dump -Fc and plain; every byte string of 16, 24, 32, 48 and 64 bytes at
# every offset of the dumps, and of every hex / base64 token in them decoded, is tried as an
# HMAC-SHA256 key against (a) the blind index of a known value, (b) the audit log's keyed hashes of
# known values, as an AES key against (c) the ciphertext of a known value, and as a master key
# against (d) a wrapped data key: no match. Then the
# key file's keys, derived the way crm derives them, are added to the candidates: every target
# matches (so the search would have found a key in the dump had there been one).
set -u
source "$(dirname "$0")/lib/tap.bash"
here=$(cd "$(dirname "$0")" && pwd)
db=crm_dump_keys
N=${CRM_TEST_DUMP_CUSTOMERS:-150}
tmp=$(mktemp -d /tmp/crm_dump_keys.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
keys=$(psql -X -qAt -d postgres -c "SHOW crm.keyring")
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<SQL || { echo "not ok 1 - set-up"; echo "1..1"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT count(*) FROM crm.generate_demo_data($N, 23);
SELECT crm.add_field('customer', 'passport', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
UPDATE crm_data.customer SET passport = 'E' || lpad(id::text, 8, '0');
SQL
q() { psql -X -qAt -d $db "$@"; }
cc -O2 -o "$tmp/keysearch" "$here/lib/keysearch.c" -lcrypto 2>"$tmp/cc.err"
ok "$?" "0" "the key-search helper builds (cc, libcrypto)"

# known demo values and what crm keeps of them (read as the maintenance role: ciphertext, hashes)
rec=$(q -c "SELECT min(id) FROM crm_data.customer WHERE id_number IS NOT NULL")
idn=$(q -c "SELECT id_number FROM crm_data.customer WHERE id = $rec")
pp=$(printf 'E%08d' "$rec")
bidx=$(q -c "SELECT encode(crm_bidx_passport, 'hex') FROM crm_data.customer WHERE id = $rec")
ct=$(q -c "SELECT passport FROM crm_data.customer WHERE id = $rec")
h_idn=$(q -c "SELECT detail->'fields'->'id_number'->>'new_hash' FROM crm.audit_log WHERE object = 'customer' AND record_id = $rec AND action = 'INSERT'")
h_pp=$(q -c "SELECT detail->'fields'->'passport'->>'new_hash' FROM crm.audit_log WHERE object = 'customer' AND record_id = $rec AND action = 'UPDATE' AND detail->'fields' ? 'passport' ORDER BY id DESC LIMIT 1")
# a hash is "<master key id>:<32 hex digits>" (src/auditkeys.c): the digits are what a key must give
h_idn=${h_idn#*:}; h_pp=${h_pp#*:}
ok "$([ -n "$idn" ] && [ ${#bidx} = 64 ] && [ ${#h_idn} = 32 ] && [ ${#h_pp} = 32 ] && [ "${ct:0:5}" = 'crm1$' ] && echo yes)" "yes" \
   "known values: customer $rec's ID number and passport, their blind index, audit hashes and ciphertext"

# The targets. The audit hash's message is made in audit_target alone (and the key crm derives for
# it in keysearch.c's audit_key_for): change them there when the audit key's derivation changes.
audit_target() {  # LABEL OBJECT FIELD VALUE HASH
  python3 -c 'import sys; o, f, v = (a.encode() for a in sys.argv[2:5]); print(sys.argv[1], "H", (o + b"\0" + f + b"\0" + v).hex(), sys.argv[5])' "$@"
}
{
  python3 -c 'import sys; print("blind_index H", (b"customer\0passport\0" + sys.argv[1].encode()).hex(), sys.argv[2])' "$pp" "$bidx"
  audit_target audit_id_number customer id_number "$idn" "$h_idn"
  audit_target audit_passport customer passport "$pp" "$h_pp"
  python3 -c '
import base64, sys
blob = base64.b64decode(sys.argv[1].split("$", 2)[2])
v = sys.argv[2].encode()
pad = 16 - len(v) % 16
print("aes_passport A", blob[:32].hex(), (v + bytes([pad]) * pad)[:16].hex())' "$ct" "$pp"
  echo "wrapped_key W $(q -c "SELECT encode(wrapped, 'hex') FROM crm.data_key WHERE subject = 'blind_index'") 00"
} >"$tmp/targets"
ok "$(wc -l <"$tmp/targets")" "5" "five targets: a blind index, two audit hashes, a ciphertext, a wrapped data key"

pg_dump -Fc -d $db -f "$tmp/dump.custom" 2>"$tmp/dump.err"; rc1=$?
pg_dump -d $db -f "$tmp/dump.sql" 2>>"$tmp/dump.err"; rc2=$?
pg_restore -f "$tmp/custom.sql" "$tmp/dump.custom" 2>>"$tmp/dump.err"; rc3=$?
ok "$rc1$rc2$rc3" "000" "pg_dump -Fc and plain (and the -Fc as text through pg_restore -f)"
ok "$(grep -c -e "$pp" "$tmp/dump.sql")|$(grep -c 'crm1\$' "$tmp/dump.sql")" "0|$N" "the plain dump holds the encrypted field as $N ciphertexts, never in clear"
python3 "$here/lib/dump_tokens.py" "$tmp" "$tmp/dump.sql" "$tmp/custom.sql" >"$tmp/tokens.out"
ok "$(awk '{print ($6 > 0)}' "$tmp/tokens.out")" "1" "hex and base64 tokens decoded from the dumps, wrapped data keys among them ($(cat "$tmp/tokens.out"))"

start=$(date +%s)
"$tmp/keysearch" "$tmp/targets" --keyring "$keys" --wrapped "$tmp/wrapped.bin" \
  "$tmp/dump.sql" "$tmp/dump.custom" "$tmp/decoded.bin" >"$tmp/search.out" 2>&1
ok "$?" "0" "the search ran ($(tail -1 "$tmp/search.out"), $(($(date +%s) - start)) s)"
res() { grep "^$1 $2 " "$tmp/search.out" | cut -d' ' -f3; }
either() { [ "$(res dump "$1")" = match ] || [ "$(res keyring "$1")" = match ] && echo match || echo none; }

# (a) and (c): the dump alone
ok "$(res dump blind_index)" "none" "(a) no byte string of the dump is the blind-index key"
ok "$(res dump aes_passport)" "none" "(c) none decrypts the encrypted field"
ok "$(res dump wrapped_key)" "none" "(d) none unwraps a data key as a master key"

# (b): the audit hashes (keyed per customer, from the key file and the customer's data key)
ok "$(res dump audit_id_number)|$(res dump audit_passport)" "none|none" "(b) none is the key of the audit log's hashes"
# with the key file
ok "$(either blind_index)|$(either aes_passport)|$(either wrapped_key)" "match|match|match" "with the key file added, the blind-index key, the data key and the master key are found (the search can fail)"
ok "$(either audit_id_number)|$(either audit_passport)" "match|match" "and the audit hashes' key"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
