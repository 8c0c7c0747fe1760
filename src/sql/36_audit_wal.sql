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
