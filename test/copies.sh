#!/usr/bin/env bash
# TAP: no silent copies of crm_data (issue 15, class 3). CREATE TABLE AS, SELECT INTO, materialized
# views (WITH NO DATA + REFRESH too) reading crm_data, by every route (a view in between, a SQL or
# PL/pgSQL function, EXECUTE of a prepared statement, EXECUTE in PL/pgSQL, a SQL function's body,
# a pooled app acting as an admin) are refused to an admin principal and an RM, allowed to the
# maintenance role (a superuser acting as no principal) and listed by crm.compliance_report();
# temporary copies stay allowed and are EXPORT events. Views stay safe (rows and masking follow the
# reader; a view whose owner bypasses row security is refused). CREATE/ALTER/DROP POLICY on managed
# tables only through crm's API; CREATE RULE on what reads or writes crm_data refused.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_copies
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cp_adm') THEN CREATE ROLE cp_adm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cp_tl') THEN CREATE ROLE cp_tl LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cp_rm1') THEN CREATE ROLE cp_rm1 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cp_rm2') THEN CREATE ROLE cp_rm2 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cp_app') THEN CREATE ROLE cp_app LOGIN IN ROLE crm_app; END IF;
END $$;
SELECT crm.add_org_unit('CP HQ') AS hq \gset
SELECT crm.add_principal('cp_adm', 'Admin', :hq, ARRAY['admin']) AS adm \gset
GRANT crm_admin TO cp_adm;
SELECT crm.add_principal('cp_tl', 'TL', :hq, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('cp_rm1', 'RM 1', :hq, ARRAY['rm'], :tl) AS rm1 \gset
SELECT crm.add_principal('cp_rm2', 'RM 2', :hq, ARRAY['rm']) AS rm2 \gset
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (:rm1, '李四', 'id_card', '11010519491231002X');
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (:rm2, '张三', 'id_card', '110105198001011238');
-- a schema where every principal may create things (the attacker's playground)
CREATE SCHEMA cp;
GRANT USAGE, CREATE ON SCHEMA cp TO crm_user, cp_adm, cp_app;
SQL
adm_id=$(psql -X -qAt -d $db -c "SELECT id FROM crm.principal WHERE login = 'cp_adm'")
# as WHO SQL...: the output, errors as "ERROR:  SQLSTATE: message"
as() { local who=$1; shift; local a=(); for s in "$@"; do a+=(-c "$s"); done; psql -X -qAt -v VERBOSITY=verbose -U "$who" -d $db "${a[@]}" 2>&1; }
# err WHO SQL...: "SQLSTATE message" of the first error, or "no error"
err() { local out; out=$(as "$@" | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): \(.*\)$/\1 \2/p' | head -1); echo "${out:-no error}"; }
su() { psql -X -qAt -v VERBOSITY=verbose -d $db "$@" 2>&1; }
# exports HOW RELATION ROWS: EXPORT events of that copy (written by the audit worker: wait up to 15 s for one)
exports() {
  local n i
  for i in $(seq 1 30); do
    n=$(su -c "SELECT count(*) FROM crm.audit_log WHERE action = 'EXPORT' AND detail ->> 'how' = '$1' AND detail ->> 'relation' = '$2' AND (detail ->> 'rows')::int = $3 AND detail -> 'objects' ? 'customer'")
    [ "$n" != 0 ] && break; sleep 0.5
  done
  echo "$n"
}

# --- refused to principals, by every route ----------------------------------------------------------
for who in cp_adm cp_rm1; do
  ok "$(err $who "CREATE TABLE cp.c_$who AS SELECT * FROM crm_data.customer")" \
     "42501 CREATE TABLE AS cp.c_$who reading crm_data.customer is not allowed" "$who: CREATE TABLE AS is refused, naming the relations"
  ok "$(as $who "CREATE TABLE cp.c_$who AS SELECT * FROM crm_data.customer" | grep -c '^HINT:  Create a view instead')" "1" "$who: the hint names the alternative, a view"
  ok "$(err $who "SELECT * INTO cp.i_$who FROM crm_data.customer")" \
     "42501 SELECT INTO cp.i_$who reading crm_data.customer is not allowed" "$who: SELECT INTO is refused"
  ok "$(err $who "CREATE UNLOGGED TABLE cp.u_$who AS SELECT id_number FROM crm_data.customer")" \
     "42501 CREATE TABLE AS cp.u_$who reading crm_data.customer is not allowed" "$who: an UNLOGGED copy is refused"
  ok "$(err $who "CREATE MATERIALIZED VIEW cp.m_$who AS SELECT * FROM crm_data.customer")" \
     "42501 CREATE MATERIALIZED VIEW cp.m_$who reading crm_data.customer is not allowed" "$who: CREATE MATERIALIZED VIEW is refused"
  ok "$(err $who "CREATE MATERIALIZED VIEW cp.m_$who AS SELECT * FROM crm_data.customer WITH NO DATA")" \
     "42501 CREATE MATERIALIZED VIEW cp.m_$who reading crm_data.customer is not allowed" "$who: ... WITH NO DATA too (its REFRESH would copy)"
  ok "$(err $who "CREATE TABLE cp.n_$who AS SELECT * FROM crm_data.holding h JOIN crm_data.customer c ON c.id = h.customer_id WITH NO DATA")" \
     "42501 CREATE TABLE AS cp.n_$who reading crm_data.holding is not allowed" "$who: CREATE TABLE AS ... WITH NO DATA is refused"
  as $who "CREATE VIEW cp.v_$who AS SELECT c.id, c.name, c.id_number FROM crm_data.customer c" >/dev/null
  ok "$(err $who "CREATE TABLE cp.vc_$who AS SELECT * FROM cp.v_$who")" \
     "42501 CREATE TABLE AS cp.vc_$who reading crm_data.customer is not allowed" "$who: through a view in between"
  ok "$(err $who "CREATE MATERIALIZED VIEW cp.vm_$who AS SELECT * FROM (SELECT * FROM cp.v_$who) x WHERE x.id > 0")" \
     "42501 CREATE MATERIALIZED VIEW cp.vm_$who reading crm_data.customer is not allowed" "$who: a materialized view over a sub-query over a view"
  ok "$(err $who "PREPARE p AS SELECT id_number FROM crm_data.customer" "CREATE TABLE cp.p_$who AS EXECUTE p")" \
     "42501 CREATE TABLE AS cp.p_$who reading crm_data.customer is not allowed" "$who: CREATE TABLE AS EXECUTE of a prepared statement"
  as $who "CREATE FUNCTION cp.fs_$who() RETURNS SETOF text LANGUAGE sql AS 'SELECT id_number FROM crm_data.customer'" \
          "CREATE FUNCTION cp.fp_$who() RETURNS SETOF text LANGUAGE plpgsql AS 'BEGIN RETURN QUERY SELECT id_number FROM crm_data.customer; END'" \
          "CREATE FUNCTION cp.fv_$who() RETURNS text LANGUAGE sql VOLATILE AS 'SELECT max(id_number) FROM crm_data.customer'" >/dev/null
  ok "$(err $who "CREATE TABLE cp.fs_$who AS SELECT * FROM cp.fs_$who()")" \
     "42501 CREATE TABLE AS cp.fs_$who reading crm_data.customer is not allowed" "$who: through a SQL function returning rows"
  ok "$(err $who "CREATE TABLE cp.fp_$who AS SELECT * FROM cp.fp_$who()")" \
     "42501 CREATE TABLE AS cp.fp_$who reading crm_data.customer is not allowed" "$who: through a PL/pgSQL function (its body is not in the query tree)"
  ok "$(err $who "CREATE TABLE cp.fv_$who AS SELECT cp.fv_$who() AS x")" \
     "42501 CREATE TABLE AS cp.fv_$who reading crm_data.customer is not allowed" "$who: through a function in the select list"
  ok "$(err $who "DO \$\$ BEGIN EXECUTE 'CREATE TABLE cp.dx_$who AS SELECT * FROM crm_data.customer'; END \$\$")" \
     "42501 CREATE TABLE AS cp.dx_$who reading crm_data.customer is not allowed" "$who: EXECUTE in PL/pgSQL"
  as $who "CREATE FUNCTION cp.mk_$who() RETURNS void LANGUAGE sql AS 'CREATE TABLE cp.mk_$who AS SELECT * FROM crm_data.customer'" >/dev/null
  ok "$(err $who "SELECT cp.mk_$who()")" \
     "42501 CREATE TABLE AS cp.mk_$who reading crm_data.customer is not allowed" "$who: CREATE TABLE AS in a SQL function's body"
  ok "$(err $who "EXPLAIN (ANALYZE, COSTS OFF) CREATE TABLE cp.ex_$who AS SELECT * FROM cp.fp_$who()" | cut -c1-5)" "42501" \
     "$who: EXPLAIN ANALYZE CREATE TABLE AS (which makes the table) is refused"
  # a materialized view whose function hides crm_data is made empty, and its REFRESH is refused
  ok "$(err $who "CREATE MATERIALIZED VIEW cp.mf_$who AS SELECT * FROM cp.fp_$who() WITH NO DATA")" "no error" \
     "$who: WITH NO DATA over a function is made (nothing is copied; the function's body is not visible)"
  ok "$(err $who "REFRESH MATERIALIZED VIEW cp.mf_$who")" \
     "42501 REFRESH MATERIALIZED VIEW cp.mf_$who reading crm_data.customer is not allowed" "$who: ... and its REFRESH is refused"
  ok "$(as $who "SELECT count(*) FROM pg_class WHERE relnamespace = 'cp'::regnamespace AND relkind IN ('r', 'm') AND relname <> 'mf_$who' AND relname LIKE '%\_$who'")" "0" \
     "$who: no copy was left behind"
  ok "$(err $who "CREATE TABLE cp.ok_$who AS SELECT 1 AS x" "SELECT * INTO cp.ok2_$who FROM cp.ok_$who")" "no error" "$who: a CREATE TABLE AS / SELECT INTO not reading crm_data works"
done

denied=0
for i in $(seq 1 30); do
  denied=$(su -c "SELECT count(*) FROM crm.audit_log WHERE action = 'DENIED' AND detail ->> 'message' = 'CREATE TABLE AS cp.c_cp_rm1 reading crm_data.customer is not allowed'")
  [ "$denied" -ge 2 ] && break; sleep 0.5
done
ok "$denied" "2" "a refused copy is a DENIED event (each of the two tries above)"

# the pooled app acting as the admin: refused too
out=$(psql -X -qAt -v VERBOSITY=verbose -U cp_app -d $db 2>&1 <<SQL
BEGIN;
SELECT crm.act_as($adm_id) > 0;
CREATE TABLE cp.by_app AS SELECT * FROM crm_data.customer;
ROLLBACK;
SQL
)
ok "$(echo "$out" | sed -n 's/^ERROR:  \([0-9A-Z]*\): \(.*\)$/\1 \2/p')" "42501 CREATE TABLE AS cp.by_app reading crm_data.customer is not allowed" \
   "a pooled app acting as the admin principal is refused"
# a matview made by the maintenance role and handed to the admin: the admin's REFRESH is refused
su -c "CREATE MATERIALIZED VIEW cp.handed AS SELECT id, name FROM crm_data.customer WITH NO DATA" -c "ALTER MATERIALIZED VIEW cp.handed OWNER TO cp_adm" >/dev/null
ok "$(err cp_adm "REFRESH MATERIALIZED VIEW cp.handed")" "42501 REFRESH MATERIALIZED VIEW cp.handed reading crm_data.customer is not allowed" \
   "a materialized view the maintenance role handed to the admin cannot be refreshed by it"
su -c "DROP MATERIALIZED VIEW cp.handed" >/dev/null

# --- temporary copies: allowed, audited as EXPORT; they cannot become permanent ----------------------
ok "$(as cp_rm1 "CREATE TEMP TABLE t1 AS SELECT * FROM crm_data.customer" "SELECT count(*) || ' ' || min(id_number) FROM t1")" "1 11010519491231002X" \
   "an RM's temporary copy holds what the RM may see"
ok "$(exports 'CREATE TEMPORARY TABLE AS' t1 1)" "1" "... and is an EXPORT event with its row count"
ok "$(as cp_tl "SELECT * INTO TEMP t2 FROM crm_data.customer" "SELECT count(*) || ' ' || min(id_number) FROM t2")" "1 110105********002X" \
   "a team lead's temporary copy (SELECT INTO TEMP) holds masked values"
ok "$(exports 'SELECT INTO TEMPORARY' t2 1)" "1" "... and is an EXPORT event"
ok "$(as cp_adm "CREATE TABLE pg_temp.t3 AS SELECT * FROM crm_data.customer" "SELECT count(*) FROM pg_temp.t3")" "2" "a table made in pg_temp is temporary: allowed"
ok "$(exports 'CREATE TEMPORARY TABLE AS' t3 2)" "1" "... and is an EXPORT event"
ok "$(err cp_rm1 "CREATE TEMP TABLE t5 AS SELECT * FROM crm_data.customer" "CREATE TABLE cp.from_temp AS SELECT * FROM t5" | sed 's/pg_temp_[0-9]*/pg_temp/')" \
   "42501 CREATE TABLE AS cp.from_temp reading pg_temp.t5 is not allowed" "a temporary copy cannot be copied on into a permanent table"
ok "$(err cp_rm1 "CREATE TEMP TABLE t5 AS SELECT * FROM crm_data.customer" "CREATE TEMP TABLE t6 AS SELECT * FROM t5" "CREATE TABLE cp.from_temp AS SELECT * FROM t6" | sed 's/pg_temp_[0-9]*/pg_temp/')" \
   "42501 CREATE TABLE AS cp.from_temp reading pg_temp.t6 is not allowed" "... nor through a second temporary copy"
ok "$(err cp_adm "CREATE TEMP TABLE t4 AS SELECT * FROM crm_data.customer" "ALTER TABLE t4 SET LOGGED")" \
   "42P16 cannot change logged status of table \"t4\" because it is temporary" "a temporary copy cannot be made LOGGED"
ok "$(err cp_adm "CREATE TEMP TABLE t4 AS SELECT * FROM crm_data.customer" "ALTER TABLE t4 SET SCHEMA cp")" \
   "0A000 cannot move objects into or out of temporary schemas" "nor moved out of pg_temp"

# --- the maintenance role: allowed, EXPORT, listed by the compliance report with its grants ---------
report() { su -c "SELECT status || ': ' || detail FROM crm.compliance_report() WHERE \"check\" = 'copies of crm_data'"; }
ok "$(report)" "pass: no relation outside crm_data holds rows copied from it" "the report passes while there is no copy"
ok "$(su -c "CREATE TABLE public.cp_copy AS SELECT * FROM crm_data.customer" -c "SELECT count(*) FROM public.cp_copy")" "2" "the maintenance role may make a copy (CREATE TABLE AS)"
ok "$(exports 'CREATE TABLE AS' public.cp_copy 2)" "1" "... an EXPORT event"
ok "$(su -c "SELECT relname || ' ' || how || ' ' || sources::text || ' ' || rows FROM crm.data_copy")" "public.cp_copy CREATE TABLE AS [\"customer\"] 2" \
   "... recorded in crm.data_copy"
ok "$(su -c "SELECT 'crm.data_copy'::regclass::oid = ANY (extconfig) FROM pg_extension WHERE extname = 'crm'")" "t" \
   "crm.data_copy is dumped with the extension's data (pg_extension_config_dump)"
ok "$(report)" "fail: copies of crm_data: public.cp_copy (table)" "the report lists the copy and fails"
su -c "GRANT SELECT ON public.cp_copy TO crm_user" >/dev/null
ok "$(report)" "fail: copies of crm_data: public.cp_copy (table); granted: public.cp_copy to crm_user" "... and its grant to crm_user"
su -c "CREATE VIEW cp.v_su_inv WITH (security_invoker = true) AS SELECT * FROM crm_data.customer" \
   -c "CREATE MATERIALIZED VIEW cp.mv AS SELECT id, name FROM cp.v_su_inv" -c "GRANT SELECT ON cp.mv TO PUBLIC" >/dev/null
ok "$(report)" "fail: copies of crm_data: cp.mv (materialized view), public.cp_copy (table); granted: cp.mv to PUBLIC, public.cp_copy to crm_user" \
   "a materialized view over crm_data (through a view) and its grant to PUBLIC are listed"
ok "$(err cp_rm1 "CREATE TABLE cp.mv_copy AS SELECT * FROM cp.mv")" "42501 CREATE TABLE AS cp.mv_copy reading crm_data.customer is not allowed" \
   "an RM granted the materialized view cannot copy it on"
ok "$(err cp_rm1 "CREATE TABLE cp.copy_copy AS SELECT * FROM public.cp_copy")" "42501 CREATE TABLE AS cp.copy_copy reading public.cp_copy is not allowed" \
   "nor the maintenance role's table copy"
ok "$(su -c "REFRESH MATERIALIZED VIEW cp.mv")" "" "the maintenance role may refresh it"
ok "$(exports 'REFRESH MATERIALIZED VIEW' cp.mv 2)" "1" "... an EXPORT event"
su -c "DROP TABLE public.cp_copy" -c "CREATE MATERIALIZED VIEW cp.mv_empty AS SELECT * FROM cp.v_su_inv WITH NO DATA" -c "DROP MATERIALIZED VIEW cp.mv" >/dev/null
ok "$(report)" "fail: copies of crm_data: cp.mv_empty (materialized view)" "a materialized view made WITH NO DATA is listed (from pg_depend)"
su -c "DROP MATERIALIZED VIEW cp.mv_empty" >/dev/null
ok "$(report)" "pass: no relation outside crm_data holds rows copied from it" "dropped copies leave the report"
ok "$(su -c "SET ROLE cp_adm" -c "SELECT status FROM crm.compliance_report() WHERE \"check\" = 'copies of crm_data'")" "pass" "an admin principal reads the check too"

# --- views stay safe: rows and masking follow the reader --------------------------------------------
su -c "GRANT SELECT ON cp.v_cp_adm TO crm_user" >/dev/null
ok "$(as cp_rm1 "SELECT string_agg(name || ' ' || id_number, ',') FROM cp.v_cp_adm")" "李四 11010519491231002X" \
   "through the admin's view, an RM sees only its own customer"
ok "$(as cp_rm2 "SELECT string_agg(name || ' ' || id_number, ',') FROM cp.v_cp_adm")" "张三 110105198001011238" "... and the other RM only its own"
ok "$(as cp_tl "SELECT string_agg(name || ' ' || id_number, ',') FROM cp.v_cp_adm")" "李四 110105********002X" \
   "the team lead sees its report's customer, masked, through the admin's view"
ok "$(as cp_adm "SELECT count(*) FROM cp.v_cp_adm")" "2" "the admin sees both through its own view (the view is not simply empty)"
su -c "CREATE VIEW cp.v_su AS SELECT id, name, id_number FROM crm_data.customer" -c "GRANT SELECT ON cp.v_su, cp.v_su_inv TO crm_user" >/dev/null
ok "$(err cp_rm1 "SELECT count(*) FROM cp.v_su")" "42501 reading crm_data.customer through a view owned by role \"postgres\" is not allowed" \
   "a view owned by a superuser (row security would not apply) is refused to a principal"
ok "$(err cp_adm "SELECT count(*) FROM (SELECT * FROM cp.v_su) x")" "42501 reading crm_data.customer through a view owned by role \"postgres\" is not allowed" \
   "... to the admin too"
ok "$(as cp_rm1 "SELECT string_agg(name || ' ' || id_number, ',') FROM cp.v_su_inv")" "李四 11010519491231002X" \
   "a security_invoker view owned by a superuser shows the RM its own customer only"
ok "$(su -c "SELECT count(*) FROM cp.v_su")" "2" "the maintenance role reads the superuser's view"

# --- policies on managed tables: only through crm's API ---------------------------------------------
policies() { su -c "SELECT string_agg(polname || ':' || polpermissive || ':' || pg_get_expr(polqual, polrelid), ' | ' ORDER BY polname) FROM pg_policy WHERE polrelid = 'crm_data.customer'::regclass"; }
before=$(policies)
ok "$(err postgres "CREATE POLICY open ON crm_data.customer USING (true)")" "42501 CREATE POLICY open on crm_data.customer is not allowed" \
   "CREATE POLICY on a managed table is refused, to a superuser too"
ok "$(err postgres "ALTER POLICY crm_read ON crm_data.customer USING (true)")" "42501 ALTER POLICY crm_read on crm_data.customer is not allowed" \
   "ALTER POLICY ... USING (true) is refused"
ok "$(err postgres "ALTER POLICY crm_read ON crm_data.customer TO cp_rm1")" "42501 ALTER POLICY crm_read on crm_data.customer is not allowed" \
   "ALTER POLICY ... TO a role is refused"
ok "$(err postgres "DROP POLICY crm_read ON crm_data.customer")" "42501 DROP POLICY crm_read on crm_data.customer is not allowed" "DROP POLICY is refused"
ok "$(err postgres "ALTER POLICY crm_edit ON crm_data.customer RENAME TO x")" "42501 ALTER POLICY ... RENAME of crm_edit on crm_data.customer is not allowed" \
   "renaming a policy is refused"
ok "$(err postgres "SET row_security = off" "CREATE POLICY crm_wall_x ON crm_data.customer AS PERMISSIVE USING (true)")" \
   "42501 CREATE POLICY crm_wall_x on crm_data.customer is not allowed" "row_security off (as in a restore) does not let in a permissive crm_wall_ policy"
ok "$(err postgres "SET row_security = off" "CREATE POLICY crm_read ON crm_data.customer USING (true)")" \
   "42501 CREATE POLICY crm_read on crm_data.customer is not allowed" "... nor a crm_read that is already there (only missing crm policies are recreated)"
ok "$(err postgres "SELECT crm._build_policies('customer')" | sed 's/POLICY crm_[a-z_]* on/POLICY crm_* on/')" "42501 DROP POLICY crm_* on crm_data.customer is not allowed" \
   "crm's policy builder called directly (past crm._apply_policies) is refused"
ok "$(err cp_adm "SELECT crm._apply_policies('customer')")" "42501 permission denied for function _apply_policies" "a principal cannot call crm._apply_policies"
ok "$(err cp_rm1 "SELECT crm._build_policies('customer')")" "42501 permission denied for function _build_policies" "nor crm._build_policies"
ok "$(policies)" "$before" "the policies are as crm made them"
ok "$(as cp_adm "SELECT crm.add_wall('cp_wall', 'customer', \$\$name = '张三'\$\$, ARRAY[$(su -c "SELECT id FROM crm.principal WHERE login = 'cp_rm2'")]::bigint[])")" "cp_wall" \
   "crm's API still changes policies (add_wall)"
ok "$(su -c "SELECT count(*) FROM pg_policy WHERE polrelid = 'crm_data.customer'::regclass AND polname = 'crm_wall_cp_wall' AND NOT polpermissive")" "1" "... the wall's policy is there"
ok "$(as cp_rm2 "SELECT count(*) FROM crm_data.customer")" "0" "... and keeps the RM from its walled customer"
ok "$(as cp_adm "SELECT crm.drop_wall('cp_wall')" >/dev/null; policies)" "$before" "drop_wall puts the policies back"
ok "$(su -c "SELECT crm._apply_policies('customer')" >/dev/null; policies)" "$before" "crm._apply_policies (the maintenance role) rebuilds the same policies"
ok "$(as cp_adm "SELECT crm.create_object('cp_thing', 'Thing')" >/dev/null; su -c "SELECT count(*) FROM pg_policy WHERE polrelid = 'crm_data.cp_thing'::regclass")" "4" \
   "create_object still makes a new table's four policies"

# pg_restore recreates crm's policies (a wall's too) on the restored tables
tmp=${CRM_TEST_DIR:-$(mktemp -d)}
as cp_adm "SELECT crm.add_wall('cp_wall2', 'customer', \$\$name = '张三'\$\$, ARRAY[$(su -c "SELECT id FROM crm.principal WHERE login = 'cp_rm2'")]::bigint[])" >/dev/null
before=$(policies)
su -c "CREATE MATERIALIZED VIEW cp.mv_keep AS SELECT id FROM crm_data.customer" >/dev/null
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS ${db}_r" -c "CREATE DATABASE ${db}_r" >/dev/null 2>&1
pg_dump -Fc -d $db -f "$tmp/copies.dump" 2>"$tmp/copies_dump.err"
pg_restore -d ${db}_r "$tmp/copies.dump" >"$tmp/copies_restore.err" 2>&1
ok "$(grep -c ERROR "$tmp/copies_restore.err")" "0" "pg_restore of a database with crm's policies and a wall: no errors"
ok "$(psql -X -qAt -d ${db}_r -c "SELECT string_agg(polname || ':' || polpermissive || ':' || pg_get_expr(polqual, polrelid), ' | ' ORDER BY polname) FROM pg_policy WHERE polrelid = 'crm_data.customer'::regclass")" \
   "$before" "the restored table has the same policies"
ok "$(psql -X -qAt -d ${db}_r -c "SELECT count(*) FROM cp.mv_keep" -c "SELECT detail FROM crm.compliance_report() WHERE \"check\" = 'copies of crm_data'")" \
   "$(printf '2\ncopies of crm_data: cp.mv_keep (materialized view)')" "the maintenance role's materialized view is restored and refreshed, and listed by the restored report"
su -c "DROP MATERIALIZED VIEW cp.mv_keep" >/dev/null
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS ${db}_r" >/dev/null 2>&1
as cp_adm "SELECT crm.drop_wall('cp_wall2')" >/dev/null

# --- rules on what reads or writes crm_data ---------------------------------------------------------
ok "$(err cp_adm "CREATE RULE cap AS ON INSERT TO cp.v_cp_adm DO INSTEAD INSERT INTO cp.ok_cp_adm VALUES (1)")" \
   "42501 CREATE RULE cap on cp.v_cp_adm is not allowed" "a rule on a view over crm_data (capturing what others write through it) is refused"
ok "$(err cp_adm "CREATE RULE cap AS ON UPDATE TO cp.v_cp_adm DO ALSO NOTIFY x")" "42501 CREATE RULE cap on cp.v_cp_adm is not allowed" "... DO ALSO too"
ok "$(err postgres "CREATE RULE cap AS ON INSERT TO crm_data.customer DO ALSO NOTIFY x")" "42501 CREATE RULE on customer is not allowed" \
   "a rule on a managed table is refused"
as cp_adm "CREATE TABLE cp.inbox (name text)" >/dev/null
ok "$(err cp_adm "CREATE RULE fwd AS ON INSERT TO cp.inbox DO INSTEAD INSERT INTO crm_data.customer (name) VALUES (NEW.name)")" \
   "42501 CREATE RULE fwd on cp.inbox is not allowed" "a rule that would write crm_data with its owner's rights is refused"
ok "$(err cp_adm "CREATE RULE peek AS ON INSERT TO cp.inbox DO ALSO SELECT id_number FROM crm_data.customer")" \
   "42501 CREATE RULE peek on cp.inbox is not allowed" "a rule that would read crm_data is refused"
ok "$(err cp_adm "CREATE RULE fine AS ON INSERT TO cp.inbox DO ALSO NOTIFY inbox" "SELECT count(*) FROM pg_rules WHERE tablename = 'inbox'")" "no error" \
   "a rule on a table that has nothing to do with crm_data is made"
ok "$(su -c "SELECT rulename FROM pg_rules WHERE schemaname = 'cp' ORDER BY 1")" "fine" "only that rule exists"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
