-- Runs first. make installcheck may run against any server with crm preloaded, so note which of
-- the roles this suite may make exist already (the database's comment, dropped with it):
-- sql/99_teardown.sql drops the others, and nothing that was there before.
DO $$
BEGIN
  EXECUTE pg_catalog.format('COMMENT ON DATABASE %I IS %L', pg_catalog.current_database(),
    'crm installcheck; roles before: ' ||
    (SELECT coalesce(pg_catalog.string_agg(r.rolname, ',' ORDER BY r.rolname), '')
       FROM pg_catalog.pg_roles r
      WHERE r.rolname LIKE 'regress\_%' OR r.rolname LIKE 'crm\_%'));
END $$;
SELECT pg_catalog.shobj_description(d.oid, 'pg_database') LIKE 'crm installcheck; roles before: %' AS noted
  FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database();
