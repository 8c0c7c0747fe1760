-- Runs last: leave the server as the suite found it. Drops the regression database and every
-- role the suite made (regress_*, and the group roles CREATE EXTENSION made when they were
-- missing); roles that existed before the run (sql/00_setup.sql noted them) stay. Any other new
-- crm_* role (a group role added to the extension and not to the list below) shows as left.
SELECT pg_catalog.current_database() AS regress_db,
       coalesce(pg_catalog.shobj_description(d.oid, 'pg_database') LIKE 'crm installcheck; roles before: %', false) AS noted,
       pg_catalog.substr(pg_catalog.shobj_description(d.oid, 'pg_database'), 33) AS roles_before
  FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database() \gset
-- without the note, which roles were there before is unknown: drop nothing
SELECT :'noted' AS noted_by_00_setup;
\if :noted
\c postgres
DROP DATABASE :"regress_db";
SELECT count(*) AS regress_db_left FROM pg_catalog.pg_database WHERE datname = :'regress_db';
SET regress.roles_before = :'roles_before';
DO $$
DECLARE
  r name;
BEGIN
  FOR r IN SELECT a.rolname FROM pg_catalog.pg_roles a
            WHERE (a.rolname LIKE 'regress\_%'
                   OR a.rolname IN ('crm_user', 'crm_app', 'crm_auditor', 'crm_admin', 'crm_connector'))
              AND a.rolname <> ALL (pg_catalog.string_to_array(pg_catalog.current_setting('regress.roles_before'), ','))
            ORDER BY a.rolname
  LOOP
    EXECUTE pg_catalog.format('DROP ROLE %I', r);
  END LOOP;
END $$;
RESET regress.roles_before;
SELECT count(*) AS made_roles_left FROM pg_catalog.pg_roles r
 WHERE (r.rolname LIKE 'regress\_%' OR r.rolname LIKE 'crm\_%')
   AND r.rolname <> ALL (pg_catalog.string_to_array(:'roles_before', ','));
-- what existed before the run is still there
SELECT count(*) = coalesce(pg_catalog.array_length(pg_catalog.string_to_array(:'roles_before', ','), 1), 0) AS roles_before_kept
  FROM pg_catalog.pg_roles r WHERE r.rolname = ANY (pg_catalog.string_to_array(:'roles_before', ','));
\endif
