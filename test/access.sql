-- pgTAP: record-level access. A matrix of personas x privileges x objects, and the attacks that
-- must fail: joins, views, functions (incl. SECURITY DEFINER), leaky functions, owner changes,
-- foreign owners, children of hidden records, prepared statements across act_as, EXPLAIN ANALYZE.
BEGIN;
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['acc_bm', 'acc_tl', 'acc_rm1', 'acc_rm2', 'acc_rm3', 'acc_comp', 'acc_nobody', 'acc_app'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN EXECUTE format('CREATE ROLE %I LOGIN', r); END IF;
  END LOOP;
END $$;
GRANT crm_user TO acc_nobody;
GRANT crm_app TO acc_app;
CREATE SCHEMA acc_attack;
GRANT USAGE, CREATE ON SCHEMA acc_attack TO PUBLIC;

CREATE TEMP TABLE p (k text PRIMARY KEY, id bigint);
GRANT SELECT ON p TO PUBLIC;
INSERT INTO p SELECT 'hq', crm.add_org_unit('ACC HQ');
INSERT INTO p SELECT 'b1', crm.add_org_unit('ACC Branch 1', (SELECT id FROM p WHERE k = 'hq'), 'branch');
INSERT INTO p SELECT 'b2', crm.add_org_unit('ACC Branch 2', (SELECT id FROM p WHERE k = 'hq'), 'branch');
INSERT INTO p SELECT 'ta', crm.add_org_unit('ACC Team A', (SELECT id FROM p WHERE k = 'b1'), 'team');
INSERT INTO p SELECT 'tc', crm.add_org_unit('ACC Team C', (SELECT id FROM p WHERE k = 'b2'), 'team');
INSERT INTO p SELECT 'bm', crm.add_principal('acc_bm', 'BM', (SELECT id FROM p WHERE k = 'b1'), ARRAY['branch_manager']);
INSERT INTO p SELECT 'tl', crm.add_principal('acc_tl', 'TL', (SELECT id FROM p WHERE k = 'ta'), ARRAY['team_lead'], (SELECT id FROM p WHERE k = 'bm'));
INSERT INTO p SELECT 'rm1', crm.add_principal('acc_rm1', 'RM1', (SELECT id FROM p WHERE k = 'ta'), ARRAY['rm'], (SELECT id FROM p WHERE k = 'tl'));
INSERT INTO p SELECT 'rm2', crm.add_principal('acc_rm2', 'RM2', (SELECT id FROM p WHERE k = 'ta'), ARRAY['rm'], (SELECT id FROM p WHERE k = 'tl'));
INSERT INTO p SELECT 'rm3', crm.add_principal('acc_rm3', 'RM3', (SELECT id FROM p WHERE k = 'tc'), ARRAY['rm']);
INSERT INTO p SELECT 'comp', crm.add_principal('acc_comp', 'Compliance', (SELECT id FROM p WHERE k = 'hq'), ARRAY['compliance']);
-- a custom object, private, standalone
SELECT crm.create_object('acc_deal', 'Deal');
SELECT crm.add_field('acc_deal', 'title', 'text');
-- records: one customer, holding and deal per RM
WITH x AS (INSERT INTO crm_data.customer (owner_id, name, segment, risk_tolerance, kyc_status, risk_assessed_on)
           SELECT id, 'cust ' || k, 'mass', 'C1', 'verified', current_date FROM p WHERE k IN ('rm1', 'rm2', 'rm3') RETURNING id, owner_id)
INSERT INTO p SELECT 'c_' || p.k, x.id FROM x JOIN p ON p.id = x.owner_id AND p.k LIKE 'rm%';
INSERT INTO crm_data.product (owner_id, code, name, product_type, risk_level) SELECT id, 'ACC1', 'Deposit', 'deposit', 'R1' FROM p WHERE k = 'comp';
WITH x AS (INSERT INTO crm_data.holding (customer_id, product_id, amount, owner_id, org_unit_id)
           SELECT c.id, (SELECT id FROM crm_data.product WHERE code = 'ACC1'), 1000, (SELECT id FROM p WHERE k = 'comp'), (SELECT id FROM p WHERE k = 'hq')
             FROM p c WHERE c.k LIKE 'c\_rm%' RETURNING id, customer_id)
INSERT INTO p SELECT 'h_' || substr(c.k, 3), x.id FROM x JOIN p c ON c.id = x.customer_id AND c.k LIKE 'c\_rm%';
WITH x AS (INSERT INTO crm_data.acc_deal (owner_id, title) SELECT id, 'deal ' || k FROM p WHERE k IN ('rm1', 'rm2', 'rm3') RETURNING id, owner_id)
INSERT INTO p SELECT 'a_' || p.k, x.id FROM x JOIN p ON p.id = x.owner_id AND p.k LIKE 'rm%';

-- run a statement as a persona and count the rows it saw or changed; everything is rolled back.
-- -1: refused with 42501 (e.g. a WITH CHECK violation).
CREATE FUNCTION pg_temp.try(persona text, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  BEGIN
    EXECUTE format('SET LOCAL ROLE %I', persona);
    EXECUTE q;
    GET DIAGNOSTICS n = ROW_COUNT;
    RAISE EXCEPTION USING ERRCODE = 'P0099', MESSAGE = n::text;
  EXCEPTION
    WHEN SQLSTATE 'P0099' THEN RETURN SQLERRM::bigint;
    WHEN insufficient_privilege THEN RETURN -1;
  END;
END $$;
CREATE FUNCTION pg_temp.v(k text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM p WHERE p.k = $1 $$;

SELECT plan(72 + 65);

-- The matrix: 6 personas x 4 privileges x 3 objects, on rm1's records.
-- rm1 owns them; tl leads rm1 (team); bm manages rm1's branch (org_unit); rm2 is rm1's peer;
-- rm3 is in another branch; compliance reads everything and writes nothing.
SELECT is(pg_temp.try('acc_' || persona, q), CASE WHEN allowed THEN 1::bigint WHEN priv = 'create' THEN -1 ELSE 0 END,
          format('%s %s %s of rm1: %s', persona, priv, obj, CASE WHEN allowed THEN 'allowed' ELSE 'denied' END))
  FROM (VALUES ('rm1'), ('rm2'), ('rm3'), ('tl'), ('bm'), ('comp')) per(persona)
 CROSS JOIN (VALUES ('customer', 'c'), ('holding', 'h'), ('acc_deal', 'a')) o(obj, tag)
 CROSS JOIN (VALUES ('read'), ('create'), ('edit'), ('delete')) pr(priv)
 CROSS JOIN LATERAL (SELECT
     persona IN ('rm1', 'tl', 'bm') OR (priv = 'read' AND persona = 'comp') AS allowed,
     CASE priv
       WHEN 'read' THEN format('SELECT 1 FROM crm_data.%I WHERE id = %s', obj, pg_temp.v(tag || '_rm1'))
       WHEN 'create' THEN CASE obj
         WHEN 'customer' THEN format('INSERT INTO crm_data.customer (owner_id, name) VALUES (%s, ''new'')', pg_temp.v('rm1'))
         WHEN 'holding' THEN format('INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (%s, (SELECT id FROM crm_data.product WHERE code = ''ACC1''), 5)', pg_temp.v('c_rm1'))
         ELSE format('INSERT INTO crm_data.acc_deal (owner_id, title) VALUES (%s, ''new'')', pg_temp.v('rm1')) END
       WHEN 'edit' THEN format('UPDATE crm_data.%I SET updated_at = now() WHERE id = %s', obj, pg_temp.v(tag || '_rm1'))
       ELSE format('DELETE FROM crm_data.%I WHERE id = %s', obj, pg_temp.v(tag || '_rm1'))
     END AS q) x
 ORDER BY obj, priv, persona;

-- children follow their customer: holdings were inserted with the compliance officer as owner,
-- but carry their customer's owner and unit
SELECT is((SELECT count(*) FROM crm_data.holding h JOIN crm_data.customer c ON c.id = h.customer_id
            WHERE h.id IN (SELECT id FROM p WHERE k LIKE 'h\_%') AND (h.owner_id, h.org_unit_id) = (c.owner_id, c.org_unit_id)), 3::bigint,
          'a holding takes its customer''s owner and org unit, whatever the inserter said');

-- attacks by rm2 on rm1's customer
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'plain SELECT finds nothing');
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM crm_data.holding h JOIN crm_data.customer c ON c.id = h.customer_id WHERE c.id = %s', pg_temp.v('c_rm1'))), 0::bigint,
          'a join finds nothing');
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM crm_data.customer c WHERE c.id IN (SELECT customer_id FROM crm_data.holding) AND c.id = %s', pg_temp.v('c_rm1'))), 0::bigint,
          'a subquery finds nothing');
SET ROLE acc_rm2;
CREATE VIEW acc_attack.v_plain AS SELECT * FROM crm_data.customer;
GRANT SELECT ON acc_attack.v_plain TO PUBLIC;
CREATE VIEW acc_attack.v_invoker WITH (security_invoker = true) AS SELECT * FROM crm_data.customer;
CREATE FUNCTION acc_attack.f_sql() RETURNS SETOF bigint LANGUAGE sql AS 'SELECT id FROM crm_data.customer';
CREATE FUNCTION acc_attack.f_plpgsql() RETURNS SETOF bigint LANGUAGE plpgsql AS 'BEGIN RETURN QUERY SELECT id FROM crm_data.customer; END';
CREATE FUNCTION acc_attack.f_definer() RETURNS SETOF bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'SELECT id FROM crm_data.customer';
CREATE FUNCTION acc_attack.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
  'BEGIN IF $1 LIKE ''cust rm1%'' THEN RAISE EXCEPTION ''leaked: %'', $1; END IF; RETURN true; END';
CREATE FUNCTION acc_attack.f_cursor() RETURNS bigint LANGUAGE plpgsql AS
  'DECLARE c refcursor; n bigint := 0; r record; BEGIN OPEN c FOR SELECT id FROM crm_data.customer; LOOP FETCH c INTO r; EXIT WHEN NOT FOUND; n := n + 1; END LOOP; RETURN n; END';
RESET ROLE;
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM acc_attack.v_plain WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'a view rm2 made finds nothing');
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM acc_attack.v_invoker WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'a security_invoker view finds nothing');
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM acc_attack.f_sql() x WHERE x = %s', pg_temp.v('c_rm1'))), 0::bigint, 'a SQL function finds nothing');
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM acc_attack.f_plpgsql() x WHERE x = %s', pg_temp.v('c_rm1'))), 0::bigint, 'a PL/pgSQL function finds nothing');
SELECT is(pg_temp.try('acc_rm2', format('SELECT 1 FROM acc_attack.f_definer() x WHERE x = %s', pg_temp.v('c_rm1'))), 0::bigint, 'a SECURITY DEFINER function rm2 owns finds nothing');
SELECT is(pg_temp.try('acc_rm2', 'SELECT 1 FROM (SELECT acc_attack.f_cursor() AS n) x WHERE n = 1'), 1::bigint, 'a cursor sees only rm2''s one customer');
SELECT is(pg_temp.try('acc_rm1', format('SELECT 1 FROM acc_attack.v_plain WHERE id = %s', pg_temp.v('c_rm1'))), 1::bigint,
          'rm2''s view shows rm1 what rm1 may see (the view is not simply empty)');
SELECT is(pg_temp.try('acc_rm2', 'SELECT 1 FROM crm_data.customer WHERE acc_attack.leak(name)'), 1::bigint,
          'a leaky function in WHERE never sees hidden rows (it would raise)');
SELECT is(pg_temp.try('acc_rm2', format('UPDATE crm_data.customer SET owner_id = %s WHERE id = %s', pg_temp.v('rm2'), pg_temp.v('c_rm1'))), 0::bigint,
          'an UPDATE that takes over rm1''s customer touches nothing');
SELECT is(pg_temp.try('acc_rm2', format('DELETE FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint,
          'a DELETE of rm1''s customer touches nothing');
SELECT is(pg_temp.try('acc_rm2', format('INSERT INTO crm_data.customer (owner_id, name) VALUES (%s, ''planted'')', pg_temp.v('rm1'))), -1::bigint,
          'an INSERT with rm1 as owner is refused');
SELECT is(pg_temp.try('acc_rm2', format('INSERT INTO crm_data.customer (owner_id, org_unit_id, name) VALUES (%s, %s, ''planted'')', pg_temp.v('rm2'), pg_temp.v('b2'))), -1::bigint,
          'an INSERT of one''s own record into another branch''s unit is refused');
SELECT is(pg_temp.try('acc_bm', format('INSERT INTO crm_data.customer (owner_id, org_unit_id, name) VALUES (%s, %s, ''planted'')', pg_temp.v('rm3'), pg_temp.v('b1'))), -1::bigint,
          'a branch manager cannot create a record for an RM outside its branch, even in its own unit');
CREATE TEMP TABLE stamp_probe (id bigint, owner_id bigint, org_unit_id bigint, created_at timestamptz, created_by bigint,
                               updated_at timestamptz, updated_by bigint, customer_id bigint);
GRANT ALL ON stamp_probe TO PUBLIC;
CREATE TRIGGER probe BEFORE INSERT ON stamp_probe FOR EACH ROW EXECUTE FUNCTION crm.stamp('customer_id', 'customer');
SELECT is(pg_temp.try('acc_rm2', format('INSERT INTO stamp_probe (customer_id) VALUES (%s)', pg_temp.v('c_rm1'))), -1::bigint,
          'crm.stamp() on a table outside crm_data refuses to look up other records');
SELECT is(pg_temp.try('acc_rm2', format('INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (%s, (SELECT id FROM crm_data.product WHERE code = ''ACC1''), 1)', pg_temp.v('c_rm1'))), -1::bigint,
          'a holding under rm1''s customer is refused (it would belong to rm1)');
SELECT is(pg_temp.try('acc_rm2', format('UPDATE crm_data.holding SET customer_id = %s WHERE id = %s', pg_temp.v('c_rm1'), pg_temp.v('h_rm2'))), -1::bigint,
          'moving one''s holding under rm1''s customer is refused');
SELECT is(pg_temp.try('acc_rm1', format('UPDATE crm_data.customer SET owner_id = %s WHERE id = %s', pg_temp.v('rm3'), pg_temp.v('c_rm1'))), -1::bigint,
          'rm1 cannot hand its customer to someone outside its edit scope');
SELECT is(pg_temp.try('acc_tl', format('UPDATE crm_data.customer SET owner_id = %s WHERE id = %s', pg_temp.v('rm2'), pg_temp.v('c_rm1'))), 1::bigint,
          'the team lead can move a customer between its reports');
SELECT is(pg_temp.try('acc_rm2', 'EXPLAIN ANALYZE SELECT * FROM crm_data.customer'), -1::bigint,
          'EXPLAIN ANALYZE on a managed table is refused to a principal');
SELECT ok(pg_temp.try('acc_rm2', 'EXPLAIN SELECT * FROM crm_data.customer') > 0, 'plain EXPLAIN works');
SELECT throws_ok(format('SELECT set_config(''crm.principal'', %L, true)', pg_temp.v('rm1')), '42602', NULL,
          'no crm.* setting can be made up');
SELECT is(pg_temp.try('acc_nobody', 'SELECT 1 FROM crm_data.customer'), 0::bigint, 'a crm_user login without a principal sees nothing');
SELECT is(pg_temp.try('acc_nobody', format('INSERT INTO crm_data.customer (owner_id, name) VALUES (%s, ''x'')', pg_temp.v('rm1'))), -1::bigint,
          'and writes nothing');

-- the pooled app: a statement prepared before act_as follows each switch, also as a generic plan
SET ROLE acc_app;
PREPARE mine AS SELECT count(*) FROM crm_data.customer WHERE name LIKE 'cust rm%';
SELECT crm.act_as(pg_temp.v('rm1'));
EXECUTE mine; EXECUTE mine; EXECUTE mine; EXECUTE mine; EXECUTE mine; EXECUTE mine;
CREATE TEMP TABLE seen1 AS EXECUTE mine;
SELECT crm.act_as(pg_temp.v('rm3'));
CREATE TEMP TABLE seen3 AS EXECUTE mine;
SELECT crm.act_as(pg_temp.v('bm'));
CREATE TEMP TABLE seenbm AS EXECUTE mine;
RESET ROLE;
SELECT is((SELECT count FROM seen1), 1::bigint, 'prepared statement as rm1: one customer');
SELECT is((SELECT count FROM seen3), 1::bigint, 'the same plan as rm3: its own one');
SELECT is((SELECT count FROM seenbm), 2::bigint, 'the same plan as the branch manager: rm1''s and rm2''s');

-- shares: rm1 shares its customer with rm3 until tomorrow; rm3 sees it and its holding
SET ROLE acc_rm1;
SELECT crm.share('customer', pg_temp.v('c_rm1'), 'acc_rm3', 'read', now() + interval '1 day', 'covering during leave');
RESET ROLE;
SELECT is(pg_temp.try('acc_rm3', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 1::bigint, 'a share lets rm3 read rm1''s customer');
SELECT is(pg_temp.try('acc_rm3', format('SELECT 1 FROM crm_data.holding WHERE customer_id = %s', pg_temp.v('c_rm1'))), 1::bigint, 'and its holdings');
SELECT is(pg_temp.try('acc_rm3', format('UPDATE crm_data.customer SET segment = ''affluent'' WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'a read share does not let rm3 edit');
SELECT is(pg_temp.try('acc_rm3', format($$SELECT crm.share('customer', %s, 'acc_rm2', 'read', NULL, 'x')$$, pg_temp.v('c_rm1'))), -1::bigint,
          'rm3 cannot re-share what it may only read');
SELECT is(pg_temp.try('acc_rm2', format($$SELECT crm.share('customer', %s, 'acc_rm2', 'edit', NULL, 'mine now')$$, pg_temp.v('c_rm1'))), -1::bigint,
          'rm2 cannot share rm1''s customer with itself');
UPDATE crm.record_share SET expires_at = now() - interval '1 second' WHERE record_id = pg_temp.v('c_rm1');
SELECT is(pg_temp.try('acc_rm3', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'an expired share stops working by itself');
SELECT crm.share('customer', pg_temp.v('c_rm1'), 'unit:' || pg_temp.v('b2'), 'edit', NULL, 'joint coverage with branch 2');
SELECT is(pg_temp.try('acc_rm3', format('UPDATE crm_data.customer SET segment = ''affluent'' WHERE id = %s', pg_temp.v('c_rm1'))), 1::bigint,
          'an edit share to a unit reaches the units below it');
SELECT crm.unshare('customer', pg_temp.v('c_rm1'), 'unit:' || pg_temp.v('b2'));
SELECT is(pg_temp.try('acc_rm3', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'unshare takes it back');

-- an edit share lets the sharee edit the record, not hand it on or take its children
SET ROLE acc_rm1;
SELECT crm.share('customer', pg_temp.v('c_rm1'), 'acc_rm2', 'edit', now() + interval '1 day', 'cover');
RESET ROLE;
SELECT is(pg_temp.try('acc_rm2', format('UPDATE crm_data.customer SET segment = ''affluent'' WHERE id = %s', pg_temp.v('c_rm1'))), 1::bigint,
          'an edit share lets rm2 edit rm1''s customer');
SELECT is(pg_temp.try('acc_rm2', format('UPDATE crm_data.customer SET owner_id = %s, org_unit_id = %s WHERE id = %s', pg_temp.v('rm3'), pg_temp.v('tc'), pg_temp.v('c_rm1'))), -1::bigint,
          'but not hand it to a third principal');
SELECT is(pg_temp.try('acc_rm2', format('UPDATE crm_data.customer SET owner_id = %s WHERE id = %s', pg_temp.v('rm2'), pg_temp.v('c_rm1'))), -1::bigint,
          'nor take it');
SELECT is(pg_temp.try('acc_rm2', format('UPDATE crm_data.holding SET customer_id = %s WHERE customer_id = %s', pg_temp.v('c_rm2'), pg_temp.v('c_rm1'))), -1::bigint,
          'nor move its holdings under its own customer');
SELECT is(pg_temp.try('acc_bm', format('UPDATE crm_data.customer SET owner_id = %s WHERE id = %s', pg_temp.v('rm3'), pg_temp.v('c_rm1'))), -1::bigint,
          'a branch manager cannot hand a customer to an RM outside its branch');
SELECT is(pg_temp.try('acc_bm', format('UPDATE crm_data.customer SET owner_id = %s WHERE id = %s', pg_temp.v('rm2'), pg_temp.v('c_rm1'))), 1::bigint,
          'but may reassign it within its branch');
SELECT crm.unshare('customer', pg_temp.v('c_rm1'), 'acc_rm2');
-- two customers of rm1 shared with rm2: their holdings still cannot be moved between them
SET ROLE acc_rm1;
INSERT INTO crm_data.customer (name) VALUES ('second of rm1');
SELECT crm.share('customer', pg_temp.v('c_rm1'), 'acc_rm2', 'edit', NULL, 'cover'),
       crm.share('customer', (SELECT id FROM crm_data.customer WHERE name = 'second of rm1'), 'acc_rm2', 'edit', NULL, 'cover');
RESET ROLE;
SELECT is(pg_temp.try('acc_rm2', format('UPDATE crm_data.holding SET customer_id = (SELECT id FROM crm_data.customer WHERE name = ''second of rm1'') WHERE customer_id = %s', pg_temp.v('c_rm1'))), -1::bigint,
          'a sharee cannot move holdings between two customers shared with it');
SELECT crm.unshare('customer', pg_temp.v('c_rm1'), 'acc_rm2'),
       crm.unshare('customer', (SELECT id FROM crm_data.customer WHERE name = 'second of rm1'), 'acc_rm2');

-- a record whose org unit is not its owner's home unit (an admin changed only the owner) stays workable
UPDATE crm_data.customer SET owner_id = pg_temp.v('rm3') WHERE id = pg_temp.v('c_rm2');
SELECT is(pg_temp.try('acc_rm3', format('INSERT INTO crm_data.interaction (customer_id, channel, occurred_at) VALUES (%s, ''phone'', now())', pg_temp.v('c_rm2'))), 1::bigint,
          'the new owner can add a child record to it');
SELECT is(pg_temp.try('acc_rm3', format('UPDATE crm_data.customer SET segment = ''mass'' WHERE id = %s', pg_temp.v('c_rm2'))), 1::bigint,
          'and edit it');
UPDATE crm_data.customer SET owner_id = pg_temp.v('rm2') WHERE id = pg_temp.v('c_rm2');

-- an ethical wall: rm1's customer becomes an investment-banking client; the team lead is walled off
UPDATE crm_data.customer SET segment = 'corporate' WHERE id = pg_temp.v('c_rm1');
SELECT crm.add_wall('ib_clients', 'customer', $$segment = 'corporate'$$, ARRAY[pg_temp.v('tl')], '{}', '{}', 'IB mandate');
SELECT is(pg_temp.try('acc_tl', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'the wall hides the customer from the team lead despite team scope');
SELECT is(pg_temp.try('acc_tl', format('SELECT 1 FROM crm_data.holding WHERE customer_id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'and its holdings');
SELECT is(pg_temp.try('acc_tl', format('UPDATE crm_data.customer SET name = ''x'' WHERE id = %s', pg_temp.v('c_rm1'))), 0::bigint, 'and stops edits');
SELECT is(pg_temp.try('acc_tl', format($q$SELECT crm.share('customer', %s, 'acc_rm3', 'edit', NULL, 'x')$q$, pg_temp.v('c_rm1'))), -1::bigint,
          'and stops the walled principal from sharing the record');
SELECT is(pg_temp.try('acc_tl', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm2'))), 1::bigint, 'other customers of the team stay visible');
SELECT is(pg_temp.try('acc_rm1', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 1::bigint, 'the owner is not behind the wall');
SELECT is(pg_temp.try('acc_rm3', format('SELECT 1 WHERE crm._wall_matches(''ib_clients'', %s)', pg_temp.v('c_rm1'))), 0::bigint,
          'the wall check is no oracle about records beyond the caller''s reach');
SELECT is((SELECT allowed FROM crm.explain_access(pg_temp.v('tl'), 'customer', pg_temp.v('c_rm1')) WHERE privilege = 'read'), false,
          'explain_access says the team lead cannot read it');
SELECT ok((SELECT because::text LIKE '%wall ib_clients%' FROM crm.explain_access(pg_temp.v('tl'), 'customer', pg_temp.v('c_rm1')) WHERE privilege = 'read'),
          'and names the wall');
SELECT ok((SELECT allowed AND because::text LIKE '%owner is principal%' FROM crm.explain_access(pg_temp.v('rm1'), 'customer', pg_temp.v('c_rm1')) WHERE privilege = 'read'),
          'explain_access says the owner can read it, and why');
SELECT is(pg_temp.try('acc_rm3', format('SELECT 1 FROM crm.explain_access(%s, ''customer'', %s) WHERE because = ARRAY[''you cannot read this record'']', pg_temp.v('rm3'), pg_temp.v('c_rm1'))), 4::bigint,
          'explain_access about oneself says nothing about a record one cannot read');
SELECT is(pg_temp.try('acc_rm3', format('SELECT 1 FROM crm.explain_access(%s, ''customer'', 987654321) WHERE because = ARRAY[''you cannot read this record'']', pg_temp.v('rm3'))), 4::bigint,
          'nor whether an id exists');
SELECT is((SELECT can_read FROM crm.access_review(pg_temp.v('ta')) WHERE login = 'acc_tl' AND object = 'customer'),
          pg_temp.try('acc_tl', 'SELECT 1 FROM crm_data.customer'),
          'access_review counts exactly what the walled team lead can read (a customer whose segment is NULL is not behind the wall)');
SELECT crm.drop_wall('ib_clients');
SELECT is(pg_temp.try('acc_tl', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 1::bigint, 'dropping the wall restores team scope');

-- grants: revoking rm's read takes effect at the next statement
SELECT crm.revoke_object('rm', '*', ARRAY['read']);
SELECT is(pg_temp.try('acc_rm1', 'SELECT 1 FROM crm_data.customer'), 0::bigint, 'a revoked grant stops working');
SELECT crm.grant_object('rm', '*', ARRAY['read'], 'own');
SELECT is(pg_temp.try('acc_rm1', format('SELECT 1 FROM crm_data.customer WHERE id = %s', pg_temp.v('c_rm1'))), 1::bigint, 'granting it back restores it');
SELECT crm.grant_object('rm', 'acc_deal', ARRAY['read'], 'all');
SELECT is(pg_temp.try('acc_rm2', 'SELECT 1 FROM crm_data.acc_deal'), 3::bigint, 'a grant on one object at scope all opens that object');
SELECT is(pg_temp.try('acc_rm2', 'SELECT 1 FROM crm_data.customer'), 1::bigint, 'and no other');

SELECT * FROM finish();
ROLLBACK;
