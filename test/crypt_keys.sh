#!/usr/bin/env bash
# TAP: encryption at rest around the key file: pg_dump holds no plaintext (superuser or masked
# login), master-key rotation re-wraps data keys without touching rows, a missing / wrong /
# world-readable / unset key file is a clear error and never plaintext, the setting is closed to
# non-superusers, and crypto-shredding reaches a dump made before the shred once restored.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_crypt_keys
old=crm_crypt_keys_old
tmp=$(mktemp -d /tmp/crm_crypt_keys.XXXXXX)
chmod 755 "$tmp"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "DROP DATABASE IF EXISTS $old" -c "CREATE DATABASE $db" >/dev/null 2>&1
keys=$(psql -X -qAt -d postgres -c "SHOW crm.keyring")
cp -p "$keys" "$tmp/keys.orig"
owner=$(stat -c %U "$keys")
put_keys() {  # put_keys CONTENT: rewrite the key file (owned by the server, mode 600)
  printf '%s\n' "$1" >"$keys"; chmod 600 "$keys"; [ "$(id -u)" = 0 ] && chown "$owner" "$keys"; true
}
newkey() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
cleanup() { cp -p "$tmp/keys.orig" "$keys"; [ "$(id -u)" = 0 ] && chown "$owner" "$keys"; rm -rf "$tmp"; }
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ck_rm') THEN CREATE ROLE ck_rm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ck_tl') THEN CREATE ROLE ck_tl LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ck_comp') THEN CREATE ROLE ck_comp LOGIN; END IF;
END $$;
SELECT crm.add_field('customer', 'passport', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
SELECT crm.add_org_unit('CK HQ') AS hq \gset
SELECT crm.add_principal('ck_tl', 'TL', :hq, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('ck_rm', 'RM', :hq, ARRAY['rm'], :tl) AS rm \gset
SELECT crm.add_principal('ck_comp', 'Compliance', :hq, ARRAY['compliance']) AS comp \gset
INSERT INTO crm_data.customer (owner_id, name, passport) VALUES (:rm, 'Alice', 'E11111111'), (:rm, 'Bob', 'E22222222');
SQL
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
su() { psql -X -qAt -d $db "$@" 2>&1; }
ok "$(as ck_rm -c "SELECT string_agg(passport, ',' ORDER BY name) FROM crm_data.customer")" "E11111111,E22222222" "the owner reads plaintext"

# dumps
pg_dump -d $db -f "$tmp/full.sql" 2>"$tmp/dump.err"
ok "$?" "0" "pg_dump (superuser) of a database with encrypted fields"
ok "$(grep -c -e E11111111 -e E22222222 "$tmp/full.sql")" "0" "the dump holds no plaintext of the encrypted field"
ok "$(grep -c 'crm1\$' "$tmp/full.sql")" "2" "it holds the two ciphertexts"
ok "$(grep -c "$(grep '^k1 ' "$keys" | cut -d' ' -f2)" "$tmp/full.sql")" "0" "and no master key material"
out=$(pg_dump -U ck_tl --enable-row-security --data-only -t crm_data.customer --exclude-table-data='crm_data.customer_id_seq' -d $db 2>&1)
ok "$(echo "$out" | grep -c -e E11111111 -e E22222222)$(echo "$out" | grep -c 'crm1\$')" "00" "a masked login's dump: no plaintext and no ciphertext"

# rotation: re-wraps data keys, touches no row
rows_before=$(su -c "SELECT string_agg(ctid::text || xmin::text || passport, ',' ORDER BY id) FROM crm_data.customer")
put_keys "$(cat "$tmp/keys.orig")
k2 $(newkey)"
ok "$(su -c "SELECT current_key, keys FROM crm.keyring_status()")" "k2|2" "a second key appended: it is the current one"
ok "$(su -c "SELECT crm.rotate_master_key()")" "3" "rotate_master_key re-wraps the three data keys (2 customers, blind index)"
ok "$(su -c "SELECT string_agg(DISTINCT master_key_id, ',') FROM crm.data_key")" "k2" "all data keys are now wrapped by k2"
ok "$(su -c "SELECT string_agg(ctid::text || xmin::text || passport, ',' ORDER BY id) FROM crm_data.customer")" "$rows_before" "no row was touched"
ok "$(su -c "SELECT crm.rotate_master_key()")" "0" "rotating again has nothing to do"
put_keys "k2 $(grep '^k2 ' "$keys" | cut -d' ' -f2)"
ok "$(as ck_rm -c "SELECT string_agg(passport, ',' ORDER BY name) FROM crm_data.customer")" "E11111111,E22222222" "with the old key removed from the file, values still read"
ok "$(as ck_rm -c "SELECT count(*) FROM crm.find('customer', 'passport', 'E22222222')")" "1" "and the blind index still finds them"
good_keys=$(cat "$keys")

# a wrong, missing, world-readable or unset key file: clear errors, nothing stored in plaintext
put_keys "k2 $(newkey)"
ok "$(as ck_rm -c "SELECT passport FROM crm_data.customer LIMIT 1" | grep -c 'does not unwrap with master key "k2"')" "1" "a wrong key under the same id: a clear error"
put_keys "$good_keys"
mv "$keys" "$keys.away"
ok "$(as ck_rm -c "SELECT passport FROM crm_data.customer LIMIT 1" | grep -c 'could not read crm key file')" "1" "a missing key file: a clear error on read"
ok "$(as ck_rm -c "INSERT INTO crm_data.customer (name, passport) VALUES ('Carol', 'E33333333')" | grep -c 'could not read crm key file')" "1" "... and on write"
mv "$keys.away" "$keys"
ok "$(su -c "SELECT count(*) FROM crm_data.customer WHERE name = 'Carol'")" "0" "the refused write left nothing"
chmod 644 "$keys"
ok "$(as ck_rm -c "SELECT passport FROM crm_data.customer LIMIT 1" | grep -c 'is accessible to other users')" "1" "a key file others can read is refused"
chmod 600 "$keys"
su -c "ALTER SYSTEM SET crm.keyring = ''" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
ok "$(as ck_rm -c "INSERT INTO crm_data.customer (name, passport) VALUES ('Carol', 'E33333333')" | grep -c 'crm.keyring is not set')" "1" "no keyring: writing an encrypted field is refused"
ok "$(su -c "SELECT crm.add_field('customer', 'visa', 'text', '{\"encrypted\": true}')" | grep -c 'the keyring is not usable')" "1" "no keyring: no new encrypted field either"
su -c "ALTER SYSTEM RESET crm.keyring" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
ok "$(as ck_rm -c "SHOW crm.keyring" | grep -c 'must be superuser\|permission denied')" "1" "a non-superuser cannot read the setting"
ok "$(as ck_rm -c "SET crm.keyring = '/tmp/x'" | grep -c 'cannot be changed now\|permission denied')" "1" "nor change it"
ok "$(as ck_rm -c "SELECT * FROM crm.keyring_status()" | grep -c 'permission denied')" "1" "keyring_status is for admins"
ok "$(as ck_rm -c "SELECT crm.rotate_master_key()" | grep -c 'permission denied')" "1" "rotate_master_key is for admins"

# crypto-shredding, and a dump made before it
pg_dump -Fc -d $db -f "$tmp/before_shred.dump" 2>/dev/null
shredded_before=$(grep -c . "$keys.shredded" 2>/dev/null || echo 0)
ok "$(as ck_comp -c "SELECT crm.forget_subject(id, 'erasure request 17') FROM crm_data.customer WHERE name = 'Alice'")" "t" "compliance forgets Alice"
ok "$(as ck_rm -c "SELECT string_agg(name || '=' || passport, ',' ORDER BY name) FROM crm_data.customer")" "Alice=[erased],Bob=E22222222" "Alice's encrypted field reads [erased], Bob's is untouched"
ok "$(($(grep -c . "$keys.shredded") - shredded_before))" "1" "the key's fingerprint is listed beside the master key"
ok "$(stat -c %a "$keys.shredded")" "600" "the list is readable by the server only"
psql -X -q -d postgres -c "CREATE DATABASE $old" >/dev/null 2>&1
pg_restore -d $old "$tmp/before_shred.dump" 2>"$tmp/restore.err"
ok "$(grep -c ERROR "$tmp/restore.err")" "0" "a dump from before the shred restores"
ok "$(psql -X -qAt -U ck_rm -d $old -c "SELECT string_agg(name || '=' || passport, ',' ORDER BY name) FROM crm_data.customer" 2>&1)" "Alice=[erased],Bob=E22222222" \
   "in the restored old copy Alice is erased too (her key is listed as shredded), Bob reads"
ok "$(psql -X -qAt -d $old -c "SELECT wrapped IS NOT NULL FROM crm.data_key WHERE subject LIKE 'customer:%' ORDER BY id LIMIT 1")" "t" \
   "(the old copy still held Alice's wrapped key)"

# erasure (crm.erase_subject): the key shredded and the plain personal fields blanked; an old dump
# restored afterwards reads the encrypted field as erased (its plaintext columns are the dump's)
pg_dump -Fc -d $db -f "$tmp/before_erase.dump" 2>/dev/null
ok "$(as ck_comp -c "SELECT (crm.erase_subject(id, 'erasure request 18'))->>'customer_anonymised' FROM crm_data.customer WHERE name = 'Bob'")" "true" "compliance erases Bob"
ok "$(as ck_rm -c "SELECT string_agg(name || '=' || coalesce(passport, 'NULL'), ',' ORDER BY name) FROM crm_data.customer")" "Alice=[erased],[erased]=NULL" \
   "Bob's name is blanked and his encrypted passport gone"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $old" -c "CREATE DATABASE $old" >/dev/null 2>&1
pg_restore -d $old "$tmp/before_erase.dump" 2>"$tmp/restore2.err"
ok "$(grep -c ERROR "$tmp/restore2.err")|$(psql -X -qAt -U ck_rm -d $old -c "SELECT passport FROM crm_data.customer WHERE name = 'Bob'" 2>&1)" "0|[erased]" \
   "a dump from before the erasure restores, with Bob's passport erased (his key is shredded)"
su -c "SELECT crm.audit_seal()" >/dev/null
ok "$(su -c "SELECT ok FROM crm.audit_verify()")" "t" "the audit chain verifies after the erasure"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "DROP DATABASE IF EXISTS $old" >/dev/null 2>&1
finish
