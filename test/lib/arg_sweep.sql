-- Set-up for test/arg_sweep.sh, run as a superuser in the sweep's own database after
-- CREATE EXTENSION crm: a schema "sweep" with the call wrapper, the value sets and the generator.
-- Every function of crm (the schema crm and any function that belongs to the extension) is called
-- with each argument in turn replaced by each value of its type's set, the others left at a benign
-- default, plus once with every argument NULL.
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS sweep CASCADE;
CREATE SCHEMA sweep;
GRANT USAGE ON SCHEMA sweep TO PUBLIC;

-- sweep.try(q, act_as): runs the call q in a subtransaction that is always rolled back (so a call
-- that drops, shreds or erases leaves the next calls the same database), as the caller (not security
-- definer). Returns NULL for success or an ordinary error; a line naming the call for an internal
-- error (XX000) or an error whose message, detail and hint together exceed 2 kB. A crash is caught by
-- the driver (the connection is lost). act_as: a pooled app first acts as this principal.
CREATE TABLE sweep.outcome (login name DEFAULT session_user, st text);   -- SWEEP: the call ran to its end
GRANT INSERT ON sweep.outcome TO PUBLIC;
CREATE FUNCTION sweep.try(q text, act_as text) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE st text; m text; d text; h text;
BEGIN
  BEGIN
    IF act_as IS NOT NULL THEN PERFORM crm.act_as(act_as); END IF;
    EXECUTE q;
    RAISE EXCEPTION 'sweep: roll back' USING ERRCODE = 'SWEEP';
  EXCEPTION
    WHEN query_canceled THEN   -- statement_timeout: a long call is not a failure
      INSERT INTO sweep.outcome (st) VALUES ('57014');
      RETURN NULL;
    WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                              h = PG_EXCEPTION_HINT;
  END;
  INSERT INTO sweep.outcome (st) VALUES (st);
  IF st = 'SWEEP' THEN RETURN NULL; END IF;
  IF st = 'XX000' THEN
    RETURN format('XX000 internal error: %s -- in: %s', left(m, 200), q);
  END IF;
  -- crm._as_system(sql, args) (internal, not granted) runs its argument as SQL: PostgreSQL's own
  -- parser quotes the offending token of a 1 MB statement, as it does for any EXECUTE; crm copies nothing.
  IF coalesce(length(m), 0) + coalesce(length(d), 0) + coalesce(length(h), 0) > 2048
     AND q NOT LIKE 'SELECT crm.\_as\_system(%' THEN
    RETURN format('message of %s characters (SQLSTATE %s, "%s...") -- in: %s',
                  coalesce(length(m), 0) + coalesce(length(d), 0) + coalesce(length(h), 0), st, left(m, 60), q);
  END IF;
  RETURN NULL;
END $fn$;

-- values per argument type: expr is an SQL expression cast to the argument's type by the generator
-- (for anyelement it carries its own type); short marks the reduced set make test runs.
CREATE TABLE sweep.val (typ regtype, expr text, short boolean);
INSERT INTO sweep.val VALUES
  ('text', $$''$$, true), ('text', $$repeat('x', 1048576)$$, true), ('text', $$'a''b"c\d'$$, false),
  ('text', $$'%s %n {{x}}'$$, false), ('text', $$E'\n'$$, false),
  ('name', $$''$$, true), ('name', $$repeat('n', 200)$$, false),
  ('bigint', '0', true), ('bigint', '-1', false), ('bigint', '9223372036854775807', true),
  ('bigint', '-9223372036854775808', false),
  ('integer', '0', true), ('integer', '-1', false), ('integer', '2147483647', true),
  ('integer', '-2147483648', false),
  ('double precision', $$'NaN'$$, true), ('double precision', $$'Infinity'$$, false),
  ('double precision', $$'-Infinity'$$, false), ('double precision', '0', false),
  ('numeric', $$'NaN'$$, true), ('numeric', $$'Infinity'$$, false), ('numeric', $$'-Infinity'$$, false),
  ('numeric', '-1', false),
  ('boolean', 'false', false),
  ('date', $$'infinity'$$, true), ('date', $$'-infinity'$$, false), ('date', $$'4713-01-01 BC'$$, false),
  ('date', $$'5874897-12-31'$$, false), ('date', $$'2000-02-29'$$, false),
  ('timestamp with time zone', $$'infinity'$$, true), ('timestamp with time zone', $$'-infinity'$$, false),
  ('timestamp with time zone', $$'4714-11-24 00:00:00+00 BC'$$, false),
  ('timestamp with time zone', $$'294276-12-31 23:59:59+00'$$, false),
  ('interval', '0', false), ('interval', $$'-1 day'$$, true), ('interval', $$'178000000 years'$$, false),
  ('interval', $$'-178000000 years'$$, false),
  ('jsonb', $$'{}'$$, true), ('jsonb', $$'[]'$$, false), ('jsonb', $$'null'$$, true), ('jsonb', $$'"x"'$$, false),
  ('jsonb', '1', false), ('jsonb', $$'{"a":'$$, false),    -- malformed: refused by the cast, never reaches crm
  ('jsonb', $$'[null, {}, [], 1, "x"]'$$, false),
  ('jsonb', $$'{"object": null, "type": 5, "required": "yes", "values": {}, "states": [], "start": null}'$$, true),
  ('jsonb', $$jsonb_build_object('x', repeat('j', 1048576))$$, false),
  ('jsonb', $$'[{"type": null}, {"type": "create_task"}, {"type": "notify", "template": null}]'$$, false),
  ('text[]', $${}$$, true), ('text[]', $${NULL}$$, true), ('text[]', $$ARRAY['']$$, false),
  ('text[]', $$ARRAY[repeat('x', 1048576)]$$, false), ('text[]', $${{a,b},{c,d}}$$, false),
  ('bigint[]', $${}$$, true), ('bigint[]', $${NULL}$$, true), ('bigint[]', $${0,-1}$$, false),
  ('bigint[]', $${{1,2},{3,4}}$$, false), ('bigint[]', $$ARRAY[9223372036854775807]$$, false),
  ('integer[]', $${}$$, true), ('integer[]', $${NULL}$$, true),
  ('regclass', '0', true), ('regclass', $$'pg_catalog.pg_class'$$, false), ('regclass', $$'crm.audit_log'$$, false),
  ('regprocedure', '0', true), ('regprocedure', $$'pg_catalog.now()'$$, false),
  ('regprocedure', $$'crm.current_principal()'$$, false),
  ('anyelement', 'NULL::text', true), ('anyelement', $$''::text$$, false),
  ('anyelement', $$repeat('x', 1048576)$$, true), ('anyelement', 'NULL::bigint', false),
  ('anyelement', $$'NaN'::numeric$$, false), ('anyelement', $$'-Infinity'::float8$$, false),
  ('anyelement', $$'{NULL}'::text[]$$, false), ('anyelement', 'NULL::jsonb', false);
-- text-like values with quotes are written $$...$$ above; the generator casts them: ('' )::text.
-- Double-quoted arrays are literals: ('{}')::text[].
UPDATE sweep.val SET expr = quote_literal(expr) WHERE expr LIKE '{%';

-- benign defaults by argument name (so a call gets past the first checks), else by type
CREATE TABLE sweep.dflt (argname text, typ regtype, expr text);
INSERT INTO sweep.dflt VALUES
  ('object', 'text', $$'customer'$$), ('obj', 'text', $$'customer'$$), ('field', 'text', $$'name'$$),
  ('type', 'text', $$'text'$$), ('login', 'text', $$'sweep_rm'$$), ('mask', 'text', $$'full'$$),
  ('role', 'text', $$'rm'$$), ('privilege', 'text', $$'read'$$), ('level', 'text', $$'read'$$),
  ('scope', 'text', $$'own'$$), ('sharing', 'text', $$'private'$$), ('event', 'text', $$'insert'$$),
  ('ev', 'text', $$'insert'$$), ('condition', 'text', $$'true'$$), ('cond', 'text', $$'true'$$),
  ('wall', 'text', $$'sweep_wall'$$), ('rule', 'text', $$'sweep_rule'$$), ('rname', 'text', $$'sweep_rule'$$),
  ('workflow', 'text', $$'sweep_wf'$$), ('wf', 'text', $$'sweep_wf'$$), ('kind', 'text', $$'field'$$),
  ('document_type', 'text', $$'id_card'$$), ('value', 'text', $$'110101199003077777'$$),
  ('principal_or_unit', 'text', $$'sweep_rm'$$), ('access', 'text', $$'read'$$),
  ('purpose', 'text', $$'marketing'$$), ('channel', 'text', $$'sms'$$), ('format', 'text', $$'mermaid'$$),
  ('action', 'text', $$'submit'$$), ('src', 'text', $$'core'$$), ('source_system', 'text', $$'core'$$),
  ('ext', 'text', $$'E1'$$), ('external_id', 'text', $$'E1'$$), ('template', 'text', $$'hi {{name}}'$$),
  ('region', 'text', $$'110101'$$), ('base', 'text', $$'91110000MA0000000'$$),
  ('attrs', 'jsonb', $${"name": "sweep"}$$), ('options', 'jsonb', $${}$$), ('opts', 'jsonb', $${}$$),
  ('definition', 'jsonb', $${"status_field": "status", "start": "draft", "states": {"draft": {}}}$$),
  ('actions', 'jsonb', $$[{"type": "create_task", "assignee": "owner", "title": "t"}]$$),
  ('allowed', 'text[]', $${a,b}$$), ('roles', 'text[]', $${rm}$$), ('privileges', 'text[]', $${read}$$),
  ('staging', 'regclass', $$'sweep.staging'$$), ('staging_table', 'regclass', $$'sweep.staging'$$);
UPDATE sweep.dflt SET expr = quote_literal(expr) WHERE left(expr, 1) IN ('{', '[');
INSERT INTO sweep.dflt VALUES
  (NULL, 'text', $$'x'$$), (NULL, 'name', $$'sweep_rm'$$), (NULL, 'bigint', '1'), (NULL, 'integer', '1'),
  (NULL, 'boolean', 'true'), (NULL, 'date', $$'2024-02-29'$$), (NULL, 'timestamp with time zone', $$'2024-01-01'$$),
  (NULL, 'interval', $$'1 day'$$), (NULL, 'jsonb', $$'{}'$$), (NULL, 'text[]', $$'{x}'$$),
  (NULL, 'bigint[]', $$'{1}'$$), (NULL, 'integer[]', $$'{1}'$$), (NULL, 'double precision', '1'),
  (NULL, 'numeric', '1'), (NULL, 'regclass', $$'crm_data.customer'$$),
  (NULL, 'regprocedure', $$'crm.today()'$$), (NULL, 'anyelement', $$'x'::text$$);

-- a staging table for crm.import, readable by everyone
CREATE TABLE sweep.staging (external_id text, name text);
INSERT INTO sweep.staging VALUES ('E1', 'staged');
GRANT SELECT ON sweep.staging TO PUBLIC;

-- sweep.calls(full): one line per call, "SELECT r FROM sweep.try('<call>', NULLIF(:'act_as', '')) r WHERE r IS NOT NULL;"
-- Trigger and event-trigger functions are left out: PostgreSQL refuses to call them directly.
CREATE FUNCTION sweep.calls(full_set boolean) RETURNS SETOF text LANGUAGE sql AS $fn$
WITH fn AS (
  SELECT p.oid, n.nspname, p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE p.prokind IN ('f', 'p')
    AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
    AND (n.nspname = 'crm' OR EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                                        AND e.extname = 'crm'))
), arg AS (  -- input arguments in order
  SELECT fn.oid, row_number() OVER (PARTITION BY fn.oid ORDER BY u.ord) AS pos, u.typ::regtype AS typ, u.nm
  FROM fn JOIN pg_proc p ON p.oid = fn.oid,
       unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
              coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])),
              coalesce(p.proargnames, array_fill(''::text, ARRAY[p.pronargs])))
         WITH ORDINALITY AS u(typ, mode, nm, ord)
  WHERE u.mode IN ('i', 'b', 'v')
), typed AS (  -- the value sets, with a NULL and, for composite types, a row of NULLs
  SELECT a.oid, a.pos, a.typ, a.nm,
         coalesce((SELECT d.expr FROM sweep.dflt d WHERE d.argname = a.nm AND d.typ = a.typ),
                  (SELECT d.expr FROM sweep.dflt d WHERE d.argname IS NULL AND d.typ = a.typ),
                  'NULL') AS dflt
  FROM arg a
), vals AS (
  SELECT t.oid, t.pos, v.expr
  FROM typed t
  CROSS JOIN LATERAL (
    SELECT 'NULL' AS expr WHERE t.typ <> 'anyelement'::regtype
    UNION ALL SELECT v.expr FROM sweep.val v WHERE v.typ = t.typ AND (full_set OR v.short)
    UNION ALL SELECT '''(' || repeat(',', (SELECT count(*)::int - 1 FROM pg_attribute
                                        WHERE attrelid = ty.typrelid AND attnum > 0 AND NOT attisdropped)) || ')'''
      FROM pg_type ty WHERE ty.oid = t.typ AND ty.typtype = 'c'
  ) v
), cast_ AS (
  SELECT t.oid, t.pos, t.typ,
         CASE WHEN t.typ = 'anyelement'::regtype THEN '(' || t.dflt || ')'
              ELSE '(' || t.dflt || ')::' || format_type(t.typ, NULL) END AS dflt
  FROM typed t
), one AS (  -- one call per (function, argument, value)
  SELECT v.oid, v.pos AS at, v.expr
  FROM vals v
  UNION ALL SELECT DISTINCT oid, 0, NULL FROM arg   -- every argument NULL
  UNION ALL SELECT fn.oid, -1, NULL FROM fn WHERE NOT EXISTS (SELECT 1 FROM arg WHERE arg.oid = fn.oid)
)
SELECT format('SELECT r FROM sweep.try(%L, NULLIF(:''act_as'', '''')) r WHERE r IS NOT NULL;',
              format('SELECT %I.%I(%s)', f.nspname, f.proname,
                     coalesce((SELECT string_agg(
                                 CASE WHEN o.at = 0 AND c.typ = 'anyelement'::regtype THEN 'NULL::text'
                                      WHEN o.at = 0 THEN 'NULL::' || format_type(c.typ, NULL)
                                      WHEN c.pos <> o.at THEN c.dflt
                                      WHEN c.typ = 'anyelement'::regtype THEN '(' || o.expr || ')'
                                      ELSE '(' || o.expr || ')::' || format_type(c.typ, NULL) END,
                                 ', ' ORDER BY c.pos)
                               FROM cast_ c WHERE c.oid = o.oid), '')))
FROM one o JOIN fn f ON f.oid = o.oid
ORDER BY f.nspname, f.proname, o.oid, o.at, o.expr
$fn$;
