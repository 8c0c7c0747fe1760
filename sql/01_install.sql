-- Install: the extension, its schema, group roles, core objects, and what is (not) an extension member.
\set VERBOSITY terse
CREATE EXTENSION crm;
SELECT extname, extversion, extrelocatable, nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'crm';
SELECT crm.preloaded();
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('crm_user', 'crm_app', 'crm_auditor', 'crm_admin') ORDER BY 1;
SELECT name, label, sharing, core, table_name, field_count FROM crm.objects ORDER BY name;
-- the column names apps and BI tools write queries against
SELECT object, name, type, required, sensitivity, mask FROM crm.fields
 WHERE object IN ('customer', 'product', 'holding') ORDER BY object, position;
SELECT role, label FROM (SELECT name AS role, label FROM crm.role WHERE builtin) r ORDER BY 1;
-- business tables belong to the database (pg_dump dumps them), machinery to the extension
SELECT count(*) AS crm_data_members
  FROM pg_depend d
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'crm')
   AND ((d.classid = 'pg_class'::regclass AND d.objid IN (SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'crm_data'::regnamespace))
     OR (d.classid = 'pg_namespace'::regclass AND d.objid = 'crm_data'::regnamespace));
-- every managed table: RLS enabled and forced, stamp trigger enabled ALWAYS, no PUBLIC grant
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT t.tgenabled FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'crm_stamp') AS stamp,
       has_table_privilege('public', c.oid, 'SELECT') AS public_select
  FROM pg_class c WHERE c.relnamespace = 'crm_data'::regnamespace AND c.relkind = 'r' ORDER BY 1;
-- metadata tables are dumped by pg_dump
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) cfg JOIN pg_class c ON c.oid = cfg
 WHERE e.extname = 'crm' ORDER BY 1;
-- SECURITY DEFINER functions pin search_path
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'crm'::regnamespace AND p.prosecdef
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
-- no SECURITY DEFINER function is executable by PUBLIC
SELECT p.oid::regprocedure AS admin_function FROM pg_proc p
 WHERE p.pronamespace = 'crm'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')
   AND p.prosecdef ORDER BY 1;
-- installing again is refused, not half-done
CREATE EXTENSION crm;
