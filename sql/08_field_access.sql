-- Field-level access: levels per CRM role, defaults from sensitivity, and the write guard.
\set VERBOSITY terse
-- roles a run that was cut short may have left behind (sql/99_teardown.sql drops them after a full run)
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_fa_tl, regress_fa_rm, regress_fa_comp;
RESET client_min_messages;
SELECT crm.add_org_unit('Field HQ') AS hq \gset
CREATE ROLE regress_fa_tl LOGIN;
CREATE ROLE regress_fa_rm LOGIN;
CREATE ROLE regress_fa_comp LOGIN;
SELECT crm.add_principal('regress_fa_tl', 'TL', :hq, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('regress_fa_rm', 'RM', :hq, ARRAY['rm'], :tl) AS rm \gset
SELECT crm.add_principal('regress_fa_comp', 'Compliance', :hq, ARRAY['compliance']) AS comp \gset
-- defaults: sensitive fields are masked outside one's own book, readable for compliance
SELECT field, level, own_level, mask FROM crm.field_levels(:rm, 'customer') WHERE field IN ('name', 'id_number', 'mobile', 'aum');
SELECT field, level, own_level FROM crm.field_levels(:comp, 'customer') WHERE field IN ('name', 'id_number');
-- an RM onboards its own customer, ID number included
SET ROLE regress_fa_rm;
INSERT INTO crm_data.customer (name, id_type, id_number, mobile) VALUES ('王五', 'id_card', '11010519491231002X', '13812345678')
  RETURNING name, id_number;
SELECT id AS c FROM crm_data.customer WHERE name = '王五' \gset
UPDATE crm_data.customer SET id_number = '110101200002290018' WHERE id = :c RETURNING id_number;
-- its team lead may see the customer and edit it, but not write the ID number of a report's customer
SET ROLE regress_fa_tl;
UPDATE crm_data.customer SET name = '王五五' WHERE id = :c RETURNING name;
UPDATE crm_data.customer SET id_number = '11010519491231002X' WHERE id = :c;
UPDATE crm_data.customer SET id_number = id_number, segment = 'affluent' WHERE id = :c RETURNING segment;
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (:rm, '赵六', 'id_card', '11010519491231002X');
INSERT INTO crm_data.customer (owner_id, name) VALUES (:rm, '赵六') RETURNING name;
RESET ROLE;
-- an admin narrows the rm role: mobile becomes read-only, KYC status read-only (default 'pending')
SELECT crm.set_field_access('customer', 'mobile', 'rm', 'read');
SELECT crm.set_field_access('customer', 'kyc_status', 'rm', 'read');
SELECT field, level, own_level FROM crm.field_levels(:rm, 'customer') WHERE field IN ('mobile', 'kyc_status');
SET ROLE regress_fa_rm;
UPDATE crm_data.customer SET mobile = '13900000000' WHERE id = :c;
UPDATE crm_data.customer SET mobile = NULL WHERE id = :c;
INSERT INTO crm_data.customer (name, mobile) VALUES ('钱七', '13900000000');
INSERT INTO crm_data.customer (name, kyc_status) VALUES ('钱七', 'verified');
INSERT INTO crm_data.customer (name, kyc_status) VALUES ('钱七', 'pending') RETURNING name, kyc_status;
RESET ROLE;
-- the maintenance role is not a principal: the guard leaves it to row security
UPDATE crm_data.customer SET mobile = '13900000000' WHERE id = :c RETURNING mobile;
-- levels that depend on the record: read on one's own book, hidden elsewhere
SELECT crm.set_field_access('customer', 'email', 'team_lead', 'hidden', 'write');
SELECT field, level, own_level FROM crm.field_levels(:tl, 'customer') WHERE field = 'email';
SELECT crm.reset_field_access('customer', 'mobile', 'rm'), crm.reset_field_access('customer', 'mobile', 'rm');
SELECT field, level FROM crm.field_levels(:rm, 'customer') WHERE field = 'mobile';
-- refusals
SELECT crm.set_field_access('customer', 'nothing', 'rm', 'read');
SELECT crm.set_field_access('customer', 'owner_id', 'rm', 'read');
SELECT crm.set_field_access('customer', 'mobile', 'wizard', 'read');
SELECT crm.set_field_access('customer', 'mobile', 'rm', 'peek');
SELECT crm.set_field_access('customer', 'mobile', 'rm', 'read', 'peek');
SELECT crm.set_field_access('nothing', 'mobile', 'rm', 'read');
SET ROLE regress_fa_rm;
SELECT crm.set_field_access('customer', 'mobile', 'rm', 'write');
SELECT count(*) FROM crm.field_levels(:rm, 'customer') AS own_levels;
SELECT crm.field_levels(:tl, 'customer');
RESET ROLE;
-- a field that is dropped takes its levels with it
SELECT crm.create_object('fa_note', 'Note');
SELECT crm.add_field('fa_note', 'secret', 'text', '{"sensitivity": "sensitive"}');
SELECT crm.set_field_access('fa_note', 'secret', 'rm', 'hidden');
SELECT crm.drop_field('fa_note', 'secret');
SELECT count(*) FROM crm.field_access WHERE object = 'fa_note';
