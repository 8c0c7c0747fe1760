------------------------------------------------------------------------------------------------
-- Field-level access: per (object, field, CRM role) a level, write > read > masked > hidden, with
-- an optional different level for records in the principal's own book.
------------------------------------------------------------------------------------------------
CREATE TABLE crm.field_access (
  object    text NOT NULL,
  field     text NOT NULL,
  role      text NOT NULL REFERENCES crm.role (name) ON UPDATE CASCADE ON DELETE CASCADE,
  level     text NOT NULL CHECK (level IN ('write', 'read', 'masked', 'hidden')),
  own_level text CHECK (own_level IN ('write', 'read', 'masked', 'hidden')),
  PRIMARY KEY (object, field, role),
  FOREIGN KEY (object, field) REFERENCES crm.field (object, name) ON DELETE CASCADE
);
COMMENT ON TABLE crm.field_access IS 'field levels per CRM role (write > read > masked > hidden); own_level applies to records the principal owns';
SELECT pg_catalog.pg_extension_config_dump('crm.field_access', '');
CREATE TRIGGER crm_acl_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON crm.field_access
  FOR EACH STATEMENT EXECUTE FUNCTION crm._acl_changed();
ALTER TABLE crm.field_access ENABLE ALWAYS TRIGGER crm_acl_changed;
CREATE TRIGGER crm_acl_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON crm.field
  FOR EACH STATEMENT EXECUTE FUNCTION crm._acl_changed();
ALTER TABLE crm.field ENABLE ALWAYS TRIGGER crm_acl_changed;

-- These helpers have SQL-standard bodies (parsed when created, so no search_path applies) and no
-- SET clause, so the planner inlines them: the field-level query is planned once per session.
CREATE FUNCTION crm._level_rank(level text) RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN CASE level WHEN 'hidden' THEN 0 WHEN 'masked' THEN 1 WHEN 'read' THEN 2 WHEN 'write' THEN 3 END;
CREATE FUNCTION crm._level_name(rank integer) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN (ARRAY['hidden', 'masked', 'read', 'write'])[rank + 1];

-- Effective levels of every field of an object for a principal: the highest over its CRM roles.
CREATE FUNCTION crm._field_levels(principal bigint, object text)
RETURNS TABLE (field text, level text, own_level text, mask text, type text)
LANGUAGE sql STABLE
BEGIN ATOMIC
  SELECT f.name,
         crm._level_name(COALESCE(max(crm._level_rank(COALESCE(fa.level, d.level))), 0)),
         crm._level_name(COALESCE(max(crm._level_rank(COALESCE(fa.own_level, fa.level, d.own_level))), 0)),
         COALESCE(f.mask, 'full'), f.type
    FROM crm.field f
    LEFT JOIN crm.principal_role pr ON pr.principal_id = $1
           AND EXISTS (SELECT 1 FROM crm.principal p WHERE p.id = $1 AND p.active)
    LEFT JOIN crm.field_access fa ON fa.object = f.object AND fa.field = f.name AND fa.role = pr.role
    -- the default when no field_access row says otherwise: everything is writable except sensitive
    -- fields, masked outside one's own book, readable for compliance and auditors, writable for admins
    LEFT JOIN LATERAL (SELECT CASE WHEN f.sensitivity <> 'sensitive' OR pr.role = 'admin' THEN 'write'
                                   WHEN pr.role IN ('compliance', 'auditor') THEN 'read' ELSE 'masked' END AS level,
                              CASE WHEN f.sensitivity <> 'sensitive' OR pr.role = 'admin' THEN 'write'
                                   WHEN pr.role IN ('compliance', 'auditor') THEN 'read' ELSE 'write' END AS own_level) d
           ON pr.role IS NOT NULL
   WHERE f.object = $2
   GROUP BY f.name, f.mask, f.type, f.position
   ORDER BY f.position
; END;

CREATE FUNCTION crm.set_field_access(object text, field text, role text, level text, own_level text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM crm._object_exists(set_field_access.object);
  IF NOT EXISTS (SELECT 1 FROM crm.field f WHERE f.object = set_field_access.object AND f.name = set_field_access.field) THEN
    RAISE EXCEPTION 'field %.% does not exist', crm._short(set_field_access.object), crm._short(set_field_access.field) USING ERRCODE = '42703',
      HINT = 'Standard columns (id, owner_id, ...) are always readable; field levels apply to the object''s own fields.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.role r WHERE r.name = set_field_access.role) THEN
    RAISE EXCEPTION 'CRM role "%" does not exist', crm._short(set_field_access.role) USING ERRCODE = '42704';
  END IF;
  IF set_field_access.level IS NULL OR crm._level_rank(set_field_access.level) IS NULL THEN
    RAISE EXCEPTION 'invalid field level "%"', crm._short(set_field_access.level) USING ERRCODE = '22023',
      HINT = 'Levels are write, read, masked and hidden.';
  END IF;
  IF set_field_access.own_level IS NOT NULL AND crm._level_rank(set_field_access.own_level) IS NULL THEN
    RAISE EXCEPTION 'invalid field level "%" for own records', crm._short(set_field_access.own_level) USING ERRCODE = '22023',
      HINT = 'Levels are write, read, masked and hidden.';
  END IF;
  INSERT INTO crm.field_access (object, field, role, level, own_level)
    VALUES (set_field_access.object, set_field_access.field, set_field_access.role, set_field_access.level, set_field_access.own_level)
    ON CONFLICT ON CONSTRAINT field_access_pkey DO UPDATE SET level = EXCLUDED.level, own_level = EXCLUDED.own_level;
END $$;

CREATE FUNCTION crm.reset_field_access(object text, field text, role text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM crm.field_access fa
   WHERE fa.object = reset_field_access.object AND fa.field = reset_field_access.field AND fa.role = reset_field_access.role;
  RETURN FOUND;
END $$;

-- The effective level of every field of an object for a principal (admins and auditors; principals themselves).
CREATE FUNCTION crm.field_levels(principal bigint, object text)
RETURNS TABLE (field text, level text, own_level text, mask text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT crm._caller_has_role('crm_admin') AND NOT crm._caller_has_role('crm_auditor')
     AND crm.current_principal() IS DISTINCT FROM field_levels.principal THEN
    RAISE EXCEPTION 'permission denied to list another principal''s field levels' USING ERRCODE = '42501';
  END IF;
  PERFORM crm._principal_exists(field_levels.principal);
  PERFORM crm._object_exists(field_levels.object);
  RETURN QUERY SELECT l.field, l.level, l.own_level, l.mask FROM crm._field_levels(field_levels.principal, field_levels.object) l;
END $$;

-- The field write guard (C): writing a field below 'write' level is refused, naming the field.
CREATE FUNCTION crm.guard() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'crm_guard';

CREATE FUNCTION crm._write_denied(anyelement, object text, field text) RETURNS anyelement
  LANGUAGE c VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_write_denied';
