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

-- For crm.compliance_report(): relations outside crm_data holding rows copied from it (materialized
-- views reaching it through pg_depend, views in between and WITH NO DATA included, and what
-- crm.data_copy records), and every grant of one to PUBLIC, crm_user, crm_app or a principal's login.
CREATE FUNCTION crm._copies_of_data(OUT copies text, OUT granted text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  WITH RECURSIVE reach(relid) AS (
    SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'crm_data'::regnamespace
    UNION
    SELECT r.ev_class FROM reach JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = reach.relid
      AND d.classid = 'pg_rewrite'::regclass JOIN pg_rewrite r ON r.oid = d.objid
     WHERE r.ev_class <> reach.relid
  ), copies AS (
    SELECT reach.relid FROM reach JOIN pg_class c ON c.oid = reach.relid
     WHERE c.relkind = 'm' AND c.relnamespace <> 'crm_data'::regnamespace
    UNION
    SELECT c.oid FROM crm.data_copy dc JOIN pg_class c ON c.oid = dc.relation::oid
     WHERE c.relnamespace <> 'crm_data'::regnamespace
  )
  SELECT string_agg(format('%s (%s)', c.oid::regclass, CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'table' END), ', '
                    ORDER BY c.oid::regclass::text),
         string_agg(g.grants, ', ' ORDER BY c.oid::regclass::text)
    FROM copies x JOIN pg_class c ON c.oid = x.relid
    LEFT JOIN LATERAL (
      SELECT string_agg(DISTINCT format('%s to %s', c.oid::regclass, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END), ', ') AS grants
        FROM aclexplode(c.relacl) a
       WHERE a.grantee <> c.relowner
         AND (a.grantee = 0 OR a.grantee::regrole::text IN ('crm_user', 'crm_app')
              OR EXISTS (SELECT 1 FROM crm.principal p WHERE p.login = a.grantee::regrole::text))) g ON true
$$;
