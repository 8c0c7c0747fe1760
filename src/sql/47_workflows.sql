------------------------------------------------------------------------------------------------
-- Workflows: approval processes over a record's status field. A definition is validated and kept
-- as a version; an instance follows the version it started on. States are manual (left by a
-- transition), branch (first matching guard, a default required), approval (approvers, mode any /
-- all / quorum, SLA), parallel (approval branches joined when all approve) and end. The status
-- field belongs to the workflow: trigger crm_wf_<name> (C) refuses any other change of it.
------------------------------------------------------------------------------------------------
CREATE TABLE crm.workflow (
  name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,47}$'),
  version      integer NOT NULL,
  object       text NOT NULL REFERENCES crm.object (name) ON DELETE CASCADE,
  status_field text NOT NULL,
  definition   jsonb NOT NULL,
  current      boolean NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
  created_by   bigint,
  PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX workflow_current ON crm.workflow (name) WHERE current;
COMMENT ON TABLE crm.workflow IS 'workflow definitions, one row per version (crm.define_workflow); instances keep their version';
CREATE TABLE crm.workflow_instance (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  workflow     text NOT NULL,
  version      integer NOT NULL,
  object       text NOT NULL,
  record_id    bigint NOT NULL,
  org_unit_id  bigint,
  state        text NOT NULL,
  entry        integer NOT NULL DEFAULT 0,
  state_since  timestamptz NOT NULL,
  started_at   timestamptz NOT NULL,
  started_by   bigint,
  requested_by bigint,
  ended_at     timestamptz,
  outcome      text,
  FOREIGN KEY (workflow, version) REFERENCES crm.workflow (name, version) ON DELETE CASCADE
);
CREATE UNIQUE INDEX workflow_instance_running ON crm.workflow_instance (object, record_id, workflow) WHERE ended_at IS NULL;
CREATE INDEX workflow_instance_record ON crm.workflow_instance (object, record_id);
COMMENT ON TABLE crm.workflow_instance IS 'one row per workflow run on a record; requested_by: who asked (may not approve)';
CREATE TABLE crm.approval_task (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  instance_id    bigint NOT NULL REFERENCES crm.workflow_instance (id) ON DELETE CASCADE,
  state          text NOT NULL,
  branch         text NOT NULL DEFAULT '',
  entry          integer NOT NULL,
  needed         integer NOT NULL,
  approver_id    bigint NOT NULL,
  status         text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'rejected', 'delegated', 'escalated', 'cancelled')),
  created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
  due_at         timestamptz,
  acted_at       timestamptz,
  comment        text,
  delegated_from bigint,
  escalated_from bigint
);
CREATE INDEX approval_task_pending ON crm.approval_task (approver_id) WHERE status = 'pending';
CREATE INDEX approval_task_due ON crm.approval_task (due_at) WHERE status = 'pending';
CREATE INDEX approval_task_step ON crm.approval_task (instance_id, entry, branch);
COMMENT ON TABLE crm.approval_task IS 'one row per approver per approval step (needed: approvals the step or branch needs)';
CREATE TABLE crm.workflow_history (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  instance_id bigint NOT NULL REFERENCES crm.workflow_instance (id) ON DELETE CASCADE,
  action      text NOT NULL,
  from_state  text,
  to_state    text,
  branch      text,
  actor       bigint,
  comment     text,
  at          timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  in_state    interval
);
CREATE INDEX workflow_history_instance ON crm.workflow_history (instance_id, id);
COMMENT ON TABLE crm.workflow_history IS 'every step of every instance: START, TRANSITION, APPROVE, REJECT, DELEGATE, ESCALATE, CANCEL; in_state = time spent in from_state';
SELECT pg_catalog.pg_extension_config_dump('crm.workflow', '');
SELECT pg_catalog.pg_extension_config_dump('crm.workflow_instance', '');
SELECT pg_catalog.pg_extension_config_dump('crm.approval_task', '');
SELECT pg_catalog.pg_extension_config_dump('crm.workflow_history', '');

CREATE FUNCTION crm._workflow_guard() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'crm_workflow_guard';
CREATE FUNCTION crm._workflow_set_status(object text, record_id bigint, field text, value text) RETURNS boolean
  LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'crm_workflow_set_status';
CREATE FUNCTION crm._workflow_trigger(workflow text, object text, field text, install boolean) RETURNS void
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_workflow_trigger';
CREATE FUNCTION crm._visible(object text, record_id bigint) RETURNS boolean
  LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'crm_visible';
CREATE FUNCTION crm._editable(object text, record_id bigint) RETURNS boolean
  LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'crm_editable';
-- whether a compiled condition (a guard, a branch) holds for a record: run as crm's owner in a
-- pinned environment (search_path, parse settings, the server's time zone); granted to nobody
CREATE FUNCTION crm._condition_holds(object text, record_id bigint, condition text) RETURNS boolean
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_condition_holds';
CREATE FUNCTION crm._record_owner(object text, record_id bigint) RETURNS bigint
  LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'crm_record_owner';
CREATE FUNCTION crm._record_unit(object text, record_id bigint) RETURNS bigint
  LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'crm_record_unit';

-- Validate one approver specification; returns it normalized ({"principals": [ids]}, {"role": r}, {"owner_manager": true}).
CREATE FUNCTION crm._wf_check_approvers(wf text, step text, spec jsonb, mode jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ids bigint[];
  lg text;
  pid bigint;
  q integer;
  n integer;
BEGIN
  IF spec IS NULL THEN
    RAISE EXCEPTION 'workflow "%": step "%" has no approvers', crm._short(wf), crm._short(step) USING ERRCODE = '22023',
      HINT = 'approvers: {"principals": [logins]}, {"role": "<crm role>"} or "owner_manager".';
  END IF;
  IF spec = '"owner_manager"' THEN
    spec := '{"owner_manager": true}';
  ELSIF jsonb_typeof(spec) = 'object' AND spec ? 'principals' THEN
    IF jsonb_typeof(spec->'principals') <> 'array' OR jsonb_array_length(spec->'principals') = 0 THEN
      RAISE EXCEPTION 'workflow "%": approvers of step "%" must list at least one principal', crm._short(wf), crm._short(step) USING ERRCODE = '22023';
    END IF;
    ids := '{}';
    FOR lg IN SELECT jsonb_array_elements_text(spec->'principals') LOOP
      SELECT p.id INTO pid FROM crm.principal p WHERE p.login = lg AND p.active;
      IF pid IS NULL THEN
        RAISE EXCEPTION 'workflow "%": step "%" names unknown or inactive principal "%"', crm._short(wf), crm._short(step), crm._short(lg) USING ERRCODE = '42704';
      END IF;
      ids := ids || pid;
    END LOOP;
    spec := jsonb_build_object('principals', to_jsonb(ids), 'logins', spec->'principals');
  ELSIF jsonb_typeof(spec) = 'object' AND spec ? 'role' THEN
    IF NOT EXISTS (SELECT 1 FROM crm.role r WHERE r.name = spec->>'role') THEN
      RAISE EXCEPTION 'workflow "%": step "%" names unknown CRM role "%"', crm._short(wf), crm._short(step), crm._short(spec->>'role') USING ERRCODE = '42704',
        HINT = 'See crm.role.';
    END IF;
  ELSE
    RAISE EXCEPTION 'workflow "%": step "%" has approvers %, which is not understood', crm._short(wf), crm._short(step), crm._short(spec) USING ERRCODE = '22023',
      HINT = 'approvers: {"principals": [logins]}, {"role": "<crm role>"} or "owner_manager".';
  END IF;
  IF mode IS NULL OR mode IN ('"any"', '"all"') THEN
    RETURN spec;
  END IF;
  IF jsonb_typeof(mode) <> 'object' OR NOT mode ? 'quorum' OR jsonb_typeof(mode->'quorum') <> 'number' THEN
    RAISE EXCEPTION 'workflow "%": step "%" has mode %, which is not understood', crm._short(wf), crm._short(step), crm._short(mode) USING ERRCODE = '22023',
      HINT = 'mode: "any", "all" or {"quorum": 2, "of": 3}.';
  END IF;
  q := (mode->>'quorum')::integer;
  n := CASE WHEN spec ? 'principals' THEN jsonb_array_length(spec->'principals') END;
  IF q < 1 THEN
    RAISE EXCEPTION 'workflow "%": the quorum of step "%" must be at least 1', crm._short(wf), crm._short(step) USING ERRCODE = '22023';
  END IF;
  IF mode ? 'of' AND q > (mode->>'of')::integer THEN
    RAISE EXCEPTION 'workflow "%": step "%" needs % approvals of %', crm._short(wf), crm._short(step), crm._short(q), crm._short(mode->>'of') USING ERRCODE = '22023',
      HINT = 'The quorum cannot be larger than its approvers.';
  END IF;
  IF n IS NOT NULL AND (q > n OR (mode ? 'of' AND (mode->>'of')::integer <> n)) THEN
    RAISE EXCEPTION 'workflow "%": step "%" needs % approvals but names % approvers', crm._short(wf), crm._short(step), crm._short(q), crm._short(n) USING ERRCODE = '22023',
      HINT = 'The quorum cannot be larger than its approvers; "of" must count them.';
  END IF;
  RETURN spec;
END $$;

-- Validate a definition; return it normalized (guards as checked SQL over alias t, approvers by id, edges).
CREATE FUNCTION crm._wf_validate(wf text, obj text, def jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  f record;
  states jsonb;
  st text;
  s jsonb;
  kind text;
  out_states jsonb := '{}';
  edges text[][] := '{}';
  tr jsonb;
  trs jsonb := '[]';
  froms text[];
  fr text;
  b jsonb;
  bs jsonb;
  bname text;
  n_default integer;
  role text;
  reach text[];
  frontier text[];
  bad text;
  unknown text;
  target text;
  allowed jsonb;
  ei integer;
BEGIN
  IF jsonb_typeof(def) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'definition of workflow "%" must be a JSON object', crm._short(wf) USING ERRCODE = '22023';
  END IF;
  SELECT string_agg(k, ', ') INTO unknown FROM jsonb_object_keys(def) k WHERE k NOT IN ('status_field', 'start', 'states', 'transitions', 'reject_to', 'description');
  IF unknown IS NOT NULL THEN
    RAISE EXCEPTION 'definition of workflow "%" has unknown key(s): %', crm._short(wf), crm._short(unknown) USING ERRCODE = '22023',
      HINT = 'Keys: status_field, start, states, transitions, reject_to, description.';
  END IF;
  SELECT x.name, x.type, x.options INTO f FROM crm.field x WHERE x.object = obj AND x.name = def->>'status_field';
  IF f.name IS NULL THEN
    RAISE EXCEPTION 'workflow "%": object "%" has no field %', crm._short(wf), crm._short(obj), crm._short(coalesce(quote_literal(def->>'status_field'), '(status_field missing)'))
      USING ERRCODE = '42703', HINT = 'status_field names a text or picklist field of the object that the workflow drives.';
  END IF;
  IF f.type NOT IN ('text', 'picklist') THEN
    RAISE EXCEPTION 'workflow "%": status field "%" is a %, not text or picklist', crm._short(wf), crm._short(f.name), crm._short(f.type) USING ERRCODE = '42804';
  END IF;
  states := def->'states';
  IF jsonb_typeof(states) IS DISTINCT FROM 'object' OR states = '{}' THEN
    RAISE EXCEPTION 'workflow "%" has no states', crm._short(wf) USING ERRCODE = '22023';
  END IF;
  FOR st, s IN SELECT * FROM jsonb_each(states) LOOP
    IF st !~ '^[a-z][a-z0-9_]{0,47}$' THEN
      RAISE EXCEPTION 'workflow "%": invalid state name %', crm._short(wf), crm._short(quote_literal(st)) USING ERRCODE = '42602';
    END IF;
    IF f.type = 'picklist' AND NOT (f.options->'values') ? st THEN
      RAISE EXCEPTION 'workflow "%": state "%" is not a value of picklist %.%', crm._short(wf), crm._short(st), crm._short(obj), crm._short(f.name) USING ERRCODE = '22023',
        HINT = format('Values: %s.', (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(f.options->'values') v));
    END IF;
    kind := coalesce(s->>'kind', 'manual');
    IF kind NOT IN ('manual', 'branch', 'approval', 'parallel', 'end') THEN
      RAISE EXCEPTION 'workflow "%": state "%" has unknown kind "%"', crm._short(wf), crm._short(st), crm._short(kind) USING ERRCODE = '22023',
        HINT = 'Kinds: manual (the default), branch, approval, parallel, end.';
    END IF;
    s := jsonb_set(coalesce(s, '{}'), '{kind}', to_jsonb(kind));
    IF kind = 'branch' THEN
      IF jsonb_typeof(s->'branches') IS DISTINCT FROM 'array' OR jsonb_array_length(s->'branches') = 0 THEN
        RAISE EXCEPTION 'workflow "%": branch state "%" has no branches', crm._short(wf), crm._short(st) USING ERRCODE = '22023';
      END IF;
      n_default := 0;
      bs := '[]';
      FOR b IN SELECT x FROM jsonb_array_elements(s->'branches') x LOOP
        IF n_default > 0 THEN
          RAISE EXCEPTION 'workflow "%": in branch state "%", the default branch must come last', crm._short(wf), crm._short(st) USING ERRCODE = '22023';
        END IF;
        IF coalesce((b->>'default')::boolean, false) THEN
          n_default := 1;
        ELSIF b->>'when' IS NULL THEN
          RAISE EXCEPTION 'workflow "%": a branch of state "%" has neither "when" nor "default"', crm._short(wf), crm._short(st) USING ERRCODE = '22023';
        ELSE
          b := jsonb_set(b, '{sql}', to_jsonb(crm._rule_expr(format('workflow "%s"', wf), obj, 'schedule', format('guard of a branch of state %s', st), b->>'when', true)));
        END IF;
        edges := edges || ARRAY[[st, b->>'to']];
        bs := bs || b;
      END LOOP;
      IF n_default = 0 THEN
        RAISE EXCEPTION 'workflow "%": branch state "%" has no default branch', crm._short(wf), crm._short(st) USING ERRCODE = '22023',
          HINT = 'Add {"default": true, "to": "<state>"} as the last branch.';
      END IF;
      s := jsonb_set(s, '{branches}', bs);
    ELSIF kind = 'approval' THEN
      s := jsonb_set(s, '{approvers}', crm._wf_check_approvers(wf, st, s->'approvers', s->'mode'));
      s := jsonb_set(s, '{reject_to}', coalesce(s->'reject_to', def->'reject_to', 'null'));
      IF s->>'approve_to' IS NULL OR s->>'reject_to' IS NULL THEN
        RAISE EXCEPTION 'workflow "%": approval state "%" needs approve_to and reject_to', crm._short(wf), crm._short(st) USING ERRCODE = '22023';
      END IF;
      edges := edges || ARRAY[[st, s->>'approve_to']] || ARRAY[[st, s->>'reject_to']];
    ELSIF kind = 'parallel' THEN
      IF jsonb_typeof(s->'branches') IS DISTINCT FROM 'object' OR (SELECT count(*) FROM jsonb_object_keys(s->'branches')) < 2 THEN
        RAISE EXCEPTION 'workflow "%": parallel state "%" needs at least two named branches', crm._short(wf), crm._short(st) USING ERRCODE = '22023',
          HINT = '"branches": {"risk": {"approvers": ...}, "compliance": {"approvers": ...}}';
      END IF;
      FOR bname, b IN SELECT * FROM jsonb_each(s->'branches') LOOP
        s := jsonb_set(s, ARRAY['branches', bname, 'approvers'], crm._wf_check_approvers(wf, st || '.' || bname, b->'approvers', b->'mode'));
      END LOOP;
      s := jsonb_set(s, '{reject_to}', coalesce(s->'reject_to', def->'reject_to', 'null'));
      IF s->>'join_to' IS NULL OR s->>'reject_to' IS NULL THEN
        RAISE EXCEPTION 'workflow "%": parallel state "%" needs join_to and reject_to', crm._short(wf), crm._short(st) USING ERRCODE = '22023';
      END IF;
      edges := edges || ARRAY[[st, s->>'join_to']] || ARRAY[[st, s->>'reject_to']];
    END IF;
    IF (s ? 'sla_hours') AND (jsonb_typeof(s->'sla_hours') <> 'number' OR (s->>'sla_hours')::numeric <= 0) THEN
      RAISE EXCEPTION 'workflow "%": sla_hours of state "%" must be a positive number', crm._short(wf), crm._short(st) USING ERRCODE = '22023';
    END IF;
    out_states := out_states || jsonb_build_object(st, s);
  END LOOP;
  IF def->>'start' IS NULL OR NOT states ? (def->>'start') THEN
    RAISE EXCEPTION 'workflow "%": start state % is not one of its states', crm._short(wf), crm._short(coalesce(quote_literal(def->>'start'), '(missing)'))
      USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM jsonb_each(out_states) e WHERE e.value->>'kind' = 'end') THEN
    RAISE EXCEPTION 'workflow "%" has no end state', crm._short(wf) USING ERRCODE = '22023', HINT = 'Mark at least one state {"kind": "end"}.';
  END IF;
  IF def ? 'transitions' AND jsonb_typeof(def->'transitions') <> 'array' THEN
    RAISE EXCEPTION 'workflow "%": transitions must be an array', crm._short(wf) USING ERRCODE = '22023';
  END IF;
  FOR tr IN SELECT x FROM jsonb_array_elements(coalesce(def->'transitions', '[]')) x LOOP
    IF tr->>'action' IS NULL OR tr->>'action' !~ '^[a-z][a-z0-9_]{0,47}$' THEN
      RAISE EXCEPTION 'workflow "%": a transition has invalid action %', crm._short(wf), crm._short(coalesce(quote_literal(tr->>'action'), '(missing)')) USING ERRCODE = '22023';
    END IF;
    froms := CASE jsonb_typeof(tr->'from') WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(tr->'from'))
                                            WHEN 'string' THEN ARRAY[tr->>'from'] END;
    IF froms IS NULL OR cardinality(froms) = 0 THEN
      RAISE EXCEPTION 'workflow "%": transition "%" has no from state', crm._short(wf), crm._short(tr->>'action') USING ERRCODE = '22023';
    END IF;
    FOREACH fr IN ARRAY froms LOOP
      IF NOT out_states ? fr THEN
        RAISE EXCEPTION 'workflow "%": transition "%" leaves unknown state "%"', crm._short(wf), crm._short(tr->>'action'), crm._short(fr) USING ERRCODE = '22023';
      END IF;
      IF out_states->fr->>'kind' = 'end' THEN
        RAISE EXCEPTION 'workflow "%": transition "%" leaves end state "%"', crm._short(wf), crm._short(tr->>'action'), crm._short(fr) USING ERRCODE = '22023';
      END IF;
      IF EXISTS (SELECT 1 FROM jsonb_array_elements(trs) o, jsonb_array_elements_text(o->'from') of
                  WHERE o->>'action' = tr->>'action' AND of = fr) THEN
        RAISE EXCEPTION 'workflow "%": action "%" leaves state "%" twice', crm._short(wf), crm._short(tr->>'action'), crm._short(fr) USING ERRCODE = '22023';
      END IF;
      edges := edges || ARRAY[[fr, tr->>'to']];
    END LOOP;
    allowed := coalesce(tr->'allowed', '["owner"]');
    IF jsonb_typeof(allowed) <> 'array' OR jsonb_array_length(allowed) = 0 THEN
      RAISE EXCEPTION 'workflow "%": transition "%" must list who is allowed', crm._short(wf), crm._short(tr->>'action') USING ERRCODE = '22023',
        HINT = '"allowed": ["owner", "<crm role>", ...]';
    END IF;
    FOR role IN SELECT jsonb_array_elements_text(allowed) LOOP
      IF role <> 'owner' AND NOT EXISTS (SELECT 1 FROM crm.role r WHERE r.name = role) THEN
        RAISE EXCEPTION 'workflow "%": transition "%" allows unknown CRM role "%"', crm._short(wf), crm._short(tr->>'action'), crm._short(role) USING ERRCODE = '42704',
          HINT = '"owner" means the record''s owner; other names are CRM roles (crm.role).';
      END IF;
    END LOOP;
    tr := tr || jsonb_build_object('from', to_jsonb(froms), 'allowed', allowed);
    IF tr ? 'guard' THEN
      tr := tr || jsonb_build_object('sql', crm._rule_expr(format('workflow "%s"', wf), obj, 'schedule', format('guard of transition %s', tr->>'action'), tr->>'guard', true));
    END IF;
    trs := trs || tr;
  END LOOP;
  -- every edge ends in a known state
  FOR ei IN 1 .. coalesce(array_length(edges, 1), 0) LOOP
    fr := edges[ei][1];
    target := edges[ei][2];
    IF target IS NULL OR NOT out_states ? target THEN
      RAISE EXCEPTION 'workflow "%": state "%" leads to unknown state %', crm._short(wf), crm._short(fr), crm._short(coalesce(quote_literal(target), '(missing)'))
        USING ERRCODE = '22023';
    END IF;
  END LOOP;
  -- every state reachable from the start ...
  reach := ARRAY[def->>'start'];
  frontier := reach;
  WHILE cardinality(frontier) > 0 LOOP
    SELECT coalesce(array_agg(DISTINCT edges[i][2]), '{}') INTO frontier FROM generate_subscripts(edges, 1) i
     WHERE edges[i][1] = ANY (frontier) AND NOT edges[i][2] = ANY (reach);
    reach := reach || frontier;
  END LOOP;
  SELECT string_agg(k, ', ' ORDER BY k) INTO bad FROM jsonb_object_keys(out_states) k WHERE NOT k = ANY (reach);
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'workflow "%": state(s) % cannot be reached from "%"', crm._short(wf), crm._short(bad), crm._short(def->>'start') USING ERRCODE = '22023';
  END IF;
  -- ... and every state has a way to an end state
  SELECT array_agg(k) INTO reach FROM jsonb_each(out_states) e(k, v) WHERE v->>'kind' = 'end';
  frontier := reach;
  WHILE cardinality(frontier) > 0 LOOP
    SELECT coalesce(array_agg(DISTINCT edges[i][1]), '{}') INTO frontier FROM generate_subscripts(edges, 1) i
     WHERE edges[i][2] = ANY (frontier) AND NOT edges[i][1] = ANY (reach);
    reach := reach || frontier;
  END LOOP;
  SELECT string_agg(k, ', ' ORDER BY k) INTO bad FROM jsonb_object_keys(out_states) k WHERE NOT k = ANY (reach);
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'workflow "%": state(s) % have no way to an end state', crm._short(wf), crm._short(bad) USING ERRCODE = '22023';
  END IF;
  RETURN jsonb_build_object('status_field', f.name, 'start', def->>'start', 'states', out_states, 'transitions', trs,
                            'description', def->'description');
END $$;

CREATE FUNCTION crm.define_workflow(name text, object text, definition jsonb)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  def jsonb;
  v integer;
  old crm.workflow;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to define workflow "%"', crm._short(define_workflow.name) USING ERRCODE = '42501',
      HINT = 'Workflows are defined by crm_admin.';
  END IF;
  IF define_workflow.name IS NULL OR define_workflow.name !~ '^[a-z][a-z0-9_]{0,47}$' THEN
    RAISE EXCEPTION 'invalid workflow name %', crm._short(coalesce(quote_literal(define_workflow.name), 'NULL')) USING ERRCODE = '42602',
      HINT = 'A workflow name is 1 to 48 lower-case letters, digits and underscores, starting with a letter.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.object o WHERE o.name = define_workflow.object) THEN
    RAISE EXCEPTION 'object "%" does not exist', crm._short(define_workflow.object) USING ERRCODE = '42704';
  END IF;
  SELECT * INTO old FROM crm.workflow w WHERE w.name = define_workflow.name AND w.current FOR UPDATE;
  IF FOUND AND old.object <> define_workflow.object THEN
    RAISE EXCEPTION 'workflow "%" drives object "%", not "%"', crm._short(define_workflow.name), crm._short(old.object), crm._short(define_workflow.object)
      USING ERRCODE = '42710', HINT = 'Drop it first, or use another name.';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.workflow w WHERE w.current AND w.object = define_workflow.object AND w.name <> define_workflow.name
               AND w.status_field = define_workflow.definition->>'status_field') THEN
    RAISE EXCEPTION 'status field %.% is already driven by another workflow', crm._short(define_workflow.object), crm._short(define_workflow.definition->>'status_field')
      USING ERRCODE = '42710';
  END IF;
  def := crm._wf_validate(define_workflow.name, define_workflow.object, define_workflow.definition);
  v := coalesce(old.version, 0) + 1;
  UPDATE crm.workflow w SET current = false WHERE w.name = define_workflow.name AND w.current;
  INSERT INTO crm.workflow (name, version, object, status_field, definition, created_by)
    VALUES (define_workflow.name, v, define_workflow.object, def->>'status_field', def, crm.current_principal());
  PERFORM crm._workflow_trigger(define_workflow.name, define_workflow.object, def->>'status_field', true);
  RETURN v;
END $$;
COMMENT ON FUNCTION crm.define_workflow(text, text, jsonb) IS 'define (or redefine: a new version) a workflow over an object''s status field; returns the version';

CREATE FUNCTION crm.drop_workflow(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE w crm.workflow;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to drop workflow "%"', crm._short(drop_workflow.name) USING ERRCODE = '42501';
  END IF;
  SELECT * INTO w FROM crm.workflow x WHERE x.name = drop_workflow.name AND x.current;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'workflow "%" does not exist', crm._short(drop_workflow.name) USING ERRCODE = '42704';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.workflow_instance i WHERE i.workflow = w.name AND i.ended_at IS NULL) THEN
    RAISE EXCEPTION 'workflow "%" still runs on % record(s)', crm._short(w.name),
      crm._short((SELECT count(*) FROM crm.workflow_instance i WHERE i.workflow = w.name AND i.ended_at IS NULL)) USING ERRCODE = '55006',
      HINT = 'Let them finish, or end them with crm.cancel_workflow().';
  END IF;
  PERFORM crm._workflow_trigger(w.name, w.object, w.status_field, false);
  DELETE FROM crm.workflow x WHERE x.name = w.name;
  RETURN w.name;
END $$;

-- The principals who approve a step for an instance (the requester never among them).
CREATE FUNCTION crm._wf_approvers(spec jsonb, inst crm.workflow_instance) RETURNS bigint[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ids bigint[];
  owner bigint;
BEGIN
  IF spec ? 'principals' THEN
    SELECT array_agg(p.id ORDER BY p.id) INTO ids FROM crm.principal p
     WHERE p.id IN (SELECT jsonb_array_elements_text(spec->'principals')::bigint) AND p.active;
  ELSIF spec ? 'role' THEN
    WITH RECURSIVE up(id, depth) AS (
      SELECT inst.org_unit_id, 0
      UNION ALL
      SELECT u.parent_id, up.depth + 1 FROM up JOIN crm.org_unit u ON u.id = up.id WHERE u.parent_id IS NOT NULL AND up.depth < 64),
    holders AS (
      SELECT p.id, up.depth FROM up JOIN crm.principal p ON p.org_unit_id = up.id AND p.active
        JOIN crm.principal_role pr ON pr.principal_id = p.id AND pr.role = spec->>'role'
       WHERE p.id IS DISTINCT FROM inst.requested_by)
    SELECT array_agg(h.id ORDER BY h.id) INTO ids FROM holders h WHERE h.depth = (SELECT min(depth) FROM holders);
  ELSE
    owner := crm._record_owner(inst.object, inst.record_id);
    SELECT array_agg(p.manager_id) INTO ids FROM crm.principal p WHERE p.id = owner AND p.manager_id IS NOT NULL;
  END IF;
  RETURN ARRAY(SELECT x FROM unnest(coalesce(ids, '{}')) x WHERE x IS DISTINCT FROM inst.requested_by);
END $$;

-- Open the approval tasks of one step (or one branch of a parallel step).
CREATE FUNCTION crm._wf_open_step(inst crm.workflow_instance, st text, branch text, step jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ids bigint[] := crm._wf_approvers(step->'approvers', inst);
  needed integer;
  label text := st || CASE WHEN branch <> '' THEN '.' || branch ELSE '' END;
BEGIN
  IF cardinality(ids) = 0 THEN
    RAISE EXCEPTION 'workflow "%": no one can approve step "%" of % %', crm._short(inst.workflow), crm._short(label), crm._short(inst.object), crm._short(inst.record_id)
      USING ERRCODE = '55000', HINT = 'The requester cannot approve; give the step approvers who are active principals.';
  END IF;
  needed := CASE WHEN step->'mode' IS NULL OR step->'mode' = '"any"' THEN 1
                 WHEN step->'mode' = '"all"' THEN cardinality(ids)
                 ELSE (step->'mode'->>'quorum')::integer END;
  IF needed > cardinality(ids) THEN
    RAISE EXCEPTION 'workflow "%": step "%" needs % approvals but only % approver(s) can act on % %', crm._short(inst.workflow), crm._short(label),
      crm._short(needed), crm._short(cardinality(ids)), crm._short(inst.object), crm._short(inst.record_id) USING ERRCODE = '55000';
  END IF;
  INSERT INTO crm.approval_task (instance_id, state, branch, entry, needed, approver_id, due_at)
    SELECT inst.id, st, branch, inst.entry, needed, a,
           CASE WHEN step ? 'sla_hours' THEN now() + make_interval(secs => (step->>'sla_hours')::numeric * 3600) END
      FROM unnest(ids) a;
END $$;

-- Move an instance into a state, and on through automatic states (branches) until it waits.
CREATE FUNCTION crm._wf_enter(instance_id bigint, target text, action text, actor bigint, comment text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
  -- guards are compiled SQL: read them back in the environment they were written in
  SET standard_conforming_strings = on SET datestyle = 'ISO, MDY' SET intervalstyle = 'postgres'
  SET transform_null_equals = off SET array_nulls = on AS $$
DECLARE
  inst crm.workflow_instance;
  def jsonb;
  s jsonb;
  b jsonb;
  hit boolean;
  bname text;
  steps integer := 0;
BEGIN
  LOOP
    steps := steps + 1;
    IF steps > 100 THEN
      RAISE EXCEPTION 'workflow: more than 100 automatic steps in a row (a loop of branches?)' USING ERRCODE = '54000';
    END IF;
    IF def IS NULL THEN
      SELECT w.definition INTO def FROM crm.workflow_instance i JOIN crm.workflow w ON w.name = i.workflow AND w.version = i.version
       WHERE i.id = instance_id;
    END IF;
    SELECT * INTO inst FROM crm.workflow_instance i WHERE i.id = instance_id;
    s := def->'states'->target;
    INSERT INTO crm.workflow_history (instance_id, action, from_state, to_state, actor, comment, in_state)
      VALUES (inst.id, action, nullif(inst.state, ''), target, actor, comment,
              CASE WHEN inst.state <> '' THEN clock_timestamp() - inst.state_since END);
    PERFORM crm._audit_event('TRANSITION', inst.object, inst.record_id,
      jsonb_build_object('workflow', inst.workflow, 'version', inst.version, 'action', action, 'from', nullif(inst.state, ''), 'to', target)
      || CASE WHEN comment IS NOT NULL THEN jsonb_build_object('comment', comment) ELSE '{}' END);
    UPDATE crm.workflow_instance i SET state = target, state_since = clock_timestamp(), entry = i.entry + 1,
           ended_at = CASE WHEN s->>'kind' = 'end' THEN clock_timestamp() END,
           outcome = CASE WHEN s->>'kind' = 'end' THEN target END
     WHERE i.id = inst.id RETURNING * INTO inst;
    PERFORM crm._workflow_set_status(inst.object, inst.record_id, def->>'status_field', target);
    CASE s->>'kind'
    WHEN 'branch' THEN
      FOR b IN SELECT x FROM jsonb_array_elements(s->'branches') x LOOP
        IF coalesce((b->>'default')::boolean, false) THEN
          hit := true;
        ELSE
          hit := crm._condition_holds(inst.object, inst.record_id, b->>'sql');
        END IF;
        IF hit THEN
          target := b->>'to';
          action := CASE WHEN b ? 'when' THEN 'branch: ' || (b->>'when') ELSE 'branch: default' END;
          comment := NULL;
          EXIT;
        END IF;
      END LOOP;
      CONTINUE;
    WHEN 'approval' THEN
      PERFORM crm._wf_open_step(inst, target, '', s);
    WHEN 'parallel' THEN
      FOR bname, b IN SELECT * FROM jsonb_each(s->'branches') LOOP
        PERFORM crm._wf_open_step(inst, target, bname, b || jsonb_build_object('sla_hours', coalesce(b->'sla_hours', s->'sla_hours')));
      END LOOP;
    ELSE
      NULL;
    END CASE;
    RETURN target;
  END LOOP;
END $$;

CREATE FUNCTION crm._wf_actor(what text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE p bigint := crm.current_principal();
BEGIN
  IF p IS NULL THEN
    RAISE EXCEPTION 'permission denied to %: no principal is acting', crm._short(what) USING ERRCODE = '42501',
      HINT = 'Log in as a principal, or act as one with crm.act_as().';
  END IF;
  RETURN p;
END $$;

CREATE FUNCTION crm.start_workflow(name text, record_id bigint)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  w crm.workflow;
  actor bigint := crm._wf_actor('start a workflow');
  unit bigint;
  inst_id bigint;
BEGIN
  SELECT * INTO w FROM crm.workflow x WHERE x.name = start_workflow.name AND x.current;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'workflow "%" does not exist', crm._short(start_workflow.name) USING ERRCODE = '42704';
  END IF;
  IF NOT coalesce(crm._visible(w.object, record_id), false) THEN
    RAISE EXCEPTION '% % does not exist or is not visible to you', crm._short(w.object), crm._short(record_id) USING ERRCODE = '42501';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.workflow_instance i WHERE i.object = w.object AND i.record_id = start_workflow.record_id
               AND i.workflow = w.name AND i.ended_at IS NULL) THEN
    RAISE EXCEPTION 'workflow "%" already runs on % %', crm._short(w.name), crm._short(w.object), crm._short(record_id) USING ERRCODE = '55000',
      HINT = 'See crm.workflow_status().';
  END IF;
  unit := crm._record_unit(w.object, record_id);
  INSERT INTO crm.workflow_instance (workflow, version, object, record_id, org_unit_id, state, state_since, started_at, started_by, requested_by)
    VALUES (w.name, w.version, w.object, record_id, unit, '', clock_timestamp(), clock_timestamp(), actor, actor)
    RETURNING id INTO inst_id;
  PERFORM crm._wf_enter(inst_id, w.definition->>'start', 'start', actor, NULL);
  RETURN inst_id;
END $$;
COMMENT ON FUNCTION crm.start_workflow(text, bigint) IS 'start a workflow on a record the caller can see; returns the instance id';

-- The running instance of a record (locked), for the workflow that knows the action when several run.
CREATE FUNCTION crm._wf_running(obj text, rid bigint, action text) RETURNS crm.workflow_instance
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE inst crm.workflow_instance;
BEGIN
  SELECT i.* INTO inst FROM crm.workflow_instance i JOIN crm.workflow w ON w.name = i.workflow AND w.version = i.version
   WHERE i.object = obj AND i.record_id = rid AND i.ended_at IS NULL
   ORDER BY (action IS NOT NULL AND EXISTS (SELECT 1 FROM jsonb_array_elements(w.definition->'transitions') t WHERE t->>'action' = action)) DESC, i.id
   LIMIT 1 FOR UPDATE OF i;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no workflow runs on % %', crm._short(obj), crm._short(rid) USING ERRCODE = '55000', HINT = 'Start one with crm.start_workflow().';
  END IF;
  RETURN inst;
END $$;

CREATE FUNCTION crm.transition(object text, record_id bigint, action text, comment text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  -- guards are compiled SQL: read them back in the environment they were written in
  SET standard_conforming_strings = on SET datestyle = 'ISO, MDY' SET intervalstyle = 'postgres'
  SET transform_null_equals = off SET array_nulls = on AS $$
DECLARE
  actor bigint := crm._wf_actor('make a transition');
  inst crm.workflow_instance;
  def jsonb;
  tr jsonb;
  ok boolean;
  owner bigint;
  here text;
BEGIN
  IF NOT coalesce(crm._visible(transition.object, record_id), false) THEN
    RAISE EXCEPTION '% % does not exist or is not visible to you', crm._short(transition.object), crm._short(record_id) USING ERRCODE = '42501';
  END IF;
  inst := crm._wf_running(transition.object, record_id, action);
  SELECT w.definition INTO def FROM crm.workflow w WHERE w.name = inst.workflow AND w.version = inst.version;
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(def->'transitions') t WHERE t->>'action' = transition.action) THEN
    RAISE EXCEPTION 'workflow "%" has no action "%"', crm._short(inst.workflow), crm._short(action) USING ERRCODE = '22023',
      HINT = format('Its actions: %s.', coalesce((SELECT string_agg(DISTINCT t->>'action', ', ') FROM jsonb_array_elements(def->'transitions') t), 'none'));
  END IF;
  SELECT t INTO tr FROM jsonb_array_elements(def->'transitions') t WHERE t->>'action' = transition.action AND t->'from' ? inst.state;
  IF tr IS NULL THEN
    SELECT string_agg(t->>'action', ', ') INTO here FROM jsonb_array_elements(def->'transitions') t WHERE t->'from' ? inst.state;
    RAISE EXCEPTION 'action "%" is not allowed in state "%" of workflow "%"', crm._short(action), crm._short(inst.state), crm._short(inst.workflow) USING ERRCODE = '55000',
      HINT = CASE WHEN here IS NULL THEN 'No action leaves this state: it waits for approvals.' ELSE format('Allowed here: %s.', here) END;
  END IF;
  owner := crm._record_owner(inst.object, inst.record_id);
  ok := (tr->'allowed' ? 'owner' AND owner = actor)
        OR EXISTS (SELECT 1 FROM crm.principal_role pr JOIN crm.principal p ON p.id = pr.principal_id AND p.active
                    WHERE pr.principal_id = actor AND tr->'allowed' ? pr.role);
  IF NOT ok THEN
    RAISE EXCEPTION 'permission denied to "%" % %', crm._short(action), crm._short(inst.object), crm._short(inst.record_id) USING ERRCODE = '42501',
      DETAIL = format('Allowed: %s.', (SELECT string_agg(CASE WHEN a = 'owner' THEN 'the record''s owner' ELSE a END, ', ') FROM jsonb_array_elements_text(tr->'allowed') a));
  END IF;
  IF tr ? 'sql' THEN
    ok := crm._condition_holds(inst.object, inst.record_id, tr->>'sql');
    IF NOT ok THEN
      RAISE EXCEPTION 'the condition of "%" is not met for % %', crm._short(action), crm._short(inst.object), crm._short(inst.record_id) USING ERRCODE = '55000',
        DETAIL = format('Condition: %s', tr->>'guard');
    END IF;
  END IF;
  -- a manual step: whoever takes it is the requester of what follows (and may not approve it)
  UPDATE crm.approval_task a SET status = 'cancelled', acted_at = now() WHERE a.instance_id = inst.id AND a.status = 'pending';
  UPDATE crm.workflow_instance i SET requested_by = actor WHERE i.id = inst.id;
  RETURN crm._wf_enter(inst.id, tr->>'to', action, actor, comment);
END $$;
COMMENT ON FUNCTION crm.transition(text, bigint, text, text) IS 'take an action of the running workflow on a record; returns the state it ends in';

-- A pending task of the acting principal, locked with its instance; checks shared by approve/reject/delegate.
CREATE FUNCTION crm._wf_my_task(task_id bigint, what text) RETURNS crm.approval_task
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  actor bigint := crm._wf_actor(what);
  task crm.approval_task;
  inst crm.workflow_instance;
BEGIN
  SELECT i.* INTO inst FROM crm.workflow_instance i JOIN crm.approval_task a ON a.instance_id = i.id WHERE a.id = task_id
    FOR UPDATE OF i;   -- one decision at a time per instance
  SELECT a.* INTO task FROM crm.approval_task a WHERE a.id = task_id;
  IF task.id IS NULL THEN
    RAISE EXCEPTION 'approval task % does not exist', crm._short(task_id) USING ERRCODE = '42704';
  END IF;
  IF task.approver_id <> actor THEN
    RAISE EXCEPTION 'permission denied to % approval task %: it is not assigned to you', crm._short(what), crm._short(task_id) USING ERRCODE = '42501';
  END IF;
  IF task.status <> 'pending' THEN
    RAISE EXCEPTION 'approval task % is already %', crm._short(task_id), crm._short(task.status) USING ERRCODE = '55000';
  END IF;
  IF actor = inst.requested_by THEN
    RAISE EXCEPTION 'permission denied to % your own request', crm._short(what) USING ERRCODE = '42501',
      DETAIL = 'Four eyes: the principal who asked cannot approve.';
  END IF;
  IF NOT coalesce(crm._visible(inst.object, inst.record_id), false) THEN
    RAISE EXCEPTION 'permission denied to % approval task %: you cannot see % %', crm._short(what), crm._short(task_id), crm._short(inst.object), crm._short(inst.record_id)
      USING ERRCODE = '42501', HINT = 'Share the record with the approver, or delegate the task.';
  END IF;
  RETURN task;
END $$;

CREATE FUNCTION crm.approve(task_id bigint, comment text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  task crm.approval_task;
  inst crm.workflow_instance;
  def jsonb;
  s jsonb;
  done boolean;
BEGIN
  task := crm._wf_my_task(task_id, 'approve');
  SELECT * INTO inst FROM crm.workflow_instance i WHERE i.id = task.instance_id;
  UPDATE crm.approval_task a SET status = 'approved', acted_at = now(), comment = approve.comment WHERE a.id = task.id;
  INSERT INTO crm.workflow_history (instance_id, action, from_state, to_state, branch, actor, comment, in_state)
    VALUES (inst.id, 'APPROVE', inst.state, inst.state, nullif(task.branch, ''), task.approver_id, comment, clock_timestamp() - task.created_at);
  PERFORM crm._audit_event('APPROVE', inst.object, inst.record_id,
    jsonb_build_object('workflow', inst.workflow, 'state', inst.state, 'branch', nullif(task.branch, ''), 'task', task.id)
    || CASE WHEN comment IS NOT NULL THEN jsonb_build_object('comment', comment) ELSE '{}' END);
  -- this step (or branch) is done when enough have approved
  IF (SELECT count(*) FROM crm.approval_task a WHERE a.instance_id = inst.id AND a.entry = task.entry AND a.branch = task.branch
        AND a.status = 'approved') < task.needed THEN
    RETURN inst.state;
  END IF;
  UPDATE crm.approval_task a SET status = 'cancelled', acted_at = now()
   WHERE a.instance_id = inst.id AND a.entry = task.entry AND a.branch = task.branch AND a.status = 'pending';
  SELECT w.definition INTO def FROM crm.workflow w WHERE w.name = inst.workflow AND w.version = inst.version;
  s := def->'states'->inst.state;
  IF s->>'kind' = 'parallel' THEN
    -- AND-join: every branch has its approvals
    SELECT bool_and((SELECT count(*) FROM crm.approval_task a WHERE a.instance_id = inst.id AND a.entry = task.entry AND a.branch = b
                       AND a.status = 'approved')
                    >= (SELECT max(a.needed) FROM crm.approval_task a WHERE a.instance_id = inst.id AND a.entry = task.entry AND a.branch = b))
      INTO done FROM jsonb_object_keys(s->'branches') b;
    IF NOT done THEN
      RETURN inst.state;
    END IF;
    RETURN crm._wf_enter(inst.id, s->>'join_to', 'approved', task.approver_id, NULL);
  END IF;
  RETURN crm._wf_enter(inst.id, s->>'approve_to', 'approved', task.approver_id, NULL);
END $$;

CREATE FUNCTION crm.reject(task_id bigint, comment text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  task crm.approval_task;
  inst crm.workflow_instance;
  def jsonb;
BEGIN
  IF comment IS NULL OR btrim(comment) = '' THEN
    RAISE EXCEPTION 'a rejection needs a comment' USING ERRCODE = '22023', HINT = 'Say why: the requester sees it.';
  END IF;
  task := crm._wf_my_task(task_id, 'reject');
  SELECT * INTO inst FROM crm.workflow_instance i WHERE i.id = task.instance_id;
  UPDATE crm.approval_task a SET status = 'rejected', acted_at = now(), comment = reject.comment WHERE a.id = task.id;
  UPDATE crm.approval_task a SET status = 'cancelled', acted_at = now() WHERE a.instance_id = inst.id AND a.status = 'pending';
  INSERT INTO crm.workflow_history (instance_id, action, from_state, to_state, branch, actor, comment, in_state)
    VALUES (inst.id, 'REJECT', inst.state, inst.state, nullif(task.branch, ''), task.approver_id, comment, clock_timestamp() - task.created_at);
  PERFORM crm._audit_event('REJECT', inst.object, inst.record_id,
    jsonb_build_object('workflow', inst.workflow, 'state', inst.state, 'branch', nullif(task.branch, ''), 'task', task.id, 'comment', comment));
  SELECT w.definition INTO def FROM crm.workflow w WHERE w.name = inst.workflow AND w.version = inst.version;
  RETURN crm._wf_enter(inst.id, def->'states'->inst.state->>'reject_to', 'rejected', task.approver_id, comment);
END $$;

CREATE FUNCTION crm.delegate(task_id bigint, principal bigint, comment text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  task crm.approval_task;
  inst crm.workflow_instance;
  new_id bigint;
BEGIN
  task := crm._wf_my_task(task_id, 'delegate');
  SELECT * INTO inst FROM crm.workflow_instance i WHERE i.id = task.instance_id;
  IF NOT EXISTS (SELECT 1 FROM crm.principal p WHERE p.id = principal AND p.active) THEN
    RAISE EXCEPTION 'principal % does not exist or is deactivated', crm._short(principal) USING ERRCODE = '42704';
  END IF;
  IF principal = inst.requested_by OR principal = task.approver_id THEN
    RAISE EXCEPTION 'cannot delegate approval task % to %', crm._short(task_id),
      crm._short(CASE WHEN principal = task.approver_id THEN 'yourself' ELSE 'the requester' END) USING ERRCODE = '22023';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.approval_task a WHERE a.instance_id = inst.id AND a.entry = task.entry AND a.branch = task.branch
               AND a.approver_id = principal AND a.status IN ('pending', 'approved')) THEN
    RAISE EXCEPTION '% already approves this step', crm._short((SELECT p.login FROM crm.principal p WHERE p.id = principal)) USING ERRCODE = '22023',
      DETAIL = 'One approver, one vote: delegating to them would count them twice.';
  END IF;
  UPDATE crm.approval_task a SET status = 'delegated', acted_at = now(), comment = delegate.comment WHERE a.id = task.id;
  INSERT INTO crm.approval_task (instance_id, state, branch, entry, needed, approver_id, due_at, delegated_from)
    VALUES (task.instance_id, task.state, task.branch, task.entry, task.needed, principal, task.due_at, task.id)
    RETURNING id INTO new_id;
  INSERT INTO crm.workflow_history (instance_id, action, from_state, to_state, branch, actor, comment)
    VALUES (inst.id, 'DELEGATE', inst.state, inst.state, nullif(task.branch, ''), task.approver_id,
            coalesce(comment || ' ', '') || format('(to principal %s)', principal));
  PERFORM crm._audit_event('APPROVE', inst.object, inst.record_id,
    jsonb_build_object('workflow', inst.workflow, 'state', inst.state, 'delegated_to', principal, 'task', task.id));
  RETURN new_id;
END $$;

-- Overdue approval tasks go to the approver's manager (and a message through the outbox).
CREATE FUNCTION crm.escalate_overdue(as_of timestamptz DEFAULT now())
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  t record;
  n integer := 0;
  mgr bigint;
  new_id bigint;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to escalate approvals' USING ERRCODE = '42501';
  END IF;
  FOR t IN SELECT a.*, i.object, i.record_id, i.workflow, i.requested_by, i.state AS inst_state
             FROM crm.approval_task a JOIN crm.workflow_instance i ON i.id = a.instance_id
            WHERE a.status = 'pending' AND a.due_at < as_of AND i.ended_at IS NULL
            ORDER BY a.id FOR UPDATE OF a, i SKIP LOCKED LOOP
    SELECT p.manager_id INTO mgr FROM crm.principal p WHERE p.id = t.approver_id;
    IF mgr IS NULL OR mgr = t.requested_by OR EXISTS (
         SELECT 1 FROM crm.approval_task a WHERE a.instance_id = t.instance_id AND a.entry = t.entry AND a.branch = t.branch
            AND a.approver_id = mgr AND a.status IN ('pending', 'approved')) THEN
      CONTINUE;   -- nobody above to take it: it stays overdue (crm.approval_sla shows it)
    END IF;
    UPDATE crm.approval_task a SET status = 'escalated', acted_at = as_of WHERE a.id = t.id;
    INSERT INTO crm.approval_task (instance_id, state, branch, entry, needed, approver_id, due_at, escalated_from, created_at)
      VALUES (t.instance_id, t.state, t.branch, t.entry, t.needed, mgr, as_of + (t.due_at - t.created_at), t.id, as_of)
      RETURNING id INTO new_id;
    INSERT INTO crm.workflow_history (instance_id, action, from_state, to_state, branch, actor, comment, at, in_state)
      VALUES (t.instance_id, 'ESCALATE', t.state, t.state, nullif(t.branch, ''), NULL,
              'overdue: passed to the approver''s manager', as_of, as_of - t.created_at);
    INSERT INTO crm.outbox (rule, object, record_id, channel, recipient_kind, principal_id, subject, body, purpose)
      VALUES ('workflow:' || t.workflow, t.object, t.record_id, 'email', 'principal', mgr,
              format('Approval overdue: %s %s', t.object, t.record_id),
              format('Step "%s" of workflow "%s" on %s %s was due %s and is now yours (approval task %s).',
                     t.state || CASE WHEN t.branch <> '' THEN '.' || t.branch ELSE '' END, t.workflow, t.object, t.record_id, t.due_at, new_id),
              'service');
    PERFORM pg_notify('crm_outbox', 'workflow:' || t.workflow);
    PERFORM crm._audit_event('APPROVE', t.object, t.record_id,
      jsonb_build_object('workflow', t.workflow, 'state', t.state, 'escalated_to', mgr, 'task', t.id));
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

CREATE FUNCTION crm.cancel_workflow(object text, record_id bigint, comment text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE inst crm.workflow_instance;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to cancel a workflow' USING ERRCODE = '42501';
  END IF;
  inst := crm._wf_running(cancel_workflow.object, record_id, NULL);
  UPDATE crm.approval_task a SET status = 'cancelled', acted_at = now() WHERE a.instance_id = inst.id AND a.status = 'pending';
  UPDATE crm.workflow_instance i SET ended_at = clock_timestamp(), outcome = 'cancelled' WHERE i.id = inst.id;
  INSERT INTO crm.workflow_history (instance_id, action, from_state, to_state, actor, comment, in_state)
    VALUES (inst.id, 'CANCEL', inst.state, NULL, crm.current_principal(), comment, clock_timestamp() - inst.state_since);
  PERFORM crm._audit_event('TRANSITION', inst.object, inst.record_id,
    jsonb_build_object('workflow', inst.workflow, 'action', 'cancel', 'from', inst.state, 'comment', comment));
  RETURN inst.state;
END $$;

CREATE FUNCTION crm.my_approvals()
RETURNS TABLE (task_id bigint, workflow text, object text, record_id bigint, state text, branch text,
               requested_by bigint, since timestamptz, due_at timestamptz, overdue boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT a.id, i.workflow, i.object, i.record_id, a.state, nullif(a.branch, ''), i.requested_by, a.created_at, a.due_at,
         coalesce(a.due_at < now(), false)
    FROM crm.approval_task a JOIN crm.workflow_instance i ON i.id = a.instance_id
   WHERE a.status = 'pending' AND a.approver_id = crm.current_principal()
   ORDER BY a.due_at NULLS LAST, a.id
$$;

CREATE FUNCTION crm.workflow_status(object text, record_id bigint)
RETURNS TABLE (workflow text, version integer, state text, since timestamptz, waiting_for bigint[], due_at timestamptz,
               started_at timestamptz, requested_by bigint, ended_at timestamptz, outcome text, last_comment text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT coalesce(crm._visible(workflow_status.object, workflow_status.record_id), false) AND NOT crm._caller_has_role('crm_admin')
     AND NOT crm._caller_has_role('crm_auditor') THEN
    RAISE EXCEPTION '% % does not exist or is not visible to you', crm._short(workflow_status.object), crm._short(workflow_status.record_id) USING ERRCODE = '42501';
  END IF;
  RETURN QUERY
  SELECT i.workflow, i.version, i.state, i.state_since,
         ARRAY(SELECT a.approver_id FROM crm.approval_task a WHERE a.instance_id = i.id AND a.status = 'pending' ORDER BY a.approver_id),
         (SELECT min(a.due_at) FROM crm.approval_task a WHERE a.instance_id = i.id AND a.status = 'pending'),
         i.started_at, i.requested_by, i.ended_at, i.outcome,
         (SELECT h.comment FROM crm.workflow_history h WHERE h.instance_id = i.id AND h.comment IS NOT NULL ORDER BY h.id DESC LIMIT 1)
    FROM crm.workflow_instance i
   WHERE i.object = workflow_status.object AND i.record_id = workflow_status.record_id
   ORDER BY i.ended_at IS NULL DESC, i.id DESC
   LIMIT 1;
END $$;

CREATE FUNCTION crm.workflow_history(object text, record_id bigint)
RETURNS TABLE (at timestamptz, action text, from_state text, to_state text, branch text, actor bigint, comment text, in_state interval)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT coalesce(crm._visible(workflow_history.object, workflow_history.record_id), false) AND NOT crm._caller_has_role('crm_admin')
     AND NOT crm._caller_has_role('crm_auditor') THEN
    RAISE EXCEPTION '% % does not exist or is not visible to you', crm._short(workflow_history.object), crm._short(workflow_history.record_id) USING ERRCODE = '42501';
  END IF;
  RETURN QUERY
  SELECT h.at, h.action, h.from_state, h.to_state, h.branch, h.actor, h.comment, h.in_state
    FROM crm.workflow_history h JOIN crm.workflow_instance i ON i.id = h.instance_id
   WHERE i.object = workflow_history.object AND i.record_id = workflow_history.record_id
   ORDER BY h.id;
END $$;

-- Mermaid (flowchart) or Graphviz DOT text of a definition; with a record, its current state highlighted.
CREATE FUNCTION crm.workflow_diagram(name text, format text DEFAULT 'mermaid', record_id bigint DEFAULT NULL)
RETURNS text LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  w crm.workflow;
  def jsonb;
  lines text[] := '{}';
  st text;
  s jsonb;
  b jsonb;
  bname text;
  tr jsonb;
  fr text;
  cur text;
  mer boolean;
  lbl text;
BEGIN
  IF format NOT IN ('mermaid', 'dot') THEN
    RAISE EXCEPTION 'unknown diagram format "%"', crm._short(format) USING ERRCODE = '22023', HINT = 'Formats: mermaid, dot.';
  END IF;
  mer := format = 'mermaid';
  SELECT * INTO w FROM crm.workflow x WHERE x.name = workflow_diagram.name AND x.current;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'workflow "%" does not exist', crm._short(workflow_diagram.name) USING ERRCODE = '42704';
  END IF;
  IF record_id IS NOT NULL THEN
    SELECT i.state, x.definition INTO cur, def FROM crm.workflow_instance i JOIN crm.workflow x ON x.name = i.workflow AND x.version = i.version
     WHERE i.workflow = w.name AND i.record_id = workflow_diagram.record_id AND i.object = w.object
     ORDER BY i.ended_at IS NULL DESC, i.id DESC LIMIT 1;
    IF cur IS NOT NULL AND NOT coalesce(crm._visible(w.object, record_id), false) AND NOT crm._caller_has_role('crm_admin') THEN
      cur := NULL;
    END IF;
  END IF;
  def := coalesce(def, w.definition);
  lines := lines || CASE WHEN mer THEN 'flowchart TD' ELSE format('digraph %s {', quote_ident(w.name)) END;
  IF NOT mer THEN
    lines := lines || '  rankdir=TB; node [fontname="Helvetica"];'::text;
  END IF;
  FOR st, s IN SELECT * FROM jsonb_each(def->'states') ORDER BY key LOOP
    lbl := st || CASE s->>'kind'
      WHEN 'approval' THEN ': ' || crm._wf_describe(s)
      WHEN 'parallel' THEN ': ' || (SELECT string_agg(k || ' (' || crm._wf_describe(v) || ')', ' ∥ ' ORDER BY k) FROM jsonb_each(s->'branches') e(k, v))
      ELSE '' END || CASE WHEN s ? 'sla_hours' THEN format(', SLA %sh', s->>'sla_hours') ELSE '' END;
    IF mer THEN
      lines := lines || ('  ' || st || CASE s->>'kind' WHEN 'end' THEN '(["' || lbl || '"])' WHEN 'branch' THEN '{"' || lbl || '"}'
                                                       WHEN 'parallel' THEN '[["' || lbl || '"]]' WHEN 'approval' THEN '[/"' || lbl || '"/]'
                                                       ELSE '["' || lbl || '"]' END);
    ELSE
      lines := lines || format('  %s [label=%s, shape=%s%s];', st, to_jsonb(lbl)::text,
        CASE s->>'kind' WHEN 'end' THEN 'doublecircle' WHEN 'branch' THEN 'diamond' WHEN 'parallel' THEN 'box3d' WHEN 'approval' THEN 'parallelogram' ELSE 'box' END,
        CASE WHEN st = cur THEN ', style=filled, fillcolor="#ffd54f"' ELSE '' END);
    END IF;
  END LOOP;
  FOR tr IN SELECT x FROM jsonb_array_elements(def->'transitions') x LOOP
    FOR fr IN SELECT jsonb_array_elements_text(tr->'from') LOOP
      lines := lines || CASE WHEN mer THEN format('  %s -->|%s| %s', fr, tr->>'action', tr->>'to')
                             ELSE format('  %s -> %s [label=%s];', fr, tr->>'to', to_jsonb(tr->>'action')::text) END;
    END LOOP;
  END LOOP;
  FOR st, s IN SELECT * FROM jsonb_each(def->'states') ORDER BY key LOOP
    IF s->>'kind' = 'branch' THEN
      FOR b IN SELECT x FROM jsonb_array_elements(s->'branches') x LOOP
        lbl := coalesce(b->>'when', 'otherwise');
        lines := lines || CASE WHEN mer THEN format('  %s -->|"%s"| %s', st, replace(lbl, '"', '#quot;'), b->>'to')
                               ELSE format('  %s -> %s [label=%s];', st, b->>'to', to_jsonb(lbl)::text) END;
      END LOOP;
    ELSIF s->>'kind' IN ('approval', 'parallel') THEN
      lines := lines || CASE WHEN mer THEN format('  %s -->|%s| %s', st, CASE WHEN s->>'kind' = 'parallel' THEN 'all approve' ELSE 'approve' END,
                                                  coalesce(s->>'approve_to', s->>'join_to'))
                             ELSE format('  %s -> %s [label="%s"];', st, coalesce(s->>'approve_to', s->>'join_to'),
                                         CASE WHEN s->>'kind' = 'parallel' THEN 'all approve' ELSE 'approve' END) END;
      lines := lines || CASE WHEN mer THEN format('  %s -.->|reject| %s', st, s->>'reject_to')
                             ELSE format('  %s -> %s [label="reject", style=dashed];', st, s->>'reject_to') END;
    END IF;
  END LOOP;
  IF cur IS NOT NULL AND mer THEN
    lines := lines || '  classDef current fill:#ffd54f,stroke:#f57f17,stroke-width:3px'::text || format('  class %s current', cur);
  END IF;
  IF NOT mer THEN
    lines := lines || '}'::text;
  END IF;
  RETURN array_to_string(lines, E'\n');
END $$;

CREATE FUNCTION crm._wf_describe(step jsonb) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN step->'approvers' ? 'role' THEN step->'approvers'->>'role'
              WHEN step->'approvers' ? 'owner_manager' THEN 'owner''s manager'
              ELSE (SELECT string_agg(l, ', ') FROM jsonb_array_elements_text(step->'approvers'->'logins') l) END
      || CASE WHEN step->'mode' IS NULL OR step->'mode' = '"any"' THEN ''
              WHEN step->'mode' = '"all"' THEN ', all'
              ELSE format(', %s of %s', step->'mode'->>'quorum', coalesce(step->'mode'->>'of', 'them')) END
$$;

-- For BI: approval cycle time per workflow, step and org unit, and SLA breaches.
CREATE VIEW crm.approval_cycle_times AS
  SELECT i.workflow, a.state AS step, nullif(a.branch, '') AS branch, i.org_unit_id,
         count(*) FILTER (WHERE a.status IN ('approved', 'rejected')) AS decided,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.acted_at - a.created_at) / 3600.0)
           FILTER (WHERE a.status IN ('approved', 'rejected')) AS median_hours,
         percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM a.acted_at - a.created_at) / 3600.0)
           FILTER (WHERE a.status IN ('approved', 'rejected')) AS p90_hours,
         count(*) FILTER (WHERE a.due_at IS NOT NULL AND (coalesce(a.acted_at, now()) > a.due_at)
                            AND a.status IN ('approved', 'rejected', 'escalated', 'pending')) AS sla_breaches,
         count(*) FILTER (WHERE a.status = 'pending') AS pending
    FROM crm.approval_task a JOIN crm.workflow_instance i ON i.id = a.instance_id
   GROUP BY i.workflow, a.state, a.branch, i.org_unit_id;
COMMENT ON VIEW crm.approval_cycle_times IS 'approval steps per workflow, step (and parallel branch) and org unit: decisions, median and p90 hours from task to decision, SLA breaches (decided or escalated after due, or pending past due), pending';
COMMENT ON COLUMN crm.approval_cycle_times.median_hours IS 'median hours from the task''s creation to its approval or rejection';
COMMENT ON COLUMN crm.approval_cycle_times.p90_hours IS '90th percentile of the same';
COMMENT ON COLUMN crm.approval_cycle_times.sla_breaches IS 'tasks decided or escalated after their due time, or still pending past it';
