-- pgTAP: the field write guard holds on every path: a view, a function the attacker writes
-- (also SECURITY DEFINER), a prepared statement reused after act_as, a data-modifying CTE,
-- INSERT ... ON CONFLICT, and the children that follow a customer.
BEGIN;
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['fg_tl', 'fg_rm', 'fg_app'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN EXECUTE format('CREATE ROLE %I LOGIN', r); END IF;
  END LOOP;
END $$;
GRANT crm_app TO fg_app;
CREATE SCHEMA fg_attack;
GRANT USAGE, CREATE ON SCHEMA fg_attack TO PUBLIC;
CREATE TEMP TABLE p (k text PRIMARY KEY, id bigint);
GRANT SELECT ON p TO PUBLIC;
INSERT INTO p SELECT 'hq', crm.add_org_unit('FG HQ');
INSERT INTO p SELECT 'tl', crm.add_principal('fg_tl', 'TL', (SELECT id FROM p WHERE k = 'hq'), ARRAY['team_lead']);
INSERT INTO p SELECT 'rm', crm.add_principal('fg_rm', 'RM', (SELECT id FROM p WHERE k = 'hq'), ARRAY['rm'], (SELECT id FROM p WHERE k = 'tl'));
WITH x AS (INSERT INTO crm_data.customer (owner_id, name, id_type, id_number)
           SELECT id, 'guarded', 'id_card', '11010519491231002X' FROM p WHERE k = 'rm' RETURNING id)
INSERT INTO p SELECT 'c', id FROM x;
CREATE FUNCTION pg_temp.v(k text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM p WHERE p.k = $1 $$;

SELECT plan(9);

-- the team lead (masked on its reports' records) tries every path to the ID number
SET ROLE fg_tl;
CREATE VIEW fg_attack.v AS SELECT * FROM crm_data.customer;
CREATE FUNCTION fg_attack.f(bigint) RETURNS void LANGUAGE sql AS
  $$ UPDATE crm_data.customer SET id_number = '110101200002290018' WHERE id = $1 $$;
CREATE FUNCTION fg_attack.fd(bigint) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
  $$ BEGIN UPDATE crm_data.customer SET id_number = '110101200002290018' WHERE id = $1; END $$;
SELECT throws_ok(format($$UPDATE fg_attack.v SET id_number = '110101200002290018' WHERE id = %s$$, pg_temp.v('c')), '42501',
                 'permission denied to write field customer.id_number', 'through an auto-updatable view');
SELECT throws_ok(format('SELECT fg_attack.f(%s)', pg_temp.v('c')), '42501', NULL, 'through a SQL function');
SELECT throws_ok(format('SELECT fg_attack.fd(%s)', pg_temp.v('c')), '42501', NULL, 'through its own SECURITY DEFINER function');
SELECT throws_ok(format($$WITH u AS (UPDATE crm_data.customer SET id_number = '110101200002290018' WHERE id = %s RETURNING 1) SELECT count(*) FROM u$$, pg_temp.v('c')),
                 '42501', NULL, 'through a data-modifying CTE');
SELECT throws_ok(format($$INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (%s, 'x', 'id_card', '110101200002290018')$$, pg_temp.v('rm')),
                 '42501', NULL, 'by inserting a record for its report');
RESET ROLE;

-- a pooled app: the statement prepared while acting as the RM is refused once acting as the team lead
SET ROLE fg_app;
PREPARE setid(text) AS UPDATE crm_data.customer SET id_number = $1 WHERE name = 'guarded';
SELECT crm.act_as(pg_temp.v('rm'));
SELECT lives_ok($$EXECUTE setid('110101200002290018')$$, 'the owner may change its customer''s ID number');
SELECT crm.act_as(pg_temp.v('tl'));
SELECT throws_ok($$EXECUTE setid('11010519491231002X')$$, '42501', NULL, 'the same prepared statement as the team lead is refused');
RESET ROLE;
SELECT is((SELECT id_number FROM crm_data.customer WHERE id = pg_temp.v('c')), '110101200002290018', 'only the owner''s change landed');
-- the guard runs under session_replication_role = replica too
SET session_replication_role = replica;
SET ROLE fg_tl;
SELECT throws_ok(format($$UPDATE crm_data.customer SET id_number = '11010519491231002X' WHERE id = %s$$, pg_temp.v('c')), '42501', NULL,
                 'session_replication_role = replica does not switch the guard off');
RESET ROLE;
RESET session_replication_role;

SELECT * FROM finish();
ROLLBACK;
