-- pgTAP: who is acting. act_as for crm_app roles only, lasting to the end of the transaction,
-- reset on COMMIT, ROLLBACK and errors, and impossible to fake through SET or set_config().
-- Runs without an outer transaction, because COMMIT and ROLLBACK are what it tests.
\set ON_ERROR_STOP 0
\set QUIET 1
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['tap_app', 'tap_rm1', 'tap_rm2', 'tap_intruder', 'tap_gone'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', r);
    END IF;
  END LOOP;
END $$;
GRANT crm_app TO tap_app;
CREATE TEMP TABLE ids AS SELECT crm.add_org_unit('TAP HQ') AS hq;
GRANT SELECT ON ids TO PUBLIC;
ALTER TABLE ids ADD rm1 bigint, ADD rm2 bigint, ADD gone bigint;
UPDATE ids SET rm1 = crm.add_principal('tap_rm1', 'TAP RM 1', hq),
               rm2 = crm.add_principal('tap_rm2', 'TAP RM 2', hq),
               gone = crm.add_principal('tap_gone', 'TAP Gone', hq);
SELECT crm.deactivate_principal(gone) FROM ids;
-- a function owned by someone else, SECURITY DEFINER: identity must not follow the definer
CREATE FUNCTION pg_temp.whoami_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS 'SELECT crm.current_principal()';
GRANT EXECUTE ON FUNCTION pg_temp.whoami_definer() TO PUBLIC;

SELECT plan(32);

-- the login's own principal
SET ROLE tap_rm1;
SELECT is(crm.current_principal(), (SELECT rm1 FROM ids), 'a login maps to its principal');
SELECT is(pg_temp.whoami_definer(), (SELECT rm1 FROM ids), 'SECURITY DEFINER does not change who is acting');
SELECT throws_ok('SELECT crm.act_as(' || (SELECT rm2 FROM ids) || ')', '42501',
  'permission denied to act as principal ' || (SELECT rm2 FROM ids), 'a principal without crm_app cannot act as another');
SELECT throws_ok($$SELECT crm.act_as('tap_rm2')$$, '42501', NULL, 'nor by login name');
SELECT throws_ok($$SET crm.principal = '2'$$, '42602', NULL, 'SET crm.* is refused (reserved prefix)');
SELECT throws_ok($$SELECT set_config('crm.act_as', '2', false)$$, '42602', NULL, 'set_config(crm.*) is refused');
SELECT throws_ok($$INSERT INTO crm.principal_role VALUES (1, 'admin')$$, '42501', NULL, 'principals cannot grant themselves roles');
SELECT throws_ok($$UPDATE crm.principal SET login = current_user$$, '42501', NULL, 'nor take over another principal');
SELECT is(crm.current_principal(), (SELECT rm1 FROM ids), 'after all that, still oneself');
RESET ROLE;

-- someone who is not a principal and not crm_app
SET ROLE tap_intruder;
SELECT is(crm.current_principal(), NULL, 'a login without a principal is nobody');
SELECT throws_ok('SELECT crm.act_as(' || (SELECT rm1 FROM ids) || ')', '42501', NULL, 'and cannot act as anyone');
SELECT throws_ok($$SELECT crm.act_as(424242)$$, '42501', NULL, 'not even a principal that does not exist (no probing)');
RESET ROLE;

-- a superuser is not crm_app either
SELECT throws_ok('SELECT crm.act_as(' || (SELECT rm1 FROM ids) || ')', '42501', NULL, 'a superuser outside crm_app cannot act_as');

-- the pooled app
SET ROLE tap_app;
SELECT is(crm.current_principal(), NULL, 'the app login itself is nobody');
PREPARE whoami AS SELECT crm.current_principal();
BEGIN;
SELECT is(crm.act_as((SELECT rm1 FROM ids)), (SELECT rm1 FROM ids), 'act_as returns the principal');
SELECT is(crm.current_principal(), (SELECT rm1 FROM ids), 'the app now acts as rm1');
SELECT is(crm.acting_as(), (SELECT rm1 FROM ids), 'acting_as() says so');
CREATE TEMP TABLE w1 AS EXECUTE whoami;
SELECT is((SELECT * FROM w1), (SELECT rm1 FROM ids), 'a statement prepared before act_as sees rm1');
SELECT crm.act_as('tap_rm2');
SELECT is(crm.current_principal(), (SELECT rm2 FROM ids), 'act_as by login switches to rm2');
CREATE TEMP TABLE w2 AS EXECUTE whoami;
SELECT is((SELECT * FROM w2), (SELECT rm2 FROM ids), 'the same prepared statement, reused, sees rm2');
COMMIT;
CREATE TEMP TABLE w3 AS EXECUTE whoami;
SELECT is((SELECT * FROM w3), NULL, 'and after COMMIT it sees nobody');
SELECT is(crm.current_principal(), NULL, 'COMMIT ends act_as');
BEGIN;
SELECT crm.act_as((SELECT rm1 FROM ids));
ROLLBACK;
SELECT is(crm.current_principal(), NULL, 'ROLLBACK ends act_as');
BEGIN;
SELECT crm.act_as((SELECT rm1 FROM ids));
SELECT 1/0;
ROLLBACK;
SELECT is(crm.current_principal(), NULL, 'an error and ROLLBACK end act_as');
BEGIN;
SELECT crm.act_as((SELECT rm1 FROM ids));
SAVEPOINT s1;
SELECT crm.act_as((SELECT rm2 FROM ids));
SELECT is(crm.current_principal(), (SELECT rm2 FROM ids), 'inside the savepoint: rm2');
ROLLBACK TO SAVEPOINT s1;
SELECT is(crm.current_principal(), (SELECT rm1 FROM ids), 'ROLLBACK TO SAVEPOINT restores rm1');
SAVEPOINT s2;
SELECT crm.act_as((SELECT rm2 FROM ids));
RELEASE SAVEPOINT s2;
SELECT is(crm.current_principal(), (SELECT rm2 FROM ids), 'RELEASE keeps what the savepoint set');
COMMIT;
SELECT is(crm.current_principal(), NULL, 'and COMMIT still ends it');
SELECT throws_ok('SELECT crm.act_as(' || (SELECT gone FROM ids) || ')', '42501',
  'principal ' || (SELECT gone FROM ids) || ' is deactivated', 'a deactivated principal cannot be acted as');
SELECT throws_ok($$SELECT crm.act_as(424242)$$, '42704', 'principal 424242 does not exist', 'an unknown principal is refused');
SELECT throws_ok($$SELECT crm.act_as('tap_intruder')$$, '42704', NULL, 'a login that is not a principal is refused');
RESET ROLE;
SELECT is(crm.current_principal(), NULL, 'the superuser has no principal');

SELECT * FROM finish();
-- clean up what this file made (roles are cluster-wide)
DEALLOCATE whoami;
DELETE FROM crm.principal_role WHERE principal_id IN (SELECT id FROM crm.principal WHERE login LIKE 'tap\_%');
DELETE FROM crm.principal WHERE login LIKE 'tap\_%';
DELETE FROM crm.org_unit WHERE name = 'TAP HQ';
