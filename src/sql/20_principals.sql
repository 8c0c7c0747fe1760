------------------------------------------------------------------------------------------------
-- Admin API: org tree, CRM roles and principals. For crm_admin. Each call is one statement, so
-- a refused call leaves nothing behind.
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm.add_org_unit(name text, parent_id bigint DEFAULT NULL, kind text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  k text := COALESCE(add_org_unit.kind, CASE WHEN add_org_unit.parent_id IS NULL THEN 'head_office' ELSE 'team' END);
  new_id bigint;
BEGIN
  IF add_org_unit.name IS NULL OR btrim(add_org_unit.name) = '' THEN
    RAISE EXCEPTION 'org unit name must not be empty' USING ERRCODE = '22023';
  END IF;
  IF k NOT IN ('head_office', 'branch', 'sub_branch', 'team') THEN
    RAISE EXCEPTION 'invalid org unit kind "%"', crm._short(k) USING ERRCODE = '22023',
      HINT = 'Kinds are head_office, branch, sub_branch and team.';
  END IF;
  IF add_org_unit.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = add_org_unit.parent_id) THEN
    RAISE EXCEPTION 'org unit % does not exist', crm._short(add_org_unit.parent_id) USING ERRCODE = '42704';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.org_unit u WHERE COALESCE(u.parent_id, 0) = COALESCE(add_org_unit.parent_id, 0) AND u.name = add_org_unit.name) THEN
    RAISE EXCEPTION 'org unit "%" already exists under %', crm._short(add_org_unit.name),
      crm._short(COALESCE('org unit ' || add_org_unit.parent_id, 'the root')) USING ERRCODE = '42710';
  END IF;
  INSERT INTO crm.org_unit (name, kind, parent_id) VALUES (add_org_unit.name, k, add_org_unit.parent_id)
    RETURNING id INTO new_id;
  RETURN new_id;
END $$;

CREATE FUNCTION crm.move_org_unit(unit_id bigint, new_parent_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = move_org_unit.unit_id) THEN
    RAISE EXCEPTION 'org unit % does not exist', crm._short(move_org_unit.unit_id) USING ERRCODE = '42704';
  END IF;
  IF move_org_unit.new_parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = move_org_unit.new_parent_id) THEN
    RAISE EXCEPTION 'org unit % does not exist', crm._short(move_org_unit.new_parent_id) USING ERRCODE = '42704';
  END IF;
  IF move_org_unit.new_parent_id IN (
       WITH RECURSIVE below(id) AS (
         SELECT move_org_unit.unit_id
         UNION SELECT u.id FROM crm.org_unit u JOIN below b ON u.parent_id = b.id)
       SELECT id FROM below) THEN
    RAISE EXCEPTION 'cannot move org unit % under %, which is the unit itself or below it',
      crm._short(move_org_unit.unit_id), crm._short(move_org_unit.new_parent_id) USING ERRCODE = '42P17';
  END IF;
  UPDATE crm.org_unit u SET parent_id = move_org_unit.new_parent_id WHERE u.id = move_org_unit.unit_id;
END $$;

CREATE FUNCTION crm.add_role(name text, label text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n text := crm.check_name('role', add_role.name);
BEGIN
  IF EXISTS (SELECT 1 FROM crm.role r WHERE r.name = n) THEN
    RAISE EXCEPTION 'CRM role "%" already exists', crm._short(n) USING ERRCODE = '42710';
  END IF;
  INSERT INTO crm.role (name, label) VALUES (n, COALESCE(NULLIF(btrim(add_role.label), ''), initcap(replace(n, '_', ' '))));
  RETURN n;
END $$;

CREATE FUNCTION crm.drop_role(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r crm.role;
BEGIN
  SELECT * INTO r FROM crm.role x WHERE x.name = drop_role.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'CRM role "%" does not exist', crm._short(drop_role.name) USING ERRCODE = '42704';
  END IF;
  IF r.builtin THEN
    RAISE EXCEPTION 'CRM role "%" is built in and cannot be dropped', crm._short(r.name) USING ERRCODE = '42501';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.principal_role pr WHERE pr.role = r.name) THEN
    RAISE EXCEPTION 'CRM role "%" is still held by principals', crm._short(r.name) USING ERRCODE = '2BP01',
      HINT = 'Take it away with crm.set_principal_roles() first.';
  END IF;
  DELETE FROM crm.role x WHERE x.name = r.name;
END $$;

-- Roles must exist and be listed once; returns them sorted.
CREATE FUNCTION crm._check_roles(roles text[])
RETURNS text[] LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE r text;
BEGIN
  IF roles IS NULL OR cardinality(roles) = 0 THEN
    RAISE EXCEPTION 'a principal needs at least one CRM role' USING ERRCODE = '22023';
  END IF;
  FOREACH r IN ARRAY roles LOOP
    IF r IS NULL OR NOT EXISTS (SELECT 1 FROM crm.role x WHERE x.name = r) THEN
      RAISE EXCEPTION 'CRM role "%" does not exist', crm._short(r) USING ERRCODE = '42704',
        HINT = 'See crm.role for the roles; crm.add_role() adds one.';
    END IF;
  END LOOP;
  RETURN ARRAY(SELECT DISTINCT x FROM unnest(roles) x ORDER BY 1);
END $$;

CREATE FUNCTION crm._check_manager(p_principal bigint, p_manager bigint)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF p_manager IS NULL THEN RETURN; END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.principal p WHERE p.id = p_manager AND p.active) THEN
    RAISE EXCEPTION 'manager % is not an active principal', crm._short(p_manager) USING ERRCODE = '42704';
  END IF;
  IF p_principal IS NOT NULL AND p_principal IN (
       WITH RECURSIVE up(id) AS (
         SELECT p_manager
         UNION SELECT p.manager_id FROM crm.principal p JOIN up ON p.id = up.id WHERE p.manager_id IS NOT NULL)
       SELECT up.id FROM up) THEN
    RAISE EXCEPTION 'principal % cannot report to %: that would make a reporting cycle', crm._short(p_principal), crm._short(p_manager)
      USING ERRCODE = '42P17';
  END IF;
END $$;

CREATE FUNCTION crm.add_principal(login text, display_name text, org_unit_id bigint,
                                  roles text[] DEFAULT ARRAY['rm'], manager_id bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  rs text[];
  new_id bigint;
BEGIN
  IF add_principal.login IS NULL OR NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = add_principal.login) THEN
    RAISE EXCEPTION 'role "%" does not exist', crm._short(add_principal.login) USING ERRCODE = '42704',
      HINT = 'A principal is tied to an existing PostgreSQL login role: CREATE ROLE ... LOGIN first.';
  END IF;
  IF add_principal.login IN ('crm_user', 'crm_app', 'crm_auditor', 'crm_admin')
     OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = add_principal.login AND (r.rolsuper OR r.rolbypassrls)) THEN
    RAISE EXCEPTION 'role "%" cannot be a principal', crm._short(add_principal.login) USING ERRCODE = '42501',
      DETAIL = 'Superusers, BYPASSRLS roles and crm''s group roles bypass or define the rules principals are held to.';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.principal p WHERE p.login = add_principal.login) THEN
    RAISE EXCEPTION 'role "%" is already a principal', crm._short(add_principal.login) USING ERRCODE = '42710';
  END IF;
  IF add_principal.display_name IS NULL OR btrim(add_principal.display_name) = '' THEN
    RAISE EXCEPTION 'display name of principal "%" must not be empty', crm._short(add_principal.login) USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = add_principal.org_unit_id) THEN
    RAISE EXCEPTION 'org unit % does not exist', crm._short(add_principal.org_unit_id) USING ERRCODE = '42704';
  END IF;
  rs := crm._check_roles(add_principal.roles);
  PERFORM crm._check_manager(NULL, add_principal.manager_id);
  INSERT INTO crm.principal (login, display_name, org_unit_id, manager_id)
    VALUES (add_principal.login, add_principal.display_name, add_principal.org_unit_id, add_principal.manager_id)
    RETURNING id INTO new_id;
  INSERT INTO crm.principal_role (principal_id, role) SELECT new_id, r FROM unnest(rs) r;
  IF NOT pg_has_role(add_principal.login, 'crm_user', 'MEMBER') THEN
    EXECUTE format('GRANT crm_user TO %I', add_principal.login);
  END IF;
  RETURN new_id;
END $$;

CREATE FUNCTION crm._principal_exists(principal_id bigint)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM crm.principal p WHERE p.id = principal_id) THEN
    RAISE EXCEPTION 'principal % does not exist', crm._short(principal_id) USING ERRCODE = '42704';
  END IF;
END $$;

CREATE FUNCTION crm.move_principal(principal_id bigint, org_unit_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM crm._principal_exists(move_principal.principal_id);
  IF NOT EXISTS (SELECT 1 FROM crm.org_unit u WHERE u.id = move_principal.org_unit_id) THEN
    RAISE EXCEPTION 'org unit % does not exist', crm._short(move_principal.org_unit_id) USING ERRCODE = '42704';
  END IF;
  UPDATE crm.principal p SET org_unit_id = move_principal.org_unit_id WHERE p.id = move_principal.principal_id;
END $$;

CREATE FUNCTION crm.set_manager(principal_id bigint, manager_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM crm._principal_exists(set_manager.principal_id);
  PERFORM crm._check_manager(set_manager.principal_id, set_manager.manager_id);
  UPDATE crm.principal p SET manager_id = set_manager.manager_id WHERE p.id = set_manager.principal_id;
END $$;

CREATE FUNCTION crm.set_principal_roles(principal_id bigint, roles text[])
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE rs text[];
BEGIN
  PERFORM crm._principal_exists(set_principal_roles.principal_id);
  rs := crm._check_roles(set_principal_roles.roles);
  DELETE FROM crm.principal_role pr WHERE pr.principal_id = set_principal_roles.principal_id AND pr.role <> ALL (rs);
  INSERT INTO crm.principal_role (principal_id, role)
    SELECT set_principal_roles.principal_id, r FROM unnest(rs) r ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION crm.deactivate_principal(principal_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM crm._principal_exists(deactivate_principal.principal_id);
  UPDATE crm.principal p SET active = false WHERE p.id = deactivate_principal.principal_id;
END $$;

CREATE FUNCTION crm.reactivate_principal(principal_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM crm._principal_exists(reactivate_principal.principal_id);
  UPDATE crm.principal p SET active = true WHERE p.id = reactivate_principal.principal_id;
END $$;

-- Who is who, for apps and BI: principals with their roles and units.
CREATE VIEW crm.principals AS
  SELECT p.id, p.login, p.display_name, p.org_unit_id, u.name AS org_unit, p.manager_id, p.active,
         ARRAY(SELECT pr.role FROM crm.principal_role pr WHERE pr.principal_id = p.id ORDER BY 1) AS roles
    FROM crm.principal p JOIN crm.org_unit u ON u.id = p.org_unit_id;
