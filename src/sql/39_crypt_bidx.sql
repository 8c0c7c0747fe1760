------------------------------------------------------------------------------------------------
-- Blind-index key rotation (C, bidxkey.c): a new blind-index key, the blind indexes rebuilt in
-- committed batches while traffic goes on (crm.find and unique checks look under both keys
-- meanwhile), then the old key retired. History (the audit log, updated_at) is not rewritten.
------------------------------------------------------------------------------------------------
CREATE TABLE crm.bidx_rebuild (
  version     integer NOT NULL CHECK (version OPERATOR(pg_catalog.>) 1),  -- the key version rotated to
  object      text NOT NULL,
  last_id     bigint NOT NULL DEFAULT 0,         -- records up to this id are indexed under that key
  rows_done   bigint NOT NULL DEFAULT 0,
  started_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
  finished_at timestamptz,
  PRIMARY KEY (version, object)
);
COMMENT ON TABLE crm.bidx_rebuild IS 'progress of blind-index key rotations (crm.rotate_blind_index_key), per object';
SELECT pg_catalog.pg_extension_config_dump('crm.bidx_rebuild', '');

CREATE FUNCTION crm._bidx_rotation_begin(batch integer) RETURNS integer
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_bidx_rotation_begin';
CREATE FUNCTION crm._bidx_rotation_wait(version integer) RETURNS void
  LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'crm_bidx_rotation_wait';
CREATE FUNCTION crm._bidx_rebuild_step(version integer, batch integer) RETURNS text
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_bidx_rebuild_step';
CREATE FUNCTION crm._bidx_rotation_finish(version integer) RETURNS bigint
  LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'crm_bidx_rotation_finish';

-- A procedure, so that each batch commits (CALL it outside a transaction block). It runs as the
-- caller (a procedure that commits can have neither SECURITY DEFINER nor SET search_path): every
-- name in it is schema-qualified and it uses no operator; the work is done by the C functions.
CREATE PROCEDURE crm.rotate_blind_index_key(batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
DECLARE v integer; o text; n bigint;
BEGIN
  v := crm._bidx_rotation_begin(batch_size);
  COMMIT;
  PERFORM crm._bidx_rotation_wait(v);
  COMMIT;
  LOOP
    o := crm._bidx_rebuild_step(v, batch_size);
    EXIT WHEN o IS NULL;
    COMMIT;
  END LOOP;
  n := crm._bidx_rotation_finish(v);
  COMMIT;
  RAISE NOTICE 'blind-index key version % is now the only one (% older key(s) retired)', v, n;
END $$;
COMMENT ON PROCEDURE crm.rotate_blind_index_key(integer) IS 'rotate the blind-index key: new key, blind indexes rebuilt in committed batches of batch_size records, old key retired; resumes where it stopped';
