#!/usr/bin/env bash
# TAP: DROP EXTENSION never silently strips protection from data that stays. While crm_data holds
# business tables, DROP EXTENSION crm (CASCADE or not, or through an extension crm requires) is
# refused with a hint; the one way through is crm.uninstall(reason) in the same transaction, for
# superusers only, recorded in the audit log, and lost with a rolled-back savepoint.
# Needs PGHOST/PGPORT/PGUSER of a running cluster with crm installed (make test provides them).
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_dropext
q() { psql -X -qAt -d $db "$@" 2>&1; }
err() { q "$@" | grep -m1 -E '^(psql:.*)?ERROR' | sed 's/^psql:[^E]*//'; }
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null 2>&1
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
q -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dropext_owner') THEN CREATE ROLE dropext_owner LOGIN; END IF; END \$\$" \
  -c "GRANT crm_admin TO dropext_owner" >/dev/null
customers=$(q -c "SELECT crm.add_org_unit('Head office', NULL, 'head_office')" \
              -c "SELECT crm.add_principal('dropext_owner', 'Owner', (SELECT min(id) FROM crm.org_unit), ARRAY['admin'])" \
              -c "INSERT INTO crm_data.customer (owner_id, name) SELECT id, '客户' FROM crm.principal WHERE login = 'dropext_owner'" \
              -c "SELECT count(*) FROM crm_data.customer" | tail -1)
ok "$customers" 1 "set-up: a customer in crm_data"

refused="ERROR:  cannot drop extension crm while schema crm_data holds 8 business tables (consent, customer, holding, interaction, opportunity, ...)"
ok "$(err -c "DROP EXTENSION crm")" "$refused" "DROP EXTENSION crm is refused while business tables exist"
ok "$(err -c "DROP EXTENSION crm CASCADE")" "$refused" "DROP EXTENSION crm CASCADE is refused too"
ok "$(q -c "DROP EXTENSION crm CASCADE" | grep -c "HINT:  .*BEGIN; SELECT crm.uninstall('reason'); DROP EXTENSION crm CASCADE; COMMIT;")" 1 \
   "the refusal's hint gives the way to uninstall"
ok "$(err -c "DROP EXTENSION pgcrypto CASCADE")" "$refused" "dropping pgcrypto with CASCADE (which would take crm) is refused"
ok "$(err -c "DROP EXTENSION IF EXISTS plpgsql, crm CASCADE")" "$refused" "crm named among other extensions is refused"
ok "$(err -c "SELECT crm.uninstall('no transaction')")" "ERROR:  crm.uninstall must be called in a transaction block" \
   "crm.uninstall outside a transaction block is refused (it could not cover the DROP)"
ok "$(err -c "BEGIN" -c "SELECT crm.uninstall('  ')")" "ERROR:  crm.uninstall needs a reason" "crm.uninstall needs a reason"
ok "$(err -c "BEGIN" -c "SELECT crm.uninstall('x')" -c "COMMIT" -c "DROP EXTENSION crm CASCADE")" "$refused" \
   "the permission ends with its transaction"
ok "$(err -c "BEGIN" -c "SAVEPOINT s" -c "SELECT crm.uninstall('rolled back')" -c "ROLLBACK TO SAVEPOINT s" -c "DROP EXTENSION crm CASCADE")" "$refused" \
   "a rolled-back savepoint takes the permission with its audit event"
# a non-superuser (a crm admin who owns nothing of the extension) can neither uninstall nor drop
ok "$(err -U dropext_owner -c "BEGIN" -c "SELECT crm.uninstall('not mine')")" "ERROR:  permission denied for function uninstall" \
   "a crm admin cannot call crm.uninstall"
ok "$(q -c "SELECT string_agg(detail ->> 'reason', ',') FROM crm.audit_log WHERE action = 'MAINTENANCE' AND detail ->> 'operation' = 'uninstall'")" x \
   "only the committed call is recorded (not the rolled-back one, nor the refused ones)"
ok "$(q -c "SELECT count(*) FROM pg_extension WHERE extname = 'crm'")" 1 "crm is still installed"

# the documented way: docs/backups.md's block, as written
doc=$(cd "$(dirname "$0")/.." && pwd)/docs/backups.md
sql=$(awk '$0 == "<!-- run: uninstall -->" {f = 1; next} f && /^```/ {if (inb) exit; inb = 1; next} f && inb {print}' "$doc")
ok "$(echo "$sql" | grep -c 'crm.uninstall')" 1 "docs/backups.md has the uninstall block"
echo "$sql" | PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null 2>&1
ok "$(q -c "SELECT count(*) FROM pg_extension WHERE extname = 'crm'")" 0 "crm.uninstall then DROP EXTENSION crm CASCADE in one transaction uninstalls"
ok "$(q -c "SELECT principal_id IS NULL, session_user_name, detail ->> 'reason' FROM crm.audit_log WHERE action = 'MAINTENANCE' AND detail ->> 'operation' = 'uninstall' AND detail ->> 'reason' <> 'x'")" \
   "t|postgres|replaced by another system (ticket 42)" "the uninstall is in the audit log, which stays"
ok "$(q -c "SELECT relforcerowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) FROM pg_class c WHERE oid = 'crm_data.customer'::regclass")" "t|0" \
   "what stays is locked: row security forced, no policy"
ok "$(q -U dropext_owner -c "SELECT count(*) FROM crm_data.customer")" 0 \
   "a former crm admin reads none of the rows left behind"
# with no business tables, nothing is left unprotected: a plain DROP EXTENSION works
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm" -c "DROP SCHEMA crm_data CASCADE" -c "SELECT crm.init()" >/dev/null
q -c "SET client_min_messages = warning" -c "DROP SCHEMA crm_data CASCADE" >/dev/null
ok "$(q -c "SET client_min_messages = warning" -c "DROP EXTENSION crm CASCADE" -c "SELECT count(*) FROM pg_extension WHERE extname = 'crm'")" 0 \
   "without business tables, DROP EXTENSION crm CASCADE needs no uninstall"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "DROP ROLE IF EXISTS dropext_owner" >/dev/null 2>&1
finish
