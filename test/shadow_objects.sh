#!/usr/bin/env bash
# TAP: code that crm runs with rights other than the caller's (as its catalog owner, a rule's owner,
# the outer user) never resolves an object the caller planted: shadow operators, functions,
# aggregates and domains in a schema the caller owns and puts first in its search_path, and objects
# in pg_temp. Every planted object records who called it and with what in a table (evil.loot), so
# any call from crm's own code shows there: as another role (escalation) or with a value the caller
# may only see masked (a leak). The caller's own statements below use only qualified operators, so
# every loot row after the control is crm's doing.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_shadow
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sh_tl') THEN CREATE ROLE sh_tl LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sh_rm') THEN CREATE ROLE sh_rm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sh_app') THEN CREATE ROLE sh_app LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sh_admin') THEN CREATE ROLE sh_admin LOGIN; END IF;
END $$;
GRANT crm_app TO sh_app;
GRANT crm_admin TO sh_admin;
SELECT crm.add_org_unit('SH HQ') AS hq \gset
SELECT crm.add_principal('sh_admin', 'Admin', :hq, ARRAY['admin']) AS adm \gset
SELECT crm.add_principal('sh_tl', 'Team lead', :hq, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('sh_rm', 'RM', :hq, ARRAY['rm'], :tl) AS rm \gset
-- the RM's customers: the team lead sees them with ID numbers masked
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, segment, aum)
  VALUES (:rm, 'Wang Fang', 'id_card', '11010519491231002X', 'affluent', 1000),
         (:rm, 'Li Lei', 'id_card', crm.make_cn_id_number('110105', '1980-01-01', 1), 'mass', 2000);
-- a wall keeping the team lead out of customers with one ID number: evaluated on real values
SELECT crm.add_wall('sh_wall', 'customer', $$id_number = '11010519491231002X' OR segment = 'corporate'$$, ARRAY[:tl]::bigint[]);
-- a rule that fires on the RM's updates (its actions run as the rule's owner)
-- and a call action: the function runs as the role that defined the rule (here a superuser); its
-- unqualified = must not resolve to a shadow of the caller's
CREATE TABLE public.sh_calls (record_id bigint, called_as name);
CREATE FUNCTION public.sh_note(id bigint) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO public.sh_calls SELECT id, current_user WHERE id = id $$;
SELECT crm.create_rule('sh_rule', 'customer', 'update', $$NEW.aum < OLD.aum$$,
  '[{"type": "create_task", "assignee": "owner", "title": "AUM fell"}, {"type": "call", "function": "public.sh_note"}]'::jsonb,
  '{"run_as": "sh_admin"}'::jsonb) IS NOT NULL AS rule;
-- the attackers' schema: the team lead may create objects in it
CREATE SCHEMA evil AUTHORIZATION sh_tl;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
SQL
[ $? = 0 ] || { echo "not ok 1 - set-up"; exit 1; }

# sh_tl plants its shadows. Each records current_user and its arguments.
psql -X -q -v ON_ERROR_STOP=1 -U sh_tl -d $db >/dev/null <<'SQL' || { echo "not ok 1 - planting"; exit 1; }
CREATE TABLE evil.loot (who text, what text, args text);
GRANT INSERT, SELECT ON evil.loot TO PUBLIC;
CREATE FUNCTION evil.spy(what text, args text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN INSERT INTO evil.loot VALUES (current_user, what, args); RETURN true; END $$;
GRANT EXECUTE ON FUNCTION evil.spy(text, text) TO PUBLIC;
-- comparison operators on the types crm's queries compare
CREATE FUNCTION evil.eq(a text, b text) RETURNS boolean LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
  $$ SELECT evil.spy('text =', a || ' ' || b) AND a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
CREATE FUNCTION evil.ne(a text, b text) RETURNS boolean LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
  $$ SELECT evil.spy('text <>', a || ' ' || b) AND a OPERATOR(pg_catalog.<>) b $$;
CREATE OPERATOR evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.ne);
CREATE FUNCTION evil.eq8(a bigint, b bigint) RETURNS boolean LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
  $$ SELECT evil.spy('int8 =', a || ' ' || b) AND a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.eq8);
CREATE FUNCTION evil.gt(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
  $$ SELECT evil.spy('timestamptz >', a || ' ' || b) AND a OPERATOR(pg_catalog.>) b $$;
CREATE OPERATOR evil.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.gt);
CREATE FUNCTION evil.cat(a text, b text) RETURNS text LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
  $$ SELECT CASE WHEN evil.spy('text ||', a || ' ' || b) THEN a OPERATOR(pg_catalog.||) b END $$;
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.cat);
CREATE FUNCTION evil.get(a jsonb, b text[]) RETURNS text LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
  $$ SELECT CASE WHEN evil.spy('jsonb #>>', a::text) THEN a OPERATOR(pg_catalog.#>>) b END $$;
CREATE OPERATOR evil.#>> (LEFTARG = jsonb, RIGHTARG = text[], FUNCTION = evil.get);
-- functions and aggregates crm's queries call
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT CASE WHEN evil.spy('now', '') THEN pg_catalog.now() END $$;
CREATE FUNCTION evil.statement_timestamp() RETURNS timestamptz LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT CASE WHEN evil.spy('statement_timestamp', '') THEN pg_catalog.now() END $$;
CREATE FUNCTION evil.lower(a text) RETURNS text LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT CASE WHEN evil.spy('lower', a) THEN pg_catalog.lower(a) END $$;
CREATE FUNCTION evil.mx(s bigint, v bigint) RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT CASE WHEN evil.spy('max', v::text) THEN GREATEST(s, v) END $$;
CREATE AGGREGATE evil.max(bigint) (SFUNC = evil.mx, STYPE = bigint);
CREATE AGGREGATE evil.array_agg(bigint) (SFUNC = evil.mx, STYPE = bigint);
CREATE FUNCTION evil.cnt(s bigint) RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT CASE WHEN evil.spy('count', '') THEN s + 1 END $$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.cnt, STYPE = bigint, INITCOND = '0');
-- domains that shadow the types crm casts to: their checks would see every value cast
CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.spy('domain text', VALUE));
CREATE DOMAIN evil.int8 AS pg_catalog.int8 CHECK (evil.spy('domain int8', VALUE::pg_catalog.text));
CREATE DOMAIN evil.jsonb AS pg_catalog.jsonb CHECK (evil.spy('domain jsonb', VALUE::pg_catalog.text));
CREATE DOMAIN evil.date AS pg_catalog.date CHECK (evil.spy('domain date', VALUE::pg_catalog.text));
CREATE COLLATION evil."C" (locale = 'C');
SQL
[ $? = 0 ] || { echo "not ok 1 - planting"; exit 1; }

# sessions of the team lead, the RM and a pooled app, each with the shadows first in its path
# (pg_temp first too: crm must not resolve relations or types there either)
prelude="SET search_path = pg_temp, evil, pg_catalog, public;
CREATE TEMP TABLE principal (id bigint, login text, org_unit_id bigint, active boolean);
CREATE TEMP TABLE wall (name text, object text, condition text);
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (evil.spy('temp domain', VALUE));"
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
loot() { psql -X -qAt -d $db -c "SELECT count(*) FROM evil.loot WHERE $1"; }

# control: the shadows do capture whatever resolves them
as sh_tl -c "$prelude SELECT 'a'::text = 'b'::text, 1::bigint = 2::bigint, 'x'::evil.text IS NOT NULL;" >/dev/null
ok "$(loot "what IN ('text =', 'int8 =', 'domain text')")" "3" "control: the planted operators and domain are reached by a query that resolves them"
psql -X -q -d $db -c "TRUNCATE evil.loot"

# the team lead's reads: row security (grants, team, shares, walls), masking, the audit of reads
as sh_tl >/dev/null <<SQL
$prelude
SELECT * FROM crm_data.customer;
SELECT name, id_number FROM crm_data.customer WHERE aum OPERATOR(pg_catalog.>) 0;
COPY crm_data.customer TO STDOUT;
COPY (SELECT * FROM crm_data.customer) TO STDOUT;
PREPARE q AS SELECT * FROM crm_data.customer; EXECUTE q; EXECUTE q;
SELECT * FROM crm.explain_access(crm.current_principal(), 'customer', (SELECT pg_catalog.min(id) FROM crm_data.customer));
SELECT crm.current_principal(), crm.acting_as();
SELECT * FROM crm.field_levels(crm.current_principal(), 'customer');
SELECT * FROM crm_report.customer_360;
SQL
ok "$(as sh_tl -c "$prelude SELECT pg_catalog.count(*) FROM crm_data.customer" | tail -1)" "1" \
   "the team lead sees the customer not behind the wall, and the wall still works under a shadowed path"

# the RM's writes: stamp, field guard, encryption, audit trigger, rule firing as its owner
as sh_rm >/dev/null <<SQL
$prelude
UPDATE crm_data.customer SET aum = 10 WHERE name OPERATOR(pg_catalog.=) 'Li Lei';
INSERT INTO crm_data.customer (owner_id, name, segment) VALUES (crm.current_principal(), 'New One', 'mass');
UPDATE crm_data.customer SET segment = 'affluent' WHERE name OPERATOR(pg_catalog.=) 'New One';
DELETE FROM crm_data.customer WHERE name OPERATOR(pg_catalog.=) 'New One';
SELECT crm.share('customer', (SELECT pg_catalog.min(id) FROM crm_data.customer), 'sh_admin', 'read', NULL, 'cover');
SELECT * FROM crm.subject_export((SELECT pg_catalog.min(id) FROM crm_data.customer));
SQL
ok "$(psql -X -qAt -d $db -c "SELECT count(*) FROM crm_data.task WHERE title = 'AUM fell'")" "1" "the rule fired for the RM's update"
ok "$(psql -X -qAt -d $db -c "SELECT count(*) FROM public.sh_calls")" "1" "and its call action ran"

# a pooled app acting for the team lead
as sh_app >/dev/null <<SQL
$prelude
BEGIN;
SELECT crm.act_as('sh_tl');
SELECT * FROM crm_data.customer;
COMMIT;
SQL

# the team lead tries to slip the shadows into crm's definitions (it is not an admin: refused anyway),
# and an admin with the shadows on its path defines a wall: the condition is compiled to built-in objects
as sh_admin >/dev/null <<SQL
$prelude
SELECT crm.add_wall('sh_wall2', 'customer', \$\$name = 'nobody'\$\$, ARRAY[crm.current_principal()]::bigint[]);
SELECT pg_catalog.count(*) FROM crm_data.customer;
SQL
ok "$(loot "true")" "0" "no planted object was called by crm's code (as any role)"
ok "$(loot "args LIKE '%11010519491231002%'")" "0" "no planted object saw a real ID number"

# definitions that name the shadows explicitly are refused
out=$(as sh_admin -c "SELECT crm.add_wall('sh_w3', 'customer', \$\$id_number OPERATOR(evil.=) 'x'\$\$, ARRAY[1]::bigint[])")
ok "$(echo "$out" | grep -c "neither built in nor crm's")" "1" "a wall condition using a planted operator is refused"
out=$(as sh_admin -c "SELECT crm.add_wall('sh_w3', 'customer', \$\$evil.lower(id_number) = 'x'\$\$, ARRAY[1]::bigint[])")
ok "$(echo "$out" | grep -c "neither built in nor crm's")" "1" "a wall condition calling a planted function is refused"
out=$(as sh_admin -c "SELECT crm.add_wall('sh_w3', 'customer', \$\$id_number::evil.text = 'x'\$\$, ARRAY[1]::bigint[])")
ok "$(echo "$out" | grep -c "neither built in nor crm's")" "1" "a wall condition casting to a planted domain is refused"
out=$(as sh_admin -c "SELECT crm.create_rule('sh_r3', 'customer', 'update', \$\$NEW.id_number::evil.text = 'x'\$\$, '[{\"type\": \"notify\", \"channel\": \"email\", \"to\": \"owner\", \"template\": \"x\"}]'::jsonb)")
ok "$(echo "$out" | grep -c "neither built in nor crm's")" "1" "a rule condition casting to a planted domain is refused"
ok "$(loot "args LIKE '%11010519491231002%'")" "0" "and no planted object saw a real ID number while they were checked"

# an admin principal who is not a superuser tries to run its own code as crm's owner through a
# condition: a stable built-in that runs a query (table_to_xml over a temporary view calling its
# function), or one that reads the server's settings. Refused for walls, rules and workflow guards.
psql -X -q -d $db -c "CREATE TABLE public.sh_pwned (who name)" -c "GRANT INSERT ON public.sh_pwned TO PUBLIC" >/dev/null
adm_prelude="CREATE FUNCTION pg_temp.pwn() RETURNS int LANGUAGE plpgsql AS \$\$ BEGIN INSERT INTO public.sh_pwned VALUES (current_user); RETURN 1; END \$\$;
CREATE TEMP VIEW v AS SELECT pg_temp.pwn() AS x;"
xml="table_to_xml('v'::regclass, true, false, '') IS NOT NULL"
out=$(as sh_admin -c "$adm_prelude" -c "SELECT crm.add_wall('sh_pwn', 'customer', \$\$$xml\$\$, ARRAY[crm.current_principal()]::bigint[])" -c "SELECT count(*) FROM crm_data.customer")
ok "$(echo "$out" | grep -cE 'conditions may (not )?use')" "1" "a wall condition calling table_to_xml() is refused"
out=$(as sh_admin -c "$adm_prelude" -c "SELECT crm.create_rule('sh_pwn', 'customer', 'schedule', \$\$$xml\$\$, '[{\"type\": \"create_task\", \"assignee\": \"owner\", \"title\": \"x\"}]', '{\"run_as\": \"sh_admin\"}')")
ok "$(echo "$out" | grep -cE 'conditions may (not )?use')" "1" "so is a scheduled rule's"
out=$(as sh_admin -c "$adm_prelude" -c "SELECT crm.create_rule('sh_pwn2', 'customer', 'update', \$\$$xml\$\$, '[{\"type\": \"create_task\", \"assignee\": \"owner\", \"title\": \"x\"}]', '{\"run_as\": \"sh_admin\"}')")
ok "$(echo "$out" | grep -cE 'conditions may (not )?use')" "1" "and an event rule's"
out=$(as sh_admin -c "$adm_prelude" -c "SELECT crm.define_workflow('sh_pwn', 'customer', \$j\${\"status_field\": \"segment\", \"start\": \"mass\", \"states\": {\"mass\": {}, \"corporate\": {\"kind\": \"end\"}}, \"transitions\": [{\"action\": \"go\", \"from\": \"mass\", \"to\": \"corporate\", \"guard\": \"$xml\"}]}\$j\$)")
ok "$(echo "$out" | grep -cE 'conditions may (not )?use')" "1" "and a workflow guard"
out=$(as sh_admin -c "SELECT crm.check_condition('customer', \$\$current_setting('crm.keyring') IS NOT NULL\$\$)")
ok "$(echo "$out" | grep -c 'is not one of the functions conditions may use')" "1" "a condition reading a setting is refused"
out=$(as sh_admin -c "SELECT crm.check_condition('customer', \$\$crm.audit_hash('customer', 'name', name) IS NOT NULL\$\$)")
ok "$(echo "$out" | grep -c 'is not one of the functions conditions may use')" "1" "and one calling a crm function outside the conditions' list (the audit HMAC)"
ok "$(psql -X -qAt -d $db -c "SELECT count(*) FROM public.sh_pwned") $(psql -X -qAt -d $db -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'sh_admin'")" \
   "0 f" "the admin's function never ran, and it is no superuser"

# an operator of the admin's own schema, even one backed by a built-in function, is refused: the
# compiled text names it, and its owner could later put another function behind the name
psql -X -q -U sh_tl -d $db -c "CREATE OPERATOR evil.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_catalog.texteq)" >/dev/null
out=$(as sh_admin -c "SELECT crm.add_wall('sh_op', 'customer', \$\$name OPERATOR(evil.===) 'x'\$\$, ARRAY[crm.current_principal()]::bigint[])")
ok "$(echo "$out" | grep -c 'uses operator evil.===')" "1" "a wall using another schema's operator (backed by texteq) is refused"
out=$(as sh_admin -c "SELECT crm.create_rule('sh_op', 'customer', 'schedule', \$\$name OPERATOR(evil.===) 'x'\$\$, '[{\"type\": \"create_task\", \"assignee\": \"owner\", \"title\": \"x\"}]', '{\"run_as\": \"sh_admin\"}')")
ok "$(echo "$out" | grep -c 'uses operator evil.===')" "1" "so is a scheduled rule's condition"
out=$(as sh_admin -c "SELECT crm.check_condition('customer', \$\$name OPERATOR(evil.===) ANY (ARRAY['x'])\$\$)")
ok "$(echo "$out" | grep -c 'uses operator evil.===')" "1" "and the operator in an ANY (array) comparison"
# text search follows the reader's default_text_search_config: not allowed in conditions
out=$(as sh_admin -c "SELECT crm.check_condition('customer', \$\$name @@ 'merger'\$\$)")
ok "$(echo "$out" | grep -c 'is not one of the functions conditions may use')" "1" "a condition using text search without a configuration is refused"
# a condition on the time of day is read in the server's time zone, whatever the reader's is
off=$(psql -X -qAt -d $db -c "SELECT set_config('timezone', current_setting('log_timezone'), false) IS NOT NULL" -c "SELECT to_char(now(), 'OF')" | tail -1)
psql -X -q -d $db -c "INSERT INTO crm_data.customer (owner_id, name) SELECT id, 'Tz Test' FROM crm.principal WHERE login = 'sh_admin'" >/dev/null
ok "$(as sh_admin -c "SELECT count(*) FROM crm_data.customer WHERE name OPERATOR(pg_catalog.=) 'Tz Test'")" "1" "control: the admin sees its customer"
as sh_admin -c "SELECT crm.add_wall('sh_tz', 'customer', \$\$to_char(created_at, 'OF') = '$off' AND name = 'Tz Test'\$\$, ARRAY[crm.current_principal()]::bigint[])" >/dev/null
ok "$(as sh_admin -c "SET timezone = 'Etc/GMT-14'" -c "SELECT count(*) FROM crm_data.customer WHERE name OPERATOR(pg_catalog.=) 'Tz Test'" | tail -1) $(as sh_admin -c "SET timezone = 'Etc/GMT+12'" -c "SELECT count(*) FROM crm_data.customer WHERE name OPERATOR(pg_catalog.=) 'Tz Test'" | tail -1)" \
   "0 0" "a wall on the time zone's offset ($off) holds whatever time zone the reader sets"

# a workflow guard on the time of day is read in the server's time zone too
psql -X -q -d $db -c "INSERT INTO crm_data.customer (owner_id, name, segment) SELECT id, 'Wf Test', 'mass' FROM crm.principal WHERE login = 'sh_admin'" >/dev/null
wfc=$(psql -X -qAt -d $db -c "SELECT id FROM crm_data.customer WHERE name = 'Wf Test'")
as sh_admin -c "SELECT crm.define_workflow('sh_tzwf', 'customer', \$j\${\"status_field\": \"segment\", \"start\": \"mass\", \"states\": {\"mass\": {}, \"corporate\": {\"kind\": \"end\"}}, \"transitions\": [{\"action\": \"go\", \"from\": \"mass\", \"to\": \"corporate\", \"allowed\": [\"owner\"], \"guard\": \"to_char(now(), 'OF') = '$off'\"}]}\$j\$)" >/dev/null
as sh_admin -c "SELECT crm.start_workflow('sh_tzwf', $wfc)" >/dev/null
ok "$(as sh_admin -c "SET timezone = 'Etc/GMT-14'" -c "SELECT crm.transition('customer', $wfc, 'go')" | tail -1)" "corporate" \
   "a workflow guard on the time zone's offset ($off) holds whatever time zone the reader sets"
for c in "xmlparse(content name) IS NOT NULL" "name::regclass IS NOT NULL"; do
  out=$(as sh_admin -c "SELECT crm.check_condition('customer', \$\$$c\$\$)")
  ok "$(echo "$out" | grep -c 'conditions may not use')" "1" "the condition $c is refused (XML and catalog lookups of record values)"
done
# ordinary conditions still compile: IN lists, arrays, GREATEST, CASE, dates against now()
for c in "segment IN ('mass', 'affluent')" "GREATEST(aum, 0) > 5" "ARRAY[segment] <@ ARRAY['mass']" \
         "CASE WHEN aum > 0 THEN true ELSE false END" "kyc_expires_on < now() + interval '30 days'" \
         "crm.days_until(kyc_expires_on) < 30" "to_char(birthday, 'MMDD') = '0101'"; do
  out=$(as sh_admin -c "SELECT crm.check_condition('customer', \$\$$c\$\$) IS NOT NULL")
  ok "$out" "t" "the condition $c is accepted"
done
out=$(as sh_admin -c "SELECT crm.create_rule('sh_in', 'customer', 'update', \$\$NEW.segment IN ('mass', 'affluent')\$\$, '[{\"type\": \"create_task\", \"assignee\": \"owner\", \"title\": \"x\"}]', '{\"run_as\": \"sh_admin\"}')")
ok "$out" "sh_in" "an event rule with an IN list is accepted"
for c in "NEW.kyc_expires_on < current_date" "NEW.created_at < now() - interval '1 day'" "NEW.created_at::date = '2026-01-01'"; do
  out=$(as sh_admin -c "SELECT crm.create_rule('sh_tzr', 'customer', 'update', \$\$$c\$\$, '[{\"type\": \"create_task\", \"assignee\": \"owner\", \"title\": \"x\"}]', '{\"run_as\": \"sh_admin\"}')")
  ok "$(echo "$out" | grep -c 'depends on the date, the time or the session')" "1" "an event rule on $c is refused (the writer's session would choose its time zone)"
done

# a wall on a regular expression holds whatever the reader does to how strings are read
as sh_admin -c "SELECT crm.add_wall('sh_re', 'customer', \$\$name ~ '^\\w+ Lei\$'\$\$, ARRAY[crm.current_principal()]::bigint[])" >/dev/null
ok "$(as sh_admin -c "SELECT count(*) FROM crm_data.customer WHERE name OPERATOR(pg_catalog.=) 'Li Lei'")" "0" "the regex wall hides Li Lei from the admin"
ok "$(as sh_admin -c "SET standard_conforming_strings = off" -c "SELECT count(*) FROM crm_data.customer WHERE name OPERATOR(pg_catalog.=) 'Li Lei'" | tail -1)" "0" \
   "also with standard_conforming_strings off (the backslash is not lost)"
as sh_admin -c "SELECT crm.add_wall('sh_tne', 'customer', \$\$(segment = NULL) IS NULL AND name = 'Wang Fang'\$\$, ARRAY[crm.current_principal()]::bigint[])" >/dev/null
ok "$(as sh_admin -c "SET transform_null_equals = on" -c "SET intervalstyle = sql_standard" -c "SET array_nulls = off" -c "SELECT count(*) FROM crm_data.customer WHERE name OPERATOR(pg_catalog.=) 'Wang Fang'" | tail -1)" "0" \
   "a wall reading x = NULL holds with transform_null_equals on (and other parse settings changed)"
lilei=$(psql -X -qAt -d $db -c "SELECT id FROM crm_data.customer WHERE name = 'Li Lei'")
ok "$(as sh_admin -c "SET standard_conforming_strings = off" -c "SELECT bool_and(NOT allowed) FROM crm.explain_access(crm.current_principal(), 'customer', $lilei)" | tail -1)" \
   "t" "and explain_access agrees"

# the compiled form of a condition names no object outside pg_catalog and crm
ok "$(psql -X -qAt -d $db -c "$prelude SELECT crm._condition_sql('customer', \$\$id_number = 'x' AND crm.days_until(kyc_expires_on) < 5\$\$)" | tail -1)" \
   "((t.id_number = 'x'::text) AND (crm.days_until(t.kyc_expires_on) < 5))" "a condition compiles to built-in operators and schema-qualified crm functions"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
