-- pgTAP: dynamic masking for every query shape, for a masked actor (team lead on a report's
-- customer), a hidden one, a reader (compliance) and the owner; no inference through predicates,
-- ORDER BY, GROUP BY, aggregates; prepared statements and cached plans across act_as and SET ROLE.
BEGIN;
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['mk_tl', 'mk_rm', 'mk_comp', 'mk_app'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN EXECUTE format('CREATE ROLE %I LOGIN', r); END IF;
  END LOOP;
END $$;
GRANT crm_app TO mk_app;
CREATE SCHEMA mk_attack;
GRANT USAGE, CREATE ON SCHEMA mk_attack TO PUBLIC;
CREATE TEMP TABLE p (k text PRIMARY KEY, id bigint);
GRANT SELECT ON p TO PUBLIC;
INSERT INTO p SELECT 'hq', crm.add_org_unit('MK HQ');
INSERT INTO p SELECT 'tl', crm.add_principal('mk_tl', 'TL', (SELECT id FROM p WHERE k = 'hq'), ARRAY['team_lead']);
INSERT INTO p SELECT 'rm', crm.add_principal('mk_rm', 'RM', (SELECT id FROM p WHERE k = 'hq'), ARRAY['rm'], (SELECT id FROM p WHERE k = 'tl'));
INSERT INTO p SELECT 'comp', crm.add_principal('mk_comp', 'Compliance', (SELECT id FROM p WHERE k = 'hq'), ARRAY['compliance']);
WITH x AS (INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, mobile, email, risk_tolerance, kyc_status, risk_assessed_on)
           SELECT id, '张三丰', 'id_card', '11010519491231002X', '13812345678', 'zhang@example.com', 'C1', 'verified', current_date FROM p WHERE k = 'rm' RETURNING id)
INSERT INTO p SELECT 'c', id FROM x;
-- hide the e-mail from team leads everywhere but their own book
SELECT crm.set_field_access('customer', 'email', 'team_lead', 'hidden', 'write');
CREATE FUNCTION pg_temp.as1(persona text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  BEGIN
    EXECUTE format('SET LOCAL ROLE %I', persona);
    EXECUTE q INTO r;
    RAISE EXCEPTION USING ERRCODE = 'P0099', MESSAGE = coalesce(r, '<null>');
  EXCEPTION WHEN SQLSTATE 'P0099' THEN RETURN SQLERRM;
  END;
END $$;
-- the SQLSTATE a statement raises as a persona ('ok' if none); everything is rolled back
CREATE FUNCTION pg_temp.err(persona text, q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    EXECUTE format('SET LOCAL ROLE %I', persona);
    EXECUTE q;
    RAISE EXCEPTION USING ERRCODE = 'P0099';
  EXCEPTION WHEN SQLSTATE 'P0099' THEN RETURN 'ok';
            WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM;
  END;
END $$;
SET ROLE mk_tl;
CREATE VIEW mk_attack.v AS SELECT * FROM crm_data.customer;
CREATE VIEW mk_attack.v_inv WITH (security_invoker = true) AS SELECT * FROM crm_data.customer;
CREATE FUNCTION mk_attack.f_sql() RETURNS SETOF text LANGUAGE sql STABLE AS 'SELECT id_number FROM crm_data.customer';
CREATE FUNCTION mk_attack.f_plpgsql() RETURNS text LANGUAGE plpgsql AS 'DECLARE r text; BEGIN SELECT id_number INTO r FROM crm_data.customer; RETURN r; END';
CREATE FUNCTION mk_attack.f_definer() RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'SELECT id_number FROM crm_data.customer';
RESET ROLE;

SELECT plan(57);

-- every query shape, as the team lead (masked on a report's customer)
SELECT is(pg_temp.as1('mk_tl', q), want, 'team lead: ' || what)
  FROM (VALUES
    ('SELECT id_number FROM crm_data.customer', '110105********002X', 'plain SELECT'),
    ('SELECT c.id_number FROM crm_data.customer c JOIN crm_data.customer d ON d.id = c.id', '110105********002X', 'a self-join'),
    ('SELECT (SELECT id_number FROM crm_data.customer)', '110105********002X', 'a scalar subquery'),
    ('WITH x AS MATERIALIZED (SELECT * FROM crm_data.customer) SELECT id_number FROM x', '110105********002X', 'a materialized CTE'),
    ('SELECT id_number FROM crm_data.customer UNION SELECT id_number FROM crm_data.customer', '110105********002X', 'a set operation'),
    ('SELECT id_number FROM mk_attack.v', '110105********002X', 'a view made before the policy'),
    ('SELECT id_number FROM mk_attack.v_inv', '110105********002X', 'a security_invoker view'),
    ('SELECT x FROM mk_attack.f_sql() x', '110105********002X', 'an inlined SQL function'),
    ('SELECT mk_attack.f_plpgsql()', '110105********002X', 'a PL/pgSQL function'),
    ('SELECT mk_attack.f_definer()', '110105********002X', 'its own SECURITY DEFINER function'),
    ('SELECT row_to_json(c)->>''id_number'' FROM crm_data.customer c', '110105********002X', 'a whole-row reference'),
    ('SELECT mobile FROM crm_data.customer', '13812345678', 'a personal field stays readable'),
    ('SELECT name FROM crm_data.customer', '张三丰', 'and the name'),
    ('SELECT coalesce(email, ''<hidden>'') FROM crm_data.customer', '<hidden>', 'a hidden field reads NULL'),
    ('SELECT min(id_number) FROM crm_data.customer', '110105********002X', 'min() sees only the masked value'),
    ('SELECT count(*)::text FROM crm_data.customer WHERE id_number = ''11010519491231002X''', '0', 'WHERE = <real value> finds nothing'),
    ('SELECT count(*)::text FROM crm_data.customer WHERE id_number LIKE ''%1231%''', '0', 'LIKE on the hidden middle finds nothing'),
    ('SELECT count(*)::text FROM crm_data.customer WHERE email IS NOT NULL', '0', 'a hidden field is NULL to predicates too'),
    ('SELECT string_agg(id_number, '','' ORDER BY id_number) FROM crm_data.customer GROUP BY id_number', '110105********002X', 'GROUP BY and ORDER BY use the masked value'),
    ('UPDATE crm_data.customer SET segment = segment WHERE id_number = ''11010519491231002X'' RETURNING ''touched''', '<null>', 'an UPDATE keyed on the real value touches nothing'),
    ('UPDATE crm_data.customer SET segment = segment RETURNING id_number', '110105********002X', 'RETURNING is masked'),
    ('UPDATE crm_data.customer SET name = id_number RETURNING name', '110105********002X', 'copying a masked field into a writable one copies the mask')
  ) t(q, want, what);

-- the owner and compliance read the real value
SELECT is(pg_temp.as1('mk_rm', 'SELECT id_number FROM crm_data.customer'), '11010519491231002X', 'the owner reads its customer''s ID number');
SELECT is(pg_temp.as1('mk_rm', 'SELECT email FROM crm_data.customer'), 'zhang@example.com', 'and the e-mail');
SELECT is(pg_temp.as1('mk_comp', 'SELECT id_number FROM crm_data.customer'), '11010519491231002X', 'compliance reads it');
SELECT is(pg_temp.as1('mk_comp', 'SELECT count(*)::text FROM crm_data.customer WHERE id_number = ''11010519491231002X'''), '1',
          'and finds it by its real value');

-- a pooled app: one prepared statement, several actors
SET ROLE mk_app;
PREPARE idn AS SELECT id_number FROM crm_data.customer;
SELECT crm.act_as((SELECT id FROM p WHERE k = 'rm'));
CREATE TEMP TABLE s1 AS EXECUTE idn;
SELECT crm.act_as((SELECT id FROM p WHERE k = 'tl'));
CREATE TEMP TABLE s2 AS EXECUTE idn;
SELECT crm.act_as((SELECT id FROM p WHERE k = 'comp'));
CREATE TEMP TABLE s3 AS EXECUTE idn;
SELECT crm.act_as((SELECT id FROM p WHERE k = 'tl'));
CREATE TEMP TABLE s4 AS EXECUTE idn;
RESET ROLE;
SELECT is((SELECT id_number FROM s1), '11010519491231002X', 'prepared statement as the owner: real value');
SELECT is((SELECT id_number FROM s2), '110105********002X', 'the same statement after act_as(team lead): masked');
SELECT is((SELECT id_number FROM s3), '11010519491231002X', 'after act_as(compliance): real');
SELECT is((SELECT id_number FROM s4), '110105********002X', 'and back to the team lead: masked again');

-- a PL/pgSQL function's cached plan, first as compliance, then as the team lead
CREATE FUNCTION pg_temp.cached_idn() RETURNS text LANGUAGE plpgsql AS 'DECLARE r text; BEGIN SELECT id_number INTO r FROM crm_data.customer; RETURN r; END';
GRANT EXECUTE ON FUNCTION pg_temp.cached_idn() TO PUBLIC;
SET ROLE mk_comp;
SELECT pg_temp.cached_idn(), pg_temp.cached_idn();
CREATE TEMP TABLE f1 AS SELECT pg_temp.cached_idn() AS v;
SET ROLE mk_tl;
CREATE TEMP TABLE f2 AS SELECT pg_temp.cached_idn() AS v;
RESET ROLE;
SELECT is((SELECT v FROM f1), '11010519491231002X', 'a PL/pgSQL plan cached for compliance');
SELECT is((SELECT v FROM f2), '110105********002X', 'is not reused for the team lead after SET ROLE');

-- a wall whose condition reads a field masked for the walled principal still decides on the real value,
-- for the record and for the records that follow it
INSERT INTO crm_data.product (owner_id, code, name, product_type, risk_level) VALUES ((SELECT id FROM p WHERE k = 'comp'), 'MK1', 'Deposit', 'deposit', 'R1');
INSERT INTO crm_data.holding (customer_id, product_id, amount) SELECT (SELECT id FROM p WHERE k = 'c'), id, 100 FROM crm_data.product WHERE code = 'MK1';
SELECT is(pg_temp.as1('mk_tl', 'SELECT count(*)::text FROM crm_data.holding'), '1', 'before the wall the team lead sees the holding');
SELECT crm.add_wall('mk_wall', 'customer', $$id_number LIKE '%1231%'$$, ARRAY[(SELECT id FROM p WHERE k = 'tl')]);
SELECT is(pg_temp.as1('mk_tl', 'SELECT count(*)::text FROM crm_data.customer'), '0', 'a wall on the (masked) ID number hides the customer');
SELECT is(pg_temp.as1('mk_tl', 'SELECT count(*)::text FROM crm_data.holding'), '0', 'and its holding');
SELECT crm.drop_wall('mk_wall');

-- attacks found in review
SET ROLE mk_tl;
CREATE TEMP VIEW tv AS SELECT id, id_number FROM crm_data.customer;
CREATE FUNCTION pg_temp.srf() RETURNS SETOF pg_temp.tv LANGUAGE sql STABLE AS 'SELECT * FROM pg_temp.tv';
CREATE FUNCTION pg_temp.imm(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT count(*)::int FROM crm_data.customer WHERE $1 = 1';
CREATE FUNCTION pg_temp.atomic_srf() RETURNS SETOF text LANGUAGE sql STABLE BEGIN ATOMIC SELECT id_number FROM crm_data.customer; END;
RESET ROLE;
SELECT isnt(pg_temp.err('mk_tl', $q$SELECT 1 FROM pg_temp.srf() x WHERE pg_temp.imm(1) >= 0 AND x.id_number = '11010519491231002X'$q$), 'ok',
            'a view inside an inlined function, with a constant-folded function beside it, is refused');
SELECT isnt(pg_temp.err('mk_tl', $q$SELECT 1 FROM pg_temp.srf() x WHERE x.id_number = '11010519491231002X'$q$), 'ok',
            'and without it');
SELECT matches(pg_temp.err('mk_tl', 'SELECT x FROM pg_temp.atomic_srf() x'), '^42501', 'a BEGIN ATOMIC function reading the table is refused, not served unmasked');
SELECT matches(pg_temp.err('mk_tl', format('UPDATE crm_data.customer SET owner_id = crm.current_principal() WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
            '^42501', 'taking a report''s customer into one''s own book to unmask it is refused');
SELECT matches(pg_temp.err('mk_tl', $q$UPDATE crm_data.customer SET id_number = '11010519491231002X'$q$),
            '^42501', 'writing the right guess into a masked field is refused like a wrong one (no oracle)');
SELECT matches(pg_temp.err('mk_tl', $q$UPDATE crm_data.customer SET id_number = '110101200002290018'$q$),
            '^42501', 'and a wrong guess');
SELECT matches(pg_temp.err('mk_tl', $q$INSERT INTO crm_data.customer (owner_id, name) VALUES ((SELECT id FROM p WHERE k = 'rm'), 'x') ON CONFLICT (id) DO UPDATE SET id_number = '11010519491231002X'$q$),
            '^(ok|42501)', 'ON CONFLICT DO UPDATE is held to the same rule');
SELECT is(pg_temp.as1('mk_tl', 'SELECT birthday::text FROM crm_data.customer'), '<null>', 'the birthday (the digits the ID mask hides) is not readable either');
SELECT doesnt_match(pg_temp.err('mk_tl', $q$UPDATE crm_data.customer SET id_type = 'uscc'$q$), 'should be',
              'a validation error names no character computed from the hidden value');

-- conditions that views add to an UPDATE (security_barrier quals, WITH CHECK OPTION) see masked values
SET ROLE mk_tl;
CREATE FUNCTION pg_temp.probe(t text) RETURNS boolean LANGUAGE plpgsql AS
  $f$ BEGIN IF t LIKE '%1231%' THEN RAISE EXCEPTION 'leaked %', t; END IF; RETURN true; END $f$;
CREATE TEMP VIEW sbv WITH (security_barrier) AS SELECT * FROM crm_data.customer WHERE pg_temp.probe(id_number);
CREATE TEMP VIEW wcv AS SELECT * FROM crm_data.customer WHERE pg_temp.probe(id_number) WITH CHECK OPTION;
CREATE TEMP VIEW intv AS SELECT * FROM crm_data.customer WHERE (id_number || '!')::int > 0;
RESET ROLE;
SELECT is(pg_temp.err('mk_tl', 'UPDATE sbv SET segment = segment'), 'ok', 'a security_barrier view''s condition in an UPDATE sees the masked value');
SELECT is(pg_temp.err('mk_tl', 'UPDATE wcv SET segment = segment'), 'ok', 'so does a WITH CHECK OPTION');
SELECT doesnt_match(pg_temp.err('mk_tl', 'UPDATE intv SET segment = segment'), '1231', 'an error raised by a view''s condition shows only the masked value');

-- switching actors under open queries: refused; cursors WITH HOLD over crm_data: refused
SET ROLE mk_app;
SELECT crm.act_as((SELECT id FROM p WHERE k = 'comp'));
DECLARE open_cur CURSOR FOR SELECT id_number FROM crm_data.customer;
FETCH open_cur;
SELECT throws_ok(format('SELECT crm.act_as(%s)', (SELECT id FROM p WHERE k = 'tl')), '55000', NULL,
                 'act_as is refused while a cursor over crm_data is open');
CLOSE open_cur;
SELECT lives_ok(format('SELECT crm.act_as(%s)', (SELECT id FROM p WHERE k = 'tl')), 'and allowed once it is closed');
SELECT throws_ok(format('SELECT crm.act_as(%s), (SELECT count(*) FROM crm_data.customer)', (SELECT id FROM p WHERE k = 'comp')), '55000', NULL,
                 'act_as inside a statement that reads crm_data is refused');
SELECT throws_ok('DECLARE held CURSOR WITH HOLD FOR SELECT id_number FROM crm_data.customer', '0A000', NULL,
                 'a cursor WITH HOLD over crm_data is refused');
RESET ROLE;
SELECT is(pg_temp.err('mk_tl', $q$INSERT INTO crm_data.customer (owner_id, name) VALUES ((SELECT id FROM p WHERE k = 'rm'), 'y') ON CONFLICT (id) DO UPDATE SET segment = 'mass'$q$),
          'ok', 'INSERT ... ON CONFLICT works for a masked principal');
SELECT is(pg_temp.as1('mk_tl', 'SELECT count(*)::text FROM crm_data.customer a JOIN crm_data.customer b USING (id)'), '1',
          'a self-join USING (id) works for a masked principal');

-- open cursors, however hidden, stop act_as
SET ROLE mk_app;
SELECT crm.act_as((SELECT id FROM p WHERE k = 'comp'));
SAVEPOINT a;
DECLARE sp_cur CURSOR FOR SELECT id_number FROM crm_data.customer;
FETCH sp_cur;
RELEASE a;
SAVEPOINT b;
ROLLBACK TO b;
SELECT throws_ok(format('SELECT crm.act_as(%s)', (SELECT id FROM p WHERE k = 'tl')), '55000', NULL,
                 'a cursor opened in a released savepoint still stops act_as');
CLOSE sp_cur;
CREATE FUNCTION pg_temp.all_ids() RETURNS TABLE (v text) LANGUAGE plpgsql AS
  'BEGIN RETURN QUERY SELECT id_number FROM crm_data.customer; END';
DECLARE fn_cur CURSOR FOR SELECT * FROM pg_temp.all_ids();
FETCH fn_cur;
SELECT throws_ok(format('SELECT crm.act_as(%s)', (SELECT id FROM p WHERE k = 'tl')), '55000', NULL,
                 'a cursor over a function reading crm_data stops act_as');
CLOSE fn_cur;
RESET ROLE;

-- a changed field policy takes effect on cached plans too
SELECT crm.set_field_access('customer', 'id_number', 'team_lead', 'read');
SELECT is(pg_temp.as1('mk_tl', 'SELECT id_number FROM crm_data.customer'), '11010519491231002X', 'granting read unmasks at once');
SELECT crm.set_field_access('customer', 'id_number', 'team_lead', 'hidden');
SELECT is(pg_temp.as1('mk_tl', 'SELECT coalesce(id_number, ''<hidden>'') FROM crm_data.customer'), '<hidden>', 'setting hidden hides at once');

SELECT * FROM finish();
ROLLBACK;
