#!/usr/bin/env bash
# TAP: the audit log's keys (issue #17). No key material in any table or in pg_dump's output; the
# hashes of protected values are keyed per customer (children's too), so that after
# crm.erase_subject the former ID number matches no entry, in the live database and in a dump made
# before the erasure and restored afterwards, while crm.audit_verify() still passes in both; audit
# key rotation by appending a master key (old entries still match); a missing, world-readable,
# malformed or unset key file, or a needed key removed from it: clear errors, nothing written;
# migration of a 0.1 database whose audit key was in the table crm.audit_key.
# Runs with a key file of its own (crm.keyring is set back at the end).
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_audit_keys; old=crm_audit_keys_old; mig=crm_audit_keys_mig
tmp=$(mktemp -d /tmp/crm_audit_keys.XXXXXX)
chmod 755 "$tmp"
mkdir "$tmp/keys"
keys=$tmp/keys/master.keys
owner=postgres
newkey() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
put_keys() {  # put_keys CONTENT: rewrite the key file (owned by the server, mode 600)
  printf '%s\n' "$1" >"$keys"; chmod 600 "$keys"; [ "$(id -u)" = 0 ] && chown "$owner" "$keys"; true
}
k1=$(newkey)
put_keys "k1 $k1"
chmod 700 "$tmp/keys"; [ "$(id -u)" = 0 ] && chown "$owner" "$tmp/keys"
reload() { psql -X -qAt -d postgres -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.5; }
psql -X -q -d postgres -c "ALTER SYSTEM SET crm.keyring = '$keys'" >/dev/null; reload
dropdbs() { psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "DROP DATABASE IF EXISTS $old" -c "DROP DATABASE IF EXISTS $mig" >/dev/null 2>&1; }
cleanup() { dropdbs; psql -X -q -d postgres -c "ALTER SYSTEM RESET crm.keyring" >/dev/null; reload; rm -rf "$tmp"; }
trap cleanup EXIT
dropdbs
psql -X -q -d postgres -c "CREATE DATABASE $db" >/dev/null

psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null 2>"$tmp/setup.err" <<'SQL' || { echo "not ok 1 - set-up"; cat "$tmp/setup.err"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ak_rm') THEN CREATE ROLE ak_rm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ak_comp') THEN CREATE ROLE ak_comp LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ak_aud') THEN CREATE ROLE ak_aud LOGIN; END IF;
END $$;
GRANT crm_auditor TO ak_aud;
SELECT crm.add_field('customer', 'passport', 'text', '{"encrypted": true, "sensitivity": "sensitive"}');
SELECT crm.create_object('loan', 'Loan', 'private', '{}');
SELECT crm.add_field('loan', 'customer_id', 'reference', '{"object": "customer", "inherit_access": true}');
SELECT crm.add_field('loan', 'borrower_id', 'text', '{"sensitivity": "sensitive"}');
SELECT crm.create_object('note', 'Branch note', 'private', '{}');
SELECT crm.add_field('note', 'code', 'text', '{"sensitivity": "sensitive"}');
SELECT crm.add_org_unit('AK HQ') AS hq \gset
SELECT crm.add_principal('ak_rm', 'RM', :hq, ARRAY['rm']) AS rm \gset
SELECT crm.add_principal('ak_comp', 'Compliance', :hq, ARRAY['compliance']) AS comp \gset
SELECT crm.add_principal('ak_aud', 'Auditor', :hq, ARRAY['auditor']) AS aud \gset
SET ROLE ak_rm;
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, passport, mobile)
  VALUES (:rm, 'Alice', 'id_card', '11010519491231002X', 'E11111111', '13812345678'),
         (:rm, 'Bob', 'id_card', '110105198001010016', 'E22222222', '13812345679');
INSERT INTO crm_data.loan (owner_id, customer_id, borrower_id)
  SELECT :rm, id, '11010519491231002X' FROM crm_data.customer WHERE name = 'Alice';
INSERT INTO crm_data.note (owner_id, code) VALUES (:rm, 'N-0001');
RESET ROLE;
SQL
as() { local who=$1; shift; psql -X -qAt -v VERBOSITY=verbose -U "$who" -d "$1" "${@:2}" 2>&1; }
su() { psql -X -qAt -v VERBOSITY=verbose -d "$@" 2>&1; }
alice=$(su $db -c "SELECT id FROM crm_data.customer WHERE name = 'Alice'")
bob=$(su $db -c "SELECT id FROM crm_data.customer WHERE name = 'Bob'")
# entries of a database holding any of the hashes of a value: matches DB OBJECT FIELD VALUE CUSTOMER
matches() {
  su "$1" -c "SELECT count(*) FROM crm.audit_log l, jsonb_each(CASE WHEN jsonb_typeof(l.detail -> 'fields') = 'object' THEN l.detail -> 'fields' END) f
               WHERE f.key = '$3' AND (f.value ->> 'new_hash' = ANY (crm.audit_hashes('$2', '$3', '$4', $5))
                                       OR f.value ->> 'old_hash' = ANY (crm.audit_hashes('$2', '$3', '$4', $5)))"
}
hash_of() {  # hash_of DB OBJECT FIELD: the new_hash of the field in the object's first INSERT entry
  su "$1" -c "SELECT l.detail #>> '{fields,$3,new_hash}' FROM crm.audit_log l WHERE l.action = 'INSERT' AND l.object = '$2' ORDER BY l.id LIMIT 1"
}

# 1. no key in any table, nor in a dump
ok "$(su $db -c "SELECT to_regclass('crm.audit_key') IS NULL")" "t" "a fresh install has no table crm.audit_key"
ok "$(su $db -c "SELECT count(*) FROM pg_settings WHERE name LIKE 'crm.%' AND setting ~* '[0-9a-f]{64}'")" "0" "no crm setting holds key material"
pg_dump -d $db -f "$tmp/full.sql" 2>/dev/null
derived() {  # derived HEXKEY LABEL: HKDF-SHA256(key, salt "crm keyring v1", info LABEL), in hex
  python3 -c "import hmac,hashlib,sys; prk=hmac.new(b'crm keyring v1', bytes.fromhex(sys.argv[1]), hashlib.sha256).digest(); print(hmac.new(prk, sys.argv[2].encode()+b'\x01', hashlib.sha256).hexdigest())" "$1" "$2"
}
ok "$(grep -c -i -e "$k1" -e "$(derived "$k1" 'crm audit v1')" -e "$(derived "$k1" 'crm audit digest v1')" "$tmp/full.sql")" "0" \
   "pg_dump holds neither the master key nor the audit keys derived from it"
ok "$(grep -c -e 'audit_key' -e E11111111 "$tmp/full.sql")" "0" "nor a key table or an encrypted value in clear"

# 2. hashes keyed per customer; records with no customer keyed per object
h=$(hash_of $db customer id_number)
ok "$(echo "$h" | grep -cE '^k1:[0-9a-f]{32}$')" "1" "a hashed value names the master key it was made under: $h"
ok "$(as ak_aud $db -c "SELECT crm.audit_hash('customer', 'id_number', '11010519491231002X', $alice)")" "$h" "an auditor computes it again for that customer"
ok "$(as ak_aud $db -c "SELECT crm.audit_hash('customer', 'id_number', '11010519491231002X', $bob) <> '$h'")" "t" "the same value of another customer hashes differently"
ok "$(matches $db loan borrower_id 11010519491231002X $alice)" "1" "a child record's value is keyed by its customer (the loan's borrower id matches under Alice)"
ok "$(matches $db loan borrower_id 11010519491231002X $bob)" "0" "and not under another customer"
ok "$(matches $db customer passport E11111111 $alice)" "1" "an encrypted field's value is hashed the same way"
ok "$(as ak_aud $db -c "SELECT crm.audit_hash('note', 'code', 'N-0001')")" "$(hash_of $db note code)" "a record with no customer: keyed by its object (3-argument form)"
ok "$(as ak_aud $db -c "SELECT crm.audit_hash('customer', 'id_number', '11010519491231002X')" | grep -c '22004: crm.audit_hash needs the customer')" "1" \
   "a customer's value without the customer: a clear error"
ok "$(as ak_rm $db -c "SELECT crm.audit_hash('note', 'code', 'N-0001')" | grep -c 'permission denied')" "1" "audit_hash is for auditors"
ok "$(as ak_aud $db -c "SELECT count(*) FROM crm.data_key" | grep -c 'permission denied')" "1" "auditors see no (wrapped) key"

# the example of docs/audit.md, for Alice
example=$(sed -n '/^  SELECT l.id FROM crm.audit_log l,$/,/;$/p' "$(dirname "$0")/../docs/audit.md" | sed "s/, 42)/, $alice)/g")
ok "$(su $db -c "$example" | wc -l)|$(echo "$example" | grep -c ", $alice))")" "1|2" "the matching query of docs/audit.md finds Alice's entry"

# 3. rotation: a key appended to the key file is used for new entries; old ones still match
digest1=$(su $db -c "SELECT crm.audit_digest()")
ok "$(echo "$digest1" | grep -c '"key": "k1"')" "1" "a digest names the master key that signed it"
ok "$(python3 -c "
import hmac, hashlib, json, sys
d = json.loads(sys.argv[1]); k = bytes.fromhex(sys.argv[2])
dk = bytes.fromhex(sys.argv[3])
msg = 'crm-audit-digest|v2|%s|%s|%s|%s' % (d['key'], d['block'], d['hash'], d['sealed_at'])
print(hmac.new(dk, b'digest\0v1\0' + msg.encode(), hashlib.sha256).hexdigest()[:32] == d['signature'])" "$digest1" "$k1" "$(derived "$k1" 'crm audit digest v1')")" "True" \
   "its signature is HMAC-SHA256 under HKDF-SHA256(k1, 'crm audit digest v1'), as docs/audit.md says"
k2=$(newkey)
put_keys "k1 $k1
k2 $k2"
su $db -c "UPDATE crm_data.customer SET mobile = '13912345678' WHERE id = $alice" >/dev/null
ok "$(su $db -c "SELECT l.detail #>> '{fields,mobile,new_hash}' FROM crm.audit_log l WHERE l.action = 'UPDATE' AND l.record_id = $alice AND l.object = 'customer' ORDER BY l.id DESC LIMIT 1" | cut -d: -f1)" "k2" \
   "after a key is appended, new entries are hashed under it"
ok "$(su $db -c "SELECT crm.audit_hash('customer', 'mobile', '13912345678', $alice) LIKE 'k2:%', array_length(crm.audit_hashes('customer', 'mobile', '13912345678', $alice), 1)")" "t|2" \
   "audit_hash gives the current key's hash, audit_hashes one per key"
ok "$(matches $db customer id_number 11010519491231002X $alice)" "1" "the entry made under k1 still matches"
ok "$(matches $db customer mobile 13812345678 $alice)" "2" "as does the old mobile: its k1 INSERT entry and its k2 UPDATE entry (old value)"
digest2=$(su $db -c "SELECT crm.audit_digest()")
ok "$(echo "$digest2" | grep -c '"key": "k2"')|$(su $db -c "SELECT ok FROM crm.audit_verify('$digest1'::jsonb)")|$(su $db -c "SELECT ok FROM crm.audit_verify('$digest2'::jsonb)")" "1|t|t" \
   "new digests are signed under k2; the k1 digest still verifies"
ok "$(su $db -c "SELECT crm.audit_verify(jsonb_set('$digest2', '{key}', '\"k1\"'))" | grep -c 'signature does not match')" "1" "a digest whose key is swapped is refused"
ok "$(su $db -c "SELECT crm.audit_verify('$digest2'::jsonb - 'key')" | grep -c 'legacy audit key, which is not in the crm key file')" "1" \
   "one whose key is removed is taken as a 0.1 digest, and refused without the legacy key"

# 4. erasure: no hash of the customer matches any more, here and in a dump made before
pg_dump -Fc -d $db -f "$tmp/before_erase.dump" 2>/dev/null
ok "$(matches $db customer id_number 11010519491231002X $alice)" "1" "before the erasure, Alice's ID number matches her entry"
ok "$(as ak_comp $db -c "SELECT (crm.erase_subject($alice, 'erasure request 17'))->>'customer_anonymised'")" "true" "compliance erases Alice"
ok "$(matches $db customer id_number 11010519491231002X $alice)|$(su $db -c "$example" | grep -c .)" "0|0" "her former ID number now matches no entry (nor by the docs' query)"
ok "$(matches $db customer passport E11111111 $alice)|$(matches $db loan borrower_id 11010519491231002X $alice)|$(matches $db customer mobile 13812345678 $alice)" "0|0|0" \
   "nor her passport, her loan's borrower id, or her old mobile"
ok "$(su $db -c "SELECT crm.audit_hash('customer', 'id_number', '11010519491231002X', $alice) IS NULL, cardinality(crm.audit_hashes('customer', 'id_number', '11010519491231002X', $alice))")" "t|0" \
   "audit_hash is NULL and audit_hashes empty for her"
ok "$(su $db -c "SELECT count(*) FROM crm.audit_log l WHERE l.record_id = $alice AND l.object = 'customer' AND l.detail #>> '{fields,id_number,new_hash}' = '$h'")" "1" \
   "(her entry still holds the hash: the log was not rewritten)"
ok "$(matches $db customer id_number 110105198001010016 $bob)" "1" "Bob's ID number still matches his entry"
su $db -c "SELECT crm.audit_seal()" >/dev/null
ok "$(su $db -c "SELECT ok FROM crm.audit_verify()")" "t" "audit_verify passes after the erasure"
psql -X -q -d postgres -c "CREATE DATABASE $old" >/dev/null
pg_restore -d $old "$tmp/before_erase.dump" 2>"$tmp/restore.err"
ok "$(grep -c ERROR "$tmp/restore.err")" "0" "the dump made before the erasure restores (same key file, with its shredded-key list)"
ok "$(su $old -c "SELECT count(*) FROM crm.audit_log l WHERE l.detail #>> '{fields,id_number,new_hash}' = '$h'")|$(matches $old customer id_number 11010519491231002X $alice)" "1|0" \
   "in the restored copy her entry holds the hash, and her ID number matches no entry"
ok "$(matches $old customer passport E11111111 $alice)|$(matches $old loan borrower_id 11010519491231002X $alice)" "0|0" "nor her passport or her loan's"
ok "$(matches $old customer id_number 110105198001010016 $bob)" "1" "Bob's still matches there"
su $old -c "SELECT crm.audit_seal()" >/dev/null
ok "$(su $old -c "SELECT ok FROM crm.audit_verify()")" "t" "audit_verify passes in the restored copy"

# 5. a bad key file: clear errors with SQLSTATE, nothing written
count() { su $db -c "SELECT (SELECT count(*) FROM crm.audit_log l WHERE l.record_id = $bob AND l.object = 'customer') || '/' || (SELECT mobile FROM crm_data.customer WHERE id = $bob)"; }
upd="UPDATE crm_data.customer SET mobile = '13700000000' WHERE id = $bob"
before=$(count)
mv "$keys" "$keys.away"
ok "$(su $db -c "$upd" | grep -c '58P01: could not read crm key file')" "1" "a missing key file: an audited write of a protected field fails (58P01)"
ok "$(as ak_aud $db -c "SELECT crm.audit_hashes('note', 'code', 'N-0001')" | grep -c '58P01: could not read crm key file')" "1" "and so does matching"
mv "$keys.away" "$keys"
chmod 644 "$keys"
ok "$(su $db -c "$upd" | grep -c 'F0000: crm key file .* is accessible to other users')" "1" "a key file others can read: refused (F0000)"
chmod 600 "$keys"
good=$(cat "$keys")
put_keys "k1 $k1
k2 not-hex"
ok "$(su $db -c "$upd" | grep -c 'F0000: invalid line 2 in crm key file')" "1" "a malformed key file: refused (F0000), naming the line"
put_keys "k2 $k2"
ok "$(su $db -c "$upd" | grep -c 'F0000: master key "k1" is not in the crm key file')" "1" "a master key removed while Bob's data key needs it: refused (F0000)"
ok "$(su $db -c "SELECT crm.audit_verify('$digest1'::jsonb)" | grep -c 'F0000: master key "k1" of the digest is not in the crm key file')" "1" "a digest signed with a removed key: refused"
psql -X -q -d postgres -c "ALTER SYSTEM SET crm.keyring = ''" >/dev/null; reload
ok "$(su $db -c "$upd" | grep -c '55000: crm.keyring is not set')" "1" "no key file at all: refused (55000)"
psql -X -q -d postgres -c "ALTER SYSTEM SET crm.keyring = '$keys'" >/dev/null; reload
put_keys "$good"
ok "$(count)" "$before" "none of the refused writes left an entry or a change"
ok "$(su $db -c "$upd; SELECT count(*) FROM crm.audit_log l WHERE l.record_id = $bob AND l.detail #>> '{fields,mobile,new_hash}' LIKE 'k2:%'")" "1" "with the key file back, the write goes through"

# a session that has used a customer's key, while another forgets the customer: no stale key
out=$(psql -X -qAt -d $db 2>&1 <<SQL
INSERT INTO crm_data.customer (owner_id, name, mobile) SELECT owner_id, 'Carol', '13612345678' FROM crm_data.customer WHERE id = $bob RETURNING id \gset
SELECT crm.audit_hash('customer', 'mobile', '13612345678', :id) IS NOT NULL AS before;
\! psql -X -qAt -U ak_comp -d $db -c "SELECT crm.forget_subject(id, 'erasure request 19') FROM crm_data.customer WHERE name = 'Carol'"
SELECT crm.audit_hash('customer', 'mobile', '13612345678', :id) IS NULL AS after;
UPDATE crm_data.customer SET mobile = '13612345670' WHERE id = :id;
SELECT l.detail #>> '{fields,mobile,new_hash}' FROM crm.audit_log l WHERE l.record_id = :id AND l.object = 'customer' AND l.action = 'UPDATE';
SQL
)
ok "$(echo $out)" "t t t erased" "a session that hashed Carol's values computes none once another session forgot her, and logs \"erased\""

# 6. migration of a 0.1 database: its audit key in crm.audit_key, its hashes and digests under it
legacy=$(newkey)
psql -X -q -d postgres -c "CREATE DATABASE $mig" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d $mig >/dev/null 2>"$tmp/mig.err" <<SQL || { echo "not ok - migration set-up"; cat "$tmp/mig.err"; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
CREATE TABLE crm.audit_key (one boolean PRIMARY KEY DEFAULT true CHECK (one), key bytea NOT NULL);
INSERT INTO crm.audit_key VALUES (true, '\\x$legacy');
-- a member of the extension, as CREATE EXTENSION made it in 0.1 (crm refuses ALTER EXTENSION crm ADD)
INSERT INTO pg_depend (classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype)
  SELECT 'pg_class'::regclass, 'crm.audit_key'::regclass, 0, 'pg_extension'::regclass, e.oid, 0, 'e' FROM pg_extension e WHERE e.extname = 'crm';
-- an entry written by 0.1: HMAC-SHA256(audit key, object NUL field NUL value), 128 bits, no key id
INSERT INTO crm.audit_log (era, action, object, record_id, detail)
  SELECT crm._audit_era(), 'UPDATE', 'note', 1, jsonb_build_object('fields', jsonb_build_object('code', jsonb_build_object('new_hash',
         left(encode(public.hmac(convert_to('note', 'UTF8') || '\x00'::bytea || convert_to('code', 'UTF8') || '\x00'::bytea || convert_to('N-0042', 'UTF8'),
                                 k.key, 'sha256'), 'hex'), 32)))) FROM crm.audit_key k;
SELECT crm.audit_seal();
SQL
d=$(su $mig -c "SELECT crm.audit_digest()")
# a 0.1 digest of the same head: no key named, the message of 0.1, signed under the legacy key
old_digest=$(su $mig -c "SELECT jsonb_set('$d'::jsonb - 'key', '{signature}', to_jsonb(left(encode(public.hmac(
   convert_to('digest', 'UTF8') || '\x00'::bytea || convert_to('v1', 'UTF8') || '\x00'::bytea
   || convert_to(format('crm-audit-digest|%s|%s|%s', '$d'::jsonb->>'block', '$d'::jsonb->>'hash', '$d'::jsonb->>'sealed_at'), 'UTF8'),
   k.key, 'sha256'), 'hex'), 32))) FROM crm.audit_key k")
ok "$(matches $mig note code N-0042 NULL)" "0" "before the migration, the 0.1 hash matches nothing (its key is not in the key file)"
ok "$(su $mig -c "SELECT crm.audit_legacy_key_drop()" | grep -c '55000: the crm key file .* holds no legacy audit key')|$(su $mig -c "SELECT to_regclass('crm.audit_key') IS NOT NULL")" "1|t" \
   "dropping the table's key before the key file holds it is refused, the table stays"
ok "$(as ak_aud $mig -c "SELECT crm.audit_legacy_key()" | grep -c 'permission denied')" "1" "only a superuser may print the key"
line=$(su $mig -c "SELECT crm.audit_legacy_key()")
ok "$line" "legacy:audit $legacy" "crm.audit_legacy_key() prints the line for the key file"
put_keys "$good
legacy:audit $(newkey)"
ok "$(su $mig -c "SELECT crm.audit_legacy_key_drop()" | grep -c 'is not the key in crm.audit_key')" "1" "a different legacy key in the key file: refused"
put_keys "$good
$line"
ok "$(su $db -c "SELECT current_key, keys FROM crm.keyring_status()")" "k2|2" "the legacy line is no master key (k2 stays current)"
ok "$(matches $mig note code N-0042 NULL)" "1" "with the legacy key in the key file, the 0.1 hash matches"
ok "$(su $mig -c "SELECT ok FROM crm.audit_verify('$old_digest'::jsonb)")" "t" "and the 0.1 digest verifies"
ok "$(su $mig -c "SELECT count(*) FROM generate_series(0, 130) n WHERE (crm.audit_hashes('note', 'code', repeat('x', n)))[1] =
        left(encode(public.hmac(convert_to('note', 'UTF8') || '\x00'::bytea || convert_to('code', 'UTF8') || '\x00'::bytea || convert_to(repeat('x', n), 'UTF8'),
                                '\x$legacy'::bytea, 'sha256'), 'hex'), 32)")" "131" \
   "crm's HMAC-SHA256 agrees with pgcrypto's for 0..130-byte values (around SHA-256's padding)"
ok "$(su $mig -c "SELECT crm.audit_legacy_key_drop()")|$(su $mig -c "SELECT to_regclass('crm.audit_key') IS NULL")" "t|t" "then the table is dropped"
ok "$(su $mig -c "SELECT crm.audit_legacy_key_drop()")" "f" "(a second call has nothing to do)"
pg_dump -d $mig -f "$tmp/mig.sql" 2>/dev/null
grep -i -e "$legacy" -e 'audit_key' "$tmp/mig.sql" | cut -c1-300 | sed 's/^/# /'
ok "$(grep -c -i -e "$legacy" -e 'audit_key' "$tmp/mig.sql")" "0" "a dump of the migrated database holds no copy of the old key"
ok "$(matches $mig note code N-0042 NULL)|$(su $mig -c "SELECT ok FROM crm.audit_verify()")" "1|t" "old hashes still match, and the chain verifies"
finish
