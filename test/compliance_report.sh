#!/usr/bin/env bash
# TAP: crm.compliance_report(), each check both ways, by flipping the setting in the test cluster
# (and putting it back): ssl (with a throwaway self-signed certificate), password_encryption, a trust
# line in pg_hba.conf, row security forced, crm's triggers firing ALWAYS, grants on crm_data,
# sensitive fields readable by every RM, the keyring, superusers; who may run it.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_compliance
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cr_rm') THEN CREATE ROLE cr_rm LOGIN IN ROLE crm_user; END IF; END $$;
SELECT crm.add_org_unit('CR HQ') AS hq \gset
SELECT crm.add_principal('cr_rm', 'RM', :hq, ARRAY['rm']);
SELECT crm.audit_seal();
SQL
su() { psql -X -qAt -d $db "$@" 2>&1; }
st() { su -c "SELECT status FROM crm.compliance_report() WHERE \"check\" = '$1'"; }
reload() { psql -X -qAt -d postgres -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.5; }
datadir=$(psql -X -qAt -d postgres -c "SHOW data_directory")
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

ok "$(su -c "SELECT count(*) FROM crm.compliance_report()")" "12" "twelve checks"
ok "$(st 'crm preloaded')" "pass" "crm preloaded: pass"
ok "$(st 'row security')" "pass" "row security on every managed table: pass"
ok "$(st 'crm triggers')" "pass" "crm's triggers: pass"
ok "$(st 'grants on crm_data')" "pass" "grants on crm_data: pass"
ok "$(st 'sensitive fields')" "pass" "sensitive fields masked for RMs: pass"
ok "$(st 'audit chain')" "pass" "the audit chain verifies and was sealed today: pass"

# ssl: off fails; on with TLSv1.2 passes (a throwaway certificate), then back off
ok "$(st ssl)" "fail" "ssl off: fail"
if command -v openssl >/dev/null; then
  as_pg openssl req -new -x509 -days 2 -nodes -subj "/CN=localhost" -keyout "$datadir/crm_test.key" -out "$datadir/crm_test.crt" >/dev/null 2>&1
  as_pg chmod 600 "$datadir/crm_test.key"
  psql -X -q -d postgres -c "ALTER SYSTEM SET ssl_cert_file = 'crm_test.crt'" -c "ALTER SYSTEM SET ssl_key_file = 'crm_test.key'" \
    -c "ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'" -c "ALTER SYSTEM SET ssl = on" >/dev/null
  reload
  ok "$(st ssl)" "pass" "ssl on, TLSv1.2 minimum: pass"
  psql -X -q -d postgres -c "ALTER SYSTEM RESET ssl" -c "ALTER SYSTEM RESET ssl_cert_file" -c "ALTER SYSTEM RESET ssl_key_file" -c "ALTER SYSTEM RESET ssl_min_protocol_version" >/dev/null
  reload
  as_pg rm -f "$datadir/crm_test.key" "$datadir/crm_test.crt"
else
  ok "skipped" "skipped" "ssl on: no openssl here to make a certificate # SKIP"
fi

# password_encryption
orig=$(su -c "SHOW password_encryption")
psql -X -q -d postgres -c "ALTER SYSTEM SET password_encryption = 'md5'" >/dev/null; reload
ok "$(st password_encryption)" "fail" "password_encryption md5: fail"
psql -X -q -d postgres -c "ALTER SYSTEM SET password_encryption = 'scram-sha-256'" >/dev/null; reload
ok "$(st password_encryption)" "pass" "password_encryption scram-sha-256: pass"
psql -X -q -d postgres -c "ALTER SYSTEM RESET password_encryption" >/dev/null; reload

# pg_hba: a trust line for the network
hba=$(psql -X -qAt -d postgres -c "SHOW hba_file")
as_pg cp "$hba" "$hba.crm_test"
first=$(st 'pg_hba trust')
echo "host all all 10.11.12.0/24 trust" | as_pg tee -a "$hba" >/dev/null; reload
ok "$first|$(st 'pg_hba trust')" "pass|fail" "pg_hba.conf: no network trust passes, a host trust line fails"
ok "$(su -c "SELECT detail FROM crm.compliance_report() WHERE \"check\" = 'pg_hba trust'" | grep -c '10.11.12.0')" "1" "and the detail names the line"
as_pg cp "$hba.crm_test" "$hba"; as_pg rm -f "$hba.crm_test"; reload

# row security and triggers changed behind crm's back (the catalog edited by hand)
su -c "UPDATE pg_class SET relforcerowsecurity = false WHERE oid = 'crm_data.task'::regclass" >/dev/null
ok "$(st 'row security')" "fail" "row security not forced on a managed table: fail"
su -c "UPDATE pg_class SET relforcerowsecurity = true WHERE oid = 'crm_data.task'::regclass" >/dev/null
su -c "UPDATE pg_trigger SET tgenabled = 'O' WHERE tgname = 'crm_write_guard' AND tgrelid = 'crm_data.holding'::regclass" >/dev/null
ok "$(st 'crm triggers')" "fail" "a crm trigger not firing ALWAYS: fail"
su -c "UPDATE pg_trigger SET tgenabled = 'A' WHERE tgname = 'crm_write_guard' AND tgrelid = 'crm_data.holding'::regclass" >/dev/null

# a grant to PUBLIC on a business table
su -c "GRANT SELECT ON crm_data.customer TO PUBLIC" >/dev/null
ok "$(st 'grants on crm_data')" "fail" "a PUBLIC grant on crm_data: fail"
su -c "REVOKE SELECT ON crm_data.customer FROM PUBLIC" >/dev/null

# a sensitive field every RM may read, unencrypted
su -c "SELECT crm.set_field_access('customer', 'id_number', 'rm', 'read')" >/dev/null
ok "$(st 'sensitive fields')" "fail" "ID numbers readable by every RM: fail"
su -c "SELECT crm.reset_field_access('customer', 'id_number', 'rm')" >/dev/null
ok "$(st 'sensitive fields')" "pass" "reset: pass"

# the keyring (the test cluster has one): unset, it warns (no encrypted field here)
ok "$(st keyring)" "pass" "keyring configured: pass"
psql -X -q -d postgres -c "ALTER SYSTEM SET crm.keyring = ''" >/dev/null; reload
ok "$(st keyring)" "warn" "no keyring, no encrypted field: warn"
psql -X -q -d postgres -c "ALTER SYSTEM RESET crm.keyring" >/dev/null; reload
ok "$(st keyring)" "pass" "keyring back: pass"

# the audit chain tampered with (as a superuser past the guards, rolled back afterwards)
ok "$(su -c "BEGIN; UPDATE pg_trigger SET tgenabled = 'D' WHERE tgname LIKE 'crm_append_only%'; UPDATE crm.audit_log SET detail = '{}' WHERE id = (SELECT min(id) FROM crm.audit_log WHERE action = 'GRANT'); SELECT status FROM crm.compliance_report() WHERE \"check\" = 'audit chain'; ROLLBACK;" | grep -E '^(pass|warn|fail)$')" "fail" "an edited audit entry: fail"

# crm not preloaded (a restart without it, then back)
pgctl() { as_pg $PGBIN/pg_ctl "$@"; }
psql -X -q -d postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'plpgsql'" >/dev/null
pgctl -D "$datadir" -m fast -w -t 60 restart -o "-p $PGPORT" -l "$datadir/../server.log" >/dev/null 2>&1
ok "$(st 'crm preloaded')" "fail" "crm not preloaded: fail"
psql -X -q -d postgres -c "ALTER SYSTEM RESET shared_preload_libraries" >/dev/null
pgctl -D "$datadir" -m fast -w -t 60 restart -o "-p $PGPORT" -l "$datadir/../server.log" >/dev/null 2>&1
ok "$(st 'crm preloaded')" "pass" "preloaded again: pass"

n0=$(su -c "SELECT count(*) FROM pg_roles WHERE rolsuper")
s0=$(st superusers)
su -c "CREATE ROLE cr_second_super SUPERUSER" >/dev/null
ok "$s0" "$([ "$n0" = 1 ] && echo pass || echo warn)" "superusers: pass with one, warn with more ($n0 here)"
ok "$(st superusers)|$(su -c "SELECT detail FROM crm.compliance_report() WHERE \"check\" = 'superusers'" | grep -c cr_second_super)" "warn|1" "another superuser: warn, named"
su -c "DROP ROLE cr_second_super" >/dev/null

# who may run it
ok "$(psql -X -qAt -U cr_rm -d $db -c "SELECT count(*) FROM crm.compliance_report()" 2>&1 | grep -c 'permission denied for the compliance report')" "1" "an RM may not run it"
finish
