-- Objects and fields: the definition API, every field type and option, and every refusal.
-- After each refusal the catalog shows that nothing was made.
\set VERBOSITY terse
-- roles a run that was cut short may have left behind (sql/99_teardown.sql drops them after a full run)
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_owner1;
RESET client_min_messages;
CREATE FUNCTION regress_snapshot() RETURNS TABLE (objects bigint, fields bigint, tables bigint, columns bigint)
LANGUAGE sql AS $$
  SELECT (SELECT count(*) FROM crm.object), (SELECT count(*) FROM crm.field),
         (SELECT count(*) FROM pg_class WHERE relnamespace = 'crm_data'::regnamespace AND relkind = 'r'),
         (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           WHERE c.relnamespace = 'crm_data'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped)
$$;
CREATE TEMP TABLE regress_before AS SELECT * FROM regress_snapshot();

-- a custom object with one field of every type
SELECT crm.create_object('wealth_plan', '财富规划 Wealth plan', 'org_unit', '{"description": "annual plans"}');
SELECT crm.add_field('wealth_plan', 'title', 'text', '{"required": true, "label": "标题"}');
SELECT crm.add_field('wealth_plan', 'years', 'integer', '{"default": 5}');
SELECT crm.add_field('wealth_plan', 'ratio', 'numeric', '{}');
SELECT crm.add_field('wealth_plan', 'target', 'money', '{"sensitivity": "personal"}');
SELECT crm.add_field('wealth_plan', 'starts_on', 'date', '{}');
SELECT crm.add_field('wealth_plan', 'reviewed_at', 'timestamptz', '{}');
SELECT crm.add_field('wealth_plan', 'signed', 'boolean', '{"default": false}');
SELECT crm.add_field('wealth_plan', 'tier', 'picklist', '{"values": ["gold", "platinum"], "default": "gold"}');
SELECT crm.add_field('wealth_plan', 'customer_id', 'reference', '{"object": "customer", "on_delete": "cascade"}');
SELECT crm.add_field('wealth_plan', 'advisor_id', 'reference', '{"object": "principal"}');
SELECT crm.add_field('wealth_plan', 'contact_email', 'email', '{"sensitivity": "personal"}');
SELECT crm.add_field('wealth_plan', 'contact_mobile', 'cn_mobile', '{"sensitivity": "personal"}');
SELECT crm.add_field('wealth_plan', 'holder_id', 'cn_id_number', '{"sensitivity": "sensitive"}');
SELECT crm.add_field('wealth_plan', 'company', 'uscc', '{"unique": true}');
SELECT crm.add_field('wealth_plan', 'card', 'bank_card', '{"sensitivity": "sensitive", "mask": "full"}');
SELECT name, type, column_type, required, "unique", default_value, sensitivity, mask, references_object, picklist_values
  FROM crm.fields WHERE object = 'wealth_plan' ORDER BY position;
SELECT attname, format_type(atttypid, atttypmod), attnotnull, col_description(attrelid, attnum)
  FROM pg_attribute WHERE attrelid = 'crm_data.wealth_plan'::regclass AND attnum > 0 ORDER BY attnum;
SELECT obj_description('crm_data.wealth_plan'::regclass);
SELECT name, label, sharing, core, table_name, field_count, description FROM crm.objects WHERE name = 'wealth_plan';
-- a field added to a core object
SELECT crm.add_field('customer', 'wechat_id', 'text', '{"label": "WeChat"}');
SELECT crm.set_object_label('wealth_plan', 'Wealth plan');
SELECT crm.set_field_label('wealth_plan', 'title', 'Plan title');
SELECT label, col_description('crm_data.wealth_plan'::regclass, 8) FROM crm.fields WHERE object = 'wealth_plan' AND name = 'title';
CREATE TEMP TABLE regress_good AS SELECT * FROM regress_snapshot();

-- bad object names: each refused, nothing made
SELECT crm.create_object('Customer2', 'x');
SELECT crm.create_object('2fast', 'x');
SELECT crm.create_object('select', 'x');
SELECT crm.create_object('user', 'x');
SELECT crm.create_object('x; drop table crm_data.customer; --', 'x');
SELECT crm.create_object('o''brien', 'x');
SELECT crm.create_object('a"b', 'x');
SELECT crm.create_object('сustomer', 'Cyrillic c');
SELECT crm.create_object('ｃｕｓｔｏｍｅｒ', 'full-width');
SELECT crm.create_object('', 'x');
SELECT crm.create_object(NULL, 'x');
SELECT crm.create_object('pg_thing', 'x');
SELECT crm.create_object('crm_thing', 'x');
SELECT crm.create_object('principal', 'x');
SELECT crm.create_object(repeat('a', 49), 'x');
SELECT crm.create_object('customer', 'again');
SELECT crm.create_object('thing', '');
SELECT crm.create_object('thing', 'Thing', 'secret');
SELECT crm.create_object('thing', 'Thing', 'private', '{"colour": "red"}');
SELECT crm.create_object('thing', 'Thing', 'private', '[1]');
CREATE TABLE crm_data.stray (id int);
SELECT crm.create_object('stray', 'Stray');
DROP TABLE crm_data.stray;

-- bad fields: each refused, nothing made
SELECT crm.add_field('nothing', 'x', 'text');
SELECT crm.add_field('wealth_plan', 'Title', 'text');
SELECT crm.add_field('wealth_plan', 'x; drop table crm_data.customer', 'text');
SELECT crm.add_field('wealth_plan', 'order', 'text');
SELECT crm.add_field('wealth_plan', 'owner_id', 'text');
SELECT crm.add_field('wealth_plan', 'title', 'text');
SELECT crm.add_field('wealth_plan', 'x', 'varchar');
SELECT crm.add_field('wealth_plan', 'x', 'text); drop table crm_data.customer; --');
SELECT crm.add_field('wealth_plan', 'x', 'text', '{"colour": "red"}');
SELECT crm.add_field('wealth_plan', 'x', 'text', '{"values": ["a"]}');
SELECT crm.add_field('wealth_plan', 'x', 'text', '{"required": "yes"}');
SELECT crm.add_field('wealth_plan', 'x', 'text', '{"sensitivity": "secret"}');
SELECT crm.add_field('wealth_plan', 'x', 'text', '{"mask": "stars"}');
SELECT crm.add_field('wealth_plan', 'x', 'integer', '{"encrypted": true}');
SELECT crm.add_field('wealth_plan', 'x', 'text', '"text"');
SELECT crm.add_field('wealth_plan', 'x', 'picklist', '{}');
SELECT crm.add_field('wealth_plan', 'x', 'picklist', '{"values": []}');
SELECT crm.add_field('wealth_plan', 'x', 'picklist', '{"values": ["a", "a"]}');
SELECT crm.add_field('wealth_plan', 'x', 'picklist', '{"values": ["a", 1]}');
SELECT crm.add_field('wealth_plan', 'x', 'picklist', '{"values": ["a"], "default": "b"}');
SELECT crm.add_field('wealth_plan', 'x', 'reference', '{}');
SELECT crm.add_field('wealth_plan', 'x', 'reference', '{"object": "nothing"}');
SELECT crm.add_field('wealth_plan', 'x', 'reference', '{"object": "customer", "on_delete": "explode"}');
SELECT crm.add_field('wealth_plan', 'x', 'integer', '{"default": "many"}');
SELECT crm.add_field('wealth_plan', 'x', 'integer', '{"default": [1]}');
SELECT crm.add_field('wealth_plan', 'x', 'date', '{"default": "2024-02-30"}');
SELECT crm.add_field('wealth_plan', 'x', 'cn_mobile', '{"default": "12345"}');
SELECT crm.add_field('wealth_plan', 'x', 'text', '{"document_type_field": "nothing"}');
SELECT crm.add_field('wealth_plan', 'x', 'text', '{"default": "x''); drop table crm_data.customer; --"}') IS NOT NULL AS injection_is_just_a_default;
SELECT column_default FROM information_schema.columns WHERE table_schema = 'crm_data' AND table_name = 'wealth_plan' AND column_name = 'x';
SELECT crm.drop_field('wealth_plan', 'x');
-- a required field without a default on an object with records
SELECT crm.add_org_unit('Regress HQ') AS hq \gset
CREATE ROLE regress_owner1 LOGIN;
SELECT crm.add_principal('regress_owner1', 'Owner One', :hq, ARRAY['rm']) > 0 AS principal_added;
INSERT INTO crm_data.wealth_plan (owner_id, title) SELECT id, 'plan' FROM crm.principal WHERE login = 'regress_owner1';
SELECT crm.add_field('wealth_plan', 'y', 'text', '{"required": true}');
SELECT crm.add_field('wealth_plan', 'y', 'text', '{"required": true, "default": "n/a"}');
SELECT y FROM crm_data.wealth_plan;
SELECT (SELECT row(s.*) FROM regress_snapshot() s) = (SELECT row(g.objects, g.fields + 1, g.tables, g.columns + 1) FROM regress_good g) AS only_y_was_added;

-- values are checked on the way in, naming object, field and reason
INSERT INTO crm_data.wealth_plan (owner_id, title, y, holder_id) SELECT id, 'p', 'y', '110105194912310021' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.wealth_plan (owner_id, title, y, contact_mobile) SELECT id, 'p', 'y', '+8613812345678' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.wealth_plan (owner_id, title, y, contact_email) SELECT id, 'p', 'y', 'not-an-email' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.wealth_plan (owner_id, title, y, card) SELECT id, 'p', 'y', '4111111111111112' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.wealth_plan (owner_id, title, y, company) SELECT id, 'p', 'y', '91350100M000100Y44' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.wealth_plan (owner_id, title, y, tier) SELECT id, 'p', 'y', 'diamond' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.wealth_plan (owner_id, y) SELECT id, 'y' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.wealth_plan (owner_id, title, y, customer_id) SELECT id, 'p', 'y', 424242 FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) SELECT id, '张三', 'id_card', '110105194912310021' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) SELECT id, '某公司', 'uscc', '11010519491231002X' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.customer (owner_id, name, id_number) SELECT id, '张三', '11010519491231002X' FROM crm.principal WHERE login = 'regress_owner1';
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, mobile, email, risk_tolerance)
  SELECT id, '张三', 'id_card', '11010519491231002X', '13812345678', 'zhang@example.com', 'C3' FROM crm.principal WHERE login = 'regress_owner1'
  RETURNING name, id_number, customer_type, kyc_status, aum;
INSERT INTO crm_data.customer (owner_id, name, customer_type, id_type, id_number)
  SELECT id, '福建某某有限公司', 'corporate', 'uscc', '91350100M000100Y43' FROM crm.principal WHERE login = 'regress_owner1'
  RETURNING name, id_type, id_number;

-- labels, drops
SELECT crm.set_object_label('nothing', 'x');
SELECT crm.set_field_label('wealth_plan', 'nothing', 'x');
SELECT crm.set_field_label('wealth_plan', 'title', ' ');
SELECT crm.drop_field('customer', 'name');
SELECT crm.drop_field('customer', 'id_type');
SELECT crm.drop_field('wealth_plan', 'owner_id');
SELECT crm.drop_field('wealth_plan', 'nothing');
SELECT crm.drop_field('wealth_plan', 'ratio');
SELECT count(*) FROM crm.fields WHERE object = 'wealth_plan' AND name = 'ratio';
SELECT count(*) FROM pg_attribute WHERE attrelid = 'crm_data.wealth_plan'::regclass AND attname = 'ratio' AND NOT attisdropped;
SELECT crm.drop_object('customer');
SELECT crm.drop_object('nothing');
SELECT crm.create_object('note', 'Note');
SELECT crm.add_field('note', 'plan_id', 'reference', '{"object": "wealth_plan"}');
SELECT crm.drop_object('wealth_plan');
SELECT crm.drop_object('note');
SELECT to_regclass('crm_data.note'), (SELECT count(*) FROM crm.object WHERE name = 'note');

-- the API is for crm_admin only; the listings are for CRM users
SET ROLE regress_owner1;
SELECT crm.create_object('sneaky', 'x');
SELECT crm.add_field('customer', 'sneaky', 'text');
SELECT count(*) > 0 AS can_list_objects FROM crm.objects;
SELECT count(*) > 0 AS can_list_fields FROM crm.fields;
RESET ROLE;
SELECT to_regclass('crm_data.sneaky'), (SELECT count(*) FROM crm.field WHERE name = 'sneaky');
