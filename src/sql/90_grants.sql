------------------------------------------------------------------------------------------------
-- Privileges. Functions are closed to PUBLIC, then opened to whom they are for.
------------------------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA crm FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA crm FROM PUBLIC;

-- anyone: who am I, is crm on, validators and derived values, act_as (which checks crm_app itself)
GRANT EXECUTE ON FUNCTION crm.preloaded(), crm.current_principal(), crm.acting_as(),
  crm.act_as(bigint), crm.act_as(text), crm.check_name(text, text),
  crm.cn_id_number_valid(text), crm.uscc_valid(text), crm.bank_card_valid(text), crm.cn_mobile_valid(text),
  crm.email_valid(text), crm.validation_problem(text, text), crm.check_field(text, text, text, text),
  crm.check_picklist(text, text, text, text[]), crm.check_document(text, text, text, text),
  crm.cn_id_number_birthday(text), crm.cn_id_number_gender(text), crm.make_cn_id_number(text, date, integer),
  crm.make_uscc(text), crm.stamp(), crm._column_type(text), crm._creating_extension(),
  crm.mask_id_number(text), crm.mask_mobile(text), crm.mask_name(text), crm.mask_email(text),
  crm.mask_bank_card(text), crm.mask_full(text), crm.mask(text, text), crm._short(anyelement)
  TO PUBLIC;

-- CRM users and auditors: the directory and the data dictionary
GRANT SELECT ON crm.objects, crm.fields, crm.principals, crm.role, crm.org_unit TO crm_user, crm_auditor, crm_admin;

-- business administration
GRANT EXECUTE ON FUNCTION crm.add_org_unit(text, bigint, text), crm.move_org_unit(bigint, bigint),
  crm.add_role(text, text), crm.drop_role(text), crm.add_principal(text, text, bigint, text[], bigint),
  crm.move_principal(bigint, bigint), crm.set_manager(bigint, bigint), crm.set_principal_roles(bigint, text[]),
  crm.deactivate_principal(bigint), crm.reactivate_principal(bigint),
  crm.create_object(text, text, text, jsonb), crm.add_field(text, text, text, jsonb),
  crm.set_object_label(text, text), crm.set_field_label(text, text, text), crm.drop_field(text, text),
  crm.drop_object(text), crm.init()
  TO crm_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA crm TO crm_admin;
GRANT crm_user TO crm_admin;
-- pooled apps act for principals (crm.act_as) and need what principals have; RLS decides the rows
GRANT crm_user TO crm_app;

-- record-level access: policy functions for everyone who queries managed tables
GRANT EXECUTE ON FUNCTION crm.acl_owners(text, text), crm.acl_units(text, text), crm.acl_records(text, text),
  crm.wall_excludes(text), crm._wall_matches(text, bigint), crm._caller_has_role(name)
  TO PUBLIC;
GRANT EXECUTE ON FUNCTION crm.share(text, bigint, text, text, timestamptz, text), crm.unshare(text, bigint, text),
  crm.explain_access(bigint, text, bigint)
  TO crm_user, crm_admin, crm_auditor;
GRANT EXECUTE ON FUNCTION crm.access_review(bigint), crm.acl_for(bigint, text, text),
  crm.wall_excludes_principal(text, bigint)
  TO crm_admin, crm_auditor;
GRANT EXECUTE ON FUNCTION crm.grant_object(text, text, text[], text), crm.revoke_object(text, text, text[], text),
  crm.add_wall(text, text, text, bigint[], bigint[], text[], text), crm.drop_wall(text), crm.check_condition(text, text)
  TO crm_admin;
GRANT SELECT ON crm.object_grant TO crm_user, crm_auditor;
GRANT SELECT ON crm.wall, crm.record_share TO crm_auditor;

-- field-level access
GRANT EXECUTE ON FUNCTION crm.field_levels(bigint, text), crm._level_rank(text), crm._level_name(integer)
  TO crm_user, crm_admin, crm_auditor;
GRANT EXECUTE ON FUNCTION crm.set_field_access(text, text, text, text, text), crm.reset_field_access(text, text, text)
  TO crm_admin;
GRANT EXECUTE ON FUNCTION crm.guard(), crm._write_denied(anyelement, text, text) TO PUBLIC;
GRANT SELECT ON crm.field_access TO crm_user, crm_auditor;

-- encryption at rest
GRANT EXECUTE ON FUNCTION crm._decrypt(text, text, text, bigint), crm.check_encrypted(text, text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION crm.find(text, text, text), crm._bidx_lookup(text, text, text) TO crm_user, crm_admin, crm_auditor;
GRANT SELECT ON crm.fields_searchable TO crm_user, crm_admin, crm_auditor;
GRANT EXECUTE ON FUNCTION crm.forget_subject(bigint, text) TO crm_user, crm_admin;
GRANT EXECUTE ON FUNCTION crm.rotate_master_key(), crm.keyring_status() TO crm_admin;
-- blind-index key rotation: the procedure and the steps it calls (procedures are not in ALL FUNCTIONS)
REVOKE ALL ON PROCEDURE crm.rotate_blind_index_key(integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE crm.rotate_blind_index_key(integer) TO crm_admin;
GRANT EXECUTE ON FUNCTION crm._bidx_rotation_begin(integer), crm._bidx_rotation_wait(integer),
  crm._bidx_rebuild_step(integer, integer), crm._bidx_rotation_finish(integer) TO crm_admin;

-- audit: triggers and events for everyone (they write as crm's owner); the log for auditors
GRANT EXECUTE ON FUNCTION crm._audit_row(), crm._audit_flush(), crm._audit_era(), crm._audit_append_only(),
  crm._saw(anyelement, text, text, bigint, bigint, boolean) TO PUBLIC;
GRANT EXECUTE ON FUNCTION crm.audit_verify(timestamptz, timestamptz), crm.audit_verify(jsonb), crm.audit_digest(),
  crm.audit_trail(text, bigint), crm.who_saw(bigint), crm.audit_hash(text, text, text, bigint),
  crm.audit_hashes(text, text, text, bigint), crm.audit_seal()
  TO crm_auditor, crm_admin;
GRANT EXECUTE ON FUNCTION crm.audit_retention(interval) TO crm_admin;

-- crm_data belongs to the database, not to the extension: the privileges granted on it while
-- CREATE EXTENSION ran must not count as the extension's initial privileges, or pg_dump would
-- leave them out and a restored database would lock every principal out of crm_data.
DELETE FROM pg_catalog.pg_init_privs ip
 WHERE (ip.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
        AND ip.objoid = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = 'crm_data'))
    OR (ip.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND ip.objoid IN (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                           WHERE n.nspname = 'crm_data'
                              OR (n.nspname = 'crm' AND (c.relname = 'audit_block' OR c.relname LIKE 'audit\_log%'))));

-- Changes to crm's catalogs are audit events, whichever way they are made (API or direct DML).
DO $aud$
DECLARE t text[];
BEGIN
  FOREACH t SLICE 1 IN ARRAY ARRAY[['object_grant', 'GRANT'], ['principal_role', 'GRANT'], ['principal', 'GRANT'],
                                   ['role', 'GRANT'], ['org_unit', 'GRANT'], ['record_share', 'SHARE'],
                                   ['wall', 'POLICY'], ['field_access', 'POLICY'], ['object', 'DDL'], ['field', 'DDL'],
                                   ['data_key', 'MAINTENANCE'], ['rule', 'POLICY'], ['workflow', 'POLICY'], ['retention', 'POLICY']] LOOP
    EXECUTE pg_catalog.format('CREATE TRIGGER crm_audit AFTER INSERT OR UPDATE OR DELETE ON crm.%I FOR EACH ROW EXECUTE FUNCTION crm._audit_row(%L)', t[1], t[2]);
    EXECUTE pg_catalog.format('CREATE TRIGGER crm_audit_flush AFTER INSERT OR UPDATE OR DELETE ON crm.%I FOR EACH STATEMENT EXECUTE FUNCTION crm._audit_flush()', t[1]);
    EXECUTE pg_catalog.format('ALTER TABLE crm.%I ENABLE ALWAYS TRIGGER crm_audit', t[1]);
    EXECUTE pg_catalog.format('ALTER TABLE crm.%I ENABLE ALWAYS TRIGGER crm_audit_flush', t[1]);
  END LOOP;
END
$aud$;

-- rules, outbox, consent
GRANT EXECUTE ON FUNCTION crm.today(), crm.days_until(date), crm.days_until(date, date), crm.next_anniversary(date),
  crm.next_anniversary(date, date), crm.days_until_anniversary(date), crm.days_until_anniversary(date, date),
  crm.anniversary_key(date), crm.anniversary_keys(integer), crm.anniversary_keys(integer, date),
  crm.has_consent(bigint, text, text)
  TO PUBLIC;
GRANT EXECUTE ON FUNCTION crm.create_rule(text, text, text, text, jsonb, jsonb), crm.alter_rule(text, text, jsonb, jsonb),
  crm.enable_rule(text), crm.disable_rule(text), crm.drop_rule(text), crm.run_rule(text), crm.run_due()
  TO crm_admin;
GRANT EXECUTE ON FUNCTION crm.explain_rule(text) TO crm_admin, crm_auditor;
GRANT SELECT ON crm.rule, crm.rule_state, crm.rule_skip TO crm_auditor;
GRANT EXECUTE ON FUNCTION crm.outbox_claim(integer), crm.outbox_done(bigint), crm.outbox_failed(bigint, text)
  TO crm_connector, crm_admin;
GRANT SELECT ON crm.outbox TO crm_connector;

-- workflows
GRANT EXECUTE ON FUNCTION crm.define_workflow(text, text, jsonb), crm.drop_workflow(text), crm.cancel_workflow(text, bigint, text),
  crm.escalate_overdue(timestamptz)
  TO crm_admin;
GRANT EXECUTE ON FUNCTION crm.start_workflow(text, bigint), crm.transition(text, bigint, text, text), crm.approve(bigint, text),
  crm.reject(bigint, text), crm.delegate(bigint, bigint, text), crm.my_approvals(), crm.workflow_status(text, bigint),
  crm.workflow_history(text, bigint), crm.workflow_diagram(text, text, bigint)
  TO crm_user, crm_admin, crm_auditor;
GRANT SELECT ON crm.workflow, crm.workflow_instance, crm.approval_task, crm.workflow_history, crm.approval_cycle_times
  TO crm_auditor;

-- analytics
GRANT EXECUTE ON FUNCTION crm.churn_scores(bigint[]), crm.churn_score(bigint), crm.customer_360(bigint), crm.recommend_products(bigint, integer),
  crm._customer_visible(bigint)
  TO crm_user, crm_admin, crm_auditor;
GRANT EXECUTE ON FUNCTION crm.snapshot_aum(date) TO crm_admin;
GRANT SELECT ON crm.suitability_matrix, crm.setting, crm.churn_weight, crm.aum_snapshot TO crm_user, crm_auditor;

-- data-subject rights and integration
GRANT EXECUTE ON FUNCTION crm.grant_consent(bigint, text, text, text), crm.withdraw_consent(bigint, text, text, text),
  crm.subject_export(bigint), crm._subject_rows(text, text, bigint[]), crm._subject_audit(jsonb), crm._acting_has_role(text),
  crm._subject_export_audit(bigint, jsonb), crm.upsert(text, text, text, jsonb), crm._upsert_assignments(text, jsonb),
  crm._external_ref(text, text, text), crm._external_ref_add(text, text, text, bigint),
  crm._external_refs(text, text, text[]), crm._external_refs_add(text, text, text[], bigint[]), crm._import_fast(text, regclass, text), crm.import(text, regclass, text, boolean),
  crm._column_type(text)
  TO crm_user, crm_admin, crm_auditor;
GRANT EXECUTE ON FUNCTION crm.compliance_report() TO crm_user, crm_admin, crm_auditor;
GRANT EXECUTE ON FUNCTION crm.act_as_from_jwt() TO PUBLIC;
GRANT EXECUTE ON FUNCTION crm.merge_customers(bigint, bigint, text), crm.unmerge_customers(bigint), crm.set_retention(text, interval, text),
  crm.apply_retention(timestamptz)
  TO crm_admin;
GRANT EXECUTE ON FUNCTION crm.erase_subject(bigint, text) TO crm_user, crm_admin;
