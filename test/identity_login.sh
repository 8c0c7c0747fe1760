#!/usr/bin/env bash
# TAP: identity through real logins (not a superuser session that SET ROLEs): a principal's own
# connection cannot become someone else through SET ROLE, SET SESSION AUTHORIZATION, SET crm.*,
# set_config(), RESET, or a prepared statement.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_identity_login
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'login_rm1') THEN CREATE ROLE login_rm1 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'login_rm2') THEN CREATE ROLE login_rm2 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'login_app') THEN CREATE ROLE login_app LOGIN IN ROLE crm_app; END IF;
END $$;
SELECT crm.add_org_unit('Login HQ') AS hq \gset
SELECT crm.add_principal('login_rm1', 'RM 1', :hq);
SELECT crm.add_principal('login_rm2', 'RM 2', :hq);
SQL
rm1=$(psql -X -qAt -d $db -c "SELECT id FROM crm.principal WHERE login = 'login_rm1'")
rm2=$(psql -X -qAt -d $db -c "SELECT id FROM crm.principal WHERE login = 'login_rm2'")
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
code() { as "$1" -v VERBOSITY=verbose -c "$2" | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | head -1; }

ok "$(as login_rm1 -c 'SELECT crm.current_principal()')" "$rm1" "rm1's own login is rm1"
ok "$(code login_rm1 'SET ROLE login_rm2')" "42501" "SET ROLE to another principal's role is refused"
ok "$(code login_rm1 'SET SESSION AUTHORIZATION login_rm2')" "42501" "SET SESSION AUTHORIZATION is refused"
ok "$(code login_rm1 "SET crm.principal = '$rm2'")" "42602" "SET crm.principal is refused"
ok "$(code login_rm1 "SELECT set_config('crm.current_principal', '$rm2', false)")" "42602" "set_config('crm.…') is refused"
ok "$(code login_rm1 "SELECT crm.act_as($rm2)")" "42501" "act_as without crm_app is refused"
ok "$(as login_rm1 -c "SET application_name = 'login_rm2'" -c "SET role = none" -c 'SELECT crm.current_principal()')" "$rm1" \
   "after SET application_name and SET role = none, still rm1"
ok "$(as login_rm1 -c "BEGIN" -c "SELECT crm.act_as($rm2)" -c "ROLLBACK" -c 'SELECT crm.current_principal()' | tail -1)" "$rm1" \
   "a refused act_as leaves rm1 as rm1"
ok "$(as login_app -c 'PREPARE q AS SELECT crm.current_principal()' -c 'BEGIN' -c "SELECT crm.act_as($rm1)" -c 'EXECUTE q' \
      -c 'COMMIT' -c 'BEGIN' -c "SELECT crm.act_as($rm2)" -c 'EXECUTE q' -c 'COMMIT' -c 'EXECUTE q' | tr '\n' ' ')" \
   "$rm1 $rm1 $rm2 $rm2  " "the app's prepared statement follows each act_as and is nobody after COMMIT"
ok "$(as login_app -c "SELECT crm.act_as($rm1)" -c 'SELECT coalesce(crm.current_principal()::text, $$nobody$$)' | tail -1)" "nobody" \
   "act_as outside a transaction block lasts for its statement only"
ok "$(code login_app "SET crm.act_as = '$rm1'")" "42602" "the app cannot SET its way into a principal either"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
