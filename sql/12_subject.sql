-- Data-subject rights and integration: consent, subject export, upsert with golden records, import.
\set VERBOSITY terse
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_ds_rm, regress_ds_rm2, regress_ds_comp, regress_ds_int, regress_ds_app;
RESET client_min_messages;
SELECT crm.add_org_unit('DS HQ') AS hq \gset
DO $$ DECLARE r text; BEGIN
  FOREACH r IN ARRAY ARRAY['regress_ds_rm', 'regress_ds_rm2', 'regress_ds_comp', 'regress_ds_int'] LOOP
    EXECUTE format('CREATE ROLE %I LOGIN IN ROLE crm_user', r);
  END LOOP;
END $$;
SELECT crm.add_principal('regress_ds_rm', 'RM', :hq, ARRAY['rm']) AS rm \gset
SELECT crm.add_principal('regress_ds_rm2', 'RM 2', :hq, ARRAY['rm']) AS rm2 \gset
SELECT crm.add_principal('regress_ds_comp', 'Compliance', :hq, ARRAY['compliance']) AS comp \gset
SELECT crm.add_principal('regress_ds_int', 'Integration', :hq, ARRAY['admin']) AS int \gset
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, mobile, risk_tolerance, kyc_status, risk_assessed_on)
  VALUES (:rm, '数据主体', 'id_card', '11010519491231002X', '13812345678', 'C3', 'verified', current_date);
SELECT id AS subj FROM crm_data.customer WHERE name = '数据主体' \gset

-- consent: grant (idempotent), withdraw, history kept, used by has_consent
SET ROLE regress_ds_rm;
SELECT crm.grant_consent(:subj, 'marketing', 'sms', '') IS NULL;
SELECT crm.grant_consent(:subj, 'marketing', 'sms', 'signed form 2026-11') AS c1 \gset
SELECT crm.grant_consent(:subj, 'marketing', 'sms', 'again') = :c1 AS same_consent;
SELECT crm.grant_consent(:subj, 'marketing', 'fax', 'x');
SELECT crm.has_consent(:subj, 'marketing', 'sms'), crm.has_consent(:subj, 'marketing', 'email');
SELECT crm.withdraw_consent(:subj, 'marketing', 'sms', 'phone call 2026-11-28') AS withdrawn;
SELECT crm.has_consent(:subj, 'marketing', 'sms');
SELECT crm.grant_consent(:subj, 'marketing', 'any', 'app v2 screen 4') > :c1 AS new_row;
SELECT crm.has_consent(:subj, 'marketing', 'email');
SELECT purpose, channel, withdrawn_at IS NOT NULL AS withdrawn, evidence FROM crm_data.consent WHERE customer_id = :subj ORDER BY id;
-- another RM can neither see nor change them
SET ROLE regress_ds_rm2;
SELECT crm.has_consent(:subj, 'marketing', 'email');
SELECT crm.withdraw_consent(:subj, 'marketing', 'any');
SELECT crm.grant_consent(:subj, 'service', 'sms', 'planted');
RESET ROLE;

-- a custom object referring to the customer, and one referring to that
SELECT crm.create_object('complaint', 'Complaint', 'private', '{}');
SELECT crm.add_field('complaint', 'customer_id', 'reference', '{"object": "customer", "required": true, "inherit_access": true}');
SELECT crm.add_field('complaint', 'summary', 'text', '{"sensitivity": "personal"}');
SELECT crm.create_object('complaint_note', 'Complaint note', 'private', '{}');
SELECT crm.add_field('complaint_note', 'complaint_id', 'reference', '{"object": "complaint", "required": true}');
SELECT crm.add_field('complaint_note', 'note', 'text', '{}');
SET ROLE regress_ds_rm;
INSERT INTO crm_data.complaint (customer_id, summary) VALUES (:subj, '理财收益不符预期');
INSERT INTO crm_data.complaint_note (owner_id, complaint_id, note) SELECT :rm, id, '已回电' FROM crm_data.complaint WHERE customer_id = :subj;
RESET ROLE;

-- the subject export: compliance only; the customer, records referring to it, two steps out, consents, audit
SET ROLE regress_ds_rm;
SELECT crm.subject_export(:subj);
SET ROLE regress_ds_comp;
SELECT jsonb_array_length(e->'records'->'customer') AS customers,
       e->'records'->'customer'->0->>'id_number' AS id_number,
       jsonb_array_length(e->'records'->'complaint') AS complaints,
       e->'records'->'complaint_note'->0->>'note' AS note,
       jsonb_array_length(e->'consents') AS consents,
       jsonb_array_length(e->'audit') > 3 AS has_audit,
       (SELECT count(*) FROM jsonb_array_elements(e->'audit') a WHERE a->>'object' = 'complaint_note') AS note_audit
  FROM crm.subject_export(:subj) e;
SELECT crm.subject_export(424242);
RESET ROLE;

-- upsert by source ids: insert, then update by the same id; attributes checked field by field
SET ROLE regress_ds_int;
SELECT crm.upsert('customer', 'core_banking', 'CB-1', '{"name": "张三", "id_type": "id_card", "id_number": "110101199003074477", "aum": 1000}') AS u1 \gset
SELECT crm.upsert('customer', 'core_banking', 'CB-1', '{"aum": 2000}') = :u1 AS same_record;
SELECT name, aum FROM crm_data.customer WHERE id = :u1;
SELECT crm.upsert('customer', 'core_banking', 'CB-2', '{"name": "x", "nickname": "y"}');
SELECT crm.upsert('customer', 'core_banking', 'CB-2', '{"name": "x", "aum": "lots"}');
SELECT crm.upsert('customer', 'core_banking', 'CB-2', '{"name": "x", "id_type": "id_card", "id_number": "110101199003074478"}');
SELECT crm.upsert('customer', 'core_banking', '', '{"name": "x"}');
SELECT crm.upsert('no_such', 'core_banking', 'CB-2', '{}');
-- the same person from the wealth system, found by ID number: one golden record, two references
SELECT crm.upsert('customer', 'wealth', 'W-77', '{"id_type": "id_card", "id_number": "110101199003074477", "mobile": "13912345678"}') = :u1 AS golden;
SELECT name, mobile, aum FROM crm_data.customer WHERE id = :u1;
RESET ROLE;
SELECT source_system, external_id, record_id = :u1 AS same FROM crm.external_ref WHERE object = 'customer' ORDER BY 1, 2;
-- an RM cannot take over a record it cannot see through a source id
SET ROLE regress_ds_rm2;
SELECT crm.upsert('customer', 'core_banking', 'CB-1', '{"name": "冒名", "aum": 1}');
RESET ROLE;
SELECT aum FROM crm_data.customer WHERE id = :u1;

-- bulk import: a per-row report; all or nothing by default
CREATE TABLE public.ds_staging (external_id text, name text, id_type text, id_number text, aum text);
INSERT INTO public.ds_staging VALUES
  ('IMP-1', '李一', NULL, NULL, '100'),
  ('IMP-2', '李二', NULL, NULL, 'not a number'),
  ('IMP-3', NULL, NULL, NULL, '300'),
  ('IMP-4', '李四', 'id_card', '110101199003074478', '400'),
  ('IMP-5', '李五', NULL, NULL, '500');
GRANT SELECT ON public.ds_staging TO regress_ds_int;
SET ROLE regress_ds_int;
SELECT * FROM crm.import('customer', 'public.ds_staging', 'crm_import');
RESET ROLE;
SELECT count(*) AS imported FROM crm.external_ref WHERE source_system = 'crm_import';
SET ROLE regress_ds_int;
SELECT row_no, status, reason FROM crm.import('customer', 'public.ds_staging', 'crm_import', all_or_nothing => false) ORDER BY row_no;
RESET ROLE;
SELECT count(*) AS imported FROM crm.external_ref WHERE source_system = 'crm_import';
SELECT name, aum FROM crm_data.customer c JOIN crm.external_ref r ON r.record_id = c.id AND r.object = 'customer'
 WHERE r.source_system = 'crm_import' ORDER BY r.external_id;
SELECT crm.import('customer', 'pg_catalog.pg_class', 'x');
-- a clean file goes set-based: IMP-1 updated, two new customers, one of them already known by ID number
TRUNCATE public.ds_staging;
INSERT INTO public.ds_staging VALUES ('IMP-1', '李一', NULL, NULL, '150'), ('IMP-6', '李六', NULL, NULL, '600'),
  ('IMP-7', '张三', 'id_card', '110101199003074477', '2500');
SET ROLE regress_ds_int;
SELECT row_no, external_id, status, reason FROM crm.import('customer', 'public.ds_staging', 'crm_import') ORDER BY row_no;
RESET ROLE;
SELECT r.external_id, c.name, c.aum, c.id = :u1 AS golden FROM crm_data.customer c JOIN crm.external_ref r ON r.record_id = c.id AND r.object = 'customer'
 WHERE r.source_system = 'crm_import' ORDER BY r.external_id;
DROP TABLE public.ds_staging;

-- PostgREST's pre-request: act as the token's principal, only for an application role in crm_app
CREATE ROLE regress_ds_app LOGIN IN ROLE crm_app;
SET ROLE regress_ds_app;
BEGIN;
SET LOCAL request.jwt.claims = '{"principal": "regress_ds_rm", "role": "regress_ds_app"}';
SELECT crm.act_as_from_jwt();
SELECT crm.current_principal() = :rm AS acting_as_token_principal;
SELECT count(*) AS sees_its_customer FROM crm_data.customer WHERE id = :subj;
COMMIT;
SELECT crm.current_principal() IS NULL AS cleared_after_the_request;
BEGIN;
SET LOCAL request.jwt.claims = '{"principal": "nobody_at_all"}';
SELECT crm.act_as_from_jwt();
ROLLBACK;
SET ROLE regress_ds_rm2;
BEGIN;
SET LOCAL request.jwt.claims = '{"principal": "regress_ds_rm"}';
SELECT crm.act_as_from_jwt();
ROLLBACK;
RESET ROLE;

-- merging duplicates, reversibly
SET ROLE regress_ds_int;
SELECT crm.upsert('customer', 'crm_import', 'IMP-8', '{"name": "张三 (重复)"}') AS dup \gset
INSERT INTO crm_data.interaction (customer_id, channel, occurred_at, summary) VALUES (:dup, 'phone', now(), 'dup call'), (:dup, 'visit', now(), 'dup visit');
RESET ROLE;
SELECT crm.merge_customers(:u1, :dup, 'same person, two files') AS mid \gset
SELECT count(*) AS interactions_now_on_survivor FROM crm_data.interaction WHERE customer_id = :u1 AND summary LIKE 'dup%';
SELECT record_id = :u1 AS ref_moved FROM crm.external_ref WHERE external_id = 'IMP-8';
SELECT crm.merge_customers(:u1, :dup);
SELECT crm.unmerge_customers(:mid) AS moved_back;
SELECT count(*) AS back_on_duplicate FROM crm_data.interaction WHERE customer_id = :dup;
SELECT record_id = :dup AS ref_back FROM crm.external_ref WHERE external_id = 'IMP-8';
SELECT crm.unmerge_customers(:mid);
SELECT crm.merge_customers(:u1, :u1);

-- erasure: complaints are kept 5 years (blanked), interactions go now; the customer stays, blanked
SELECT crm.set_retention('complaint', '5 years', 'anonymise');
SELECT crm.set_retention('complaint', '-1 day', 'delete');
SELECT crm.set_retention('complaint', '5 years', 'burn');
INSERT INTO crm_data.interaction (customer_id, channel, occurred_at, summary) VALUES (:subj, 'phone', now(), '谈及家庭住址');
SET ROLE regress_ds_rm;
SELECT crm.erase_subject(:subj, 'PIPL request 2026-11-28');
SET ROLE regress_ds_comp;
SELECT crm.erase_subject(:subj, '');
SELECT crm.erase_subject(:subj, 'PIPL request 2026-11-28');
RESET ROLE;
SELECT name, id_number, mobile, birthday, aum FROM crm_data.customer WHERE id = :subj;
SELECT summary FROM crm_data.complaint WHERE customer_id = :subj;
SELECT count(*) AS interactions_left FROM crm_data.interaction WHERE customer_id = :subj;
SELECT count(*) AS consents_left FROM crm_data.consent WHERE customer_id = :subj;
SELECT action, detail->>'operation' AS operation, principal_id = :comp AS by_compliance FROM crm.audit_log
 WHERE object = 'customer' AND record_id = :subj AND action = 'MAINTENANCE' ORDER BY id DESC LIMIT 1;
SELECT crm.audit_seal() >= 0 AS sealed;
SELECT ok FROM crm.audit_verify();

-- retention applied: anonymise complaints older than 5 years, delete interactions older than 1 year
SELECT crm.set_retention('interaction', '1 year', 'delete');
INSERT INTO crm_data.interaction (owner_id, customer_id, channel, occurred_at, summary, created_at)
  VALUES (:rm, :u1, 'phone', now() - interval '2 years', 'old call', now() - interval '2 years');
SELECT * FROM crm.apply_retention() ORDER BY 1;
SELECT count(*) AS old_calls FROM crm_data.interaction WHERE summary = 'old call';
