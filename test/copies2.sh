#!/usr/bin/env bash
# TAP: holes a red team found in "no silent copies" (issue 15, class 3), as an admin principal with
# CREATE on a schema: (a) a cursor opened before a copy and fetched inside a function while it is
# filled; (b) a temporary table filled by INSERT ... SELECT is a copy like CREATE TEMP TABLE AS;
# (c) INSERT/UPDATE/DELETE/MERGE/data-modifying WITH/COPY FROM/ALTER TABLE into a permanent relation
# outside crm and crm_data that read crm_data (directly, through a view, a function, a trigger, a
# folded IMMUTABLE function) are refused like CREATE TABLE AS; (d) the maintenance role's copies by
# INSERT are listed by crm.compliance_report(). Legitimate writes keep working.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_copies2
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'x_adm') THEN CREATE ROLE x_adm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'x_rm1') THEN CREATE ROLE x_rm1 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'x_rm2') THEN CREATE ROLE x_rm2 LOGIN; END IF;
END $$;
SELECT crm.add_org_unit('X HQ') AS hq \gset
SELECT crm.add_principal('x_adm', 'Admin', :hq, ARRAY['admin']) AS adm \gset
GRANT crm_admin TO x_adm;
SELECT crm.add_principal('x_rm1', 'RM 1', :hq, ARRAY['rm']) AS rm1 \gset
SELECT crm.add_principal('x_rm2', 'RM 2', :hq, ARRAY['rm']) AS rm2 \gset
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (:rm1, '李四', 'id_card', '11010519491231002X');
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (:rm2, '张三', 'id_card', '110105198001011238');
CREATE SCHEMA cp;
GRANT USAGE, CREATE ON SCHEMA cp TO crm_user, x_adm;
SQL
as() { local who=$1; shift; local a=(); for s in "$@"; do a+=(-c "$s"); done; psql -X -qAt -v VERBOSITY=verbose -U "$who" -d $db "${a[@]}" 2>&1; }
err() { local out; out=$(as "$@" | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): \(.*\)$/\1 \2/p' | head -1); echo "${out:-no error}"; }
su() { psql -X -qAt -v VERBOSITY=verbose -d $db "$@" 2>&1; }
# a script as x_adm in one session (stdin); the first error as "SQLSTATE message"
script() { local out; out=$(psql -X -qAt -v VERBOSITY=verbose -U "${1:-x_adm}" -d $db 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): \(.*\)$/\1 \2/p' | head -1); echo "${out:-no error}"; }

as x_adm "CREATE FUNCTION cp.drain(refcursor) RETURNS TABLE(id bigint, owner_id bigint, name text, id_number text)
 LANGUAGE plpgsql AS \$\$DECLARE r record; BEGIN LOOP FETCH \$1 INTO r; EXIT WHEN NOT FOUND;
 id:=r.id; owner_id:=r.owner_id; name:=r.name; id_number:=r.id_number; RETURN NEXT; END LOOP; END\$\$" \
 "CREATE FUNCTION cp.own_cursor() RETURNS SETOF text LANGUAGE plpgsql AS \$\$DECLARE c CURSOR FOR SELECT id_number FROM crm_data.customer; r record;
 BEGIN FOR r IN c LOOP RETURN NEXT r.id_number; END LOOP; END\$\$" \
 "CREATE FUNCTION cp.opened() RETURNS SETOF text LANGUAGE plpgsql AS \$\$DECLARE c refcursor; v text;
 BEGIN OPEN c FOR SELECT id_number FROM crm_data.customer; LOOP FETCH c INTO v; EXIT WHEN NOT FOUND; RETURN NEXT v; END LOOP; END\$\$" \
 "CREATE FUNCTION cp.ids() RETURNS SETOF text LANGUAGE plpgsql AS 'BEGIN RETURN QUERY SELECT id_number FROM crm_data.customer; END'" \
 "CREATE FUNCTION cp.imm() RETURNS text LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN (SELECT string_agg(id_number, '','') FROM crm_data.customer); END'" \
 "CREATE FUNCTION cp.one() RETURNS text LANGUAGE plpgsql VOLATILE AS 'BEGIN RETURN (SELECT string_agg(id_number, '','') FROM crm_data.customer); END'" \
 "CREATE VIEW cp.v AS SELECT id, name, id_number FROM crm_data.customer" \
 "CREATE TABLE cp.own (id bigint, name text, id_number text)" \
 "CREATE FUNCTION cp.store(text) RETURNS void LANGUAGE sql AS 'INSERT INTO cp.own (id_number) VALUES (\$1)'" \
 "GRANT SELECT, INSERT, UPDATE, DELETE ON cp.own TO crm_user" "GRANT SELECT ON cp.v TO crm_user" >/dev/null

# --- (a) a cursor opened before the copy ------------------------------------------------------------
ok "$(script <<'SQL'
BEGIN; DECLARE c CURSOR FOR SELECT id,owner_id,name,id_number FROM crm_data.customer;
CREATE MATERIALIZED VIEW cp.mv AS SELECT * FROM cp.drain('c'); COMMIT;
SQL
)" "42501 CREATE MATERIALIZED VIEW cp.mv reading crm_data.customer is not allowed" "(a) a materialized view filled by FETCH from a cursor opened before it is refused"
ok "$(script <<'SQL'
BEGIN; DECLARE c CURSOR FOR SELECT id,owner_id,name,id_number FROM crm_data.customer;
CREATE TABLE cp.t AS SELECT * FROM cp.drain('c'); COMMIT;
SQL
)" "42501 CREATE TABLE AS cp.t reading crm_data.customer is not allowed" "(a) ... CREATE TABLE AS too"
ok "$(script <<'SQL'
CREATE MATERIALIZED VIEW cp.mv0 AS SELECT * FROM cp.drain('c') WITH NO DATA;
BEGIN; DECLARE c CURSOR FOR SELECT id,owner_id,name,id_number FROM crm_data.customer;
REFRESH MATERIALIZED VIEW cp.mv0; COMMIT;
SQL
)" "42501 REFRESH MATERIALIZED VIEW cp.mv0 reading crm_data.customer is not allowed" "(a) ... REFRESH of a WITH NO DATA materialized view too"
ok "$(script <<'SQL'
BEGIN; DECLARE c CURSOR FOR SELECT * FROM cp.v;
CREATE TABLE cp.t AS SELECT id, 0::bigint, name, id_number FROM cp.drain('c'); COMMIT;
SQL
)" "42501 CREATE TABLE AS cp.t reading crm_data.customer is not allowed" "(a) ... a cursor over a view over crm_data"
ok "$(script <<'SQL'
BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT * FROM cp.v; COMMIT;
CREATE TABLE cp.t AS SELECT * FROM cp.drain('c');
SQL
)" "42501 CREATE TABLE AS cp.t is not allowed while cursor c, which read crm_data, is open" "(a) a WITH HOLD cursor (rows kept after commit, fetched with no executor) is refused"
as x_adm "CREATE FUNCTION cp.ret() RETURNS refcursor LANGUAGE plpgsql AS \$\$DECLARE c refcursor := 'rc';
 BEGIN OPEN c FOR EXECUTE 'UPDATE crm_data.customer SET name = name RETURNING id, owner_id, name, id_number'; RETURN c; END\$\$" >/dev/null
ok "$(script <<'SQL'
BEGIN; SELECT cp.ret(); FETCH 1 FROM rc;
CREATE TABLE cp.t AS SELECT * FROM cp.drain('rc'); COMMIT;
SQL
)" "42501 CREATE TABLE AS cp.t is not allowed while cursor rc, which read crm_data, is open" "(a) a RETURNING cursor (its rows kept in a store after the first fetch) is refused"
ok "$(script <<'SQL'
BEGIN; SELECT cp.ret();
INSERT INTO cp.own SELECT id, name, id_number FROM cp.drain('rc'); COMMIT;
SQL
)" "42501 INSERT INTO cp.own reading crm_data.customer is not allowed" "(a) ... and, fetched first inside the write, its statement is checked"
ok "$(err x_adm "CREATE TABLE cp.t AS SELECT * FROM cp.own_cursor()")" "42501 CREATE TABLE AS cp.t reading crm_data.customer is not allowed" \
   "(a) a PL/pgSQL FOR over a cursor declared in the function"
ok "$(err x_adm "CREATE TABLE cp.t AS SELECT * FROM cp.opened()")" "42501 CREATE TABLE AS cp.t reading crm_data.customer is not allowed" \
   "(a) a refcursor opened and fetched inside the function"
ok "$(script <<'SQL'
BEGIN; DECLARE c CURSOR FOR SELECT id,owner_id,name,id_number FROM crm_data.customer;
INSERT INTO cp.own SELECT id, name, id_number FROM cp.drain('c'); COMMIT;
SQL
)" "42501 INSERT INTO cp.own reading crm_data.customer is not allowed" "(a) an INSERT filled by FETCH inside a function is refused"
ok "$(as x_adm "SELECT count(*) FROM pg_class WHERE relnamespace = 'cp'::regnamespace AND relname IN ('mv', 't')" "SELECT count(*) FROM cp.own")" "$(printf '0\n0')" \
   "(a) nothing was left behind"
ok "$(script <<'SQL'
BEGIN; DECLARE c CURSOR FOR SELECT id, name FROM crm_data.customer ORDER BY id;
FETCH 1 FROM c; INSERT INTO cp.own (id) VALUES (42); FETCH 1 FROM c; COMMIT;
SQL
)" "no error" "a client fetching a cursor and writing between fetches is not stopped (it writes what it sent)"
as x_adm "DELETE FROM cp.own" >/dev/null

# --- (b) a temporary table filled by INSERT ... SELECT is a copy -----------------------------------
ok "$(err x_rm1 "CREATE TEMP TABLE tt (id bigint, name text, id_number text)" "INSERT INTO tt SELECT id, name, id_number FROM crm_data.customer" \
     "CREATE TABLE cp.x AS SELECT * FROM tt" | sed 's/pg_temp_[0-9]*/pg_temp/')" "42501 CREATE TABLE AS cp.x reading pg_temp.tt is not allowed" \
   "(b) a temporary table filled by INSERT ... SELECT cannot be copied on"
ok "$(err x_rm1 "CREATE TEMP TABLE tt (id bigint, name text, id_number text)" "INSERT INTO tt VALUES (1, 'x', 'y')" \
     "UPDATE tt SET id_number = (SELECT max(id_number) FROM cp.v)" "CREATE TABLE cp.x AS SELECT * FROM tt" | sed 's/pg_temp_[0-9]*/pg_temp/')" \
   "42501 CREATE TABLE AS cp.x reading pg_temp.tt is not allowed" "(b) ... nor one filled by UPDATE reading a view over crm_data"
ok "$(err x_rm1 "CREATE TEMP TABLE tt (v text)" "INSERT INTO tt SELECT * FROM cp.ids()" "INSERT INTO cp.own (id_number) SELECT v FROM tt" | sed 's/pg_temp_[0-9]*/pg_temp/')" \
   "42501 INSERT INTO cp.own reading pg_temp.tt is not allowed" "(b) ... nor one filled through a function, by INSERT ... SELECT"
ok "$(err x_rm1 "CREATE TEMP TABLE tt (v text)" "INSERT INTO tt VALUES ('free')" "CREATE TABLE cp.fine AS SELECT * FROM tt" "DROP TABLE cp.fine")" "no error" \
   "(b) a temporary table that never received crm_data rows is no copy"
cnt=0
for i in $(seq 1 30); do
  cnt=$(su -c "SELECT count(*) FROM crm.audit_log WHERE action = 'EXPORT' AND detail ->> 'how' = 'INSERT INTO' AND detail ->> 'relation' = 'tt' AND (detail ->> 'rows')::int = 1 AND detail -> 'objects' ? 'customer'")
  [ "$cnt" = 2 ] && break; sleep 0.5
done
ok "$cnt" "2" "(b) filling a temporary table from crm_data is an EXPORT event with its row count"

# --- (c) writes into permanent relations outside crm and crm_data ----------------------------------
for who in x_adm x_rm1; do
  ok "$(err $who "INSERT INTO cp.own SELECT id, name, id_number FROM crm_data.customer")" "42501 INSERT INTO cp.own reading crm_data.customer is not allowed" \
     "(c) $who: INSERT ... SELECT FROM crm_data is refused"
  ok "$(as $who "INSERT INTO cp.own SELECT id, name, id_number FROM crm_data.customer" | grep -c '^HINT:  Create a view instead')" "1" "(c) $who: the hint names a view (and a temporary table)"
  ok "$(err $who "INSERT INTO cp.own SELECT id, name, id_number FROM cp.v")" "42501 INSERT INTO cp.own reading crm_data.customer is not allowed" "(c) $who: ... through a view"
  ok "$(err $who "INSERT INTO cp.own (id_number) SELECT * FROM cp.ids()")" "42501 INSERT INTO cp.own reading crm_data.customer is not allowed" "(c) $who: ... through a function"
  ok "$(err $who "INSERT INTO cp.own (id_number) VALUES (cp.one())")" "42501 INSERT INTO cp.own reading crm_data.customer is not allowed" "(c) $who: ... a VALUES list calling a function"
  ok "$(err $who "INSERT INTO cp.own (id_number) VALUES (cp.imm())")" "42501 INSERT INTO cp.own reading crm_data.customer is not allowed" \
     "(c) $who: ... an IMMUTABLE function folded while planning"
  ok "$(err $who "WITH x AS (INSERT INTO cp.own (id_number) SELECT id_number FROM crm_data.customer RETURNING 1) SELECT count(*) FROM x")" \
     "42501 WITH ... (a data-modifying WITH) writing cp.own reading crm_data.customer is not allowed" "(c) $who: a data-modifying WITH"
  ok "$(err $who "INSERT INTO cp.own (id) VALUES (1)" "UPDATE cp.own o SET id_number = c.id_number FROM crm_data.customer c")" \
     "42501 UPDATE cp.own reading crm_data.customer is not allowed" "(c) $who: UPDATE ... FROM"
  ok "$(err $who "UPDATE cp.own o SET id_number = (SELECT max(id_number) FROM cp.v)")" "42501 UPDATE cp.own reading crm_data.customer is not allowed" "(c) $who: UPDATE with a sub-select on a view"
  ok "$(err $who "MERGE INTO cp.own o USING crm_data.customer c ON o.id = c.id WHEN NOT MATCHED THEN INSERT VALUES (c.id, c.name, c.id_number)")" \
     "42501 MERGE INTO cp.own reading crm_data.customer is not allowed" "(c) $who: MERGE"
  ok "$(err $who "DELETE FROM cp.own o USING crm_data.customer c WHERE c.id_number > o.id_number")" "42501 DELETE FROM cp.own reading crm_data.customer is not allowed" \
     "(c) $who: DELETE ... USING (which rows stay tells what was read)"
  ok "$(err $who "CREATE UNLOGGED TABLE cp.u_$who (v text)" "INSERT INTO cp.u_$who SELECT id_number FROM crm_data.customer")" \
     "42501 INSERT INTO cp.u_$who reading crm_data.customer is not allowed" "(c) $who: an UNLOGGED table"
  ok "$(err $who "CREATE TABLE cp.d_$who (v text DEFAULT cp.one(), w int)" "INSERT INTO cp.d_$who (w) VALUES (1)")" \
     "42501 INSERT INTO cp.d_$who reading crm_data.customer is not allowed" "(c) $who: a column default reading crm_data"
  ok "$(err $who "COPY cp.d_$who (w) FROM PROGRAM 'echo 1'" 2>&1 | cut -c1-5; printf '1\n' | psql -X -qAt -v VERBOSITY=verbose -U $who -d $db -c "COPY cp.d_$who (w) FROM STDIN" 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): \(.*\)$/\1 \2/p')" \
     "$(printf '42501\n42501 COPY cp.d_%s reading crm_data.customer is not allowed' $who)" "(c) $who: COPY FROM filling that default"
  ok "$(err $who "CREATE TABLE cp.al_$who (id int)" "INSERT INTO cp.al_$who VALUES (7)" "ALTER TABLE cp.al_$who ADD COLUMN leak text DEFAULT cp.one()")" \
     "42501 ALTER TABLE cp.al_$who reading crm_data.customer is not allowed" "(c) $who: ALTER TABLE ADD COLUMN with a volatile default reading crm_data"
  ok "$(err $who "CREATE TABLE cp.tr_$who (v text)" \
     "CREATE FUNCTION cp.tr_$who() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN NEW.v := (SELECT max(id_number) FROM crm_data.customer); RETURN NEW; END'" \
     "CREATE TRIGGER tr BEFORE INSERT ON cp.tr_$who FOR EACH ROW EXECUTE FUNCTION cp.tr_$who()" "INSERT INTO cp.tr_$who VALUES ('x')")" \
     "42501 INSERT INTO cp.tr_$who reading crm_data.customer is not allowed" "(c) $who: a BEFORE trigger filling the row from crm_data"
  ok "$(err $who "CREATE TABLE cp.at_$who (v text)" \
     "CREATE FUNCTION cp.at_$who() RETURNS trigger LANGUAGE plpgsql AS 'DECLARE x text; BEGIN SELECT max(id_number) INTO x FROM crm_data.customer; IF NEW.v IS NULL THEN UPDATE cp.at_$who SET v = x; END IF; RETURN NULL; END'" \
     "CREATE TRIGGER tr AFTER INSERT ON cp.at_$who FOR EACH ROW EXECUTE FUNCTION cp.at_$who()" "INSERT INTO cp.at_$who VALUES (NULL)")" \
     "42501 INSERT INTO cp.at_$who reading crm_data.customer is not allowed" "(c) $who: an AFTER trigger reading crm_data while the write is in progress"
  ok "$(err $who "SELECT cp.store(id_number) FROM crm_data.customer")" "42501 INSERT INTO cp.own inside a query reading crm_data is not allowed" \
     "(c) $who: a query over crm_data handing values to a function that writes them"
  ok "$(err $who "SELECT cp.store(id_number) FROM cp.v WHERE id > 0")" "42501 INSERT INTO cp.own inside a query reading crm_data is not allowed" \
     "(c) $who: ... through a view"
  ok "$(as $who "SELECT count(*) FROM cp.own WHERE id_number IS NOT NULL")" "0" "(c) $who: nothing was copied"
  ok "$(err $who "INSERT INTO cp.own (id, name) VALUES (1, 'mine')" "UPDATE cp.own SET name = name || '!'" "DELETE FROM cp.own" \
     "SELECT count(*) FROM crm_data.customer")" "no error" "(c) $who: writes that do not read crm_data work"
done
ok "$(err x_adm "INSERT INTO crm_data.customer (owner_id, name) SELECT owner_id, name || ' 2' FROM crm_data.customer WHERE name = '李四'" \
     "UPDATE crm_data.customer SET name = name WHERE name = '李四 2'")" "no error" "(c) writes into crm_data reading crm_data work"
ok "$(err x_adm "BEGIN" "CREATE TEMP TABLE tx AS SELECT id, name FROM crm_data.customer" "INSERT INTO tx SELECT id, name FROM cp.v" "ROLLBACK")" "no error" \
   "(c) writes into a temporary table reading crm_data are allowed"
ok "$(err x_adm "CREATE TABLE cp.fk (customer_id bigint)" "INSERT INTO cp.fk SELECT 1")" "no error" "an unrelated INSERT ... SELECT works"

# --- (d) the maintenance role: allowed, EXPORT, listed with its grants ----------------------------
report() { su -c "SELECT status || ': ' || detail FROM crm.compliance_report() WHERE \"check\" = 'copies of crm_data'"; }
ok "$(report)" "pass: no relation outside crm_data holds rows copied from it" "(d) the report passes: nothing above left a copy"
ok "$(su -c "CREATE TABLE public.x_copy (name text, id_number text)" -c "INSERT INTO public.x_copy SELECT name, id_number FROM crm_data.customer" -c "SELECT count(*) FROM public.x_copy")" "3" \
   "(d) the maintenance role may INSERT ... SELECT into a table"
ok "$(su -c "SELECT relname || ' ' || how || ' ' || sources::text || ' ' || rows FROM crm.data_copy")" "public.x_copy INSERT INTO [\"customer\"] 3" "(d) ... recorded in crm.data_copy"
su -c "GRANT SELECT ON public.x_copy TO crm_user" >/dev/null
ok "$(report)" "fail: copies of crm_data: public.x_copy (table); granted: public.x_copy to crm_user" "(d) the report lists the copy and its grant"
ok "$(err x_rm1 "INSERT INTO cp.own (id_number) SELECT id_number FROM public.x_copy")" "42501 INSERT INTO cp.own reading public.x_copy is not allowed" \
   "(d) a principal granted it cannot copy it on"
ok "$(err x_rm1 "UPDATE public.x_copy SET name = name")" "42501 permission denied for table x_copy" "(d) (and the grant is SELECT only)"
su -c "DROP TABLE public.x_copy" >/dev/null
ok "$(report)" "pass: no relation outside crm_data holds rows copied from it" "(d) dropped, it leaves the report"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
