------------------------------------------------------------------------------------------------
-- Record-level access: grants, shares, walls, and the row-level security policies built from them.
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm._caller_has_role(role name) RETURNS boolean
  LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_caller_has_role';
CREATE FUNCTION crm.check_condition(object text, condition text) RETURNS text
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_check_condition';
-- a checked condition compiled to SQL over alias t that resolves only built-in and crm objects
CREATE FUNCTION crm._condition_sql(object text, condition text) RETURNS text
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_condition_sql_fn';
CREATE FUNCTION crm.wall_excludes(wall text) RETURNS boolean
  LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_wall_excludes';
CREATE FUNCTION crm.wall_excludes_principal(wall text, principal bigint) RETURNS boolean
  LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_wall_excludes_principal';

-- The field through which an object follows its parent's access (a reference with inherit_access).
CREATE FUNCTION crm._parent_of(object text, OUT field text, OUT parent text)
  LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT f.name, f.options ->> 'object' FROM crm.field f
   WHERE f.object = $1 AND f.type = 'reference' AND (f.options ->> 'inherit_access')::boolean
   ORDER BY f.position LIMIT 1
$$;

-- (Re)build the policies of one managed table from what crm's catalogs say. Policies on managed
-- tables change only inside crm._apply_policies (C: copies.c), which opens the DDL guard for this
-- one table while it runs this; called any other way, its policy statements are refused.
CREATE FUNCTION crm._apply_policies(object text) RETURNS void
  LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'crm_apply_policies';
CREATE FUNCTION crm._build_policies(object text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  t text := format('crm_data.%I', object);
  par record;
  robj text;           -- whose read grants decide reads (the parent's, for a child)
  rkey text;           -- the column that shares of robj point at
  extra text := '';    -- principals named in the record (e.g. a task's assignee) may read it
  pol record;
  w record;
  arms text;
BEGIN
  SELECT * INTO par FROM crm._parent_of(object);
  IF par.field IS NOT NULL THEN
    robj := par.parent; rkey := quote_ident(par.field);
  ELSE
    robj := object; rkey := 'id';
  END IF;
  SELECT string_agg(format(' OR %I OPERATOR(pg_catalog.=) crm.current_principal()', f.name), '' ORDER BY f.position) INTO extra
    FROM crm.field f WHERE f.object = _build_policies.object AND f.type = 'reference'
     AND f.options ->> 'object' = 'principal' AND (f.options ->> 'grants_read')::boolean;
  FOR pol IN SELECT p.polname FROM pg_policy p WHERE p.polrelid = t::regclass AND p.polname LIKE 'crm\_%' LOOP
    EXECUTE format('DROP POLICY %I ON %s', pol.polname, t);
  END LOOP;

  arms := format('owner_id OPERATOR(pg_catalog.=) ANY (crm.acl_owners(%L, ''read'')) OR org_unit_id OPERATOR(pg_catalog.=) ANY (crm.acl_units(%L, ''read'')) OR %s OPERATOR(pg_catalog.=) ANY (crm.acl_records(%L, ''read''))%s',
                 robj, robj, rkey, robj, COALESCE(extra, ''));
  EXECUTE format('CREATE POLICY crm_read ON %s FOR SELECT USING (%s)', t, arms);
  EXECUTE format('CREATE POLICY crm_create ON %s FOR INSERT WITH CHECK (owner_id OPERATOR(pg_catalog.=) ANY (crm.acl_owners(%L, ''create'')) OR org_unit_id OPERATOR(pg_catalog.=) ANY (crm.acl_units(%L, ''create'')))',
                 t, object, object);
  arms := format('owner_id OPERATOR(pg_catalog.=) ANY (crm.acl_owners(%L, ''edit'')) OR org_unit_id OPERATOR(pg_catalog.=) ANY (crm.acl_units(%L, ''edit'')) OR %s OPERATOR(pg_catalog.=) ANY (crm.acl_records(%L, ''edit''))',
                 object, object, rkey, robj);
  EXECUTE format('CREATE POLICY crm_edit ON %s FOR UPDATE USING (%s) WITH CHECK (%s)', t, arms, arms);
  EXECUTE format('CREATE POLICY crm_delete ON %s FOR DELETE USING (owner_id OPERATOR(pg_catalog.=) ANY (crm.acl_owners(%L, ''delete'')) OR org_unit_id OPERATOR(pg_catalog.=) ANY (crm.acl_units(%L, ''delete'')))',
                 t, object, object);

  -- walls on this object, and on its parent (a child of a walled record is walled too)
  FOR w IN SELECT x.name, x.object, x.condition FROM crm.wall x
            WHERE x.object = _build_policies.object OR (par.field IS NOT NULL AND x.object = par.parent) ORDER BY x.name LOOP
    IF w.object = object THEN
      -- the condition is evaluated by C on the real values (the masking hook masks every other
      -- qual a principal's query carries, views' included)
      EXECUTE format('CREATE POLICY %I ON %s AS RESTRICTIVE FOR ALL USING (NOT (crm.wall_excludes(%L) AND crm._wall_matches(%L, id)))',
                     'crm_wall_' || w.name, t, w.name, w.name);
    ELSE
      -- the parent is itself behind the wall, so its condition is read past row security
      EXECUTE format('CREATE POLICY %I ON %s AS RESTRICTIVE FOR ALL USING (NOT (crm.wall_excludes(%L) AND crm._wall_matches(%L, %I)))',
                     'crm_wall_' || w.name, t, w.name, w.name, par.field);
    END IF;
  END LOOP;
END $$;

-- Does the wall's condition hold for this record of the wall's object? (walls on a parent, for its
-- children). C: real values, past row security, only for records within the caller's reach.
CREATE FUNCTION crm._wall_matches(wall text, record_id bigint) RETURNS boolean
  LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_wall_matches';

-- When a record changes owner or unit, the records that follow it change with it.
CREATE FUNCTION crm._cascade_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE c record;
BEGIN
  FOR c IN SELECT f.object, f.name FROM crm.field f
            WHERE f.type = 'reference' AND f.options ->> 'object' = TG_TABLE_NAME AND (f.options ->> 'inherit_access')::boolean LOOP
    EXECUTE format('UPDATE crm_data.%I SET owner_id = $1, org_unit_id = $2 WHERE %I = $3 AND (owner_id, org_unit_id) IS DISTINCT FROM ($1, $2)',
                   c.object, c.name) USING NEW.owner_id, NEW.org_unit_id, NEW.id;
  END LOOP;
  RETURN NULL;
END $$;

CREATE FUNCTION crm._check_privileges(privileges text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE p text;
BEGIN
  IF privileges IS NULL OR cardinality(privileges) = 0 THEN
    RAISE EXCEPTION 'no privileges given' USING ERRCODE = '22023', HINT = 'Privileges are read, create, edit and delete.';
  END IF;
  FOREACH p IN ARRAY privileges LOOP
    IF p IS NULL OR p NOT IN ('read', 'create', 'edit', 'delete') THEN
      RAISE EXCEPTION 'unknown privilege "%"', crm._short(p) USING ERRCODE = '22023', HINT = 'Privileges are read, create, edit and delete.';
    END IF;
  END LOOP;
  RETURN ARRAY(SELECT DISTINCT x FROM unnest(privileges) x ORDER BY 1);
END $$;

CREATE FUNCTION crm.grant_object(role text, object text, privileges text[], scope text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM crm.role r WHERE r.name = grant_object.role) THEN
    RAISE EXCEPTION 'CRM role "%" does not exist', crm._short(grant_object.role) USING ERRCODE = '42704';
  END IF;
  IF grant_object.object IS DISTINCT FROM '*' THEN
    PERFORM crm._object_exists(grant_object.object);
  END IF;
  IF grant_object.scope IS NULL OR grant_object.scope NOT IN ('own', 'team', 'org_unit', 'all') THEN
    RAISE EXCEPTION 'invalid scope "%"', crm._short(grant_object.scope) USING ERRCODE = '22023',
      HINT = 'Scopes are own, team, org_unit and all.';
  END IF;
  INSERT INTO crm.object_grant (role, object, privilege, scope)
    SELECT grant_object.role, grant_object.object, p, grant_object.scope FROM unnest(crm._check_privileges(privileges)) p
    ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION crm.revoke_object(role text, object text, privileges text[], scope text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM crm.role r WHERE r.name = revoke_object.role) THEN
    RAISE EXCEPTION 'CRM role "%" does not exist', crm._short(revoke_object.role) USING ERRCODE = '42704';
  END IF;
  IF revoke_object.object IS DISTINCT FROM '*' THEN
    PERFORM crm._object_exists(revoke_object.object);
  END IF;
  DELETE FROM crm.object_grant g
   WHERE g.role = revoke_object.role AND g.object = revoke_object.object
     AND g.privilege = ANY (crm._check_privileges(privileges))
     AND (revoke_object.scope IS NULL OR g.scope = revoke_object.scope);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- 'principal:<id>', 'unit:<id>' or a principal's login
CREATE FUNCTION crm._share_target(target text, OUT principal_id bigint, OUT org_unit_id bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF target ~ '^principal:[0-9]{1,18}$' THEN
    principal_id := substr(target, 11)::bigint;
    IF NOT EXISTS (SELECT 1 FROM crm.principal p WHERE p.id = principal_id AND p.active) THEN
      RAISE EXCEPTION 'principal % does not exist or is deactivated', crm._short(principal_id) USING ERRCODE = '42704';
    END IF;
  ELSIF target ~ '^unit:[0-9]{1,18}$' THEN
    org_unit_id := substr(target, 6)::bigint;
    IF NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = org_unit_id) THEN
      RAISE EXCEPTION 'org unit % does not exist', crm._short(org_unit_id) USING ERRCODE = '42704';
    END IF;
  ELSE
    SELECT p.id INTO principal_id FROM crm.principal p WHERE p.login = target AND p.active;
    IF principal_id IS NULL THEN
      RAISE EXCEPTION 'no active principal or org unit "%"', crm._short(target) USING ERRCODE = '42704',
        HINT = 'Share with ''principal:<id>'', ''unit:<id>'' or a principal''s login.';
    END IF;
  END IF;
END $$;

-- May the caller edit this record (it must, to share it)? crm_admin always may.
CREATE FUNCTION crm._may_share(object text, record_id bigint) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE ok boolean;
BEGIN
  IF crm._caller_has_role('crm_admin') THEN RETURN true; END IF;
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM crm_data.%I t WHERE t.id = $1 AND (t.owner_id = ANY (crm.acl_owners($2, ''edit''))
                    OR t.org_unit_id = ANY (crm.acl_units($2, ''edit'')) OR t.id = ANY (crm.acl_records($2, ''edit''))))', object)
    INTO ok USING record_id, object;
  -- a wall that keeps the caller out of the record keeps it from sharing it too
  IF ok AND EXISTS (SELECT 1 FROM crm.wall w WHERE w.object = _may_share.object
                      AND crm.wall_excludes(w.name) AND crm._wall_matches(w.name, record_id)) THEN
    RETURN false;
  END IF;
  RETURN ok;
END $$;

CREATE FUNCTION crm.share(object text, record_id bigint, principal_or_unit text, access text DEFAULT 'read',
                          expires_at timestamptz DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE tgt record; new_id bigint; exists_ boolean;
BEGIN
  PERFORM crm._object_exists(share.object);
  IF share.access IS NULL OR share.access NOT IN ('read', 'edit') THEN
    RAISE EXCEPTION 'invalid access "%"', crm._short(share.access) USING ERRCODE = '22023', HINT = 'A share gives read or edit access.';
  END IF;
  IF share.reason IS NULL OR btrim(share.reason) = '' THEN
    RAISE EXCEPTION 'a share needs a reason' USING ERRCODE = '22023', HINT = 'Say why, e.g. ''covering for a colleague on leave''.';
  END IF;
  IF share.expires_at IS NOT NULL AND share.expires_at <= now() THEN
    RAISE EXCEPTION 'expiry % is not in the future', crm._short(share.expires_at) USING ERRCODE = '22023';
  END IF;
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM crm_data.%I WHERE id = $1)', share.object) INTO exists_ USING share.record_id;
  IF NOT exists_ OR NOT crm._may_share(share.object, share.record_id) THEN
    RAISE EXCEPTION 'permission denied to share record % of object "%"', crm._short(share.record_id), crm._short(share.object) USING ERRCODE = '42501',
      DETAIL = 'Only those who may edit a record can share it.';
  END IF;
  tgt := crm._share_target(principal_or_unit);
  INSERT INTO crm.record_share (object, record_id, principal_id, org_unit_id, access, expires_at, reason, created_by)
    VALUES (share.object, share.record_id, tgt.principal_id, tgt.org_unit_id, share.access, share.expires_at, share.reason,
            crm.current_principal())
    RETURNING id INTO new_id;
  RETURN new_id;
END $$;

CREATE FUNCTION crm.unshare(object text, record_id bigint, principal_or_unit text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE tgt record; n bigint;
BEGIN
  PERFORM crm._object_exists(unshare.object);
  IF NOT crm._may_share(unshare.object, unshare.record_id) THEN
    RAISE EXCEPTION 'permission denied to unshare record % of object "%"', crm._short(unshare.record_id), crm._short(unshare.object) USING ERRCODE = '42501';
  END IF;
  tgt := crm._share_target(principal_or_unit);
  DELETE FROM crm.record_share s
   WHERE s.object = unshare.object AND s.record_id = unshare.record_id
     AND s.principal_id IS NOT DISTINCT FROM tgt.principal_id AND s.org_unit_id IS NOT DISTINCT FROM tgt.org_unit_id;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

CREATE FUNCTION crm.add_wall(name text, object text, condition text, principals bigint[] DEFAULT '{}',
                             org_units bigint[] DEFAULT '{}', roles text[] DEFAULT '{}', reason text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n text := crm.check_name('wall', add_wall.name); child record; bad text;
BEGIN
  PERFORM crm._object_exists(add_wall.object);
  IF EXISTS (SELECT 1 FROM crm.wall w WHERE w.name = n) THEN
    RAISE EXCEPTION 'wall "%" already exists', crm._short(n) USING ERRCODE = '42710';
  END IF;
  PERFORM crm.check_condition(add_wall.object, add_wall.condition);
  IF COALESCE(cardinality(principals), 0) + COALESCE(cardinality(org_units), 0) + COALESCE(cardinality(roles), 0) = 0 THEN
    RAISE EXCEPTION 'wall "%" excludes nobody', crm._short(n) USING ERRCODE = '22023',
      HINT = 'Name the principals, org units or CRM roles it keeps out.';
  END IF;
  SELECT string_agg(x::text, ', ') INTO bad FROM unnest(principals) x WHERE NOT EXISTS (SELECT 1 FROM crm.principal p WHERE p.id = x);
  IF bad IS NOT NULL THEN RAISE EXCEPTION 'principal % does not exist', crm._short(bad) USING ERRCODE = '42704'; END IF;
  SELECT string_agg(x::text, ', ') INTO bad FROM unnest(org_units) x WHERE NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = x);
  IF bad IS NOT NULL THEN RAISE EXCEPTION 'org unit % does not exist', crm._short(bad) USING ERRCODE = '42704'; END IF;
  SELECT string_agg(x, ', ') INTO bad FROM unnest(roles) x WHERE NOT EXISTS (SELECT 1 FROM crm.role r WHERE r.name = x);
  IF bad IS NOT NULL THEN RAISE EXCEPTION 'CRM role "%" does not exist', crm._short(bad) USING ERRCODE = '42704'; END IF;
  INSERT INTO crm.wall (name, object, condition, principals, org_units, roles, reason)
    VALUES (n, add_wall.object, add_wall.condition, COALESCE(principals, '{}'), COALESCE(org_units, '{}'), COALESCE(roles, '{}'), add_wall.reason);
  PERFORM crm._apply_policies(add_wall.object);
  FOR child IN SELECT DISTINCT f.object FROM crm.field f WHERE f.type = 'reference' AND f.options ->> 'object' = add_wall.object
                 AND (f.options ->> 'inherit_access')::boolean LOOP
    PERFORM crm._apply_policies(child.object);
  END LOOP;
  RETURN n;
END $$;

CREATE FUNCTION crm.drop_wall(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE w crm.wall; child record;
BEGIN
  DELETE FROM crm.wall x WHERE x.name = drop_wall.name RETURNING * INTO w;
  IF w.name IS NULL THEN
    RAISE EXCEPTION 'wall "%" does not exist', crm._short(drop_wall.name) USING ERRCODE = '42704';
  END IF;
  PERFORM crm._apply_policies(w.object);
  FOR child IN SELECT DISTINCT f.object FROM crm.field f WHERE f.type = 'reference' AND f.options ->> 'object' = w.object
                 AND (f.options ->> 'inherit_access')::boolean LOOP
    PERFORM crm._apply_policies(child.object);
  END LOOP;
END $$;

-- Why can (or can't) a principal reach a record? One row per privilege, with the reasons.
CREATE FUNCTION crm.explain_access(principal bigint, object text, record_id bigint)
RETURNS TABLE (privilege text, allowed boolean, because text[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  -- walls are compiled SQL: read them back in the environment they were written in
  SET standard_conforming_strings = on SET datestyle = 'ISO, MDY' SET intervalstyle = 'postgres'
  SET transform_null_equals = off SET array_nulls = on AS $$
DECLARE
  par record; rec record; a record; w record; s record;
  priv text; obj text; keyval bigint; assignee boolean := false;
  reasons text[]; reach boolean; walled boolean; hit boolean; privileged boolean;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') AND NOT crm._caller_has_role('crm_auditor')
     AND crm.current_principal() IS DISTINCT FROM explain_access.principal THEN
    RAISE EXCEPTION 'permission denied to explain another principal''s access' USING ERRCODE = '42501',
      HINT = 'crm_admin and crm_auditor may explain anyone''s access; principals their own.';
  END IF;
  PERFORM crm._principal_exists(explain_access.principal);
  PERFORM crm._object_exists(explain_access.object);
  SELECT * INTO par FROM crm._parent_of(explain_access.object);
  EXECUTE format('SELECT t.owner_id, t.org_unit_id, %s AS parent_key FROM crm_data.%I t WHERE t.id = $1',
                 CASE WHEN par.field IS NULL THEN 't.id' ELSE format('t.%I', par.field) END, explain_access.object)
    INTO rec USING explain_access.record_id;
  privileged := crm._caller_has_role('crm_admin') OR crm._caller_has_role('crm_auditor');
  -- a principal asking about itself learns nothing about records it cannot read, not even whether
  -- they exist, whom they belong to or which walls their hidden fields trip
  IF NOT privileged AND (rec.owner_id IS NULL OR NOT (
       rec.owner_id = ANY (crm.acl_owners(COALESCE(par.parent, explain_access.object), 'read'))
       OR rec.org_unit_id = ANY (crm.acl_units(COALESCE(par.parent, explain_access.object), 'read'))
       OR rec.parent_key = ANY (crm.acl_records(COALESCE(par.parent, explain_access.object), 'read')))
     -- a record behind a wall that keeps the caller out is one it cannot read either
     OR EXISTS (SELECT 1 FROM crm.wall x WHERE x.object IN (explain_access.object, par.parent)
                 AND crm.wall_excludes_principal(x.name, explain_access.principal)
                 AND crm._condition_holds(x.object, CASE WHEN x.object = explain_access.object THEN explain_access.record_id ELSE rec.parent_key END,
                                          crm._condition_sql(x.object, x.condition)))) THEN
    FOREACH priv IN ARRAY ARRAY['read', 'create', 'edit', 'delete'] LOOP
      privilege := priv; allowed := false; because := ARRAY['you cannot read this record'];
      RETURN NEXT;
    END LOOP;
    RETURN;
  END IF;
  IF rec.owner_id IS NULL THEN
    RAISE EXCEPTION 'record % of object "%" does not exist', crm._short(explain_access.record_id), crm._short(explain_access.object) USING ERRCODE = '42704';
  END IF;
  FOREACH priv IN ARRAY ARRAY['read', 'create', 'edit', 'delete'] LOOP
    obj := CASE WHEN priv = 'read' AND par.field IS NOT NULL THEN par.parent ELSE explain_access.object END;
    keyval := CASE WHEN par.field IS NOT NULL THEN rec.parent_key ELSE explain_access.record_id END;
    a := crm.acl_for(explain_access.principal, obj, priv);
    reasons := ARRAY(
      SELECT format('role %s grants %s on %s at scope %s', g.role, g.privilege, g.object, g.scope)
        FROM crm.object_grant g JOIN crm.principal_role pr ON pr.role = g.role
       WHERE pr.principal_id = explain_access.principal AND g.object IN (obj, '*') AND g.privilege = priv
       ORDER BY g.role, g.object, g.scope);
    IF cardinality(reasons) = 0 THEN
      reasons := ARRAY[format('no CRM role of principal %s grants %s on %s', explain_access.principal, priv, obj)];
    END IF;
    IF par.field IS NOT NULL AND priv = 'read' THEN
      reasons := reasons || format('a %s follows its %s (field %s): reads are decided by access to %s %s', explain_access.object, par.parent, par.field, par.parent, keyval);
    END IF;
    reach := false;
    IF rec.owner_id = ANY (a.owners) THEN
      reach := true;
      reasons := reasons || CASE WHEN rec.owner_id = explain_access.principal THEN format('the record''s owner is principal %s itself', rec.owner_id)
                                 ELSE format('the record''s owner %s reports to principal %s (team scope)', rec.owner_id, explain_access.principal) END;
    END IF;
    IF rec.org_unit_id = ANY (a.units) THEN
      reach := true;
      reasons := reasons || format('the record''s org unit %s is within reach (org_unit or all scope, or the object''s sharing %s)',
                                   rec.org_unit_id, (SELECT o.sharing FROM crm.object o WHERE o.name = obj));
    END IF;
    IF keyval = ANY (a.records) THEN
      reach := true;
      FOR s IN SELECT * FROM crm.record_share x WHERE x.object = obj AND x.record_id = keyval
                 AND (x.expires_at IS NULL OR x.expires_at > statement_timestamp())
                 AND (privileged OR x.principal_id = explain_access.principal OR x.org_unit_id IN (
                        WITH RECURSIVE up(id) AS (SELECT p.org_unit_id FROM crm.principal p WHERE p.id = explain_access.principal
                                                  UNION SELECT u.parent_id FROM crm.org_unit u JOIN up ON u.id = up.id WHERE u.parent_id IS NOT NULL)
                        SELECT up.id FROM up)) LOOP
        reasons := reasons || format('share %s gives %s access to %s, until %s, because: %s',
                                     s.id, s.access, COALESCE('principal ' || s.principal_id, 'org unit ' || s.org_unit_id),
                                     COALESCE(s.expires_at::text, 'revoked'), s.reason);
      END LOOP;
    END IF;
    IF priv = 'read' THEN
      FOR w IN SELECT f.name FROM crm.field f WHERE f.object = explain_access.object AND f.type = 'reference'
                 AND f.options ->> 'object' = 'principal' AND (f.options ->> 'grants_read')::boolean LOOP
        EXECUTE format('SELECT %I = $2 FROM crm_data.%I WHERE id = $1', w.name, explain_access.object)
          INTO hit USING explain_access.record_id, explain_access.principal;
        IF hit THEN
          reach := true;
          reasons := reasons || format('principal %s is named in field %s', explain_access.principal, w.name);
        END IF;
      END LOOP;
    END IF;
    IF NOT reach THEN
      reasons := reasons || 'no grant scope, sharing or share reaches this record'::text;
    END IF;
    walled := false;
    FOR w IN SELECT x.* FROM crm.wall x WHERE x.object IN (explain_access.object, par.parent) ORDER BY x.name LOOP
      IF crm.wall_excludes_principal(w.name, explain_access.principal) THEN
        hit := crm._condition_holds(w.object, CASE WHEN w.object = explain_access.object THEN explain_access.record_id ELSE rec.parent_key END,
                                    crm._condition_sql(w.object, w.condition));
        IF hit THEN
          walled := true;
          reasons := reasons || format('wall %s (%s) keeps principal %s out of records where %s', w.name,
                                       COALESCE(w.reason, 'no reason given'), explain_access.principal, w.condition);
        END IF;
      END IF;
    END LOOP;
    privilege := priv;
    allowed := reach AND NOT walled;
    because := reasons;
    RETURN NEXT;
  END LOOP;
END $$;

-- Who can reach how many records of each object, for the principals of an org unit and below.
CREATE FUNCTION crm.access_review(org_unit_id bigint)
RETURNS TABLE (principal_id bigint, login text, display_name text, org_unit text, roles text[], object text,
               can_read bigint, can_edit bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  -- walls are compiled SQL: read them back in the environment they were written in
  SET standard_conforming_strings = on SET datestyle = 'ISO, MDY' SET intervalstyle = 'postgres'
  SET transform_null_equals = off SET array_nulls = on AS $$
DECLARE p record; o record; par record; r record; e record; walls text;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') AND NOT crm._caller_has_role('crm_auditor') THEN
    RAISE EXCEPTION 'permission denied for access review' USING ERRCODE = '42501', HINT = 'Access reviews are for crm_admin and crm_auditor.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = access_review.org_unit_id) THEN
    RAISE EXCEPTION 'org unit % does not exist', crm._short(access_review.org_unit_id) USING ERRCODE = '42704';
  END IF;
  FOR p IN WITH RECURSIVE sub(id) AS (SELECT access_review.org_unit_id UNION SELECT u.id FROM crm.org_unit u JOIN sub ON u.parent_id = sub.id)
           SELECT x.* FROM crm.principals x WHERE x.org_unit_id IN (SELECT sub.id FROM sub) AND x.active ORDER BY x.id LOOP
    FOR o IN SELECT x.name FROM crm.object x ORDER BY x.name LOOP
      SELECT * INTO par FROM crm._parent_of(o.name);
      r := crm.acl_for(p.id, COALESCE(par.parent, o.name), 'read');
      e := crm.acl_for(p.id, o.name, 'edit');
      -- a condition that is NULL for a record does not wall it (as crm._wall_matches decides)
      SELECT string_agg(format(' AND NOT coalesce((%s), false)', crm._condition_sql(w.object, w.condition)), '') INTO walls FROM crm.wall w
       WHERE w.object = o.name AND crm.wall_excludes_principal(w.name, p.id);
      EXECUTE format('SELECT count(*) FILTER (WHERE owner_id = ANY ($1) OR org_unit_id = ANY ($2) OR %1$s = ANY ($3)),
                             count(*) FILTER (WHERE owner_id = ANY ($4) OR org_unit_id = ANY ($5) OR %1$s = ANY ($6))
                        FROM crm_data.%2$I t WHERE true %3$s',
                     COALESCE(quote_ident(par.field), 'id'), o.name, COALESCE(walls, ''))
        INTO can_read, can_edit USING r.owners, r.units, r.records, e.owners, e.units, e.records;
      principal_id := p.id; login := p.login; display_name := p.display_name; org_unit := p.org_unit;
      roles := p.roles; object := o.name;
      RETURN NEXT;
    END LOOP;
  END LOOP;
END $$;
