------------------------------------------------------------------------------------------------
-- Copies of crm_data. Persistent copies (CREATE TABLE AS, SELECT INTO, materialized views) that
-- read crm_data are refused to everyone but the maintenance role (copies.c); the ones it makes are
-- recorded here by crm's utility hook, and crm.compliance_report() lists them with every
-- materialized view over crm_data and every grant of one to crm_user or PUBLIC.
------------------------------------------------------------------------------------------------
CREATE TABLE crm.data_copy (
  relation regclass PRIMARY KEY,
  relname  text NOT NULL,
  how      text NOT NULL,
  sources  jsonb NOT NULL,
  rows     bigint,
  made_by  text NOT NULL DEFAULT session_user,
  made_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE crm.data_copy IS 'relations outside crm_data filled from it by the maintenance role (written by crm only)';
-- rows of relations dropped since are left out of dumps (their OIDs mean nothing elsewhere)
SELECT pg_catalog.pg_extension_config_dump('crm.data_copy',
  'WHERE relation::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT c.oid FROM pg_catalog.pg_class c))');
