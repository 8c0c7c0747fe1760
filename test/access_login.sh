#!/usr/bin/env bash
# TAP: record-level access through real logins: COPY, psql's own paths, and a grant revoked in one
# session taking effect in another at its next transaction.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_access_login
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'al_rm1') THEN CREATE ROLE al_rm1 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'al_rm2') THEN CREATE ROLE al_rm2 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'al_new') THEN CREATE ROLE al_new LOGIN IN ROLE crm_user; END IF;
END $$;
SELECT crm.add_org_unit('AL HQ') AS hq \gset
SELECT crm.add_principal('al_rm1', 'RM 1', :hq) AS rm1 \gset
SELECT crm.add_principal('al_rm2', 'RM 2', :hq) AS rm2 \gset
INSERT INTO crm_data.customer (owner_id, name, mobile) SELECT :rm1, 'secret customer ' || g, '13800000000' FROM generate_series(1, 5) g;
INSERT INTO crm_data.customer (owner_id, name) VALUES (:rm2, 'rm2 customer');
SQL
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }

ok "$(as al_rm2 -c 'COPY crm_data.customer TO STDOUT' | grep -c 'secret customer')" "0" "COPY table TO STDOUT shows rm2 none of rm1's customers"
ok "$(as al_rm2 -c 'COPY crm_data.customer TO STDOUT' | grep -c 'rm2 customer')" "1" "and does show rm2's own"
ok "$(as al_rm2 -c 'COPY (SELECT * FROM crm_data.customer) TO STDOUT' | grep -c 'secret customer')" "0" "COPY (SELECT ...) TO STDOUT shows none"
ok "$(as al_rm2 -c '\copy crm_data.customer TO STDOUT' | grep -c 'secret customer')" "0" "psql's \\copy shows none"
ok "$(as al_rm2 -c "COPY crm_data.customer (owner_id, name) FROM STDIN" <<< "$(psql -X -qAt -d $db -c "SELECT id FROM crm.principal WHERE login = 'al_rm1'")	planted" | grep -c 'ERROR')" "1" \
   "COPY FROM into a table with row security is refused"
ok "$(as al_rm2 -c "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM crm_data.customer" | grep -c 'not allowed')" "1" "EXPLAIN ANALYZE is refused"
ok "$(as al_rm2 -c "SELECT count(*) FROM pg_stats WHERE schemaname = 'crm_data'")" "0" "pg_stats shows nothing of row-secured tables"
psql -X -q -d $db -c "ANALYZE crm_data.customer"
ok "$(as al_rm2 -c "SELECT count(*) FROM pg_stats WHERE schemaname = 'crm_data' AND tablename = 'customer'")" "0" "not even after ANALYZE"

# a grant revoked by an admin in another session stops working at rm1's next transaction
out=$(psql -X -qAt -U al_rm1 -d $db <<SQL 2>&1
SELECT count(*) FROM crm_data.customer;
\! psql -X -qAt -d $db -c "SELECT crm.revoke_object('rm', '*', ARRAY['read'])" >/dev/null
SELECT count(*) FROM crm_data.customer;
\! psql -X -qAt -d $db -c "SELECT crm.grant_object('rm', '*', ARRAY['read'], 'own')" >/dev/null
SELECT count(*) FROM crm_data.customer;
\! psql -X -qAt -d $db -c "SELECT crm.deactivate_principal(id) FROM crm.principal WHERE login = 'al_rm1'" >/dev/null
SELECT count(*) FROM crm_data.customer;
SQL
)
ok "$(echo $out)" "5 0 5 0" "another session's revoke, re-grant and deactivation take effect at the next statement"
# a change committed while a REPEATABLE READ transaction was open must not stay cached after it
out=$(psql -X -qAt -U al_rm2 -d $db <<SQL 2>&1
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM crm_data.customer;
\! psql -X -qAt -d $db -c "SELECT crm.deactivate_principal(id) FROM crm.principal WHERE login = 'al_rm2'" >/dev/null
SELECT count(*) FROM crm_data.customer;
COMMIT;
SELECT count(*) FROM crm_data.customer;
SQL
)
ok "$(echo $out)" "1 1 0" "a deactivation during a REPEATABLE READ transaction takes effect when it ends"

# who a login is, cached across transactions, follows changes made by other sessions
out=$(psql -X -qAt -U al_new -d $db <<SQL 2>&1
SELECT coalesce(crm.current_principal()::text, 'nobody');
\! psql -X -qAt -d $db -c "SELECT crm.add_principal('al_new', 'New RM', (SELECT id FROM crm.org_unit WHERE name = 'AL HQ'))" >/dev/null
SELECT coalesce(crm.current_principal()::text, 'nobody') <> 'nobody';
\! psql -X -qAt -d $db -c "ALTER ROLE al_new RENAME TO al_renamed" >/dev/null 2>&1
SELECT coalesce(crm.current_principal()::text, 'nobody');
SQL
)
ok "$(echo $out)" "nobody t nobody" "a principal added in another session is recognised at once; a renamed login is nobody"
psql -X -q -d postgres -c "ALTER ROLE al_renamed RENAME TO al_new" >/dev/null 2>&1
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
