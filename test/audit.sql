-- pgTAP: the row audit trail and the append-only guards. What commits: entries for INSERT, UPDATE
-- (changed fields only; nothing for an UPDATE that changes nothing), DELETE, with the principal and
-- the user; protected values only as keyed hashes; catalog changes as GRANT/SHARE/POLICY/DDL
-- events; nothing for what rolls back. Then every way around the log that must fail.
-- (Sealing, verification, tampering, digests, events that survive rollback: test/audit_chain.sh.)
BEGIN;
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['au_rm', 'au_rm2', 'au_auditor'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN EXECUTE format('CREATE ROLE %I LOGIN', r); END IF;
  END LOOP;
END $$;
GRANT crm_auditor TO au_auditor;
CREATE TEMP TABLE p (k text PRIMARY KEY, id bigint, v text);
GRANT ALL ON p TO PUBLIC;
INSERT INTO p (k, id) SELECT 'hq', crm.add_org_unit('AU HQ');
INSERT INTO p (k, id) SELECT 'rm', crm.add_principal('au_rm', 'RM', (SELECT id FROM p WHERE k = 'hq'), ARRAY['rm']);
INSERT INTO p (k, id) SELECT 'rm2', crm.add_principal('au_rm2', 'RM2', (SELECT id FROM p WHERE k = 'hq'), ARRAY['rm']);
INSERT INTO p (k, id) SELECT 'start', coalesce(max(id), 0) FROM crm.audit_log;
CREATE FUNCTION pg_temp.err(persona text, q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    IF persona IS NOT NULL THEN EXECUTE format('SET LOCAL ROLE %I', persona); END IF;
    EXECUTE q;
    RAISE EXCEPTION USING ERRCODE = 'P0099';
  EXCEPTION WHEN SQLSTATE 'P0099' THEN RETURN 'ok';
            WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM;
  END;
END $$;
CREATE FUNCTION pg_temp.entries(act text, obj text, rec bigint) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM crm.audit_log l
   WHERE l.id > (SELECT id FROM p WHERE k = 'start') AND l.action = act AND l.object IS NOT DISTINCT FROM obj
     AND (rec IS NULL OR l.record_id = rec)
$$;
CREATE FUNCTION pg_temp.last_detail(act text, obj text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT l.detail FROM crm.audit_log l
   WHERE l.id > (SELECT id FROM p WHERE k = 'start') AND l.action = act AND l.object = obj ORDER BY l.id DESC LIMIT 1
$$;

SELECT plan(60);

-- row changes
SET LOCAL ROLE au_rm;
WITH x AS (INSERT INTO crm_data.customer (name, id_type, id_number, mobile, segment)
           VALUES ('赵六', 'id_card', '11010519491231002X', '13812345678', 'mass') RETURNING id)
INSERT INTO p (k, id) SELECT 'c', id FROM x;
RESET ROLE;
SELECT is(pg_temp.entries('INSERT', 'customer', (SELECT id FROM p WHERE k = 'c')), 1::bigint, 'an INSERT writes one entry');
SELECT ok((SELECT principal_id = (SELECT id FROM p WHERE k = 'rm') AND current_user_name = 'au_rm' AND session_user_name = session_user
                  AND xid = pg_current_xact_id()::text::bigint AND era = crm._audit_era()
             FROM crm.audit_log WHERE action = 'INSERT' AND object = 'customer' AND record_id = (SELECT id FROM p WHERE k = 'c')),
          'with the acting principal, the current and session user, the transaction and the era');
SELECT is(pg_temp.last_detail('INSERT', 'customer') #>> '{fields,segment,new}', 'mass', 'plain fields are written as they are');
SELECT ok(pg_temp.last_detail('INSERT', 'customer')::text NOT LIKE '%11010519491231002X%'
          AND pg_temp.last_detail('INSERT', 'customer')::text NOT LIKE '%13812345678%'
          AND pg_temp.last_detail('INSERT', 'customer')::text NOT LIKE '%赵六%', 'sensitive and personal values never appear in plaintext');
SELECT is(pg_temp.last_detail('INSERT', 'customer') #>> '{fields,id_number,new_hash}', crm.audit_hash('customer', 'id_number', '11010519491231002X', (SELECT id FROM p WHERE k = 'c')),
          'a keyed hash instead, which an auditor can match against a known value');
-- (crm's HMAC against pgcrypto's, with a key the test knows: test/audit_keys.sh)
SELECT ok(pg_temp.last_detail('INSERT', 'customer') #>> '{fields,id_number,new_hash}' ~ ('^' || (SELECT current_key FROM crm.keyring_status()) || ':[0-9a-f]{32}$'),
          'the hash names the master key it was made under (the current one) and has 128 bits');
SELECT isnt(crm.audit_hash('customer', 'id_number', '11010519491231002X', (SELECT id FROM p WHERE k = 'c')),
            crm.audit_hash('customer', 'mobile', '11010519491231002X', (SELECT id FROM p WHERE k = 'c')),
            'the hash is bound to the field');
SET LOCAL ROLE au_rm;
UPDATE crm_data.customer SET segment = 'affluent' WHERE id = (SELECT id FROM p WHERE k = 'c');
RESET ROLE;
SELECT is((SELECT string_agg(k, ',') FROM jsonb_object_keys(pg_temp.last_detail('UPDATE', 'customer') -> 'fields') k), 'segment',
          'an UPDATE records only the fields it changed (not updated_at/by)');
SELECT is(pg_temp.last_detail('UPDATE', 'customer') -> 'fields' -> 'segment', '{"old": "mass", "new": "affluent"}'::jsonb, 'old and new value');
SET LOCAL ROLE au_rm;
UPDATE crm_data.customer SET segment = 'affluent' WHERE id = (SELECT id FROM p WHERE k = 'c');
RESET ROLE;
SELECT is(pg_temp.entries('UPDATE', 'customer', (SELECT id FROM p WHERE k = 'c')), 1::bigint, 'an UPDATE that changes nothing writes nothing');
SET LOCAL ROLE au_rm;
UPDATE crm_data.customer SET mobile = '13912345678' WHERE id = (SELECT id FROM p WHERE k = 'c');
RESET ROLE;
SELECT is(pg_temp.last_detail('UPDATE', 'customer') -> 'fields' -> 'mobile',
          jsonb_build_object('old_hash', crm.audit_hash('customer', 'mobile', '13812345678', (SELECT id FROM p WHERE k = 'c')),
                             'new_hash', crm.audit_hash('customer', 'mobile', '13912345678', (SELECT id FROM p WHERE k = 'c'))),
          'a changed personal field: both values as keyed hashes');
SAVEPOINT s1;
SET LOCAL ROLE au_rm;
UPDATE crm_data.customer SET segment = 'private_banking' WHERE id = (SELECT id FROM p WHERE k = 'c');
RESET ROLE;
ROLLBACK TO SAVEPOINT s1;
SELECT is(pg_temp.entries('UPDATE', 'customer', (SELECT id FROM p WHERE k = 'c')), 2::bigint, 'a change rolled back leaves no entry');
SET LOCAL session_replication_role = replica;
SET LOCAL ROLE au_rm;
UPDATE crm_data.customer SET segment = 'mass' WHERE id = (SELECT id FROM p WHERE k = 'c');
RESET ROLE;
RESET session_replication_role;
SELECT is(pg_temp.entries('UPDATE', 'customer', (SELECT id FROM p WHERE k = 'c')), 3::bigint, 'session_replication_role = replica does not silence it');
SET LOCAL ROLE au_rm;
INSERT INTO crm_data.interaction (customer_id, channel, occurred_at, summary)
  SELECT id, 'phone', now(), 'called about renewal' FROM p WHERE k = 'c';
INSERT INTO crm_data.interaction (customer_id, channel, occurred_at, summary)
  SELECT id, 'visit', now(), 'visited' FROM p WHERE k = 'c';
DELETE FROM crm_data.interaction WHERE customer_id = (SELECT id FROM p WHERE k = 'c') AND channel = 'visit';
RESET ROLE;
SELECT is(pg_temp.entries('INSERT', 'interaction', NULL), 2::bigint, 'a child object is audited too (every managed table)');
SELECT is(pg_temp.entries('DELETE', 'interaction', NULL), 1::bigint, 'a DELETE writes one entry');
SELECT is(pg_temp.last_detail('DELETE', 'interaction') #>> '{fields,channel,old}', 'visit', 'with the values it removed');
SELECT crm.create_object('au_plan', 'Plan');
SELECT crm.add_field('au_plan', 'title', 'text');
SET LOCAL ROLE au_rm;
INSERT INTO crm_data.au_plan (title) VALUES ('new plan');
RESET ROLE;
SELECT is(pg_temp.entries('INSERT', 'au_plan', NULL), 1::bigint, 'a custom object gets the audit trigger automatically');
SELECT is(pg_temp.entries('DDL', 'object', NULL) + pg_temp.entries('DDL', 'field', NULL), 2::bigint, 'creating an object and a field are DDL events');

-- catalog changes are events
SELECT crm.grant_object('rm', 'au_plan', ARRAY['read'], 'org_unit');
SELECT is(pg_temp.entries('GRANT', 'object_grant', NULL), 1::bigint, 'grant_object: a GRANT event');
SELECT crm.share('customer', (SELECT id FROM p WHERE k = 'c'), 'au_rm2', 'read', NULL, 'cover');
SELECT is(pg_temp.entries('SHARE', 'record_share', NULL), 1::bigint, 'share: a SHARE event');
SELECT crm.set_field_access('customer', 'segment', 'rm', 'read');
SELECT is(pg_temp.entries('POLICY', 'field_access', NULL), 1::bigint, 'set_field_access: a POLICY event');
SELECT crm.set_principal_roles((SELECT id FROM p WHERE k = 'rm2'), ARRAY['rm', 'team_lead']);
SELECT ok(pg_temp.entries('GRANT', 'principal_role', NULL) >= 1, 'a principal''s roles changing: a GRANT event');
UPDATE crm.object_grant SET scope = 'all' WHERE role = 'rm' AND object = 'au_plan';
SELECT is(pg_temp.entries('GRANT', 'object_grant', NULL), 2::bigint, 'a change made past the API, straight into the catalog, is an event too');
ALTER TABLE crm_data.au_plan ADD COLUMN extra text;
SELECT is(pg_temp.entries('DDL', 'au_plan', NULL), 1::bigint, 'ALTER TABLE of a managed table by hand: a DDL event with the statement');

-- who may read the log
SELECT is(pg_temp.err('au_rm', 'SELECT count(*) FROM crm.audit_log'), '42501 permission denied for table audit_log', 'a CRM user cannot read the log');
SELECT is(pg_temp.err('au_rm', $q$SELECT crm.audit_trail('customer', 1)$q$), '42501 permission denied for function audit_trail', 'nor use the auditor API');
SELECT is(pg_temp.err('au_rm', $q$SELECT crm._audit_event('LOGIN', NULL, NULL, NULL)$q$), '42501 permission denied for function _audit_event', 'nor forge an event');
SELECT is(pg_temp.err('au_auditor', 'SELECT count(*) FROM crm.audit_log'), 'ok', 'an auditor can');
SET LOCAL ROLE au_auditor;
SELECT is((SELECT string_agg(action || ':' || coalesce(field, '-'), ',' ORDER BY id, field) FROM crm.audit_trail('customer', (SELECT id FROM p WHERE k = 'c'))),
          (SELECT 'INSERT:aum,INSERT:created_at,INSERT:created_by,INSERT:customer_type,INSERT:id_number,INSERT:id_type,INSERT:kyc_status,INSERT:mobile,INSERT:name,INSERT:org_unit_id,INSERT:owner_id,INSERT:segment,UPDATE:segment,UPDATE:mobile,UPDATE:segment'),
          'audit_trail: the history of one record, field by field');
RESET ROLE;

-- append-only, for everyone: every way around it fails
SELECT is(pg_temp.err(NULL, 'UPDATE crm.audit_log SET action = ''X'' WHERE id = (SELECT max(id) FROM crm.audit_log)'),
          '42501 audit_log_y' || to_char(now() AT TIME ZONE 'UTC', 'YYYY"m"MM') || ' is append-only', 'UPDATE of the log: refused, superuser included');
SELECT is(pg_temp.err(NULL, 'DELETE FROM crm.audit_log'), '42501 audit_log_y' || to_char(now() AT TIME ZONE 'UTC', 'YYYY"m"MM') || ' is append-only', 'DELETE: refused');
SELECT is(pg_temp.err(NULL, 'TRUNCATE crm.audit_log'), '42501 TRUNCATE audit_log is not allowed', 'TRUNCATE: refused');
SELECT is(pg_temp.err(NULL, 'DROP TABLE crm.audit_log'), '42501 DROP TABLE audit_log is not allowed', 'DROP TABLE: refused');
SELECT is(pg_temp.err(NULL, format('DROP TABLE crm.audit_log_y%s', to_char(now() AT TIME ZONE 'UTC', 'YYYY"m"MM'))),
          format('42501 DROP TABLE audit_log_y%s is not allowed', to_char(now() AT TIME ZONE 'UTC', 'YYYY"m"MM')), 'DROP of a partition: refused');
SELECT is(pg_temp.err(NULL, format('ALTER TABLE crm.audit_log DETACH PARTITION crm.audit_log_y%s', to_char(now() AT TIME ZONE 'UTC', 'YYYY"m"MM'))),
          '42501 ALTER TABLE of audit_log is not allowed', 'DETACH PARTITION: refused');
SELECT is(pg_temp.err(NULL, 'DROP SCHEMA crm CASCADE'), '42501 DROP SCHEMA crm is not allowed', 'DROP SCHEMA crm CASCADE: refused');
SELECT is(pg_temp.err(NULL, 'ALTER TABLE crm_data.customer DISABLE TRIGGER crm_audit'), '42501 disabling trigger crm_audit is not allowed',
          'disabling the audit trigger of a managed table: refused');
SELECT is(pg_temp.err(NULL, 'ALTER TABLE crm_data.customer DISABLE TRIGGER ALL'),
          '42501 ALTER TABLE ... ENABLE/DISABLE TRIGGER ALL/USER on customer is not allowed', 'DISABLE TRIGGER ALL: refused');
SELECT is(pg_temp.err(NULL, 'ALTER TABLE crm_data.customer ENABLE REPLICA TRIGGER crm_audit'),
          '42501 changing when this trigger fires: crm_audit is not allowed', 'ENABLE REPLICA (silenced outside replicas): refused');
SELECT is(pg_temp.err(NULL, 'DROP TRIGGER crm_audit ON crm_data.customer'), '42501 DROP TRIGGER crm_audit is not allowed', 'DROP TRIGGER: refused');
SELECT is(pg_temp.err(NULL, 'CREATE OR REPLACE TRIGGER crm_audit AFTER INSERT ON crm_data.customer FOR EACH ROW EXECUTE FUNCTION crm.stamp()'),
          '42501 replacing trigger crm_audit is not allowed', 'replacing the audit trigger with another function: refused');
SELECT is(pg_temp.err(NULL, 'ALTER TABLE crm_data.customer NO FORCE ROW LEVEL SECURITY'), '42501 turning row security off for customer is not allowed',
          'NO FORCE ROW LEVEL SECURITY: refused');

-- forging and dodging (found by review)
CREATE TEMP TABLE principal_role (id bigint, principal_id bigint, role text);
CREATE TRIGGER forge AFTER INSERT ON principal_role FOR EACH ROW EXECUTE FUNCTION crm._audit_row('GRANT');
SELECT is(pg_temp.err(NULL, 'INSERT INTO pg_temp.principal_role VALUES (99, 2, ''admin'')'),
          '42501 crm''s audit triggers may only be used on crm''s tables', 'crm''s audit trigger on a look-alike table cannot forge entries');
SELECT is(pg_temp.err('au_rm', $q$SELECT crm._saw(0, 'customer', 'id_number', 1::bigint, 1::bigint, false)$q$),
          '42501 crm._saw() is called only by crm''s masking hook', 'READ_SENSITIVE events cannot be forged by calling crm._saw');
SELECT is(pg_temp.err('au_rm', format('UPDATE crm_data.customer SET id = DEFAULT WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          format('0A000 the id of record %s of customer cannot change', (SELECT id FROM p WHERE k = 'c')),
          'a record''s id cannot change (it would cut it from its trail and its data key)');
-- superusers cannot quietly switch the log off either
SELECT is(pg_temp.err(NULL, 'CREATE RULE zz AS ON INSERT TO crm.audit_log DO INSTEAD NOTHING'), '42501 CREATE RULE on audit_log is not allowed', 'CREATE RULE on the log: refused');
SELECT is(pg_temp.err(NULL, 'CREATE RULE zz AS ON UPDATE TO crm_data.customer DO INSTEAD NOTHING'), '42501 CREATE RULE on customer is not allowed', 'CREATE RULE on a managed table: refused');
CREATE FUNCTION pg_temp.drop_it() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
SELECT is(pg_temp.err(NULL, 'CREATE TRIGGER zz BEFORE INSERT ON crm.audit_log FOR EACH ROW EXECUTE FUNCTION pg_temp.drop_it()'),
          '42501 CREATE TRIGGER on audit_log is not allowed', 'a trigger on the log that drops entries: refused');
SELECT is(pg_temp.err(NULL, $q$CREATE OR REPLACE FUNCTION crm._audit_row() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'$q$),
          '42501 creating or replacing function crm._audit_row is not allowed', 'replacing crm''s trigger function: refused');
SELECT is(pg_temp.err(NULL, 'ALTER EXTENSION crm DROP FUNCTION crm._audit_row()'), '42501 changing the members of extension crm is not allowed',
          'taking a function out of the extension: refused');
SELECT is(pg_temp.err(NULL, 'DROP FUNCTION crm._audit_row() CASCADE'), '42501 DROP FUNCTION of a crm function is not allowed', 'DROP FUNCTION ... CASCADE: refused');
SELECT is(pg_temp.err(NULL, 'ALTER TRIGGER crm_audit ON crm_data.customer DEPENDS ON EXTENSION pgcrypto'),
          '42501 ALTER ... DEPENDS ON EXTENSION for crm''s objects is not allowed', 'making crm''s trigger depend on another extension: refused');
SELECT is(pg_temp.err(NULL, 'ALTER SCHEMA crm_data RENAME TO x'), '42501 renaming schema crm_data is not allowed', 'renaming crm_data (to slip past the guards): refused');
SELECT is(pg_temp.err(NULL, 'ALTER SCHEMA crm RENAME TO x'), '42501 renaming schema crm is not allowed', 'renaming crm: refused');
SELECT is(pg_temp.err(NULL, 'ALTER TABLE crm.audit_log SET SCHEMA public'), '42501 ALTER ... SET SCHEMA of audit_log is not allowed', 'moving the log out of crm: refused');
SELECT is(pg_temp.err(NULL, $q$ALTER TABLE crm.audit_log ADD CONSTRAINT zz CHECK (action <> 'READ_SENSITIVE') NOT VALID$q$),
          '42501 ALTER TABLE of audit_log is not allowed', 'a CHECK that would make entries fail: refused');
SELECT is(pg_temp.err(NULL, 'ALTER TABLE crm.audit_log ALTER COLUMN era SET DEFAULT 42'), '42501 ALTER TABLE of audit_log is not allowed',
          'a default that would keep entries from being sealed: refused');
SELECT is(pg_temp.err(NULL, 'REASSIGN OWNED BY ' || quote_ident(current_user) || ' TO au_rm'), '42501 REASSIGN OWNED BY the owner of the audit log is not allowed',
          'REASSIGN/DROP OWNED BY the log''s owner: refused');
SELECT is(pg_temp.err(NULL, 'CREATE OR REPLACE TRIGGER crm_audit AFTER INSERT OR UPDATE OF owner_id OR DELETE ON crm_data.customer FOR EACH ROW EXECUTE FUNCTION crm._audit_row()'),
          '42501 replacing trigger crm_audit is not allowed', 'replacing the audit trigger with a narrower one: refused');
CREATE OR REPLACE TRIGGER crm_audit AFTER INSERT OR UPDATE OR DELETE ON crm_data.customer FOR EACH ROW EXECUTE FUNCTION crm._audit_row();
SELECT is((SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'crm_data.customer'::regclass AND tgname = 'crm_audit'), 'A',
          'replacing it with itself leaves it firing ALWAYS');

SELECT * FROM finish();
ROLLBACK;
