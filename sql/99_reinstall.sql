-- DROP EXTENSION and CREATE EXTENSION again in the same database. crm_data (business tables and
-- their rows) belongs to the database and stays; crm's machinery goes.
\set VERBOSITY terse
SELECT count(*) > 0 AS has_customers FROM crm_data.customer;
SELECT count(*) AS customers_before FROM crm_data.customer \gset
DROP EXTENSION crm;
-- refused while crm_data holds business tables, CASCADE or not (test/drop_extension.sh tries more)
DROP EXTENSION crm CASCADE;
-- the documented, audited way (docs/backups.md)
BEGIN;
SELECT crm.uninstall('regression test: reinstall');
SET LOCAL client_min_messages = warning;
DROP EXTENSION crm CASCADE;
COMMIT;
SELECT detail ->> 'reason' AS uninstall_reason FROM crm.audit_log WHERE action = 'MAINTENANCE' AND detail ->> 'operation' = 'uninstall';
-- the schema crm stays (CREATE EXTENSION made it for the extension, it is not a member); all that
-- is left in it is the audit log and its chain, which belong to the database like crm_data
SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'crm'::regnamespace AND relname !~ '^audit_(log|block)')
     + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'crm'::regnamespace)
     + (SELECT count(*) FROM pg_type WHERE typnamespace = 'crm'::regnamespace AND typname !~ '^_?audit_(log|block)') AS left_in_crm,
       to_regnamespace('crm_data') IS NOT NULL AS crm_data_kept,
       (SELECT count(*) > 0 FROM crm.audit_log) AS audit_log_kept;
SELECT count(*) = :customers_before AS rows_kept FROM crm_data.customer;
-- what is left is locked: RLS stays forced with no policy, so only the owner and superusers see rows
SELECT relrowsecurity, relforcerowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) AS policies,
       (SELECT count(*) FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal) AS triggers
  FROM pg_class c WHERE c.oid = 'crm_data.customer'::regclass;
-- installing again works; tables left behind are reported, not taken over or overwritten
CREATE EXTENSION crm;
SELECT count(*) AS managed_objects FROM crm.object;
-- a clean reinstall: drop the old business tables, then crm.init() makes the core objects
SET client_min_messages = warning;
DROP SCHEMA crm_data CASCADE;
RESET client_min_messages;
SELECT crm.init();
SELECT count(*) AS managed_objects FROM crm.object;
SELECT crm.init();
-- the log kept across the reinstall still verifies, and takes new entries
SELECT ok, problem FROM crm.audit_verify();
