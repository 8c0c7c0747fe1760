------------------------------------------------------------------------------------------------
-- Encryption at rest (C, crypt.c): data keys wrapped by master keys kept outside the database
-- (the file named by crm.keyring), blind indexes, rotation and crypto-shredding.
------------------------------------------------------------------------------------------------
CREATE SEQUENCE crm.data_key_id_seq;
CREATE TABLE crm.data_key (
  id            bigint PRIMARY KEY DEFAULT pg_catalog.nextval('crm.data_key_id_seq'),
  subject       text NOT NULL UNIQUE,          -- customer:<id>, object:<name> or blind_index
  customer_id   bigint,
  master_key_id text NOT NULL,                 -- which master key wraps it
  wrapped       bytea,                         -- NULL once shredded
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  rotated_at    timestamptz,
  shredded_at   timestamptz,
  shredded_by   bigint,
  shred_reason  text,
  CHECK ((wrapped IS NULL) = (shredded_at IS NOT NULL))
);
ALTER SEQUENCE crm.data_key_id_seq OWNED BY crm.data_key.id;
CREATE INDEX ON crm.data_key (customer_id);
COMMENT ON TABLE crm.data_key IS 'data keys of encrypted fields, wrapped by a master key from the crm.keyring file; never plaintext';
SELECT pg_catalog.pg_extension_config_dump('crm.data_key', '');
SELECT pg_catalog.pg_extension_config_dump('crm.data_key_id_seq', '');
-- a key destroyed or re-wrapped must leave every backend's key cache (new keys need no notice)
CREATE TRIGGER crm_acl_changed AFTER UPDATE OR DELETE OR TRUNCATE ON crm.data_key
  FOR EACH STATEMENT EXECUTE FUNCTION crm._acl_changed();
ALTER TABLE crm.data_key ENABLE ALWAYS TRIGGER crm_acl_changed;

CREATE FUNCTION crm._decrypt(value text, object text, field text, owner bigint) RETURNS text
  LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_decrypt';
COMMENT ON FUNCTION crm._decrypt(text, text, text, bigint) IS 'how the masking hook reads an encrypted field: plaintext, mask or NULL by the reader''s level';
CREATE FUNCTION crm.check_encrypted(object text, field text, value text) RETURNS boolean
  LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_check_encrypted';
CREATE FUNCTION crm._blind_index(object text, field text, value text) RETURNS bytea
  LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_blind_index';
CREATE FUNCTION crm._bidx_lookup(object text, field text, value text) RETURNS SETOF bigint
  LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_bidx_lookup';
CREATE FUNCTION crm.rotate_master_key() RETURNS bigint
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_rotate_master_key';
COMMENT ON FUNCTION crm.rotate_master_key() IS 're-wrap every data key under the current (last) master key of the key file; rows are not touched; returns how many were re-wrapped';
CREATE FUNCTION crm._shred_subject(customer_id bigint, reason text, principal bigint) RETURNS boolean
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_shred_subject';
CREATE FUNCTION crm.keyring_status(OUT setting text, OUT ok boolean, OUT current_key text, OUT keys integer,
                                   OUT shredded_keys integer, OUT problem text)
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_keyring_status';
COMMENT ON FUNCTION crm.keyring_status() IS 'whether the master key file is usable (never shows key material)';

-- Records whose blind index matches a value, as the caller may see them (row security and field
-- levels apply: a reader who may not read the field finds nothing by it).
CREATE FUNCTION crm.find(object text, field text, value text)
RETURNS TABLE (id bigint, record jsonb) LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE searchable boolean; bidx text[];
BEGIN
  SELECT f.searchable INTO searchable
    FROM crm.fields_searchable f WHERE f.object = find.object AND f.name = find.field;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'field %.% does not exist', crm._short(find.object), crm._short(find.field) USING ERRCODE = '42703';
  END IF;
  IF NOT searchable THEN
    RAISE EXCEPTION 'field %.% is not searchable', crm._short(find.object), crm._short(find.field) USING ERRCODE = '0A000',
      HINT = 'crm.find() searches encrypted fields added with "searchable": true; query other fields with WHERE.';
  END IF;
  SELECT array_agg('crm_bidx_' || f.name) INTO bidx FROM crm.fields_searchable f
   WHERE f.object = find.object AND f.searchable;
  RETURN QUERY EXECUTE format('SELECT t.id, pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.-) $2 FROM crm_data.%I t'
                              ' WHERE t.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT crm._bidx_lookup($3, $4, $1))) ORDER BY t.id', find.object)
    USING find.value, bidx, find.object, find.field;
END $$;
COMMENT ON FUNCTION crm.find(text, text, text) IS 'equality search on an encrypted, searchable field through its blind index';

CREATE VIEW crm.fields_searchable AS
  SELECT f.object, f.name, f.encrypted AND COALESCE((f.options ->> 'searchable')::boolean, false) AS searchable
    FROM crm.field f;

-- Crypto-shredding: the customer's data key is destroyed; its encrypted values, in this database
-- and in every copy, read as "[erased]" from now on. For compliance principals and crm_admin.
CREATE FUNCTION crm.forget_subject(customer_id bigint, reason text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE me bigint := crm.current_principal(); hit integer; done boolean; f record; par record;
BEGIN
  IF NOT (crm._caller_has_role('crm_admin')
          OR EXISTS (SELECT 1 FROM crm.principal_role pr WHERE pr.principal_id = me AND pr.role = 'compliance')) THEN
    RAISE EXCEPTION 'permission denied to forget customer %', crm._short(forget_subject.customer_id) USING ERRCODE = '42501',
      HINT = 'Only compliance principals and crm_admin may forget a subject.';
  END IF;
  IF forget_subject.customer_id IS NULL THEN
    RAISE EXCEPTION 'customer id must not be NULL' USING ERRCODE = '22004';
  END IF;
  IF forget_subject.reason IS NULL OR btrim(forget_subject.reason) = '' THEN
    RAISE EXCEPTION 'forgetting customer % needs a reason', crm._short(forget_subject.customer_id) USING ERRCODE = '22023',
      HINT = 'Say why (e.g. the PIPL erasure request it answers); it is kept with the destroyed key.';
  END IF;
  IF to_regclass('crm_data.customer') IS NULL THEN
    RAISE EXCEPTION 'object "customer" does not exist' USING ERRCODE = '42704';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.data_key d WHERE d.subject = 'customer:' || forget_subject.customer_id) THEN
    EXECUTE 'SELECT 1 FROM crm_data.customer c WHERE c.id = $1' INTO hit USING forget_subject.customer_id;
    IF hit IS NULL THEN
      RAISE EXCEPTION 'customer % does not exist', crm._short(forget_subject.customer_id) USING ERRCODE = '42704';
    END IF;
  END IF;
  done := crm._shred_subject(forget_subject.customer_id, forget_subject.reason, me);
  -- blind indexes would still match the forgotten values: the write trigger recomputes them (NULL)
  FOR f IN SELECT fs.object, fs.name FROM crm.fields_searchable fs WHERE fs.searchable LOOP
    SELECT * INTO par FROM crm._parent_of(f.object);
    IF f.object = 'customer' THEN
      EXECUTE format('UPDATE crm_data.customer SET %I = NULL WHERE id = $1 AND %I IS NOT NULL', 'crm_bidx_' || f.name, 'crm_bidx_' || f.name)
        USING forget_subject.customer_id;
    ELSIF par.parent = 'customer' THEN
      EXECUTE format('UPDATE crm_data.%I SET %I = NULL WHERE %I = $1 AND %I IS NOT NULL', f.object, 'crm_bidx_' || f.name, par.field, 'crm_bidx_' || f.name)
        USING forget_subject.customer_id;
    END IF;
  END LOOP;
  RETURN done;
END $$;
COMMENT ON FUNCTION crm.forget_subject(bigint, text) IS 'crypto-shred a customer: destroy its data key, so its encrypted fields read as [erased] everywhere';
