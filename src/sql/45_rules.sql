------------------------------------------------------------------------------------------------
-- Rules: event and scheduled automation, tasks, the outbox, consent.
-- Event rules compile into a row trigger crm_rule_<name> whose WHEN clause is the condition, so the
-- executor skips rows for which it is false; the trigger function (C) runs the rule's actions as
-- one prepared statement. Scheduled rules run that statement set-based: one INSERT claims
-- (rule, record, occurrence) in crm.rule_fired, and only newly claimed records act.
------------------------------------------------------------------------------------------------
CREATE TABLE crm.rule (
  name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,47}$'),
  object          text NOT NULL REFERENCES crm.object (name) ON DELETE CASCADE,
  event           text NOT NULL CHECK (event IN ('insert', 'update', 'delete', 'schedule')),
  condition       text NOT NULL,
  actions         jsonb NOT NULL,
  options         jsonb NOT NULL DEFAULT '{}',
  enabled         boolean NOT NULL DEFAULT true,
  owner_principal bigint NOT NULL REFERENCES crm.principal (id),
  definer         name NOT NULL,
  cadence         interval,
  compiled        text NOT NULL,
  statement       text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
  updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE crm.rule IS 'automation rules (crm.create_rule); compiled = trigger or query, statement = the actions';
CREATE TABLE crm.rule_state (
  rule          text PRIMARY KEY REFERENCES crm.rule (name) ON DELETE CASCADE,
  next_run_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
  last_run_at   timestamptz,
  last_fired    bigint,
  runs          bigint NOT NULL DEFAULT 0,
  last_error    text,
  last_error_at timestamptz
);
COMMENT ON TABLE crm.rule_state IS 'when each scheduled rule runs next, and how its last run went';
CREATE TABLE crm.rule_fired (
  rule       text NOT NULL,   -- no foreign key: one check per fired record; crm.drop_rule deletes these
  record_id  bigint NOT NULL,
  occurrence text NOT NULL,
  fired_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
  PRIMARY KEY (rule, record_id, occurrence)
);
COMMENT ON TABLE crm.rule_fired IS 'scheduled rules: one row per rule, record and occurrence (what makes runs idempotent)';
CREATE TABLE crm.rule_skip (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  rule       text NOT NULL REFERENCES crm.rule (name) ON DELETE CASCADE,
  action     integer NOT NULL,
  record_id  bigint,
  occurrence text,
  reason     text NOT NULL,
  at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX rule_skip_rule ON crm.rule_skip (rule, record_id);
COMMENT ON TABLE crm.rule_skip IS 'actions a rule did not take, and why (no consent, no manager, no address)';
CREATE TABLE crm.outbox (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  rule            text,
  object          text,
  record_id       bigint,
  occurrence      text,
  channel         text NOT NULL CHECK (channel IN ('sms', 'email', 'wecom', 'dingtalk', 'webhook')),
  recipient_kind  text NOT NULL CHECK (recipient_kind IN ('customer', 'principal', 'endpoint')),
  customer_id     bigint,
  principal_id    bigint,
  address         text,
  subject         text,
  body            text NOT NULL,
  purpose         text NOT NULL,
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  claimed_at      timestamptz,
  sent_at         timestamptz,
  last_error      text,
  created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX outbox_due ON crm.outbox (next_attempt_at, id) WHERE status IN ('pending', 'sending');
COMMENT ON TABLE crm.outbox IS 'messages for connectors to send: crm.outbox_claim / outbox_done / outbox_failed; NOTIFY crm_outbox on new rows';
SELECT pg_catalog.pg_extension_config_dump('crm.rule', '');
SELECT pg_catalog.pg_extension_config_dump('crm.rule_state', '');
SELECT pg_catalog.pg_extension_config_dump('crm.rule_fired', '');
SELECT pg_catalog.pg_extension_config_dump('crm.rule_skip', '');
SELECT pg_catalog.pg_extension_config_dump('crm.outbox', '');
-- rule changes reach every backend's compiled-rule cache
CREATE TRIGGER crm_acl_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON crm.rule
  FOR EACH STATEMENT EXECUTE FUNCTION crm._acl_changed();
ALTER TABLE crm.rule ENABLE ALWAYS TRIGGER crm_acl_changed;

-- dates: "today" is crm.today (a superuser-only setting for tests) or the current date
CREATE FUNCTION crm.today() RETURNS date
  LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_today_sql';
COMMENT ON FUNCTION crm.today() IS 'the current date, or the date in setting crm.today (superuser-only, for tests)';
CREATE FUNCTION crm.days_until(d date) RETURNS integer
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_days_until';
CREATE FUNCTION crm.days_until(d date, today date) RETURNS integer
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_days_until';
COMMENT ON FUNCTION crm.days_until(date) IS 'days from today to d (negative when d is past)';
CREATE FUNCTION crm.next_anniversary(d date) RETURNS date
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_next_anniversary';
CREATE FUNCTION crm.next_anniversary(d date, today date) RETURNS date
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_next_anniversary';
COMMENT ON FUNCTION crm.next_anniversary(date) IS 'the next date, today or later, with the month and day of d (29 February: 28 February in common years)';
CREATE FUNCTION crm.days_until_anniversary(d date) RETURNS integer
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_days_until_anniversary';
CREATE FUNCTION crm.days_until_anniversary(d date, today date) RETURNS integer
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_days_until_anniversary';
CREATE FUNCTION crm.anniversary_key(d date) RETURNS integer
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_anniversary_key';
COMMENT ON FUNCTION crm.anniversary_key(date) IS 'month * 100 + day of d (229 for 29 February); index it to find anniversaries fast';
CREATE FUNCTION crm.anniversary_keys(days integer) RETURNS integer[]
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_anniversary_keys';
CREATE FUNCTION crm.anniversary_keys(days integer, today date) RETURNS integer[]
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_anniversary_keys';
COMMENT ON FUNCTION crm.anniversary_keys(integer) IS 'anniversary keys of the next n days, today included (29 February with 28 February in common years): crm.anniversary_key(birthday) = ANY (crm.anniversary_keys(7)) uses an index on crm.anniversary_key(birthday)';
COMMENT ON FUNCTION crm.days_until_anniversary(date) IS 'days until the next anniversary of d (0 on the day): birthdays, contract anniversaries';

CREATE FUNCTION crm._rule_expr(rule text, object text, event text, what text, expr text, want_bool boolean) RETURNS text
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_rule_expr';
CREATE FUNCTION crm._rule_trigger(rule text, object text, event text, condition text) RETURNS text
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_rule_trigger';
CREATE FUNCTION crm._rule_fire() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_rule_fire';
CREATE FUNCTION crm._run_rule(rule text) RETURNS bigint
  LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'crm_run_rule';
CREATE FUNCTION crm._render(template text, object text, rec jsonb, owner_id bigint, recipient bigint, kind text) RETURNS text
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_render';
CREATE FUNCTION crm._outer_user() RETURNS name
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_outer_user';
CREATE FUNCTION crm._rule_call(fn regprocedure, record_id bigint, definer name) RETURNS void
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_rule_call';

-- consent (crm_data.consent): active = granted, not withdrawn, for the purpose and the channel or 'any'
CREATE FUNCTION crm.has_consent(customer_id bigint, purpose text, channel text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT EXISTS (SELECT 1 FROM crm_data.consent c
                  WHERE c.customer_id OPERATOR(pg_catalog.=) $1 AND c.purpose OPERATOR(pg_catalog.=) $2
                    AND c.channel OPERATOR(pg_catalog.=) ANY (ARRAY[$3, 'any'])
                    AND c.granted_at OPERATOR(pg_catalog.<=) pg_catalog.now()
                    AND (c.withdrawn_at IS NULL OR c.withdrawn_at OPERATOR(pg_catalog.>) pg_catalog.now()))
$$;
COMMENT ON FUNCTION crm.has_consent(bigint, text, text) IS 'whether the customer has active consent for the purpose on the channel (or on any channel); reads as the caller';

-- {{field}} placeholders of a template: each must be a field of the object
CREATE FUNCTION crm._check_template(rname text, obj text, what text, tpl text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE f text;
BEGIN
  IF tpl IS NULL THEN
    RETURN;
  END IF;
  FOR f IN SELECT btrim(m[1]) FROM regexp_matches(tpl, '\{\{([^}]*)\}\}', 'g') AS m LOOP
    IF f <> 'id' AND NOT EXISTS (SELECT 1 FROM crm.field x WHERE x.object = obj AND x.name = f) THEN
      RAISE EXCEPTION 'template % of rule "%" names unknown field "%"', crm._short(what), crm._short(rname), crm._short(f) USING ERRCODE = '42703',
        DETAIL = format('Object "%s" has no field "%s".', crm._short(obj), crm._short(f)),
        HINT = 'Placeholders are {{field}} with a field of the rule''s object.';
    END IF;
  END LOOP;
END $$;

-- The record's values a template needs, as jsonb (only its placeholders, not the whole row)
CREATE FUNCTION crm._template_json(alias text, tpls text[]) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce('pg_catalog.jsonb_build_object(' || string_agg(format('%L, %I.%I', f, $1, f), ', ') || ')', '''{}''::pg_catalog.jsonb')
    FROM (SELECT DISTINCT btrim(m[1]) AS f FROM unnest($2) t, regexp_matches(t, '\{\{([^}]*)\}\}', 'g') AS m) x
$$;

-- Build the statement that runs a rule's actions. Event rules: $1 is the row, $2 the rule's name.
-- Scheduled rules: $1 is the rule's name; records are claimed per occurrence first.
CREATE FUNCTION crm._rule_build(rname text, obj text, ev text, cond text, occ text, acts jsonb, definer name)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  t text := format('crm_data.%I', obj);
  rn text := CASE WHEN ev = 'schedule' THEN '$1' ELSE '$2' END;
  cust text;
  ctes text[] := '{}';
  counts text[] := '{}';
  a jsonb;
  i integer := 0;
  kind text;
  who jsonb;
  assignee text;
  noone text;
  ch text;
  purpose text;
  addr text;
  ok text;
  f record;
  fn regprocedure;
  lit text;
  pid bigint;
BEGIN
  IF obj = 'customer' THEN
    cust := CASE WHEN ev = 'delete' THEN 'NULL::bigint' ELSE 'r.id' END;
  ELSIF EXISTS (SELECT 1 FROM crm.field x WHERE x.object = obj AND x.name = 'customer_id' AND x.type = 'reference'
                  AND x.options->>'object' = 'customer') THEN
    cust := 'r.customer_id';
  ELSE
    cust := 'NULL::bigint';
  END IF;
  IF ev = 'schedule' THEN
    -- the matching records, read once; those newly claimed for this occurrence act
    ctes := ctes || format('due AS (SELECT t.*, (%s)::text AS occurrence FROM %s t WHERE %s)', occ, t, cond);
    ctes := ctes || 'fired AS (INSERT INTO crm.rule_fired AS f (rule, record_id, occurrence) SELECT $1, due.id, due.occurrence FROM due ON CONFLICT DO NOTHING RETURNING f.record_id, f.occurrence)'::text;
    ctes := ctes || 'r AS (SELECT due.* FROM due JOIN fired ON fired.record_id OPERATOR(pg_catalog.=) due.id AND fired.occurrence OPERATOR(pg_catalog.=) due.occurrence)'::text;
    counts := counts || 'fired'::text;
  ELSE
    ctes := ctes || 'r AS (SELECT (x.rec).*, NULL::text AS occurrence FROM (SELECT $1 AS rec) x)'::text;
    counts := counts || 'r'::text;
  END IF;
  IF jsonb_typeof(acts) IS DISTINCT FROM 'array' OR jsonb_array_length(acts) = 0 THEN
    RAISE EXCEPTION 'actions of rule "%" must be a non-empty JSON array', crm._short(rname) USING ERRCODE = '22023',
      HINT = 'e.g. [{"type": "create_task", "assignee": "owner", "title": "Call {{name}}"}]';
  END IF;
  FOR a IN SELECT x FROM jsonb_array_elements(acts) x LOOP
    i := i + 1;
    kind := a->>'type';
    IF jsonb_typeof(a) IS DISTINCT FROM 'object' OR kind IS NULL THEN
      RAISE EXCEPTION 'action % of rule "%" has no type', crm._short(i), crm._short(rname) USING ERRCODE = '22023',
        HINT = 'Types: create_task, notify, set_field, start_workflow, call.';
    END IF;
    CASE kind
    WHEN 'create_task' THEN
      who := coalesce(a->'assignee', '"owner"');
      noone := 'no assignee found';
      IF who = '"owner"' THEN
        assignee := 'r.owner_id';
        noone := 'the record has no owner';
      ELSIF who = '"owner_manager"' THEN
        assignee := '(SELECT p.manager_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) r.owner_id)';
        noone := 'the record''s owner has no manager';
      ELSIF jsonb_typeof(who) = 'object' AND who ? 'principal' THEN
        SELECT p.id INTO pid FROM crm.principal p WHERE p.login = who->>'principal' AND p.active;
        IF pid IS NULL THEN
          RAISE EXCEPTION 'action % of rule "%": no active principal with login "%"', crm._short(i), crm._short(rname), crm._short(who->>'principal')
            USING ERRCODE = '42704';
        END IF;
        assignee := pid::text;
      ELSIF jsonb_typeof(who) = 'object' AND who ? 'role' THEN
        IF NOT EXISTS (SELECT 1 FROM crm.role x WHERE x.name = who->>'role') THEN
          RAISE EXCEPTION 'action % of rule "%": unknown CRM role "%"', crm._short(i), crm._short(rname), crm._short(who->>'role') USING ERRCODE = '42704',
            HINT = 'See crm.role.';
        END IF;
        assignee := format('(WITH RECURSIVE up(id, depth) AS (SELECT r.org_unit_id, 0 UNION ALL SELECT u.parent_id, up.depth OPERATOR(pg_catalog.+) 1'
          ' FROM up JOIN crm.org_unit u ON u.id OPERATOR(pg_catalog.=) up.id WHERE u.parent_id IS NOT NULL AND up.depth OPERATOR(pg_catalog.<) 64)'
          ' SELECT p.id FROM up JOIN crm.principal p ON p.org_unit_id OPERATOR(pg_catalog.=) up.id AND p.active'
          ' JOIN crm.principal_role pr ON pr.principal_id OPERATOR(pg_catalog.=) p.id AND pr.role OPERATOR(pg_catalog.=) %L'
          ' ORDER BY up.depth, p.id LIMIT 1)', who->>'role');
        noone := format('no active principal with role %s in the record''s org unit or above it', who->>'role');
      ELSE
        RAISE EXCEPTION 'action % of rule "%": unknown assignee %', crm._short(i), crm._short(rname), crm._short(who) USING ERRCODE = '22023',
          HINT = 'assignee: "owner", "owner_manager", {"principal": "<login>"} or {"role": "<crm role>"}.';
      END IF;
      IF a->>'title' IS NULL THEN
        RAISE EXCEPTION 'action % of rule "%": create_task needs a title', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
      END IF;
      PERFORM crm._check_template(rname, obj, 'title', a->>'title');
      PERFORM crm._check_template(rname, obj, 'body', a->>'body');
      IF a ? 'due_in_days' AND (jsonb_typeof(a->'due_in_days') <> 'number' OR (a->>'due_in_days')::numeric <> trunc((a->>'due_in_days')::numeric)) THEN
        RAISE EXCEPTION 'action % of rule "%": due_in_days must be a whole number of days', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
      END IF;
      IF coalesce(a->>'priority', 'normal') NOT IN ('low', 'normal', 'high') THEN
        RAISE EXCEPTION 'action % of rule "%": priority must be low, normal or high', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
      END IF;
      ctes := ctes || format('a%s AS (SELECT r.*, %s AS assignee FROM r)', i, assignee);
      ctes := ctes || format('w%s AS (INSERT INTO crm_data.task (customer_id, owner_id, assignee_id, title, body, due_on, priority)'
        ' SELECT %s, a.assignee, a.assignee, crm._render(%L, %L, %s, a.owner_id, a.assignee, ''principal''),'
        ' crm._render(%L, %L, %s, a.owner_id, a.assignee, ''principal''), %s, %L FROM a%s a WHERE a.assignee IS NOT NULL RETURNING 1)',
        i, replace(cust, 'r.', 'a.'), a->>'title', obj, crm._template_json('a', ARRAY[a->>'title']), a->>'body', obj, crm._template_json('a', ARRAY[a->>'body']),
        CASE WHEN a ? 'due_in_days' THEN format('crm.today() OPERATOR(pg_catalog.+) %s', (a->>'due_in_days')::integer) ELSE 'NULL::date' END,
        coalesce(a->>'priority', 'normal'), i);
      ctes := ctes || format('k%s AS (INSERT INTO crm.rule_skip (rule, action, record_id, occurrence, reason)'
        ' SELECT %s, %s, a.id, a.occurrence, %L FROM a%s a WHERE a.assignee IS NULL RETURNING 1)', i, rn, i, noone, i);
      counts := counts || format('w%s', i) || format('k%s', i);
    WHEN 'notify' THEN
      ch := a->>'channel';
      IF ch IS NULL OR ch NOT IN ('sms', 'email', 'wecom', 'dingtalk', 'webhook') THEN
        RAISE EXCEPTION 'action % of rule "%": unknown channel %', crm._short(i), crm._short(rname), crm._short(coalesce(quote_literal(ch), 'NULL')) USING ERRCODE = '22023',
          HINT = 'Channels: sms, email, wecom, dingtalk, webhook.';
      END IF;
      IF a->>'template' IS NULL THEN
        RAISE EXCEPTION 'action % of rule "%": notify needs a template', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
      END IF;
      PERFORM crm._check_template(rname, obj, 'template', a->>'template');
      PERFORM crm._check_template(rname, obj, 'subject', a->>'subject');
      purpose := coalesce(a->>'purpose', 'service');
      IF purpose NOT IN ('marketing', 'service', 'data_sharing', 'profiling') THEN
        RAISE EXCEPTION 'action % of rule "%": unknown purpose "%"', crm._short(i), crm._short(rname), crm._short(purpose) USING ERRCODE = '22023',
          HINT = 'Purposes: marketing, service, data_sharing, profiling (those of crm_data.consent).';
      END IF;
      CASE coalesce(a->>'to', CASE WHEN ch = 'webhook' THEN 'endpoint' ELSE 'customer' END)
      WHEN 'customer' THEN
        IF cust = 'NULL::bigint' THEN
          RAISE EXCEPTION 'action % of rule "%": object "%" has no customer to notify', crm._short(i), crm._short(rname), crm._short(obj) USING ERRCODE = '22023',
            HINT = 'Notify "owner" instead, or give the object a customer_id reference.';
        END IF;
        addr := CASE ch WHEN 'sms' THEN 'c.mobile' WHEN 'email' THEN 'c.email' ELSE 'NULL::text' END;
        ok := CASE WHEN purpose = 'service' THEN 'true' ELSE format('crm.has_consent(c.id, %L, %L)', purpose, ch) END;
        ctes := ctes || format('n%s AS (SELECT r.*, c.id AS rcpt, %s AS addr, %s AS ok FROM r JOIN crm_data.customer c ON c.id OPERATOR(pg_catalog.=) %s)', i, addr, ok, cust);
        ctes := ctes || format('o%s AS (INSERT INTO crm.outbox (rule, object, record_id, occurrence, channel, recipient_kind, customer_id, address, subject, body, purpose)'
          ' SELECT %s, %L, n.id, n.occurrence, %L, ''customer'', n.rcpt, n.addr, crm._render(%L, %L, %s, n.owner_id, n.rcpt, ''customer''),'
          ' crm._render(%L, %L, %s, n.owner_id, n.rcpt, ''customer''), %L FROM n%s n WHERE n.ok AND (n.addr IS NOT NULL OR %L NOT IN (''sms'', ''email'')) RETURNING 1)',
          i, rn, obj, ch, a->>'subject', obj, crm._template_json('n', ARRAY[a->>'subject']), a->>'template', obj, crm._template_json('n', ARRAY[a->>'template']), purpose, i, ch);
        ctes := ctes || format('k%s AS (INSERT INTO crm.rule_skip (rule, action, record_id, occurrence, reason)'
          ' SELECT %s, %s, n.id, n.occurrence, CASE WHEN NOT n.ok THEN %L ELSE %L END FROM n%s n WHERE NOT n.ok OR (n.addr IS NULL AND %L IN (''sms'', ''email'')) RETURNING 1)',
          i, rn, i, format('no active consent for %s by %s', purpose, ch), format('the customer has no %s address', ch), i, ch);
      WHEN 'owner' THEN
        ctes := ctes || format('o%s AS (INSERT INTO crm.outbox (rule, object, record_id, occurrence, channel, recipient_kind, principal_id, subject, body, purpose)'
          ' SELECT %s, %L, r.id, r.occurrence, %L, ''principal'', r.owner_id, crm._render(%L, %L, %s, r.owner_id, r.owner_id, ''principal''),'
          ' crm._render(%L, %L, %s, r.owner_id, r.owner_id, ''principal''), %L FROM r RETURNING 1)',
          i, rn, obj, ch, a->>'subject', obj, crm._template_json('r', ARRAY[a->>'subject']), a->>'template', obj, crm._template_json('r', ARRAY[a->>'template']), purpose);
        ctes := ctes || format('k%s AS (SELECT 1 WHERE false)', i);
      WHEN 'endpoint' THEN
        IF ch <> 'webhook' OR a->>'url' IS NULL THEN
          RAISE EXCEPTION 'action % of rule "%": notifying an endpoint needs channel webhook and a url', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
        END IF;
        -- no recipient to read for: the record's non-personal fields only
        ctes := ctes || format('o%s AS (INSERT INTO crm.outbox (rule, object, record_id, occurrence, channel, recipient_kind, address, subject, body, purpose)'
          ' SELECT %s, %L, r.id, r.occurrence, ''webhook'', ''endpoint'', %L, crm._render(%L, %L, %s, r.owner_id, NULL, ''endpoint''),'
          ' crm._render(%L, %L, %s, r.owner_id, NULL, ''endpoint''), %L FROM r RETURNING 1)',
          i, rn, obj, a->>'url', a->>'subject', obj, crm._template_json('r', ARRAY[a->>'subject']), a->>'template', obj, crm._template_json('r', ARRAY[a->>'template']), purpose);
        ctes := ctes || format('k%s AS (SELECT 1 WHERE false)', i);
      ELSE
        RAISE EXCEPTION 'action % of rule "%": unknown recipient "%"', crm._short(i), crm._short(rname), crm._short(a->>'to') USING ERRCODE = '22023',
          HINT = 'to: "customer", "owner", or (webhook) "endpoint".';
      END CASE;
      ctes := ctes || format('y%s AS (SELECT pg_catalog.pg_notify(''crm_outbox'', %s) FROM (SELECT 1 FROM o%s LIMIT 1) z)', i, rn, i);
      counts := counts || format('o%s', i) || format('k%s', i) || format('y%s', i);
    WHEN 'set_field' THEN
      IF ev = 'delete' THEN
        RAISE EXCEPTION 'action % of rule "%": a delete rule cannot set fields of the deleted record', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
      END IF;
      SELECT x.name, x.type, x.encrypted, crm._column_type(x.type) AS coltype INTO f FROM crm.field x WHERE x.object = obj AND x.name = a->>'field';
      IF f.name IS NULL THEN
        RAISE EXCEPTION 'action % of rule "%": unknown field "%"', crm._short(i), crm._short(rname), crm._short(a->>'field') USING ERRCODE = '42703',
          DETAIL = format('Object "%s" has no field "%s".', crm._short(obj), crm._short(a->>'field'));
      END IF;
      IF f.encrypted THEN
        RAISE EXCEPTION 'action % of rule "%": set_field cannot set encrypted field "%"', crm._short(i), crm._short(rname), crm._short(f.name) USING ERRCODE = '0A000';
      END IF;
      IF NOT a ? 'value' THEN
        RAISE EXCEPTION 'action % of rule "%": set_field needs a value', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
      END IF;
      lit := CASE WHEN a->'value' = 'null' THEN NULL ELSE a->>'value' END;
      BEGIN
        EXECUTE format('SELECT %L::%s', lit, f.coltype);
      EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'action % of rule "%": % is not a valid % for field "%"', crm._short(i), crm._short(rname), crm._short(a->'value'), crm._short(f.type), crm._short(f.name)
          USING ERRCODE = '22023';
      END;
      IF f.type = 'picklist' AND lit IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM crm.field x, jsonb_array_elements_text(x.options->'values') v WHERE x.object = obj AND x.name = f.name AND v = lit) THEN
        RAISE EXCEPTION 'action % of rule "%": "%" is not a value of picklist "%"', crm._short(i), crm._short(rname), crm._short(lit), crm._short(f.name) USING ERRCODE = '22023';
      END IF;
      -- a record that already holds the value is left alone, so a rule cannot re-fire itself through it
      ctes := ctes || format('s%s AS (UPDATE %s u SET %I = %L::%s FROM r WHERE u.id OPERATOR(pg_catalog.=) r.id AND u.%I IS DISTINCT FROM %L::%s RETURNING 1)',
        i, t, f.name, lit, f.coltype, f.name, lit, f.coltype);
      counts := counts || format('s%s', i);
    WHEN 'call' THEN
      fn := to_regprocedure(coalesce(a->>'function', '') || '(bigint)');
      IF fn IS NULL THEN
        RAISE EXCEPTION 'action % of rule "%": no function %(bigint)', crm._short(i), crm._short(rname), crm._short(coalesce(a->>'function', '?')) USING ERRCODE = '42883',
          HINT = 'A call action names a schema-qualified function taking the record id (bigint).';
      END IF;
      IF NOT has_function_privilege(definer, fn, 'EXECUTE') THEN
        RAISE EXCEPTION 'action % of rule "%": % may not execute %', crm._short(i), crm._short(rname), crm._short(definer), crm._short(fn) USING ERRCODE = '42501';
      END IF;
      ctes := ctes || format('c%s AS (SELECT crm._rule_call(%L::pg_catalog.regprocedure, r.id, %L) FROM r)', i, fn::text, definer);
      counts := counts || format('c%s', i);
    WHEN 'start_workflow' THEN
      IF NOT EXISTS (SELECT 1 FROM crm.workflow w WHERE w.name = a->>'workflow' AND w.current) THEN
        RAISE EXCEPTION 'action % of rule "%": workflow % does not exist', crm._short(i), crm._short(rname), crm._short(coalesce(quote_literal(a->>'workflow'), '(missing)'))
          USING ERRCODE = '42704', HINT = 'Define it first with crm.define_workflow().';
      END IF;
      IF (SELECT w.object FROM crm.workflow w WHERE w.name = a->>'workflow' AND w.current) <> obj THEN
        RAISE EXCEPTION 'action % of rule "%": workflow "%" drives another object', crm._short(i), crm._short(rname), crm._short(a->>'workflow') USING ERRCODE = '22023';
      END IF;
      IF ev = 'delete' THEN
        RAISE EXCEPTION 'action % of rule "%": a delete rule cannot start a workflow on the deleted record', crm._short(i), crm._short(rname) USING ERRCODE = '22023';
      END IF;
      -- a record whose workflow already runs is left alone
      ctes := ctes || format('sw%s AS (SELECT crm.start_workflow(%L, r.id) FROM r WHERE NOT EXISTS (SELECT 1 FROM crm.workflow_instance wi'
        ' WHERE wi.object OPERATOR(pg_catalog.=) %L AND wi.record_id OPERATOR(pg_catalog.=) r.id AND wi.workflow OPERATOR(pg_catalog.=) %L AND wi.ended_at IS NULL))',
        i, a->>'workflow', obj, a->>'workflow');
      counts := counts || format('sw%s', i);
    ELSE
      RAISE EXCEPTION 'action % of rule "%": unknown action type "%"', crm._short(i), crm._short(rname), crm._short(kind) USING ERRCODE = '22023',
        HINT = 'Types: create_task, notify, set_field, start_workflow, call.';
    END CASE;
  END LOOP;
  -- one column per CTE, so that each runs; the first counts the records the rule acted on
  RETURN 'WITH ' || array_to_string(ctes, ', ') || ' SELECT '
    || (SELECT string_agg(format('(SELECT pg_catalog.count(*) FROM %s)', c), ', ' ORDER BY o) FROM unnest(counts) WITH ORDINALITY u(c, o));
END $$;

CREATE FUNCTION crm._rule_cadence(rname text, opts jsonb) RETURNS interval
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE c text := coalesce(opts->>'cadence', 'daily');
BEGIN
  CASE c
  WHEN 'hourly' THEN RETURN interval '1 hour';
  WHEN 'daily' THEN RETURN interval '1 day';
  WHEN 'weekly' THEN RETURN interval '7 days';
  WHEN 'monthly' THEN RETURN interval '1 month';
  ELSE
    BEGIN
      IF c::interval < interval '1 minute' THEN
        RAISE EXCEPTION 'cadence of rule "%" is shorter than a minute', crm._short(rname) USING ERRCODE = '22023';
      END IF;
      RETURN c::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
      RAISE EXCEPTION 'unknown cadence "%" for rule "%"', crm._short(c), crm._short(rname) USING ERRCODE = '22023',
        HINT = 'hourly, daily (the default), weekly, monthly, or an interval such as ''6 hours''.';
    END;
  END CASE;
END $$;

-- Validate and compile one rule (row already in crm.rule): trigger or schedule, statement.
CREATE FUNCTION crm._rule_compile(rname text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r crm.rule;
  w text;
  occ text;
  cad interval;
  unknown text;
BEGIN
  SELECT * INTO r FROM crm.rule x WHERE x.name = rname;
  SELECT string_agg(k, ', ') INTO unknown FROM jsonb_object_keys(r.options) k WHERE k NOT IN ('cadence', 'occurrence', 'run_as', 'description');
  IF unknown IS NOT NULL THEN
    RAISE EXCEPTION 'unknown option(s) for rule "%": %', crm._short(rname), crm._short(unknown) USING ERRCODE = '22023',
      HINT = 'Options: cadence, occurrence (scheduled rules), run_as, description.';
  END IF;
  IF r.event = 'schedule' THEN
    cad := crm._rule_cadence(rname, r.options);
    w := crm._rule_expr(rname, r.object, 'schedule', 'condition', r.condition, true);
    occ := CASE WHEN r.options ? 'occurrence' THEN crm._rule_expr(rname, r.object, 'schedule', 'occurrence', r.options->>'occurrence', false)
                WHEN cad >= interval '1 day' THEN format('pg_catalog.date_trunc(%L, crm.today())::date',
                       CASE WHEN cad >= interval '1 month' THEN 'month' WHEN cad >= interval '7 days' THEN 'week' ELSE 'day' END)
                ELSE 'pg_catalog.date_trunc(''hour'', pg_catalog.now())' END;
    UPDATE crm.rule x SET cadence = cad, compiled = format('SELECT t.id, %s AS occurrence FROM crm_data.%I t WHERE %s', occ, r.object, w),
           statement = crm._rule_build(rname, r.object, 'schedule', w, occ, r.actions, r.definer)
     WHERE x.name = rname;
    INSERT INTO crm.rule_state (rule) VALUES (rname) ON CONFLICT (rule) DO NOTHING;
    PERFORM crm._rule_trigger(rname, r.object, 'update', NULL);
  ELSE
    IF r.options ? 'cadence' OR r.options ? 'occurrence' THEN
      RAISE EXCEPTION 'rule "%": cadence and occurrence are for scheduled rules only', crm._short(rname) USING ERRCODE = '22023';
    END IF;
    w := crm._rule_expr(rname, r.object, r.event, 'condition', r.condition, true);
    UPDATE crm.rule x SET cadence = NULL,
           statement = crm._rule_build(rname, r.object, r.event, NULL, NULL, r.actions, r.definer),
           compiled = CASE WHEN r.enabled THEN crm._rule_trigger(rname, r.object, r.event, w)
                           ELSE coalesce(crm._rule_trigger(rname, r.object, r.event, NULL), '(disabled: no trigger)') END
     WHERE x.name = rname;
    DELETE FROM crm.rule_state s WHERE s.rule = rname;
  END IF;
END $$;

CREATE FUNCTION crm._rule_owner(rname text, opts jsonb) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE p bigint;
BEGIN
  IF opts ? 'run_as' THEN
    SELECT x.id INTO p FROM crm.principal x WHERE x.login = opts->>'run_as' AND x.active;
    IF p IS NULL THEN
      RAISE EXCEPTION 'rule "%": no active principal with login "%" to run as', crm._short(rname), crm._short(opts->>'run_as') USING ERRCODE = '42704';
    END IF;
    RETURN p;
  END IF;
  p := crm.current_principal();
  IF p IS NULL THEN
    RAISE EXCEPTION 'rule "%" needs a principal to run as', crm._short(rname) USING ERRCODE = '22023',
      DETAIL = 'A rule''s actions run as its owner, a principal; no principal is acting here.',
      HINT = 'Act as a principal (crm.act_as), or give the option run_as with a principal''s login.';
  END IF;
  RETURN p;
END $$;

CREATE FUNCTION crm.create_rule(name text, object text, event text, condition text, actions jsonb, options jsonb DEFAULT '{}')
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to create rule "%"', crm._short(create_rule.name) USING ERRCODE = '42501',
      HINT = 'Rules are made by crm_admin.';
  END IF;
  IF create_rule.name IS NULL OR create_rule.name !~ '^[a-z][a-z0-9_]{0,47}$' THEN
    RAISE EXCEPTION 'invalid rule name %', crm._short(coalesce(quote_literal(create_rule.name), 'NULL')) USING ERRCODE = '42602',
      HINT = 'A rule name is 1 to 48 lower-case letters, digits and underscores, starting with a letter.';
  END IF;
  IF EXISTS (SELECT 1 FROM crm.rule x WHERE x.name = create_rule.name) THEN
    RAISE EXCEPTION 'rule "%" already exists', crm._short(create_rule.name) USING ERRCODE = '42710',
      HINT = 'Change it with crm.alter_rule(), or drop it first.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.object x WHERE x.name = create_rule.object) THEN
    RAISE EXCEPTION 'object "%" does not exist', crm._short(create_rule.object) USING ERRCODE = '42704',
      HINT = 'See crm.objects.';
  END IF;
  IF event IS NULL OR event NOT IN ('insert', 'update', 'delete', 'schedule') THEN
    RAISE EXCEPTION 'unknown event % for rule "%"', crm._short(coalesce(quote_literal(event), 'NULL')), crm._short(create_rule.name) USING ERRCODE = '22023',
      HINT = 'Events: insert, update, delete, schedule.';
  END IF;
  IF jsonb_typeof(coalesce(options, '{}')) <> 'object' THEN
    RAISE EXCEPTION 'options of rule "%" must be a JSON object', crm._short(create_rule.name) USING ERRCODE = '22023';
  END IF;
  DELETE FROM crm.rule_fired f WHERE f.rule = create_rule.name;  -- left by a rule of this name dropped with its object
  INSERT INTO crm.rule (name, object, event, condition, actions, options, owner_principal, definer, compiled, statement)
  VALUES (create_rule.name, create_rule.object, event, coalesce(condition, 'true'), coalesce(actions, 'null'),
          coalesce(options, '{}'), crm._rule_owner(create_rule.name, coalesce(options, '{}')), crm._outer_user(), '', '');
  PERFORM crm._rule_compile(create_rule.name);
  RETURN create_rule.name;
END $$;
COMMENT ON FUNCTION crm.create_rule(text, text, text, text, jsonb, jsonb) IS
  'an automation rule: event insert/update/delete (a trigger whose WHEN is the condition) or schedule (options.cadence, options.occurrence); actions create_task, notify, set_field, call';

CREATE FUNCTION crm.alter_rule(name text, condition text DEFAULT NULL, actions jsonb DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to alter rule "%"', crm._short(alter_rule.name) USING ERRCODE = '42501';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.rule x WHERE x.name = alter_rule.name) THEN
    RAISE EXCEPTION 'rule "%" does not exist', crm._short(alter_rule.name) USING ERRCODE = '42704';
  END IF;
  IF options IS NOT NULL AND jsonb_typeof(options) <> 'object' THEN
    RAISE EXCEPTION 'options of rule "%" must be a JSON object', crm._short(alter_rule.name) USING ERRCODE = '22023';
  END IF;
  UPDATE crm.rule x SET condition = coalesce(alter_rule.condition, x.condition), actions = coalesce(alter_rule.actions, x.actions),
         options = coalesce(alter_rule.options, x.options), updated_at = now(), definer = crm._outer_user(),
         owner_principal = CASE WHEN alter_rule.options ? 'run_as' THEN crm._rule_owner(alter_rule.name, alter_rule.options) ELSE x.owner_principal END
   WHERE x.name = alter_rule.name;
  PERFORM crm._rule_compile(alter_rule.name);
  RETURN alter_rule.name;
END $$;

CREATE FUNCTION crm._set_rule_enabled(rname text, on_ boolean)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to % rule "%"', crm._short(CASE WHEN on_ THEN 'enable' ELSE 'disable' END), crm._short(rname) USING ERRCODE = '42501';
  END IF;
  UPDATE crm.rule x SET enabled = on_, updated_at = now() WHERE x.name = rname;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'rule "%" does not exist', crm._short(rname) USING ERRCODE = '42704';
  END IF;
  PERFORM crm._rule_compile(rname);
  RETURN rname;
END $$;
CREATE FUNCTION crm.enable_rule(name text) RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  AS $$ SELECT crm._set_rule_enabled($1, true) $$;
CREATE FUNCTION crm.disable_rule(name text) RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  AS $$ SELECT crm._set_rule_enabled($1, false) $$;

CREATE FUNCTION crm.drop_rule(name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r crm.rule;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to drop rule "%"', crm._short(drop_rule.name) USING ERRCODE = '42501';
  END IF;
  SELECT * INTO r FROM crm.rule x WHERE x.name = drop_rule.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'rule "%" does not exist', crm._short(drop_rule.name) USING ERRCODE = '42704';
  END IF;
  PERFORM crm._rule_trigger(r.name, r.object, 'update', NULL);
  DELETE FROM crm.rule_fired f WHERE f.rule = r.name;
  DELETE FROM crm.rule x WHERE x.name = r.name;
  RETURN r.name;
END $$;

CREATE FUNCTION crm.explain_rule(name text)
RETURNS TABLE (part text, sql text) LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r crm.rule;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') AND NOT crm._caller_has_role('crm_auditor') THEN
    RAISE EXCEPTION 'permission denied to explain rule "%"', crm._short(explain_rule.name) USING ERRCODE = '42501';
  END IF;
  SELECT * INTO r FROM crm.rule x WHERE x.name = explain_rule.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'rule "%" does not exist', crm._short(explain_rule.name) USING ERRCODE = '42704';
  END IF;
  part := CASE WHEN r.event = 'schedule' THEN format('query (every %s)', r.cadence) ELSE 'trigger' END;
  sql := r.compiled;
  RETURN NEXT;
  part := 'actions';
  sql := r.statement;
  RETURN NEXT;
END $$;

-- Run one scheduled rule now (whether due or not): records newly matching, each once per occurrence.
CREATE FUNCTION crm.run_rule(name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n bigint;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to run rule "%"', crm._short(run_rule.name) USING ERRCODE = '42501';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.rule x WHERE x.name = run_rule.name AND x.event = 'schedule') THEN
    RAISE EXCEPTION 'scheduled rule "%" does not exist', crm._short(run_rule.name) USING ERRCODE = '42704';
  END IF;
  n := crm._run_rule(run_rule.name);
  UPDATE crm.rule_state s SET last_run_at = now(), last_fired = n, runs = s.runs + 1, last_error = NULL WHERE s.rule = run_rule.name;
  RETURN n;
END $$;

-- Run every due scheduled rule; one rule's error is recorded on it and does not stop the others.
CREATE FUNCTION crm.run_due()
RETURNS TABLE (rule text, fired bigint, error text) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
  n bigint;
  msg text;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to run rules' USING ERRCODE = '42501';
  END IF;
  FOR r IN SELECT s.rule AS name, x.cadence FROM crm.rule_state s JOIN crm.rule x ON x.name = s.rule
            WHERE x.enabled AND x.event = 'schedule' AND s.next_run_at <= now()
            ORDER BY s.next_run_at, s.rule FOR UPDATE OF s SKIP LOCKED LOOP
    BEGIN
      n := crm._run_rule(r.name);
      UPDATE crm.rule_state s SET last_run_at = now(), last_fired = n, runs = s.runs + 1, last_error = NULL,
             next_run_at = CASE WHEN s.next_run_at + r.cadence > now() THEN s.next_run_at + r.cadence ELSE now() + r.cadence END
       WHERE s.rule = r.name;
      rule := r.name; fired := n; error := NULL;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
      UPDATE crm.rule_state s SET last_run_at = now(), runs = s.runs + 1, last_error = msg, last_error_at = now(),
             next_run_at = CASE WHEN s.next_run_at + r.cadence > now() THEN s.next_run_at + r.cadence ELSE now() + r.cadence END
       WHERE s.rule = r.name;
      RAISE WARNING 'crm: rule "%" failed: %', crm._short(r.name), msg;
      rule := r.name; fired := 0; error := msg;
    END;
    RETURN NEXT;
  END LOOP;
  -- overdue approvals go to the approver's manager
  n := crm.escalate_overdue();
  IF n > 0 THEN
    rule := '(workflow escalations)'; fired := n; error := NULL;
    RETURN NEXT;
  END IF;
  -- records past their retention
  FOR r IN SELECT x.object, x.records FROM crm.apply_retention() x WHERE x.records > 0 LOOP
    rule := '(retention: ' || r.object || ')'; fired := r.records; error := NULL;
    RETURN NEXT;
  END LOOP;
END $$;
COMMENT ON FUNCTION crm.run_due() IS 'runs every due scheduled rule (the crm scheduler worker calls it; pg_cron users may too)';

-- Outbox API for connectors: claim (SKIP LOCKED; a claim older than 5 minutes is taken again), done, failed.
CREATE FUNCTION crm.outbox_claim(n integer DEFAULT 10) RETURNS SETOF crm.outbox
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE crm.outbox o SET status = 'sending', claimed_at = pg_catalog.now(), attempts = o.attempts OPERATOR(pg_catalog.+) 1
   WHERE o.id OPERATOR(pg_catalog.=) ANY (ARRAY(
     SELECT x.id FROM crm.outbox x
      WHERE (x.status OPERATOR(pg_catalog.=) 'pending' AND x.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now())
         OR (x.status OPERATOR(pg_catalog.=) 'sending' AND x.claimed_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '5 minutes'))
      ORDER BY x.next_attempt_at, x.id LIMIT greatest($1, 0) FOR UPDATE SKIP LOCKED))
  RETURNING o.*
$$;
CREATE FUNCTION crm.outbox_done(id bigint) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH u AS (UPDATE crm.outbox o SET status = 'sent', sent_at = pg_catalog.now(), last_error = NULL
              WHERE o.id OPERATOR(pg_catalog.=) $1 AND o.status OPERATOR(pg_catalog.=) 'sending' RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM u)
$$;
-- backoff: 30 s, 1 min, 2 min, ... capped at 1 hour; after 10 attempts the message is dead
CREATE FUNCTION crm.outbox_failed(id bigint, error text) RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH u AS (UPDATE crm.outbox o SET last_error = $2, claimed_at = NULL,
                    status = CASE WHEN o.attempts OPERATOR(pg_catalog.>=) 10 THEN 'dead' ELSE 'pending' END,
                    next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+)
                      least(interval '30 seconds' OPERATOR(pg_catalog.*) pg_catalog.power(2, greatest(o.attempts OPERATOR(pg_catalog.-) 1, 0)), interval '1 hour')
              WHERE o.id OPERATOR(pg_catalog.=) $1 AND o.status OPERATOR(pg_catalog.=) 'sending' RETURNING o.status)
  SELECT u.status FROM u
$$;
