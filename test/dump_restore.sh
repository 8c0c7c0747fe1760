#!/usr/bin/env bash
# TAP: a database in use (a custom object, a field added to customer, rows in both, principals,
# a moved org unit) survives pg_dump -Fc -> pg_restore into a fresh database: tables, columns,
# rows, metadata and machinery come back, and the API works on the restored database.
# Needs PGHOST/PGPORT/PGUSER of a running cluster with crm installed (make test provides them).
set -u
source "$(dirname "$0")/lib/tap.bash"
q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$1" -c "$2" 2>&1; }

tmp=${CRM_TEST_DIR:-$(mktemp -d)}
src=crm_dump_src; dst=crm_dump_dst
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $src" -c "CREATE DATABASE $dst" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $src >/dev/null 2>"$tmp/dump_setup.err" <<'SQL' || { echo "not ok 1 - set-up"; cat "$tmp/dump_setup.err"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT crm.generate_demo_data(300, 7);
SELECT crm.create_object('loan_application', 'Loan application', 'private', '{}');
SELECT crm.add_field('loan_application', 'amount', 'money', '{"required": true}');
SELECT crm.add_field('loan_application', 'customer_id', 'reference', '{"object": "customer"}');
SELECT crm.add_field('loan_application', 'borrower_id', 'cn_id_number', '{"sensitivity": "sensitive"}');
SELECT crm.add_field('customer', 'wechat_id', 'text', '{"label": "WeChat"}');
SELECT crm.add_role('wealth_advisor', 'Wealth advisor');
SELECT crm.set_principal_roles(p.id, ARRAY['rm', 'wealth_advisor']) FROM crm.principal p WHERE p.login = 'demo_rm_00001';
UPDATE crm_data.customer SET wechat_id = 'wx' || id WHERE id % 3 = 0;
INSERT INTO crm_data.loan_application (owner_id, amount, customer_id, borrower_id)
  SELECT c.owner_id, 100000 * c.id, c.id, '11010519491231002X' FROM crm_data.customer c WHERE c.id <= 5;
-- a unit moved under a unit made after it: restore order must not matter
SELECT crm.add_org_unit('Late Branch', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), 'branch') AS late \gset
SELECT crm.move_org_unit((SELECT id FROM crm.org_unit WHERE kind = 'team' ORDER BY id LIMIT 1), :late);
SQL

snapshot() {
  q "$1" "SELECT (SELECT count(*) FROM crm_data.customer) || '/' || (SELECT count(wechat_id) FROM crm_data.customer)
             || '/' || (SELECT count(*) FROM crm_data.holding) || '/' || (SELECT sum(amount) FROM crm_data.loan_application)
             || '/' || (SELECT count(*) FROM crm.principal) || '/' || (SELECT count(*) FROM crm.org_unit)
             || '/' || (SELECT count(*) FROM crm.field) || '/' || (SELECT count(*) FROM crm.object)
             || '/' || (SELECT count(*) FROM crm.role) || '/' || (SELECT count(*) FROM crm.principal_role)"
}
before=$(snapshot $src)
stamps_before=$(q $src "SELECT md5(string_agg(id || created_at::text || updated_at::text, ',' ORDER BY id)) FROM crm_data.customer")

pg_dump -Fc -d $src -f "$tmp/crm.dump" 2>"$tmp/dump.err"
ok "$?" 0 "pg_dump -Fc of a database using crm"
pg_restore -d $dst "$tmp/crm.dump" 2>"$tmp/restore.err"
ok "$?" 0 "pg_restore into a fresh database, without errors"
[ -s "$tmp/restore.err" ] && sed 's/^/#   /' "$tmp/restore.err" | head -20

ok "$(snapshot $dst)" "$before" "rows, added columns, principals, org units, fields, objects and roles all came back"
ok "$(q $dst "SELECT md5(string_agg(id || created_at::text || updated_at::text, ',' ORDER BY id)) FROM crm_data.customer")" "$stamps_before" \
   "created_at/updated_at kept as they were"
ok "$(q $dst "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'crm_data' AND table_name = 'loan_application'")" \
   "id,owner_id,org_unit_id,created_at,created_by,updated_at,updated_by,amount,customer_id,borrower_id" "the custom table has its columns in order"
ok "$(q $dst "SELECT count(*) FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e' AND classid = 'pg_class'::regclass AND objid IN (SELECT oid FROM pg_class WHERE relnamespace = 'crm_data'::regnamespace)")" \
   "0" "restored business tables are not extension members"
ok "$(q $dst "SELECT string_agg(c.relname || ':' || c.relrowsecurity || c.relforcerowsecurity || t.tgenabled, ',' ORDER BY c.relname) FROM pg_class c JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = 'crm_stamp' WHERE c.relnamespace = 'crm_data'::regnamespace AND c.relkind = 'r'")" \
   "$(q $src "SELECT string_agg(c.relname || ':' || c.relrowsecurity || c.relforcerowsecurity || t.tgenabled, ',' ORDER BY c.relname) FROM pg_class c JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = 'crm_stamp' WHERE c.relnamespace = 'crm_data'::regnamespace AND c.relkind = 'r'")" \
   "RLS forced and the stamp trigger (ALWAYS) on every restored table"
ok "$(q $dst "SELECT crm.add_field('loan_application', 'purpose', 'picklist', '{\"values\": [\"home\", \"car\"]}')")" "purpose" "add_field works after restore"
ok "$(q $dst "SELECT crm.create_object('collateral', 'Collateral')")" "collateral" "create_object works after restore"
ok "$(q $dst "INSERT INTO crm_data.customer (owner_id, name) SELECT id, '新客户' FROM crm.principal WHERE login = 'demo_rm_00001' RETURNING id > 300")" "t" \
   "the identity sequence continues after the restored rows"
ok "$(q $dst "INSERT INTO crm_data.loan_application (owner_id, amount, borrower_id) VALUES (1, 1, '110105194912310021')" | head -1)" \
   "ERROR:  invalid cn_id_number in field loan_application.borrower_id: the check character does not match" "validation works after restore"
ok "$(q $dst "SELECT crm.init()")" "{}" "crm.init() finds every core object present"
ok "$(grep -c 'ERROR' "$tmp/restore.err")" "0" "no errors in pg_restore's output"
ok "$(q $dst "SELECT count(*) > 0 FROM crm.audit_log WHERE action = 'INSERT' AND object = 'customer'")" "t" "the audit log came back"
q $dst "SELECT crm.audit_seal()" >/dev/null
ok "$(q $dst "SELECT ok, problem IS NULL FROM crm.audit_verify()")" "t|t" "the restored chain verifies (old entries sealed as their own era)"
ok "$(q $dst "SELECT count(DISTINCT era) FROM crm.audit_block")" "2" "entries written after the restore start a new era"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" >/dev/null 2>&1
finish
