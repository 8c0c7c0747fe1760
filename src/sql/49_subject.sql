------------------------------------------------------------------------------------------------
-- Data-subject rights and integration: consent, subject export, the compliance report, upsert by
-- source ids (with golden customer records), bulk import with a per-row report.
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm._audit_export(object text, record_id bigint, detail jsonb) RETURNS void
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_audit_export_sql';

-- Does the acting principal hold a CRM role?
CREATE FUNCTION crm._acting_has_role(role text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT EXISTS (SELECT 1 FROM crm.principal_role pr JOIN crm.principal p ON p.id = pr.principal_id AND p.active
                  WHERE pr.principal_id = crm.current_principal() AND pr.role = $1)
$$;

-- consent: a row per grant in crm_data.consent (the history: withdrawn rows stay)
CREATE FUNCTION crm.grant_consent(customer_id bigint, purpose text, channel text, evidence text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE id bigint;
BEGIN
  IF evidence IS NULL OR btrim(evidence) = '' THEN
    RAISE EXCEPTION 'consent of customer % needs evidence', crm._short(customer_id) USING ERRCODE = '22023',
      HINT = 'Say where it was given: a signed form, a recorded call, an app screen and version.';
  END IF;
  SELECT c.id INTO id FROM crm_data.consent c
   WHERE c.customer_id = grant_consent.customer_id AND c.purpose = grant_consent.purpose AND c.channel = grant_consent.channel
     AND c.withdrawn_at IS NULL LIMIT 1;
  IF id IS NOT NULL THEN
    RETURN id;   -- already given
  END IF;
  INSERT INTO crm_data.consent (customer_id, purpose, channel, granted_at, evidence)
    VALUES (grant_consent.customer_id, grant_consent.purpose, grant_consent.channel, pg_catalog.now(), grant_consent.evidence)
    RETURNING consent.id INTO id;
  RETURN id;
END $$;
COMMENT ON FUNCTION crm.grant_consent(bigint, text, text, text) IS 'record a customer''s consent for a purpose on a channel (or ''any''), with its evidence; returns the consent''s id (the existing one when already given)';

CREATE FUNCTION crm.withdraw_consent(customer_id bigint, purpose text, channel text, evidence text DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
  UPDATE crm_data.consent c SET withdrawn_at = pg_catalog.now(),
         evidence = CASE WHEN withdraw_consent.evidence IS NULL THEN c.evidence ELSE c.evidence || ' | withdrawn: ' || withdraw_consent.evidence END
   WHERE c.customer_id = withdraw_consent.customer_id AND c.purpose = withdraw_consent.purpose
     AND (c.channel = withdraw_consent.channel OR withdraw_consent.channel = 'any') AND c.withdrawn_at IS NULL;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
COMMENT ON FUNCTION crm.withdraw_consent(bigint, text, text, text) IS 'withdraw a customer''s active consents for a purpose on a channel (''any'': on every channel); the rows stay as history; returns how many';

-- Everything about one person: the customer, every record referring to it (and records referring
-- to those), consents, and the audit entries about them. For compliance principals; an EXPORT event.
CREATE FUNCTION crm._subject_rows(obj text, field text, ids bigint[]) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cols text;
  out jsonb;
BEGIN
  -- a part of crm.subject_export, for the same callers; the field is a name, never SQL
  IF NOT crm._acting_has_role('compliance') THEN
    RAISE EXCEPTION 'permission denied to export records of %', crm._short(obj) USING ERRCODE = '42501',
      HINT = 'Use crm.subject_export(customer_id); it is for compliance principals.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.fields f WHERE f.object OPERATOR(pg_catalog.=) obj
                  AND (f.name OPERATOR(pg_catalog.=) field OR field OPERATOR(pg_catalog.=) 'id')) THEN
    RAISE EXCEPTION 'field %.% does not exist', crm._short(obj), crm._short(field) USING ERRCODE = '42703';
  END IF;
  -- named columns (not the whole row), so that masking and decryption apply to each
  SELECT string_agg(format('%L, t.%I', a.attname, a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a WHERE a.attrelid = format('crm_data.%I', obj)::regclass AND a.attnum > 0 AND NOT a.attisdropped
     AND a.attname !~ '^crm_bidx_';
  EXECUTE format('SELECT coalesce(jsonb_agg(jsonb_build_object(%s) ORDER BY t.id), ''[]'') FROM crm_data.%I t WHERE t.%I OPERATOR(pg_catalog.=) ANY ($1)',
                 cols, obj, field)
    INTO out USING ids;
  RETURN out;
END $$;

CREATE FUNCTION crm._subject_audit(pairs jsonb) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', l.id, 'at', l.logged_at, 'action', l.action, 'object', l.object, 'record_id', l.record_id,
                                               'principal_id', l.principal_id, 'user', l.session_user_name, 'detail', l.detail) ORDER BY l.id), '[]')
    FROM crm.audit_log l
   WHERE crm._acting_has_role('compliance')
     AND EXISTS (SELECT 1 FROM jsonb_array_elements($1) p WHERE p->>'object' = l.object AND (p->>'id')::bigint = l.record_id)
$$;

CREATE FUNCTION crm._subject_export_audit(customer_id bigint, counts jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT crm._acting_has_role('compliance') THEN
    RAISE EXCEPTION 'permission denied' USING ERRCODE = '42501';
  END IF;
  PERFORM crm._audit_export('customer', customer_id, jsonb_build_object('operation', 'subject_export', 'records', counts));
END $$;

CREATE FUNCTION crm.subject_export(customer_id bigint)
RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  result jsonb;
  records jsonb := '{}';
  pairs jsonb;
  f record;
  have jsonb;
  frontier text[] := ARRAY['customer'];
  seen text[] := ARRAY['customer'];
  next_frontier text[];
  rows_ jsonb;
  ids bigint[];
  depth integer := 0;
BEGIN
  IF NOT crm._acting_has_role('compliance') THEN
    RAISE EXCEPTION 'permission denied to export the data of customer %', crm._short(customer_id) USING ERRCODE = '42501',
      HINT = 'A subject export is for compliance principals.';
  END IF;
  rows_ := crm._subject_rows('customer', 'id', ARRAY[customer_id]);
  IF jsonb_array_length(rows_) = 0 THEN
    RAISE EXCEPTION 'customer % does not exist or is not visible to you', crm._short(customer_id) USING ERRCODE = '42704';
  END IF;
  records := jsonb_build_object('customer', rows_);
  -- follow references: records pointing at what is already in the export, up to 4 steps away
  WHILE cardinality(frontier) > 0 AND depth < 4 LOOP
    depth := depth + 1;
    next_frontier := '{}';
    FOR f IN SELECT x.object, x.name, x.references_object AS target FROM crm.fields x
              WHERE x.type = 'reference' AND x.references_object = ANY (frontier) ORDER BY x.object, x.position LOOP
      IF f.object = 'customer' THEN CONTINUE; END IF;
      SELECT array_agg((r->>'id')::bigint) INTO ids FROM jsonb_array_elements(records->f.target) r;
      rows_ := crm._subject_rows(f.object, f.name, ids);
      IF jsonb_array_length(rows_) > 0 THEN
        have := coalesce(records->f.object, '[]');
        records := jsonb_set(records, ARRAY[f.object],
          (SELECT jsonb_agg(DISTINCT e) FROM jsonb_array_elements(have || rows_) e));
        IF NOT f.object = ANY (seen) THEN
          next_frontier := next_frontier || f.object;
          seen := seen || f.object;
        END IF;
      END IF;
    END LOOP;
    frontier := next_frontier;
  END LOOP;
  SELECT jsonb_agg(jsonb_build_object('object', k, 'id', r->'id')) INTO pairs FROM jsonb_each(records) e(k, v), jsonb_array_elements(v) r;
  result := jsonb_build_object('subject', customer_id, 'exported_at', pg_catalog.now(), 'exported_by', crm.current_principal(),
                               'records', records, 'consents', coalesce(records->'consent', '[]'), 'audit', crm._subject_audit(pairs));
  -- the export is audited, and stays audited even if this transaction rolls back
  PERFORM crm._subject_export_audit(customer_id, (SELECT jsonb_object_agg(k, jsonb_array_length(v)) FROM jsonb_each(records) e(k, v)));
  RETURN result;
END $$;
COMMENT ON FUNCTION crm.subject_export(bigint) IS 'a data subject''s export (PIPL): the customer, every record referring to it (references followed), consents, and the audit entries about them; compliance principals only; audited as EXPORT';

-- The compliance report: one row per check.
CREATE FUNCTION crm.compliance_report()
RETURNS TABLE ("check" text, status text, detail text, fix text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  bad text;
  granted text;
  n bigint;
  k record;
  v record;
BEGIN
  IF NOT (crm._caller_has_role('crm_admin') OR crm._caller_has_role('crm_auditor') OR crm._acting_has_role('compliance')) THEN
    RAISE EXCEPTION 'permission denied for the compliance report' USING ERRCODE = '42501',
      HINT = 'It is for crm_admin, crm_auditor and compliance principals.';
  END IF;

  "check" := 'ssl';
  IF current_setting('ssl') = 'on' AND current_setting('ssl_min_protocol_version') IN ('TLSv1.2', 'TLSv1.3') THEN
    status := 'pass'; detail := format('ssl on, minimum %s', current_setting('ssl_min_protocol_version')); fix := NULL;
  ELSE
    status := 'fail'; detail := format('ssl %s, minimum %s', current_setting('ssl'), current_setting('ssl_min_protocol_version'));
    fix := 'Set ssl = on (with a certificate) and ssl_min_protocol_version = ''TLSv1.2'' in postgresql.conf, then reload.';
  END IF;
  RETURN NEXT;

  "check" := 'password_encryption';
  IF current_setting('password_encryption') = 'scram-sha-256' THEN
    status := 'pass'; detail := 'scram-sha-256'; fix := NULL;
  ELSE
    status := 'fail'; detail := current_setting('password_encryption');
    fix := 'Set password_encryption = ''scram-sha-256'', reload, and reset the passwords stored as MD5.';
  END IF;
  RETURN NEXT;

  "check" := 'pg_hba trust';
  SELECT string_agg(format('line %s (%s %s %s)', r.line_number, r.type, array_to_string(r.database, ','), coalesce(r.address, '')), '; ' ORDER BY r.line_number)
    INTO bad FROM pg_hba_file_rules r WHERE r.auth_method = 'trust' AND r.type <> 'local';
  IF bad IS NULL THEN
    status := 'pass'; detail := 'no trust for network connections'; fix := NULL;
  ELSE
    status := 'fail'; detail := 'trust for network connections: ' || bad;
    fix := 'Use scram-sha-256 (or cert) for host lines in pg_hba.conf, then reload.';
  END IF;
  RETURN NEXT;

  "check" := 'crm preloaded';
  IF crm.preloaded() THEN
    status := 'pass'; detail := 'crm is in shared_preload_libraries'; fix := NULL;
  ELSE
    status := 'fail'; detail := 'crm is not preloaded: no masking, no login audit, no workers';
    fix := 'Add crm to shared_preload_libraries and restart.';
  END IF;
  RETURN NEXT;

  "check" := 'row security';
  SELECT string_agg(o.name, ', ' ORDER BY o.name) INTO bad FROM crm.object o
    LEFT JOIN pg_class c ON c.oid = to_regclass(format('crm_data.%I', o.name))
   WHERE c.oid IS NULL OR NOT (c.relrowsecurity AND c.relforcerowsecurity);
  IF bad IS NULL THEN
    status := 'pass'; detail := format('%s managed tables: enabled and forced', (SELECT count(*) FROM crm.object)); fix := NULL;
  ELSE
    status := 'fail'; detail := 'not enabled and forced on: ' || bad;
    fix := 'ALTER TABLE crm_data.<t> ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY (someone changed the catalog by hand).';
  END IF;
  RETURN NEXT;

  "check" := 'crm triggers';
  SELECT string_agg(format('%s.%s (%s)', o.name, t.want, coalesce(g.tgenabled::text, 'missing')), ', ' ORDER BY o.name, t.want) INTO bad
    FROM crm.object o CROSS JOIN unnest(ARRAY['crm_audit', 'crm_audit_flush', 'crm_stamp', 'crm_write_guard']) t(want)
    LEFT JOIN pg_trigger g ON g.tgrelid = to_regclass(format('crm_data.%I', o.name)) AND g.tgname = t.want
   WHERE g.oid IS NULL OR g.tgenabled <> 'A';
  IF bad IS NULL THEN
    status := 'pass'; detail := 'audit, stamp and write-guard triggers present and firing ALWAYS on every managed table'; fix := NULL;
  ELSE
    status := 'fail'; detail := 'missing or not ALWAYS: ' || bad;
    fix := 'Reinstate them (ALTER TABLE ... ENABLE ALWAYS TRIGGER ...); someone changed pg_trigger by hand. Check the audit log.';
  END IF;
  RETURN NEXT;

  "check" := 'grants on crm_data';
  SELECT string_agg(DISTINCT format('%s to %s', c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END), ', ') INTO bad
    FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
   WHERE c.relnamespace = 'crm_data'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
     AND a.grantee <> c.relowner
     AND (a.grantee = 0 OR a.grantee::regrole::text NOT IN ('crm_user', 'crm_admin', 'crm_auditor', 'crm_app'));
  IF bad IS NULL THEN
    status := 'pass'; detail := 'only crm''s roles are granted access to crm_data'; fix := NULL;
  ELSE
    status := 'fail'; detail := 'other grants: ' || bad;
    fix := 'REVOKE them; give people access by making them principals (crm.add_principal) in crm_user.';
  END IF;
  RETURN NEXT;

  "check" := 'copies of crm_data';
  SELECT x.copies, x.granted INTO bad, granted FROM crm._copies_of_data() x;
  IF bad IS NULL THEN
    status := 'pass'; detail := 'no relation outside crm_data holds rows copied from it'; fix := NULL;
  ELSE
    status := 'fail';
    detail := 'copies of crm_data: ' || bad || coalesce('; granted: ' || granted, '');
    fix := 'Drop them (DROP MATERIALIZED VIEW / DROP TABLE) and give readers a view instead: row security and masking follow whoever reads a view. Revoke every grant of a copy to crm_user, crm_app, principals and PUBLIC.';
  END IF;
  RETURN NEXT;

  "check" := 'audit chain';
  SELECT count(*) INTO n FROM crm.audit_block b;
  SELECT x.ok, x.problem, x.entries INTO v FROM crm.audit_verify(pg_catalog.now() - interval '1 day', NULL) x;
  IF v.ok AND (SELECT max(b.sealed_at) FROM crm.audit_block b) > pg_catalog.now() - interval '1 day' THEN
    status := 'pass'; detail := format('the last day''s blocks verify (%s entries); sealed within the day', v.entries); fix := NULL;
  ELSIF v.ok THEN
    status := 'warn'; detail := 'nothing sealed in the last day (is the audit worker running? is crm preloaded?)';
    fix := 'Check that crm is preloaded and the crm audit worker runs; SELECT crm.audit_seal().';
  ELSE
    status := 'fail'; detail := 'the chain does not verify: ' || coalesce(v.problem, '?');
    fix := 'Investigate now: SELECT * FROM crm.audit_verify(); compare with the digests kept outside the database.';
  END IF;
  RETURN NEXT;

  "check" := 'sensitive fields';
  SELECT string_agg(f.object || '.' || f.name, ', ' ORDER BY f.object, f.name) INTO bad FROM crm.field f
   WHERE f.sensitivity = 'sensitive' AND NOT f.encrypted
     AND EXISTS (SELECT 1 FROM crm.field_access fa WHERE fa.object = f.object AND fa.field = f.name AND fa.role = 'rm'
                   AND fa.level IN ('read', 'write'));
  IF bad IS NULL THEN
    status := 'pass'; detail := 'every sensitive field is masked for RMs outside their book, or encrypted'; fix := NULL;
  ELSE
    status := 'fail'; detail := 'readable by every RM, unencrypted: ' || bad;
    fix := 'crm.reset_field_access(object, field, ''rm'') or crm.set_field_access(..., ''masked''), or make the field encrypted.';
  END IF;
  RETURN NEXT;

  "check" := 'keyring';
  SELECT * INTO k FROM crm.keyring_status();
  IF k.ok THEN
    status := 'pass'; detail := format('%s master key(s), current %s', k.keys, k.current_key); fix := NULL;
  ELSE
    status := CASE WHEN EXISTS (SELECT 1 FROM crm.field f WHERE f.encrypted) THEN 'fail' ELSE 'warn' END;
    detail := coalesce(k.problem, 'no keyring');
    fix := 'Set crm.keyring to a mode-600 key file readable by the server (see docs/encryption.md).';
  END IF;
  RETURN NEXT;

  "check" := 'superusers';
  SELECT count(*), string_agg(r.rolname, ', ' ORDER BY r.rolname) INTO n, bad FROM pg_roles r WHERE r.rolsuper;
  IF n <= 1 THEN
    status := 'pass'; detail := format('%s superuser: %s', n, bad); fix := NULL;
  ELSE
    status := 'warn'; detail := format('%s superusers: %s', n, bad);
    fix := 'Keep one superuser for maintenance; every superuser can get past row security and read ciphertext.';
  END IF;
  RETURN NEXT;
END $$;
COMMENT ON FUNCTION crm.compliance_report() IS 'one row per compliance check with status pass/warn/fail, what was found and how to fix it';

-- Integration: records by their ids in source systems.
CREATE TABLE crm.external_ref (
  object        text NOT NULL REFERENCES crm.object (name) ON DELETE CASCADE,
  source_system text NOT NULL CHECK (btrim(source_system) <> ''),
  external_id   text NOT NULL CHECK (btrim(external_id) <> ''),
  record_id     bigint NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  PRIMARY KEY (object, source_system, external_id)
);
CREATE INDEX external_ref_record ON crm.external_ref (object, record_id);
COMMENT ON TABLE crm.external_ref IS 'which record a source system''s id stands for (crm.upsert keeps it)';
SELECT pg_catalog.pg_extension_config_dump('crm.external_ref', '');

-- the record a source id maps to, if the caller can see it
CREATE FUNCTION crm._external_ref(obj text, src text, ext text) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT r.record_id FROM crm.external_ref r WHERE r.object = $1 AND r.source_system = $2 AND r.external_id = $3
     AND crm._visible($1, r.record_id)
$$;
CREATE FUNCTION crm._external_ref_add(obj text, src text, ext text, rid bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE old bigint;
BEGIN
  -- mapping a source id to a record (or away from one) changes what that system's writes reach:
  -- it needs edit access to both records
  IF NOT coalesce(crm._editable(obj, rid), false) THEN
    RAISE EXCEPTION '% % does not exist or you may not edit it', crm._short(obj), crm._short(rid) USING ERRCODE = '42501';
  END IF;
  SELECT r.record_id INTO old FROM crm.external_ref r WHERE r.object = obj AND r.source_system = src AND r.external_id = ext;
  IF old IS NOT NULL AND old <> rid AND NOT coalesce(crm._editable(obj, old), false) THEN
    RAISE EXCEPTION '% id % of % already stands for a record you may not edit', crm._short(src), crm._short(ext), crm._short(obj) USING ERRCODE = '42501';
  END IF;
  INSERT INTO crm.external_ref (object, source_system, external_id, record_id) VALUES (obj, src, ext, rid)
    ON CONFLICT (object, source_system, external_id) DO UPDATE SET record_id = EXCLUDED.record_id;
END $$;

-- attrs checked against the object's fields: unknown fields and values of the wrong type are named
CREATE FUNCTION crm._upsert_assignments(obj text, attrs jsonb, OUT cols text[], OUT vals text[])
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  k text;
  v jsonb;
  f record;
  lit text;
BEGIN
  IF jsonb_typeof(attrs) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'attributes for % must be a JSON object', crm._short(obj) USING ERRCODE = '22023';
  END IF;
  cols := '{}'; vals := '{}';
  FOR k, v IN SELECT * FROM jsonb_each(attrs) ORDER BY 1 LOOP
    SELECT x.name, x.type, x.column_type AS coltype INTO f FROM crm.fields x WHERE x.object = obj AND x.name = k;
    IF f.name IS NULL THEN
      RAISE EXCEPTION 'unknown field "%" for %', crm._short(k), crm._short(obj) USING ERRCODE = '42703',
        HINT = format('Fields of %s: %s.', crm._short(obj), (SELECT string_agg(x.name, ', ' ORDER BY x.position) FROM crm.fields x WHERE x.object = obj));
    END IF;
    lit := CASE WHEN v = 'null' THEN NULL ELSE v #>> '{}' END;
    BEGIN
      EXECUTE format('SELECT %L::%s', lit, f.coltype);
    EXCEPTION WHEN data_exception THEN
      RAISE EXCEPTION 'field "%" of %: % is not a valid %', crm._short(k), crm._short(obj), crm._short(v), crm._short(f.type) USING ERRCODE = '22P02';
    END;
    cols := cols || f.name;
    vals := vals || format('%L::%s', lit, f.coltype);
  END LOOP;
END $$;

CREATE FUNCTION crm.upsert(object text, source_system text, external_id text, attrs jsonb)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  a record;
  rid bigint;
  idf record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM crm.objects o WHERE o.name = upsert.object) THEN
    RAISE EXCEPTION 'object "%" does not exist', crm._short(upsert.object) USING ERRCODE = '42704';
  END IF;
  IF source_system IS NULL OR btrim(source_system) = '' OR external_id IS NULL OR btrim(external_id) = '' THEN
    RAISE EXCEPTION 'upsert into % needs a source system and an external id', crm._short(upsert.object) USING ERRCODE = '22023';
  END IF;
  SELECT * INTO a FROM crm._upsert_assignments(upsert.object, attrs);
  rid := crm._external_ref(upsert.object, source_system, external_id);
  -- the same person from another system: one golden customer record, found by ID number
  IF rid IS NULL AND upsert.object = 'customer' AND attrs ? 'id_number' AND attrs->>'id_number' IS NOT NULL THEN
    SELECT f.encrypted, s.searchable INTO idf
      FROM crm.fields f JOIN crm.fields_searchable s ON s.object = f.object AND s.name = f.name
     WHERE f.object = 'customer' AND f.name = 'id_number';
    IF idf.encrypted AND idf.searchable THEN
      SELECT pg_catalog.min(x) INTO rid FROM crm._bidx_lookup('customer', 'id_number', attrs->>'id_number') x;
    ELSIF NOT idf.encrypted THEN
      SELECT c.id INTO rid FROM crm_data.customer c WHERE c.id_number = upper(attrs->>'id_number')
         AND c.id_type IS NOT DISTINCT FROM coalesce(attrs->>'id_type', c.id_type) ORDER BY c.id LIMIT 1;
    END IF;
  END IF;
  IF rid IS NOT NULL THEN
    IF cardinality(a.cols) > 0 THEN
      EXECUTE format('UPDATE crm_data.%I t SET (%s) = ROW(%s) WHERE t.id = $1', upsert.object,
                     (SELECT string_agg(quote_ident(c), ', ') FROM unnest(a.cols) c), array_to_string(a.vals, ', '))
        USING rid;
      IF NOT FOUND THEN
        RAISE EXCEPTION '% % (% %) does not exist or is not visible to you', crm._short(upsert.object), crm._short(rid), crm._short(source_system), crm._short(external_id)
          USING ERRCODE = '42501';
      END IF;
    END IF;
  ELSIF coalesce(cardinality(a.cols), 0) = 0 THEN
    -- a new record needs its fields: say which, rather than a syntax error from an empty INSERT
    RAISE EXCEPTION 'upsert into % of a new record (% %) needs its fields in attrs', crm._short(upsert.object),
        crm._short(source_system), crm._short(external_id) USING ERRCODE = '22023',
      HINT = format('No %s record is known by this source id, so one is created; give at least its required fields: %s.',
                    crm._short(upsert.object),
                    coalesce((SELECT string_agg(f.name, ', ' ORDER BY f.position) FROM crm.fields f
                               WHERE f.object = upsert.object AND f.required AND f.default_value IS NULL), 'none'));
  ELSE
    EXECUTE format('INSERT INTO crm_data.%I (%s) VALUES (%s) RETURNING id', upsert.object,
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(a.cols) c), array_to_string(a.vals, ', '))
      INTO rid;
  END IF;
  PERFORM crm._external_ref_add(upsert.object, source_system, external_id, rid);
  RETURN rid;
END $$;
COMMENT ON FUNCTION crm.upsert(text, text, text, jsonb) IS 'insert or update a record by its id in a source system, attributes checked against the object''s fields; a customer already known by ID number (from any system) is updated, not duplicated; returns the record id; runs as the caller (row security and field levels apply)';

-- Map many source ids to their (visible) records, and record many new ones: one call each.
CREATE FUNCTION crm._external_refs(obj text, src text, exts text[]) RETURNS TABLE (external_id text, record_id bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT r.external_id, r.record_id FROM crm.external_ref r
   WHERE r.object = $1 AND r.source_system = $2 AND r.external_id = ANY ($3) AND crm._visible($1, r.record_id)
$$;
CREATE FUNCTION crm._external_refs_add(obj text, src text, exts text[], ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  -- mapping a source id to a record (or away from one) needs edit access to both records
  IF EXISTS (SELECT 1 FROM unnest(ids) i WHERE NOT coalesce(crm._editable(obj, i), false)) THEN
    RAISE EXCEPTION 'a record to map does not exist or you may not edit it' USING ERRCODE = '42501';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.external_ref r JOIN unnest(exts, ids) x(e, i) ON r.external_id = x.e
              WHERE r.object = obj AND r.source_system = src AND r.record_id <> x.i AND NOT coalesce(crm._editable(obj, r.record_id), false)) THEN
    RAISE EXCEPTION 'a source id already stands for a record you may not edit' USING ERRCODE = '42501';
  END IF;
  INSERT INTO crm.external_ref (object, source_system, external_id, record_id)
    SELECT obj, src, x.e, x.i FROM unnest(exts, ids) x(e, i)
    ON CONFLICT (object, source_system, external_id) DO UPDATE SET record_id = EXCLUDED.record_id;
END $$;

-- The set-based path of crm.import: every row valid, no duplicates: one UPDATE, one INSERT.
-- Raises on anything unusual; crm.import then takes the row-by-row path, which reports per row.
CREATE FUNCTION crm._import_fast(obj text, staging regclass, src text) RETURNS TABLE (row_no bigint, external_id text, record_id bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cols text[];
  sel text;
  golden text := 'NULL::bigint';
  n_upd bigint;
  n_target bigint;
  ids bigint[];
BEGIN
  SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO cols FROM pg_attribute a
   WHERE a.attrelid = staging AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'external_id';
  IF cols IS NULL OR EXISTS (SELECT 1 FROM unnest(cols) c WHERE NOT EXISTS (SELECT 1 FROM crm.fields f WHERE f.object = obj AND f.name = c)) THEN
    RAISE EXCEPTION 'crm import: a column that is not a field' USING ERRCODE = 'P0003';
  END IF;
  SELECT string_agg(format('s.%I::%s AS %I', c, f.column_type, c), ', ' ORDER BY c) INTO sel
    FROM unnest(cols) c JOIN crm.fields f ON f.object = obj AND f.name = c;
  IF obj = 'customer' AND 'id_number' = ANY (cols) AND NOT (SELECT f.encrypted FROM crm.fields f WHERE f.object = 'customer' AND f.name = 'id_number') THEN
    golden := '(SELECT c.id FROM crm_data.customer c WHERE c.id_number = upper(s.id_number::text) ORDER BY c.id LIMIT 1)';
  ELSIF obj = 'customer' AND 'id_number' = ANY (cols) THEN
    RAISE EXCEPTION 'crm import: encrypted ID numbers take the row-by-row path' USING ERRCODE = 'P0003';
  END IF;
  IF to_regclass('pg_temp.crm_import_rows') IS NOT NULL THEN
    DROP TABLE pg_temp.crm_import_rows;
  END IF;
  EXECUTE format('CREATE TEMP TABLE crm_import_rows ON COMMIT DROP AS
                    SELECT row_number() OVER (ORDER BY s.ctid) AS row_no, s.external_id::text AS external_id, %s,
                           coalesce(m.record_id, %s) AS target
                      FROM %s s LEFT JOIN crm._external_refs(%L, %L, ARRAY(SELECT x.external_id::text FROM %s x)) m ON m.external_id = s.external_id::text',
                 sel, golden, staging, obj, src, staging);
  IF EXISTS (SELECT 1 FROM crm_import_rows r WHERE r.external_id IS NULL OR btrim(r.external_id) = '')
     OR (SELECT count(DISTINCT r.external_id) <> count(*) FROM crm_import_rows r)
     OR (SELECT count(DISTINCT r.target) <> count(r.target) FROM crm_import_rows r) THEN
    RAISE EXCEPTION 'crm import: duplicates or missing ids' USING ERRCODE = 'P0003';
  END IF;
  IF obj = 'customer' AND 'id_number' = ANY (cols) AND EXISTS (
       SELECT 1 FROM crm_import_rows r WHERE r.target IS NULL AND r.id_number IS NOT NULL GROUP BY upper(r.id_number) HAVING count(*) > 1) THEN
    RAISE EXCEPTION 'crm import: one person twice' USING ERRCODE = 'P0003';
  END IF;
  SELECT count(r.target) INTO n_target FROM crm_import_rows r;
  IF n_target > 0 THEN
    EXECUTE format('UPDATE crm_data.%I t SET (%s) = ROW(%s) FROM crm_import_rows r WHERE t.id = r.target', obj,
                   (SELECT string_agg(quote_ident(c), ', ' ORDER BY c) FROM unnest(cols) c),
                   (SELECT string_agg('r.' || quote_ident(c), ', ' ORDER BY c) FROM unnest(cols) c));
    GET DIAGNOSTICS n_upd = ROW_COUNT;
    IF n_upd <> n_target THEN
      RAISE EXCEPTION 'crm import: records not visible' USING ERRCODE = 'P0003';
    END IF;
  END IF;
  -- new records, inserted in row order; RETURNING gives their ids in that order
  EXECUTE format('WITH ins AS (INSERT INTO crm_data.%I (%s) SELECT %s FROM crm_import_rows r WHERE r.target IS NULL ORDER BY r.row_no RETURNING id)
                  SELECT array_agg(id ORDER BY ord) FROM (SELECT id, row_number() OVER () AS ord FROM ins) x', obj,
                 (SELECT string_agg(quote_ident(c), ', ' ORDER BY c) FROM unnest(cols) c),
                 (SELECT string_agg('r.' || quote_ident(c), ', ' ORDER BY c) FROM unnest(cols) c)) INTO ids;
  UPDATE crm_import_rows r SET target = x.id
    FROM (SELECT n.row_no, i.id FROM (SELECT r2.row_no, row_number() OVER (ORDER BY r2.row_no) AS ord FROM crm_import_rows r2 WHERE r2.target IS NULL) n
            JOIN unnest(ids) WITH ORDINALITY i(id, ord) ON i.ord = n.ord) x
   WHERE r.row_no = x.row_no;
  PERFORM crm._external_refs_add(obj, src, ARRAY(SELECT r.external_id FROM crm_import_rows r ORDER BY r.row_no),
                                 ARRAY(SELECT r.target FROM crm_import_rows r ORDER BY r.row_no));
  RETURN QUERY SELECT r.row_no, r.external_id, r.target FROM crm_import_rows r ORDER BY r.row_no;
END $$;

-- Bulk import from a staging table (columns: external_id and any of the object's fields).
CREATE FUNCTION crm.import(object text, staging_table regclass, source_system text, all_or_nothing boolean DEFAULT true)
RETURNS TABLE (row_no bigint, external_id text, status text, record_id bigint, reason text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
  rid bigint;
  rejected integer := 0;
  report_ jsonb[] := '{}';
  attrs jsonb;
  i bigint := 0;
  msg text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = staging_table AND a.attname = 'external_id' AND NOT a.attisdropped) THEN
    RAISE EXCEPTION 'staging table % has no column external_id', crm._short(staging_table) USING ERRCODE = '42703',
      HINT = 'One row per record: external_id, then columns named like the object''s fields.';
  END IF;
  -- all or nothing: first the set-based path (one UPDATE, one INSERT); anything unusual (a bad
  -- value, a duplicate, an invisible record) and it is rolled back and the rows go one by one
  IF all_or_nothing THEN
    BEGIN
      RETURN QUERY SELECT f.row_no, f.external_id, 'accepted'::text, f.record_id, NULL::text
        FROM crm._import_fast(import.object, staging_table, source_system) f;
      RETURN;
    EXCEPTION WHEN OTHERS THEN
      NULL;   -- the row-by-row path below says which rows and why
    END;
  END IF;
  BEGIN
    FOR r IN EXECUTE format('SELECT to_jsonb(s) AS j FROM %s s ORDER BY ctid', staging_table) LOOP
      i := i + 1;
      attrs := r.j - 'external_id';
      BEGIN
        rid := crm.upsert(import.object, source_system, r.j->>'external_id', attrs);
        report_ := report_ || jsonb_build_object('row_no', i, 'external_id', r.j->>'external_id', 'status', 'accepted', 'record_id', rid);
      EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        rejected := rejected + 1;
        report_ := report_ || jsonb_build_object('row_no', i, 'external_id', r.j->>'external_id', 'status', 'rejected', 'reason', msg);
      END;
    END LOOP;
    IF rejected > 0 AND all_or_nothing THEN
      RAISE EXCEPTION USING ERRCODE = 'P0004', MESSAGE = 'crm import: rejected rows';
    END IF;
  EXCEPTION WHEN assert_failure THEN
    -- all or nothing: what was accepted is rolled back with this block
    report_ := ARRAY(SELECT CASE WHEN e->>'status' = 'accepted'
                                 THEN e - 'record_id' || jsonb_build_object('status', 'not imported', 'reason', format('all or nothing: %s row(s) rejected', rejected))
                                 ELSE e END FROM unnest(report_) e);
  END;
  RETURN QUERY SELECT (e->>'row_no')::bigint, e->>'external_id', e->>'status', (e->>'record_id')::bigint, e->>'reason' FROM unnest(report_) e;
END $$;
COMMENT ON FUNCTION crm.import(text, regclass, text, boolean) IS 'import a staging table (external_id + field columns) through crm.upsert; one report row per staging row (accepted / rejected with the reason / not imported); all_or_nothing (default) imports nothing when any row is rejected';

-- PostgREST's pre-request: act as the principal a verified token names (claim "principal").
-- Only roles in crm_app may act as anyone (crm.act_as checks), so this adds no power: it reads the
-- claim PostgREST verified and set for this request's transaction.
CREATE FUNCTION crm.act_as_from_jwt() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE p text := nullif(current_setting('request.jwt.claims', true), '')::json ->> 'principal';
BEGIN
  IF p IS NOT NULL THEN
    PERFORM crm.act_as(p);
  END IF;
END $$;
COMMENT ON FUNCTION crm.act_as_from_jwt() IS 'for PostgREST''s db-pre-request: crm.act_as(the token''s "principal" claim); refused unless the request''s role is in crm_app';

CREATE FUNCTION crm._as_system(sql text, args bigint[]) RETURNS bigint
  LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'crm_as_system';

-- Merging duplicate customers, reversibly: every record moved is written down.
CREATE TABLE crm.customer_merge (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  survivor   bigint NOT NULL,
  duplicate  bigint NOT NULL,
  reason     text NOT NULL,
  merged_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
  merged_by  bigint,
  undone_at  timestamptz
);
CREATE TABLE crm.customer_merge_move (
  merge_id  bigint NOT NULL REFERENCES crm.customer_merge (id) ON DELETE CASCADE,
  object    text NOT NULL,
  field     text NOT NULL,
  record_id bigint NOT NULL
);
CREATE TABLE crm.customer_merge_ref (
  merge_id      bigint NOT NULL REFERENCES crm.customer_merge (id) ON DELETE CASCADE,
  source_system text NOT NULL,
  external_id   text NOT NULL
);
COMMENT ON TABLE crm.customer_merge IS 'customers merged into others (crm.merge_customers), with what moved in customer_merge_move/_ref, so that a merge can be undone';
SELECT pg_catalog.pg_extension_config_dump('crm.customer_merge', '');
SELECT pg_catalog.pg_extension_config_dump('crm.customer_merge_move', '');
SELECT pg_catalog.pg_extension_config_dump('crm.customer_merge_ref', '');

CREATE FUNCTION crm.merge_customers(survivor bigint, duplicate bigint, reason text DEFAULT 'duplicate')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  mid bigint;
  f record;
  n bigint;
  moved jsonb := '{}';
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to merge customers' USING ERRCODE = '42501', HINT = 'Merging is for crm_admin.';
  END IF;
  IF merge_customers.survivor IS NULL OR merge_customers.duplicate IS NULL OR merge_customers.survivor = merge_customers.duplicate THEN
    RAISE EXCEPTION 'merge_customers needs two different customers' USING ERRCODE = '22023';
  END IF;
  IF (SELECT count(*) FROM crm_data.customer c WHERE c.id IN (merge_customers.survivor, merge_customers.duplicate)) <> 2 THEN
    RAISE EXCEPTION 'customer % or % does not exist', crm._short(merge_customers.survivor), crm._short(merge_customers.duplicate) USING ERRCODE = '42704';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.customer_merge m WHERE m.duplicate IN (merge_customers.survivor, merge_customers.duplicate) AND m.undone_at IS NULL) THEN
    RAISE EXCEPTION 'customer % or % was already merged into another', crm._short(merge_customers.survivor), crm._short(merge_customers.duplicate) USING ERRCODE = '55000',
      HINT = 'Undo that merge first (crm.unmerge_customers), or merge into its survivor.';
  END IF;
  INSERT INTO crm.customer_merge (survivor, duplicate, reason, merged_by)
    VALUES (merge_customers.survivor, merge_customers.duplicate, coalesce(reason, 'duplicate'), crm.current_principal()) RETURNING id INTO mid;
  FOR f IN SELECT x.object, x.name FROM crm.fields x WHERE x.type = 'reference' AND x.references_object = 'customer' ORDER BY x.object, x.position LOOP
    n := crm._as_system(format('WITH m AS (UPDATE crm_data.%I t SET %I = $1[1] WHERE t.%I = $1[2] RETURNING t.id)
                                INSERT INTO crm.customer_merge_move (merge_id, object, field, record_id) SELECT $1[3], %L, %L, m.id FROM m',
                               f.object, f.name, f.name, f.object, f.name), ARRAY[merge_customers.survivor, merge_customers.duplicate, mid]);
    IF n > 0 THEN
      moved := moved || jsonb_build_object(f.object, n);
    END IF;
  END LOOP;
  WITH m AS (UPDATE crm.external_ref r SET record_id = merge_customers.survivor WHERE r.object = 'customer' AND r.record_id = merge_customers.duplicate
             RETURNING r.source_system, r.external_id)
  INSERT INTO crm.customer_merge_ref (merge_id, source_system, external_id) SELECT mid, m.source_system, m.external_id FROM m;
  PERFORM crm._audit_event('MAINTENANCE', 'customer', merge_customers.survivor,
    jsonb_build_object('operation', 'merge_customers', 'merge_id', mid, 'duplicate', merge_customers.duplicate, 'moved', moved));
  RETURN mid;
END $$;
COMMENT ON FUNCTION crm.merge_customers(bigint, bigint, text) IS 'move every record referring to the duplicate, and its source ids, to the survivor; written down so that crm.unmerge_customers can undo it; returns the merge id';

CREATE FUNCTION crm.unmerge_customers(merge_id bigint)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m crm.customer_merge;
  mv record;
  n bigint := 0;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to undo a merge' USING ERRCODE = '42501';
  END IF;
  SELECT * INTO m FROM crm.customer_merge x WHERE x.id = merge_id FOR UPDATE;
  IF NOT FOUND OR m.undone_at IS NOT NULL THEN
    RAISE EXCEPTION 'merge % does not exist or was already undone', crm._short(merge_id) USING ERRCODE = '42704';
  END IF;
  FOR mv IN SELECT x.object, x.field, array_agg(x.record_id) AS ids FROM crm.customer_merge_move x WHERE x.merge_id = m.id GROUP BY 1, 2 LOOP
    n := n + crm._as_system(format('UPDATE crm_data.%I t SET %I = $1[1] WHERE t.%I = $1[2] AND t.id = ANY ($1[3:])',
                                   mv.object, mv.field, mv.field), ARRAY[m.duplicate, m.survivor] || mv.ids);
  END LOOP;
  UPDATE crm.external_ref r SET record_id = m.duplicate
    FROM crm.customer_merge_ref x WHERE x.merge_id = m.id AND r.object = 'customer' AND r.source_system = x.source_system
     AND r.external_id = x.external_id;
  UPDATE crm.customer_merge x SET undone_at = pg_catalog.now() WHERE x.id = m.id;
  PERFORM crm._audit_event('MAINTENANCE', 'customer', m.duplicate,
    jsonb_build_object('operation', 'unmerge_customers', 'merge_id', m.id, 'survivor', m.survivor, 'moved_back', n));
  RETURN n;
END $$;
COMMENT ON FUNCTION crm.unmerge_customers(bigint) IS 'undo a merge: the moved records and source ids go back to the duplicate; returns how many records moved back';

-- Retention per object: keep records so long after their creation, then delete or anonymise them.
CREATE TABLE crm.retention (
  object text PRIMARY KEY REFERENCES crm.object (name) ON DELETE CASCADE,
  keep   interval NOT NULL CHECK (keep > interval '0'),
  action text NOT NULL CHECK (action IN ('delete', 'anonymise'))
);
COMMENT ON TABLE crm.retention IS 'how long the law requires records of an object kept, and what happens after (crm.set_retention, applied by crm.run_due)';
SELECT pg_catalog.pg_extension_config_dump('crm.retention', '');

CREATE FUNCTION crm.set_retention(object text, keep interval, action text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to set retention' USING ERRCODE = '42501';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.object o WHERE o.name = set_retention.object) THEN
    RAISE EXCEPTION 'object "%" does not exist', crm._short(set_retention.object) USING ERRCODE = '42704';
  END IF;
  IF keep IS NULL OR keep <= interval '0' THEN
    RAISE EXCEPTION 'retention of % must be a positive interval', crm._short(set_retention.object) USING ERRCODE = '22023';
  END IF;
  IF action IS NULL OR action NOT IN ('delete', 'anonymise') THEN
    RAISE EXCEPTION 'retention action must be delete or anonymise, not %', crm._short(coalesce(quote_literal(action), 'NULL')) USING ERRCODE = '22023';
  END IF;
  INSERT INTO crm.retention VALUES (set_retention.object, keep, action)
    ON CONFLICT ON CONSTRAINT retention_pkey DO UPDATE SET keep = EXCLUDED.keep, action = EXCLUDED.action;
END $$;

-- UPDATE that blanks an object's personal and sensitive fields (required text: '[erased]', required
-- amounts: 0) for the records chosen by cond (over alias t, $1 the ids).
CREATE FUNCTION crm._anonymise_sql(obj text, cond text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT format('UPDATE crm_data.%I t SET %s WHERE %s AND (%s)', obj,
                string_agg(format('%I = %s', f.name,
                                  CASE WHEN NOT f.required THEN 'NULL'
                                       WHEN f.type IN ('text', 'picklist') THEN quote_literal('[erased]')
                                       WHEN f.type IN ('money', 'numeric', 'integer') THEN '0' END), ', '),
                cond,
                string_agg(format('t.%I IS DISTINCT FROM %s', f.name,
                                  CASE WHEN NOT f.required THEN 'NULL'
                                       WHEN f.type IN ('text', 'picklist') THEN quote_literal('[erased]')
                                       WHEN f.type IN ('money', 'numeric', 'integer') THEN '0' END), ' OR '))
    FROM crm.field f
   WHERE f.object = obj AND f.sensitivity IN ('personal', 'sensitive') AND f.type <> 'reference'
     AND (NOT f.required OR f.type IN ('text', 'picklist', 'money', 'numeric', 'integer'))
   HAVING count(*) > 0
$$;

CREATE FUNCTION crm.apply_retention(as_of timestamptz DEFAULT now())
RETURNS TABLE (object text, action text, records bigint) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r crm.retention; q text;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to apply retention' USING ERRCODE = '42501';
  END IF;
  FOR r IN SELECT * FROM crm.retention ORDER BY 1 LOOP
    object := r.object; action := r.action;
    IF r.action = 'delete' THEN
      records := crm._as_system(format('DELETE FROM crm_data.%I t WHERE t.created_at < to_timestamp($1[1]::double precision)', r.object),
                                ARRAY[extract(epoch FROM as_of - r.keep)::bigint]);
    ELSE
      q := crm._anonymise_sql(r.object, 't.created_at < to_timestamp($1[1]::double precision)');
      records := CASE WHEN q IS NULL THEN 0 ELSE crm._as_system(q, ARRAY[extract(epoch FROM as_of - r.keep)::bigint]) END;
    END IF;
    IF records > 0 THEN
      PERFORM crm._audit_event('MAINTENANCE', r.object, NULL,
        jsonb_build_object('operation', 'retention', 'action', r.action, 'keep', r.keep::text, 'records', records));
    END IF;
    RETURN NEXT;
  END LOOP;
END $$;
COMMENT ON FUNCTION crm.apply_retention(timestamptz) IS 'delete or anonymise the records older than their object''s retention (crm.run_due calls it); audited';

-- Erasure (PIPL): shred the customer's data key, blank its personal fields, and those of records
-- about it: records of objects the law keeps (a retention rule) stay, blanked, until retention
-- ends them; the others go now. The customer record stays, blanked, for what is kept.
CREATE FUNCTION crm.erase_subject(customer_id bigint, reason text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  f record;
  q text;
  n bigint;
  deleted jsonb := '{}';
  kept jsonb := '{}';
  res jsonb;
BEGIN
  IF NOT (crm._caller_has_role('crm_admin') OR crm._acting_has_role('compliance')) THEN
    RAISE EXCEPTION 'permission denied to erase customer %', crm._short(erase_subject.customer_id) USING ERRCODE = '42501',
      HINT = 'Erasure is for compliance principals and crm_admin.';
  END IF;
  IF reason IS NULL OR btrim(reason) = '' THEN
    RAISE EXCEPTION 'erasing customer % needs a reason', crm._short(erase_subject.customer_id) USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm_data.customer c WHERE c.id = erase_subject.customer_id) THEN
    RAISE EXCEPTION 'customer % does not exist', crm._short(erase_subject.customer_id) USING ERRCODE = '42704';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.data_key d WHERE d.subject = 'customer:' || erase_subject.customer_id AND d.wrapped IS NOT NULL) THEN
    PERFORM crm.forget_subject(erase_subject.customer_id, reason);
  END IF;
  FOR f IN SELECT x.object, x.name FROM crm.fields x WHERE x.type = 'reference' AND x.references_object = 'customer'
            ORDER BY x.object, x.position LOOP
    IF EXISTS (SELECT 1 FROM crm.retention r WHERE r.object = f.object) THEN
      q := crm._anonymise_sql(f.object, format('t.%I = $1[1]', f.name));
      n := CASE WHEN q IS NULL THEN 0 ELSE crm._as_system(q, ARRAY[erase_subject.customer_id]) END;
      kept := kept || jsonb_build_object(f.object, n);
    ELSE
      n := crm._as_system(format('DELETE FROM crm_data.%I t WHERE t.%I = $1[1]', f.object, f.name), ARRAY[erase_subject.customer_id]);
      deleted := deleted || jsonb_build_object(f.object, n);
    END IF;
  END LOOP;
  n := crm._as_system(crm._anonymise_sql('customer', 't.id = $1[1]'), ARRAY[erase_subject.customer_id]);
  res := jsonb_build_object('customer', erase_subject.customer_id, 'deleted', deleted, 'kept_anonymised', kept, 'customer_anonymised', n > 0);
  PERFORM crm._audit_event('MAINTENANCE', 'customer', erase_subject.customer_id,
    jsonb_build_object('operation', 'erase_subject', 'reason', reason) || res);
  RETURN res;
END $$;
COMMENT ON FUNCTION crm.erase_subject(bigint, text) IS 'erase a data subject: crypto-shred its key, blank its personal fields, delete records about it unless a retention rule keeps them (blanked); audited';
