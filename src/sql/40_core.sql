------------------------------------------------------------------------------------------------
-- The core objects, made through the same API as custom ones.
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm.init()
RETURNS text[] LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  made text[] := '{}';
  o text;
BEGIN
  PERFORM crm._ensure_data_schema();
  PERFORM crm._audit_tables();
  FOREACH o IN ARRAY ARRAY['customer', 'product', 'holding', 'interaction', 'opportunity', 'task', 'consent', 'suitability_override'] LOOP
    IF EXISTS (SELECT 1 FROM crm.object x WHERE x.name = o) THEN
      CONTINUE;
    END IF;
    IF to_regclass(format('crm_data.%I', o)) IS NOT NULL THEN
      RAISE WARNING 'core object "%" not created: table crm_data.% exists and is not managed by crm', crm._short(o), crm._short(o)
        USING HINT = 'It was left by an earlier installation (DROP EXTENSION keeps crm_data). Rename or drop it, then call crm.init().';
      CONTINUE;
    END IF;
    CASE o
    WHEN 'customer' THEN
      PERFORM crm.create_object('customer', 'Customer', 'private', '{"description": "individual and corporate customers"}');
      PERFORM crm.add_field('customer', 'name', 'text', '{"label": "Name", "required": true, "sensitivity": "personal", "mask": "name"}');
      PERFORM crm.add_field('customer', 'customer_type', 'picklist', '{"label": "Customer type", "required": true, "default": "individual", "values": ["individual", "corporate"]}');
      PERFORM crm.add_field('customer', 'id_type', 'picklist', '{"label": "ID type", "values": ["id_card", "passport", "hk_macau_permit", "taiwan_permit", "foreign_permit", "uscc"]}');
      PERFORM crm.add_field('customer', 'id_number', 'text', '{"label": "ID number", "sensitivity": "sensitive", "mask": "id_number", "document_type_field": "id_type"}');
      PERFORM crm.add_field('customer', 'mobile', 'cn_mobile', '{"label": "Mobile", "sensitivity": "personal"}');
      PERFORM crm.add_field('customer', 'email', 'email', '{"label": "E-mail", "sensitivity": "personal"}');
      PERFORM crm.add_field('customer', 'birthday', 'date', '{"label": "Birthday", "sensitivity": "sensitive"}');
      PERFORM crm.add_field('customer', 'gender', 'picklist', '{"label": "Gender", "values": ["M", "F"], "sensitivity": "personal"}');
      PERFORM crm.add_field('customer', 'risk_tolerance', 'picklist', '{"label": "Risk tolerance", "values": ["C1", "C2", "C3", "C4", "C5"]}');
      PERFORM crm.add_field('customer', 'segment', 'picklist', '{"label": "Segment", "values": ["mass", "affluent", "private_banking", "corporate"]}');
      PERFORM crm.add_field('customer', 'kyc_status', 'picklist', '{"label": "KYC status", "required": true, "default": "pending", "values": ["pending", "verified", "expired", "rejected"]}');
      PERFORM crm.add_field('customer', 'kyc_expires_on', 'date', '{"label": "KYC expires on"}');
      PERFORM crm.add_field('customer', 'risk_assessed_on', 'date', '{"label": "Risk assessed on"}');
      PERFORM crm.add_field('customer', 'aum', 'money', '{"label": "Assets under management", "required": true, "default": 0, "sensitivity": "personal"}');
      -- one person, one customer: integration finds a customer by ID number (crm.upsert, crm.import)
      EXECUTE 'CREATE INDEX customer_id_number ON crm_data.customer (id_number)';
    WHEN 'product' THEN
      PERFORM crm.create_object('product', 'Product', 'public_read', '{"description": "products the institution sells"}');
      PERFORM crm.add_field('product', 'code', 'text', '{"label": "Product code", "required": true, "unique": true, "sensitivity": "public"}');
      PERFORM crm.add_field('product', 'name', 'text', '{"label": "Name", "required": true, "sensitivity": "public"}');
      PERFORM crm.add_field('product', 'product_type', 'picklist', '{"label": "Product type", "required": true, "values": ["deposit", "wealth_management", "fund", "insurance", "bond", "structured", "loan"], "sensitivity": "public"}');
      PERFORM crm.add_field('product', 'risk_level', 'picklist', '{"label": "Risk level", "required": true, "values": ["R1", "R2", "R3", "R4", "R5"], "sensitivity": "public"}');
      PERFORM crm.add_field('product', 'term_days', 'integer', '{"label": "Term (days)", "sensitivity": "public"}');
      PERFORM crm.add_field('product', 'matures_on', 'date', '{"label": "Matures on", "sensitivity": "public"}');
    WHEN 'holding' THEN
      PERFORM crm.create_object('holding', 'Holding', 'private', '{"description": "a customer''s position in a product"}');
      PERFORM crm.add_field('holding', 'customer_id', 'reference', '{"label": "Customer", "required": true, "object": "customer", "on_delete": "cascade", "inherit_access": true}');
      PERFORM crm.add_field('holding', 'product_id', 'reference', '{"label": "Product", "required": true, "object": "product"}');
      PERFORM crm.add_field('holding', 'amount', 'money', '{"label": "Amount", "required": true, "sensitivity": "personal"}');
      PERFORM crm.add_field('holding', 'opened_on', 'date', '{"label": "Opened on"}');
      PERFORM crm.add_field('holding', 'matures_on', 'date', '{"label": "Matures on"}');
    WHEN 'interaction' THEN
      PERFORM crm.create_object('interaction', 'Interaction', 'private', '{"description": "contacts with a customer"}');
      PERFORM crm.add_field('interaction', 'customer_id', 'reference', '{"label": "Customer", "required": true, "object": "customer", "on_delete": "cascade", "inherit_access": true}');
      PERFORM crm.add_field('interaction', 'channel', 'picklist', '{"label": "Channel", "required": true, "values": ["phone", "visit", "branch", "wecom", "email", "sms", "video"]}');
      PERFORM crm.add_field('interaction', 'occurred_at', 'timestamptz', '{"label": "Occurred at", "required": true}');
      PERFORM crm.add_field('interaction', 'summary', 'text', '{"label": "Summary", "sensitivity": "personal"}');
    WHEN 'opportunity' THEN
      PERFORM crm.create_object('opportunity', 'Opportunity', 'private', '{"description": "a possible sale"}');
      PERFORM crm.add_field('opportunity', 'customer_id', 'reference', '{"label": "Customer", "required": true, "object": "customer", "on_delete": "cascade", "inherit_access": true}');
      PERFORM crm.add_field('opportunity', 'product_id', 'reference', '{"label": "Product", "object": "product"}');
      PERFORM crm.add_field('opportunity', 'name', 'text', '{"label": "Name", "required": true}');
      PERFORM crm.add_field('opportunity', 'stage', 'picklist', '{"label": "Stage", "required": true, "default": "lead", "values": ["lead", "qualified", "proposal", "negotiation", "won", "lost"]}');
      PERFORM crm.add_field('opportunity', 'amount', 'money', '{"label": "Amount"}');
      PERFORM crm.add_field('opportunity', 'expected_close', 'date', '{"label": "Expected close"}');
    WHEN 'task' THEN
      PERFORM crm.create_object('task', 'Task', 'private', '{"description": "follow-ups for principals"}');
      PERFORM crm.add_field('task', 'customer_id', 'reference', '{"label": "Customer", "object": "customer", "on_delete": "cascade", "inherit_access": true}');
      PERFORM crm.add_field('task', 'assignee_id', 'reference', '{"label": "Assignee", "object": "principal", "grants_read": true}');
      PERFORM crm.add_field('task', 'title', 'text', '{"label": "Title", "required": true}');
      PERFORM crm.add_field('task', 'body', 'text', '{"label": "Details"}');
      PERFORM crm.add_field('task', 'due_on', 'date', '{"label": "Due on"}');
      PERFORM crm.add_field('task', 'status', 'picklist', '{"label": "Status", "required": true, "default": "open", "values": ["open", "done", "cancelled"]}');
      PERFORM crm.add_field('task', 'priority', 'picklist', '{"label": "Priority", "required": true, "default": "normal", "values": ["low", "normal", "high"]}');
      PERFORM crm.add_field('task', 'completed_at', 'timestamptz', '{"label": "Completed at"}');
    WHEN 'consent' THEN
      PERFORM crm.create_object('consent', 'Consent', 'private', '{"description": "a customer''s consent for a purpose and channel"}');
      PERFORM crm.add_field('consent', 'customer_id', 'reference', '{"label": "Customer", "required": true, "object": "customer", "on_delete": "cascade", "inherit_access": true}');
      PERFORM crm.add_field('consent', 'purpose', 'picklist', '{"label": "Purpose", "required": true, "values": ["marketing", "service", "data_sharing", "profiling"]}');
      PERFORM crm.add_field('consent', 'channel', 'picklist', '{"label": "Channel", "required": true, "values": ["any", "sms", "email", "wecom", "dingtalk", "phone"]}');
      PERFORM crm.add_field('consent', 'granted_at', 'timestamptz', '{"label": "Granted at", "required": true}');
      PERFORM crm.add_field('consent', 'withdrawn_at', 'timestamptz', '{"label": "Withdrawn at"}');
      PERFORM crm.add_field('consent', 'evidence', 'text', '{"label": "Evidence"}');
    WHEN 'suitability_override' THEN
      PERFORM crm.create_object('suitability_override', 'Suitability override', 'private', '{"description": "an approved exception: a product above the customer''s risk tolerance, or sold on an expired assessment"}');
      PERFORM crm.add_field('suitability_override', 'customer_id', 'reference', '{"label": "Customer", "required": true, "object": "customer", "on_delete": "cascade", "inherit_access": true}');
      PERFORM crm.add_field('suitability_override', 'product_id', 'reference', '{"label": "Product", "required": true, "object": "product"}');
      PERFORM crm.add_field('suitability_override', 'reason', 'text', '{"label": "Reason", "required": true}');
      PERFORM crm.add_field('suitability_override', 'valid_until', 'date', '{"label": "Valid until"}');
      PERFORM crm.add_field('suitability_override', 'status', 'picklist', '{"label": "Status", "values": ["draft", "compliance_review", "approved", "rejected"]}');
    END CASE;
    UPDATE crm.object x SET core = true WHERE x.name = o;
    UPDATE crm.field x SET core = true WHERE x.object = o;
    made := made || o;
  END LOOP;
  -- suitability checks, and the override workflow (defined once the workflow functions exist)
  IF to_regprocedure('crm._init_suitability()') IS NOT NULL THEN
    PERFORM crm._init_suitability();
  END IF;
  RETURN made;
END $$;
COMMENT ON FUNCTION crm.init() IS 'creates the crm_data schema and any missing core object; CREATE EXTENSION calls it, except inside pg_restore';

-- Make the core objects now, unless this CREATE EXTENSION is replaying a dump: pg_dump and
-- pg_restore always run with row_security = off, and the dump brings its own crm_data tables.
DO $init$
BEGIN
  IF pg_catalog.current_setting('row_security') OPERATOR(pg_catalog.=) 'on' THEN
    PERFORM crm.init();
  ELSE
    RAISE NOTICE 'row_security is off (a pg_restore?): core objects not created; call crm.init() if this is a fresh install';
  END IF;
END
$init$;

-- The one way to drop crm while crm_data holds business tables (restore.c): recorded in the audit
-- log, valid for the rest of the transaction. Superusers only (checked in C; closed to PUBLIC).
CREATE FUNCTION crm.uninstall(reason text) RETURNS text
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_uninstall';
COMMENT ON FUNCTION crm.uninstall(text) IS 'records why crm is being uninstalled (MAINTENANCE) and lets DROP EXTENSION crm CASCADE run later in this transaction';
-- the DROP EXTENSION guard holds without the utility hook too (crm not preloaded)
CREATE FUNCTION crm._drop_guard() RETURNS event_trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_drop_guard';
CREATE EVENT TRIGGER crm_drop_guard ON ddl_command_start WHEN TAG IN ('DROP EXTENSION')
  EXECUTE FUNCTION crm._drop_guard();
ALTER EVENT TRIGGER crm_drop_guard ENABLE ALWAYS;
