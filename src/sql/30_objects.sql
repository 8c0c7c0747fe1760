------------------------------------------------------------------------------------------------
-- Objects and fields: metadata-driven, real typed tables in crm_data. For crm_admin.
-- Names are checked by crm.check_name() before any SQL is built, and every identifier is quoted
-- anyway. Each call is one statement: a refused definition leaves nothing behind.
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm._standard_columns() RETURNS text[]
  LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
  RETURN ARRAY['id', 'owner_id', 'org_unit_id', 'created_at', 'created_by', 'updated_at', 'updated_by'];

CREATE FUNCTION crm._object_exists(object text)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM crm.object o WHERE o.name = object) THEN
    RAISE EXCEPTION 'object "%" does not exist', crm._short(object) USING ERRCODE = '42704',
      HINT = 'See crm.objects for the objects; crm.create_object() makes one.';
  END IF;
END $$;

-- Everything every managed table gets; idempotent, so later versions can re-apply it.
CREATE FUNCTION crm._manage_table(object text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE t text := format('crm_data.%I', object);
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
  PERFORM crm._stamp_trigger(object);
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t::regclass AND tgname = 'crm_cascade') THEN
    EXECUTE format('CREATE TRIGGER crm_cascade AFTER UPDATE OF owner_id, org_unit_id ON %s FOR EACH ROW
                    WHEN (OLD.owner_id IS DISTINCT FROM NEW.owner_id OR OLD.org_unit_id IS DISTINCT FROM NEW.org_unit_id)
                    EXECUTE FUNCTION crm._cascade_owner()', t);
  END IF;
  EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER crm_cascade', t);
  -- crm_write_guard fires after crm_stamp (triggers fire in name order), so it sees the final owner
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t::regclass AND tgname = 'crm_write_guard') THEN
    EXECUTE format('CREATE TRIGGER crm_write_guard BEFORE INSERT OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION crm.guard()', t);
  END IF;
  EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER crm_write_guard', t);
  -- the audit trail: each row (after the change), written once per statement
  EXECUTE format('CREATE OR REPLACE TRIGGER crm_audit AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION crm._audit_row()', t);
  EXECUTE format('CREATE OR REPLACE TRIGGER crm_audit_flush AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION crm._audit_flush()', t);
  EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER crm_audit', t);
  EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER crm_audit_flush', t);
  PERFORM crm._apply_policies(object);
  EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', t);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO crm_user', t);
  EXECUTE format('GRANT SELECT ON %s TO crm_auditor', t);
END $$;

-- The stamp trigger, with the parent field as arguments for an object that follows its parent.
CREATE FUNCTION crm._stamp_trigger(object text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE t text := format('crm_data.%I', object); par record;
BEGIN
  SELECT * INTO par FROM crm._parent_of(object);
  EXECUTE format('CREATE OR REPLACE TRIGGER crm_stamp BEFORE INSERT OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION crm.stamp(%s)', t,
                 CASE WHEN par.field IS NULL THEN '' ELSE format('%L, %L', par.field, par.parent) END);
  -- ALWAYS: session_replication_role = replica does not switch crm's triggers off
  EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER crm_stamp', t);
END $$;

CREATE FUNCTION crm.create_object(name text, label text, sharing text DEFAULT 'private', options jsonb DEFAULT '{}')
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n text := crm.check_name('object', create_object.name);
  opts jsonb := COALESCE(create_object.options, '{}');
  k text;
  t text;
BEGIN
  IF n IN ('principal', 'org_unit', 'role', 'object', 'field') THEN
    RAISE EXCEPTION 'object name "%" is reserved', crm._short(n) USING ERRCODE = '42939',
      DETAIL = 'It names one of crm''s own catalogs.';
  END IF;
  IF create_object.label IS NULL OR btrim(create_object.label) = '' THEN
    RAISE EXCEPTION 'label of object "%" must not be empty', crm._short(n) USING ERRCODE = '22023';
  END IF;
  IF create_object.sharing IS NULL OR create_object.sharing NOT IN ('private', 'org_unit', 'public_read', 'public_read_write') THEN
    RAISE EXCEPTION 'invalid sharing "%" for object "%"', crm._short(create_object.sharing), crm._short(n) USING ERRCODE = '22023',
      HINT = 'Sharing is private, org_unit, public_read or public_read_write.';
  END IF;
  IF jsonb_typeof(opts) <> 'object' THEN
    RAISE EXCEPTION 'options of object "%" must be a JSON object', crm._short(n) USING ERRCODE = '22023';
  END IF;
  FOR k IN SELECT jsonb_object_keys(opts) LOOP
    IF k NOT IN ('description') THEN
      RAISE EXCEPTION 'unknown option "%" for object "%"', crm._short(k), crm._short(n) USING ERRCODE = '22023',
        HINT = 'Object options are: description.';
    END IF;
  END LOOP;
  IF EXISTS (SELECT 1 FROM crm.object o WHERE o.name = n) THEN
    RAISE EXCEPTION 'object "%" already exists', crm._short(n) USING ERRCODE = '42710';
  END IF;
  PERFORM crm._ensure_data_schema();
  t := format('crm_data.%I', n);
  IF to_regclass(t) IS NOT NULL THEN
    RAISE EXCEPTION 'table % already exists', crm._short(t) USING ERRCODE = '42P07',
      DETAIL = 'It is not managed by crm (left by an earlier installation, or made by hand).',
      HINT = 'Rename or drop it first.';
  END IF;

  EXECUTE format($t$CREATE TABLE %s (
      id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      owner_id    bigint NOT NULL,
      org_unit_id bigint NOT NULL,
      created_at  timestamptz NOT NULL,
      created_by  bigint,
      updated_at  timestamptz NOT NULL,
      updated_by  bigint,
      CONSTRAINT crm_fk_owner FOREIGN KEY (owner_id) REFERENCES crm.principal (id),
      CONSTRAINT crm_fk_org_unit FOREIGN KEY (org_unit_id) REFERENCES crm.org_unit (id))$t$, t);
  -- created_by/updated_by are stamped from the acting principal by crm.stamp(), so they need no
  -- foreign key (principals are deactivated, never deleted); that saves two lookups per row
  EXECUTE format('CREATE INDEX ON %s (owner_id)', t);
  EXECUTE format('CREATE INDEX ON %s (org_unit_id)', t);
  EXECUTE format('COMMENT ON TABLE %s IS %L', t, create_object.label);
  EXECUTE format('COMMENT ON COLUMN %s.owner_id IS %L', t, 'owning principal (crm.principal.id)');
  EXECUTE format('COMMENT ON COLUMN %s.org_unit_id IS %L', t, 'org unit of the record (crm.org_unit.id)');
  -- during CREATE EXTENSION the table must not become an extension member (pg_dump must dump it)
  IF crm._creating_extension() THEN
    EXECUTE format('ALTER EXTENSION crm DROP TABLE %s', t);
    EXECUTE format('ALTER EXTENSION crm DROP SEQUENCE %s', pg_get_serial_sequence(t, 'id'));
  END IF;
  PERFORM crm._manage_table(n);
  INSERT INTO crm.object (name, label, sharing, options)
    VALUES (n, create_object.label, create_object.sharing, opts);
  RETURN n;
END $$;

-- crm_data holds business tables; it belongs to the database, not to the extension.
CREATE FUNCTION crm._ensure_data_schema()
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF to_regnamespace('crm_data') IS NULL THEN
    CREATE SCHEMA crm_data;
    IF crm._creating_extension() THEN
      ALTER EXTENSION crm DROP SCHEMA crm_data;
    END IF;
    COMMENT ON SCHEMA crm_data IS 'crm business tables (managed by the crm extension)';
  END IF;
  REVOKE ALL ON SCHEMA crm_data FROM PUBLIC;
  GRANT USAGE ON SCHEMA crm_data TO crm_user, crm_auditor, crm_admin;
END $$;

CREATE FUNCTION crm.add_field(object text, name text, type text, options jsonb DEFAULT '{}')
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  -- a default is read as the field guard reads it (crm_pin_search_path): PostgreSQL's date order
  SET datestyle = 'ISO, MDY' SET intervalstyle = 'postgres' AS $$
DECLARE
  o text := add_field.object;
  n text := crm.check_name('field', add_field.name);
  opts jsonb := COALESCE(add_field.options, '{}');
  t text;
  coltype text;
  k text;
  allowed text[] := ARRAY['label', 'required', 'unique', 'default', 'sensitivity', 'mask', 'encrypted', 'searchable', 'description'];
  enc boolean;
  searchable boolean;
  ks record;
  required boolean;
  uniq boolean;
  sens text;
  msk text;
  lbl text;
  vals text[];
  refobj text;
  ondel text;
  doc_field text;
  def jsonb;
  def_sql text;
  col_def text;
  problem text;
BEGIN
  PERFORM crm._object_exists(o);
  t := format('crm_data.%I', o);
  IF n = ANY (crm._standard_columns()) THEN
    RAISE EXCEPTION 'field "%" already exists on object "%"', crm._short(n), crm._short(o) USING ERRCODE = '42701',
      DETAIL = 'It is one of the standard columns every object has.';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.field f WHERE f.object = o AND f.name = n) THEN
    RAISE EXCEPTION 'field "%" already exists on object "%"', crm._short(n), crm._short(o) USING ERRCODE = '42701';
  END IF;
  coltype := crm._column_type(add_field.type);
  IF coltype IS NULL THEN
    RAISE EXCEPTION 'unknown field type "%" for field %.%', crm._short(add_field.type), crm._short(o), crm._short(n) USING ERRCODE = '22023',
      HINT = 'Types are text, integer, numeric, money, date, timestamptz, boolean, picklist, reference, email, cn_mobile, cn_id_number, uscc and bank_card.';
  END IF;
  IF jsonb_typeof(opts) <> 'object' THEN
    RAISE EXCEPTION 'options of field %.% must be a JSON object', crm._short(o), crm._short(n) USING ERRCODE = '22023';
  END IF;
  IF add_field.type = 'picklist' THEN allowed := allowed || 'values'::text; END IF;
  IF add_field.type = 'reference' THEN allowed := allowed || ARRAY['object', 'on_delete', 'inherit_access', 'grants_read']; END IF;
  IF add_field.type = 'text' THEN allowed := allowed || 'document_type_field'::text; END IF;
  FOR k IN SELECT jsonb_object_keys(opts) LOOP
    IF k <> ALL (allowed) THEN
      RAISE EXCEPTION 'unknown option "%" for field %.% of type %', crm._short(k), crm._short(o), crm._short(n), crm._short(add_field.type) USING ERRCODE = '22023',
        HINT = 'Options for this type are: ' || array_to_string(allowed, ', ') || '.';
    END IF;
  END LOOP;
  FOREACH k IN ARRAY ARRAY['required', 'unique', 'encrypted', 'searchable', 'inherit_access', 'grants_read'] LOOP
    IF opts ? k AND jsonb_typeof(opts -> k) <> 'boolean' THEN
      RAISE EXCEPTION 'option "%" of field %.% must be true or false', crm._short(k), crm._short(o), crm._short(n) USING ERRCODE = '22023';
    END IF;
  END LOOP;
  FOREACH k IN ARRAY ARRAY['label', 'sensitivity', 'mask', 'description', 'object', 'on_delete', 'document_type_field'] LOOP
    IF opts ? k AND jsonb_typeof(opts -> k) <> 'string' THEN
      RAISE EXCEPTION 'option "%" of field %.% must be a string', crm._short(k), crm._short(o), crm._short(n) USING ERRCODE = '22023';
    END IF;
  END LOOP;
  required := COALESCE((opts ->> 'required')::boolean, false);
  uniq := COALESCE((opts ->> 'unique')::boolean, false);
  enc := COALESCE((opts ->> 'encrypted')::boolean, false);
  searchable := COALESCE((opts ->> 'searchable')::boolean, false);
  IF searchable AND NOT enc THEN
    RAISE EXCEPTION 'option "searchable" of field %.% applies only to encrypted fields', crm._short(o), crm._short(n) USING ERRCODE = '22023',
      HINT = 'Plain fields are searched with WHERE; an index makes that fast.';
  END IF;
  IF enc THEN
    IF add_field.type NOT IN ('text', 'email', 'cn_mobile', 'cn_id_number', 'uscc', 'bank_card') THEN
      RAISE EXCEPTION 'field %.% of type % cannot be encrypted', crm._short(o), crm._short(n), crm._short(add_field.type) USING ERRCODE = '0A000',
        HINT = 'Encrypted fields are text, email, cn_mobile, cn_id_number, uscc or bank_card.';
    END IF;
    IF opts ? 'default' AND jsonb_typeof(opts -> 'default') <> 'null' THEN
      RAISE EXCEPTION 'encrypted field %.% cannot have a default', crm._short(o), crm._short(n) USING ERRCODE = '0A000',
        DETAIL = 'The default would be kept in plaintext in the table definition.';
    END IF;
    SELECT * INTO ks FROM crm.keyring_status();
    IF NOT ks.ok THEN
      RAISE EXCEPTION 'cannot add encrypted field %.%: the keyring is not usable', crm._short(o), crm._short(n) USING ERRCODE = '55000',
        DETAIL = ks.problem,
        HINT = 'Set crm.keyring to a key file (see docs/encryption.md) and reload; crm.keyring_status() shows what is wrong.';
    END IF;
    -- uniqueness of a ciphertext means nothing: a unique field is unique by its blind index
    IF uniq THEN searchable := true; END IF;
  END IF;
  lbl := COALESCE(NULLIF(btrim(opts ->> 'label'), ''), initcap(replace(n, '_', ' ')));
  sens := COALESCE(opts ->> 'sensitivity', 'internal');
  IF sens NOT IN ('public', 'internal', 'personal', 'sensitive') THEN
    RAISE EXCEPTION 'invalid sensitivity "%" for field %.%', crm._short(sens), crm._short(o), crm._short(n) USING ERRCODE = '22023',
      HINT = 'Sensitivity is public, internal, personal or sensitive.';
  END IF;
  msk := opts ->> 'mask';
  IF msk IS NOT NULL AND msk NOT IN ('none', 'full', 'id_number', 'mobile', 'name', 'email', 'bank_card') THEN
    RAISE EXCEPTION 'unknown mask "%" for field %.%', crm._short(msk), crm._short(o), crm._short(n) USING ERRCODE = '22023',
      HINT = 'Masks are none, full, id_number, mobile, name, email and bank_card.';
  END IF;
  IF msk IS NULL AND sens IN ('personal', 'sensitive') THEN
    msk := CASE add_field.type WHEN 'cn_id_number' THEN 'id_number' WHEN 'cn_mobile' THEN 'mobile'
             WHEN 'email' THEN 'email' WHEN 'bank_card' THEN 'bank_card' ELSE 'full' END;
  END IF;

  col_def := format('%I %s', n, coltype);
  IF add_field.type = 'picklist' THEN
    IF jsonb_typeof(opts -> 'values') IS DISTINCT FROM 'array' OR jsonb_array_length(opts -> 'values') = 0
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(opts -> 'values') v WHERE jsonb_typeof(v) <> 'string' OR btrim(v #>> '{}') = '') THEN
      RAISE EXCEPTION 'picklist field %.% needs "values": a non-empty array of non-empty strings', crm._short(o), crm._short(n) USING ERRCODE = '22023',
        HINT = 'For example {"values": ["C1", "C2", "C3"]}.';
    END IF;
    vals := ARRAY(SELECT v FROM jsonb_array_elements_text(opts -> 'values') v);
    IF cardinality(vals) <> (SELECT count(DISTINCT v) FROM unnest(vals) v) THEN
      RAISE EXCEPTION 'picklist field %.% lists a value twice', crm._short(o), crm._short(n) USING ERRCODE = '22023';
    END IF;
    col_def := col_def || format(' CONSTRAINT %I CHECK (crm.check_picklist(%L, %L, %I, %L::text[]))', 'crm_chk_' || n, o, n, n, vals);
  ELSIF enc THEN
    -- values are validated (as plaintext) and encrypted by the write trigger; only ciphertext is stored
    col_def := col_def || format(' CONSTRAINT %I CHECK (crm.check_encrypted(%L, %L, %I))', 'crm_chk_' || n, o, n, n);
  ELSIF add_field.type IN ('email', 'cn_mobile', 'cn_id_number', 'uscc', 'bank_card') THEN
    col_def := col_def || format(' CONSTRAINT %I CHECK (crm.check_field(%L, %L, %L, %I))', 'crm_chk_' || n, o, n, add_field.type, n);
  ELSIF add_field.type = 'reference' THEN
    refobj := opts ->> 'object';
    IF refobj IS NULL THEN
      RAISE EXCEPTION 'reference field %.% needs "object": the object it refers to', crm._short(o), crm._short(n) USING ERRCODE = '22023';
    END IF;
    ondel := COALESCE(opts ->> 'on_delete', 'restrict');
    IF ondel NOT IN ('restrict', 'cascade', 'set_null') THEN
      RAISE EXCEPTION 'invalid on_delete "%" for field %.%', crm._short(ondel), crm._short(o), crm._short(n) USING ERRCODE = '22023',
        HINT = 'on_delete is restrict, cascade or set_null.';
    END IF;
    IF ondel = 'set_null' AND required THEN
      RAISE EXCEPTION 'required field %.% cannot have on_delete set_null', crm._short(o), crm._short(n) USING ERRCODE = '22023';
    END IF;
    IF COALESCE((opts ->> 'inherit_access')::boolean, false) THEN
      IF refobj = 'principal' OR refobj = o THEN
        RAISE EXCEPTION 'field %.% cannot inherit access from %', crm._short(o), crm._short(n), crm._short(refobj) USING ERRCODE = '22023',
          HINT = 'inherit_access makes records follow the access of another object''s record, e.g. a holding its customer.';
      END IF;
      IF (SELECT x.field FROM crm._parent_of(o) x) IS NOT NULL THEN
        RAISE EXCEPTION 'object "%" already inherits access through field %', crm._short(o), crm._short((SELECT x.field FROM crm._parent_of(o) x))
          USING ERRCODE = '42710';
      END IF;
    END IF;
    IF COALESCE((opts ->> 'grants_read')::boolean, false) AND refobj <> 'principal' THEN
      RAISE EXCEPTION 'only a reference to a principal can grant read access (field %.%)', crm._short(o), crm._short(n) USING ERRCODE = '22023';
    END IF;
    IF refobj = 'principal' THEN
      col_def := col_def || format(' CONSTRAINT %I REFERENCES crm.principal (id)', 'crm_fk_' || n);
    ELSE
      IF NOT EXISTS (SELECT 1 FROM crm.object x WHERE x.name = refobj) THEN
        RAISE EXCEPTION 'field %.% refers to object "%", which does not exist', crm._short(o), crm._short(n), crm._short(refobj) USING ERRCODE = '42704';
      END IF;
      col_def := col_def || format(' CONSTRAINT %I REFERENCES crm_data.%I (id) ON DELETE %s', 'crm_fk_' || n, refobj, replace(upper(ondel), '_', ' '));
    END IF;
  END IF;
  doc_field := opts ->> 'document_type_field';
  IF doc_field IS NOT NULL THEN
    IF NOT EXISTS (SELECT 1 FROM crm.field f WHERE f.object = o AND f.name = doc_field AND f.type IN ('text', 'picklist')) THEN
      RAISE EXCEPTION 'document_type_field "%" of field %.% is not a text or picklist field of "%"', crm._short(doc_field), crm._short(o), crm._short(n), crm._short(o)
        USING ERRCODE = '42703';
    END IF;
    IF NOT enc THEN
      col_def := col_def || format(' CONSTRAINT %I CHECK (crm.check_document(%L, %L, %I, %I))', 'crm_chk_' || n, o, n, doc_field, n);
    END IF;
  END IF;

  IF opts ? 'default' THEN
    def := opts -> 'default';
    IF jsonb_typeof(def) IN ('object', 'array') THEN
      RAISE EXCEPTION 'default of field %.% must be a single value', crm._short(o), crm._short(n) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(def) <> 'null' THEN
      BEGIN
        EXECUTE format('SELECT %L::%s', def #>> '{}', coltype);
      EXCEPTION WHEN data_exception OR invalid_text_representation THEN
        RAISE EXCEPTION 'default % of field %.% is not a valid %', crm._short(def), crm._short(o), crm._short(n), crm._short(add_field.type) USING ERRCODE = '22023';
      END;
      IF add_field.type = 'picklist' AND NOT (def #>> '{}') = ANY (vals) THEN
        RAISE EXCEPTION 'default % of field %.% is not one of its values', crm._short(def), crm._short(o), crm._short(n) USING ERRCODE = '22023';
      END IF;
      IF add_field.type IN ('email', 'cn_mobile', 'cn_id_number', 'uscc', 'bank_card') THEN
        problem := crm.validation_problem(add_field.type, def #>> '{}');
        IF problem IS NOT NULL THEN
          RAISE EXCEPTION 'default % of field %.% is not a valid %: %', crm._short(def), crm._short(o), crm._short(n), crm._short(add_field.type), problem USING ERRCODE = '22023';
        END IF;
      END IF;
      IF add_field.type = 'reference' THEN
        RAISE EXCEPTION 'reference field %.% cannot have a default', crm._short(o), crm._short(n) USING ERRCODE = '22023';
      END IF;
      def_sql := format('%L::%s', def #>> '{}', coltype);
      col_def := col_def || ' DEFAULT ' || def_sql;
    END IF;
  END IF;
  IF required THEN
    col_def := col_def || ' NOT NULL';
  END IF;

  BEGIN
    EXECUTE format('ALTER TABLE %s ADD COLUMN %s', t, col_def);
  EXCEPTION WHEN not_null_violation THEN
    RAISE EXCEPTION 'cannot add required field %.% without a default: the object already has records', crm._short(o), crm._short(n)
      USING ERRCODE = '23502', HINT = 'Give a default, or add the field as optional, fill it, then make it required.';
  END;
  IF searchable THEN
    EXECUTE format('ALTER TABLE %s ADD COLUMN %I bytea', t, 'crm_bidx_' || n);
    EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', t, 'crm_bidx_' || n, 'blind index of ' || n || ' (keyed HMAC-SHA256; maintained by crm)');
    EXECUTE format(CASE WHEN uniq THEN 'CREATE UNIQUE INDEX %I ON %s (%I)' ELSE 'CREATE INDEX %I ON %s (%I)' END,
                   left(o || '_' || n, 50) || '_bidx_' || left(md5(o || '.' || n), 4), t, 'crm_bidx_' || n);
  ELSIF uniq THEN
    EXECUTE format('CREATE UNIQUE INDEX %I ON %s (%I)', left(o || '_' || n, 54) || '_key_' || left(md5(o || '.' || n), 4), t, n);
  ELSIF add_field.type = 'reference' THEN
    EXECUTE format('CREATE INDEX ON %s (%I)', t, n);
  END IF;
  EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', t, n, lbl);
  INSERT INTO crm.field (object, name, label, type, position, required, is_unique, default_value,
                         sensitivity, mask, encrypted, options)
    VALUES (o, n, lbl, add_field.type,
            (SELECT COALESCE(max(f.position), 0) + 1 FROM crm.field f WHERE f.object = o),
            required, uniq, CASE WHEN def_sql IS NOT NULL THEN def END, sens, msk, enc,
            (opts - ARRAY['label', 'required', 'unique', 'default', 'sensitivity', 'mask', 'encrypted', 'searchable'])
              || CASE WHEN searchable THEN '{"searchable": true}'::jsonb ELSE '{}' END);
  IF COALESCE((opts ->> 'inherit_access')::boolean, false) THEN
    -- existing records take their parent's owner and unit now; new ones through the stamp trigger
    PERFORM crm._stamp_trigger(o);
    EXECUTE format('UPDATE %s c SET owner_id = p.owner_id, org_unit_id = p.org_unit_id FROM crm_data.%I p
                     WHERE p.id = c.%I AND (c.owner_id, c.org_unit_id) IS DISTINCT FROM (p.owner_id, p.org_unit_id)', t, refobj, n);
  END IF;
  IF COALESCE((opts ->> 'inherit_access')::boolean, false) OR COALESCE((opts ->> 'grants_read')::boolean, false) THEN
    PERFORM crm._apply_policies(o);
  END IF;
  RETURN n;
END $$;

CREATE FUNCTION crm.set_object_label(object text, label text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM crm._object_exists(set_object_label.object);
  IF set_object_label.label IS NULL OR btrim(set_object_label.label) = '' THEN
    RAISE EXCEPTION 'label of object "%" must not be empty', crm._short(set_object_label.object) USING ERRCODE = '22023';
  END IF;
  UPDATE crm.object o SET label = set_object_label.label WHERE o.name = set_object_label.object;
  EXECUTE format('COMMENT ON TABLE crm_data.%I IS %L', set_object_label.object, set_object_label.label);
END $$;

CREATE FUNCTION crm.set_field_label(object text, field text, label text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM crm._object_exists(set_field_label.object);
  IF NOT EXISTS (SELECT 1 FROM crm.field f WHERE f.object = set_field_label.object AND f.name = set_field_label.field) THEN
    RAISE EXCEPTION 'field %.% does not exist', crm._short(set_field_label.object), crm._short(set_field_label.field) USING ERRCODE = '42703';
  END IF;
  IF set_field_label.label IS NULL OR btrim(set_field_label.label) = '' THEN
    RAISE EXCEPTION 'label of field %.% must not be empty', crm._short(set_field_label.object), crm._short(set_field_label.field) USING ERRCODE = '22023';
  END IF;
  UPDATE crm.field f SET label = set_field_label.label
   WHERE f.object = set_field_label.object AND f.name = set_field_label.field;
  EXECUTE format('COMMENT ON COLUMN crm_data.%I.%I IS %L', set_field_label.object, set_field_label.field, set_field_label.label);
END $$;

-- What uses a field. Later features (rules, workflows, field policies) add their uses here.
CREATE VIEW crm.field_usage AS
  SELECT f.object, f.options ->> 'document_type_field' AS field,
         'field ' || f.object || '.' || f.name || ' (its document type)' AS used_by
    FROM crm.field f WHERE f.options ? 'document_type_field';

CREATE FUNCTION crm.drop_field(object text, field text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE f crm.field; users text;
BEGIN
  PERFORM crm._object_exists(drop_field.object);
  IF drop_field.field = ANY (crm._standard_columns()) THEN
    RAISE EXCEPTION 'cannot drop field %.%: it is a standard column', crm._short(drop_field.object), crm._short(drop_field.field) USING ERRCODE = '42501';
  END IF;
  SELECT * INTO f FROM crm.field x WHERE x.object = drop_field.object AND x.name = drop_field.field;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'field %.% does not exist', crm._short(drop_field.object), crm._short(drop_field.field) USING ERRCODE = '42703';
  END IF;
  IF f.core THEN
    RAISE EXCEPTION 'cannot drop field %.%: it is part of the core % object', crm._short(f.object), crm._short(f.name), crm._short(f.object) USING ERRCODE = '42501',
      DETAIL = 'Apps and reports rely on the core objects'' fields.';
  END IF;
  SELECT string_agg(u.used_by, ', ' ORDER BY u.used_by) INTO users
    FROM crm.field_usage u WHERE u.object = f.object AND u.field = f.name;
  IF users IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop field %.%: it is in use', crm._short(f.object), crm._short(f.name) USING ERRCODE = '2BP01',
      DETAIL = 'Used by ' || users || '.';
  END IF;
  DELETE FROM crm.field x WHERE x.object = f.object AND x.name = f.name;
  IF (f.options ->> 'inherit_access')::boolean OR (f.options ->> 'grants_read')::boolean THEN
    PERFORM crm._stamp_trigger(f.object);
    PERFORM crm._apply_policies(f.object);
  END IF;
  EXECUTE format('ALTER TABLE crm_data.%I DROP COLUMN %I', f.object, f.name);
  IF (f.options ->> 'searchable')::boolean THEN
    EXECUTE format('ALTER TABLE crm_data.%I DROP COLUMN IF EXISTS %I', f.object, 'crm_bidx_' || f.name);
  END IF;
END $$;

CREATE FUNCTION crm.drop_object(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE o crm.object; users text;
BEGIN
  SELECT * INTO o FROM crm.object x WHERE x.name = drop_object.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'object "%" does not exist', crm._short(drop_object.name) USING ERRCODE = '42704';
  END IF;
  IF o.core THEN
    RAISE EXCEPTION 'cannot drop object "%": it is a core object', crm._short(o.name) USING ERRCODE = '42501';
  END IF;
  SELECT string_agg(f.object || '.' || f.name, ', ' ORDER BY f.object, f.name) INTO users
    FROM crm.field f WHERE f.type = 'reference' AND f.options ->> 'object' = o.name AND f.object <> o.name;
  IF users IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop object "%": other objects refer to it', crm._short(o.name) USING ERRCODE = '2BP01',
      DETAIL = 'Referred to by ' || users || '.';
  END IF;
  EXECUTE format('DROP TABLE crm_data.%I', o.name);
  DELETE FROM crm.object_grant g WHERE g.object = o.name;
  DELETE FROM crm.object x WHERE x.name = o.name;
END $$;
