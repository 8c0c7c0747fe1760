-- Standard columns: set by the system, not by the caller.
\set VERBOSITY terse
-- roles a run that was cut short may have left behind (sql/99_teardown.sql drops them after a full run)
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_stamp_rm, regress_stamp_app;
RESET client_min_messages;
SELECT crm.add_org_unit('Stamp HQ') AS hq \gset
CREATE ROLE regress_stamp_rm LOGIN;
CREATE ROLE regress_stamp_app LOGIN IN ROLE crm_app;
SELECT crm.add_principal('regress_stamp_rm', 'Stamp RM', :hq) AS rm \gset
SELECT crm.create_object('visit_note', 'Visit note');
SELECT crm.add_field('visit_note', 'body', 'text');
-- the stamp runs as its own code whatever the caller may see (RMs see their own notes: the builtin
-- rm grant; a hand-made policy on a managed table is refused since issue 15)
-- a principal's insert: owner, unit, created/updated set for it, whatever it claims
SET ROLE regress_stamp_rm;
INSERT INTO crm_data.visit_note (body, created_at, created_by, updated_at, updated_by)
  VALUES ('first', '2000-01-01', 424242, '2000-01-01', 424242);
RESET ROLE;
SELECT owner_id = :rm AS owner_is_me, org_unit_id = :hq AS unit_is_mine, created_at > '2020-01-01' AS created_now,
       created_by = :rm AS created_by_me, updated_by = :rm AS updated_by_me, created_at = updated_at AS same_stamp
  FROM crm_data.visit_note;
-- an update cannot rewrite history
SELECT created_at AS first_created FROM crm_data.visit_note \gset
BEGIN;
SET LOCAL ROLE regress_stamp_rm;
UPDATE crm_data.visit_note SET body = 'second', created_at = '1999-01-01', created_by = NULL, updated_at = '1999-01-01';
COMMIT;
SELECT body, created_at = :'first_created'::timestamptz AS created_kept, created_by = :rm AS created_by_kept,
       updated_at >= created_at AS updated_now, updated_by = :rm AS updated_by_me FROM crm_data.visit_note;
-- id is generated, not chosen
SET ROLE regress_stamp_rm;
INSERT INTO crm_data.visit_note (id, body) VALUES (999, 'chosen id');
-- an unknown owner is refused
INSERT INTO crm_data.visit_note (owner_id, body) VALUES (424242, 'nobody');
RESET ROLE;
-- the stamp fires under session_replication_role = replica too
SET session_replication_role = replica;
INSERT INTO crm_data.visit_note (owner_id, body) VALUES (:rm, 'replica');
RESET session_replication_role;
SELECT body, org_unit_id = :hq AS unit_filled FROM crm_data.visit_note WHERE body = 'replica';
-- without a principal (the DBA), owner_id must be given
INSERT INTO crm_data.visit_note (body) VALUES ('no owner');
-- the maintenance role keeps explicit history (pg_restore, bulk loads)
INSERT INTO crm_data.visit_note (owner_id, body, created_at, updated_at) VALUES (:rm, 'restored', '2020-01-01', '2020-01-02');
SELECT created_at, updated_at, created_by FROM crm_data.visit_note WHERE body = 'restored';
-- an app acting as the RM stamps as the RM
BEGIN;
SET LOCAL ROLE regress_stamp_app;
SELECT crm.act_as(:rm) = :rm AS acting;
INSERT INTO crm_data.visit_note (body) VALUES ('via app');
COMMIT;
SELECT owner_id = :rm AS owner_is_rm, created_by = :rm AS created_by_rm FROM crm_data.visit_note WHERE body = 'via app';
