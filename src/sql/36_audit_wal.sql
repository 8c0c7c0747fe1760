-- Where this database's audit writer has written rollback-proof events up to, in this cluster's
-- WAL (auditwriter.c): updated in the transaction that writes them, so events read again after a
-- crash are not written twice. Part of the extension (not dumped): in a restored copy the writer
-- starts afresh.
CREATE TABLE crm._audit_intake (
  sysid bigint PRIMARY KEY,     -- the cluster (pg_control's system identifier)
  lsn   bigint NOT NULL         -- the last event written
);
REVOKE ALL ON crm._audit_intake FROM PUBLIC;
COMMENT ON TABLE crm._audit_intake IS 'how far this database''s audit writer has written events from WAL';

-- crm is now (once this transaction commits) in this database: its audit writer looks again
CREATE FUNCTION crm._audit_attach() RETURNS void
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_audit_attach';
REVOKE ALL ON FUNCTION crm._audit_attach() FROM PUBLIC;
SELECT crm._audit_attach();
