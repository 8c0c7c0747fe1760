------------------------------------------------------------------------------------------------
-- Audit (C, audit.c and auditq.c): one append-only log, sealed into a SHA-256 chain of blocks.
--
-- Writers never wait for each other: an entry is a plain insert stamped with the transaction that
-- wrote it (xid) and the "era" (this cluster and database). A sealer (the background worker, every
-- second, or crm.audit_seal()) takes every entry whose transaction has certainly ended — xid below
-- its snapshot's xmin — and appends one block: their ids and running chain hashes, linked to the
-- previous block. crm.audit_verify() recomputes it all and names the first broken link.
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm._audit_era() RETURNS bigint
  LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_audit_era';
COMMENT ON FUNCTION crm._audit_era() IS 'identifies this cluster and database: xids of another era are not comparable';

-- The log and its chain belong to the database, not to the extension, so pg_dump keeps them and a
-- restored log still verifies. Made at install (or by crm.init() when installing during a restore,
-- whose dump brings them).
CREATE FUNCTION crm._audit_tables()
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE t text;
BEGIN
  IF to_regclass('crm.audit_log') IS NULL THEN
    CREATE SEQUENCE crm.audit_log_id_seq;
    CREATE TABLE crm.audit_log (
      id               bigint NOT NULL DEFAULT pg_catalog.nextval('crm.audit_log_id_seq'),
      logged_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
      xid              bigint NOT NULL DEFAULT (pg_catalog.pg_current_xact_id()::text)::bigint,
      era              bigint NOT NULL,
      principal_id     bigint,
      session_user_name text NOT NULL DEFAULT session_user,
      current_user_name text NOT NULL DEFAULT current_user,
      client_addr      inet DEFAULT pg_catalog.inet_client_addr(),
      application_name text DEFAULT pg_catalog.current_setting('application_name'),
      action           text NOT NULL,
      object           text COLLATE "C",   -- names: compared bytewise, so its index needs no locale
      record_id        bigint,
      detail           jsonb
    ) PARTITION BY RANGE (logged_at);
    ALTER SEQUENCE crm.audit_log_id_seq OWNED BY crm.audit_log.id;
    -- the sealer's range of transactions: xids grow with the log, so a BRIN index finds it at no
    -- cost per insert. The sealer summarizes each block range as soon as it is complete (else every
    -- range filled since the last vacuum would be read by every seal: measured, the sealer's CPU
    -- grew with the time since autovacuum; a btree instead cost writers 2% of the machine).
    CREATE INDEX audit_log_xid ON crm.audit_log USING brin (era, xid);
    -- one record's history: record_id alone (object is checked on the few rows it finds). Every
    -- entry inserts into it at a random place, so it is kept as small and cheap to compare as can be:
    -- an int8 key deduplicates well and is a third of the (object, record_id) index (measured).
    CREATE INDEX audit_log_record ON crm.audit_log (record_id);
    COMMENT ON TABLE crm.audit_log IS 'the audit log: append-only, chained by crm.audit_block; see crm.audit_verify()';
    -- a default partition, so that no write ever fails for want of one (the worker keeps it empty)
    CREATE TABLE crm.audit_log_default PARTITION OF crm.audit_log DEFAULT;

    CREATE TABLE crm.audit_block (
      block_no    bigint PRIMARY KEY,
      era         bigint NOT NULL,
      lo_xid      bigint NOT NULL,            -- entries of this era with lo_xid <= xid < hi_xid
      hi_xid      bigint NOT NULL,
      entries     integer NOT NULL,
      first_id    bigint,
      last_id     bigint,
      ids         bigint[] NOT NULL,          -- the entries, in chain order (by id)
      chain       bytea NOT NULL,             -- their running SHA-256 chain hashes, 32 bytes each
      prev_hash   bytea NOT NULL,
      block_hash  bytea NOT NULL,
      sealed_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
    );
    COMMENT ON TABLE crm.audit_block IS 'the hash chain over crm.audit_log, one block per sealing';
    IF crm._creating_extension() THEN
      ALTER EXTENSION crm DROP TABLE crm.audit_log;
      ALTER EXTENSION crm DROP TABLE crm.audit_log_default;
      ALTER EXTENSION crm DROP SEQUENCE crm.audit_log_id_seq;
      ALTER EXTENSION crm DROP TABLE crm.audit_block;
    END IF;
  END IF;
  -- who saw a record (crm.who_saw, crm.audit_trail): the ids that READ_SENSITIVE and EXPORT events
  -- list, and the events that list none (a digest, or a field used in a condition). Both partial, so
  -- that the row entries, most of the log, pay only for checking the predicate; IF NOT EXISTS: a log
  -- kept from before (a restore, an older install) gets them too.
  IF to_regclass('crm.audit_log_seen') IS NULL THEN
    CREATE INDEX audit_log_seen ON crm.audit_log
      USING gin ((COALESCE(detail -> 'customers', detail -> 'ids')) jsonb_path_ops)
      WHERE action IN ('READ_SENSITIVE', 'EXPORT');
  END IF;
  IF to_regclass('crm.audit_log_possible') IS NULL THEN
    CREATE INDEX audit_log_possible ON crm.audit_log (id)
      WHERE action IN ('READ_SENSITIVE', 'EXPORT') AND object = 'customer'
        AND (detail ? 'customers_digest' OR detail ? 'used_in_condition' OR jsonb_typeof(detail -> 'ids') = 'string');
  END IF;
  -- (re)applied on every install: DROP EXTENSION CASCADE takes what depends on crm's functions
  IF NOT EXISTS (SELECT 1 FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                  WHERE d.adrelid = 'crm.audit_log'::regclass AND a.attname = 'era') THEN
    ALTER TABLE crm.audit_log ALTER COLUMN era SET DEFAULT crm._audit_era();
  END IF;
  -- append-only: for everyone, table owners and superusers included (crm's own maintenance
  -- detaches old partitions through crm.audit_retention() -> crm._audit_detach())
  FOREACH t IN ARRAY ARRAY['audit_log', 'audit_block'] LOOP
    EXECUTE format('CREATE OR REPLACE TRIGGER crm_append_only BEFORE UPDATE OR DELETE ON crm.%I FOR EACH ROW EXECUTE FUNCTION crm._audit_append_only()', t);
    EXECUTE format('CREATE OR REPLACE TRIGGER crm_append_only_truncate BEFORE TRUNCATE ON crm.%I FOR EACH STATEMENT EXECUTE FUNCTION crm._audit_append_only()', t);
    EXECUTE format('ALTER TABLE crm.%I ENABLE ALWAYS TRIGGER crm_append_only', t);
    EXECUTE format('ALTER TABLE crm.%I ENABLE ALWAYS TRIGGER crm_append_only_truncate', t);
  END LOOP;
  REVOKE ALL ON crm.audit_log, crm.audit_block FROM PUBLIC;
  GRANT SELECT ON crm.audit_log, crm.audit_block TO crm_auditor;
  PERFORM crm._audit_partitions();
END $$;

CREATE FUNCTION crm._audit_append_only() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_audit_append_only';

-- Monthly partitions from this month to months_ahead ahead (idempotent; the worker runs it).
CREATE FUNCTION crm._audit_partitions(months_ahead integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE m date; made integer := 0; t text;
BEGIN
  FOR i IN 0..months_ahead LOOP
    m := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
    t := format('audit_log_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
    IF to_regclass('crm.' || t) IS NULL THEN
      EXECUTE format('CREATE TABLE crm.%I PARTITION OF crm.audit_log FOR VALUES FROM (%L) TO (%L)', t,
                     (m::timestamp AT TIME ZONE 'UTC'), ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
      IF crm._creating_extension() THEN
        EXECUTE format('ALTER EXTENSION crm DROP TABLE crm.%I', t);
      END IF;
      made := made + 1;
    END IF;
  END LOOP;
  RETURN made;
END $$;

CREATE FUNCTION crm._audit_detach(partition text) RETURNS void
  LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'crm_audit_detach';

-- Row-change audit triggers (C), added to every managed table by crm._manage_table().
CREATE FUNCTION crm._audit_row() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'crm_audit_row';
CREATE FUNCTION crm._audit_flush() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'crm_audit_flush';

-- An event written in the caller's transaction (grants, shares, policies, act_as, DDL).
CREATE FUNCTION crm._audit_event(action text, object text, record_id bigint, detail jsonb) RETURNS void
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_audit_event_sql';

-- The chain.
CREATE FUNCTION crm.audit_seal() RETURNS bigint
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_audit_seal';
COMMENT ON FUNCTION crm.audit_seal() IS 'seal every entry whose transaction has ended into a new block; returns how many (the worker does this every second)';
CREATE FUNCTION crm.audit_verify("from" timestamptz DEFAULT NULL, "to" timestamptz DEFAULT NULL,
                                 OUT ok boolean, OUT blocks bigint, OUT entries bigint, OUT unsealed bigint,
                                 OUT first_broken_id bigint, OUT problem text)
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_audit_verify';
COMMENT ON FUNCTION crm.audit_verify(timestamptz, timestamptz) IS 'recompute the chain over the blocks sealed in [from, to) and name the first broken link';
CREATE FUNCTION crm.audit_digest() RETURNS jsonb
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_audit_digest';
COMMENT ON FUNCTION crm.audit_digest() IS 'a signed statement of the chain''s head (block, hash, time): keep it outside the database';
CREATE FUNCTION crm.audit_verify(digest jsonb,
                                 OUT ok boolean, OUT blocks bigint, OUT entries bigint, OUT unsealed bigint,
                                 OUT first_broken_id bigint, OUT problem text)
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_audit_verify_digest';
COMMENT ON FUNCTION crm.audit_verify(jsonb) IS 'prove that the log still extends a digest from crm.audit_digest()';
-- Keyed hashes of protected values (auditkeys.c): keyed per customer, derived from the keyring.
CREATE FUNCTION crm.audit_hash(object text, field text, value text, customer_id bigint DEFAULT NULL) RETURNS text
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_audit_hash';
COMMENT ON FUNCTION crm.audit_hash(text, text, text, bigint) IS 'the keyed hash a new entry keeps for a protected field''s value of a record of this customer (NULL: of no customer), under the current master key; NULL when none can be made (a forgotten customer)';
CREATE FUNCTION crm.audit_hashes(object text, field text, value text, customer_id bigint DEFAULT NULL) RETURNS text[]
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_audit_hashes';
COMMENT ON FUNCTION crm.audit_hashes(text, text, text, bigint) IS 'the keyed hashes of a value under every master key of the keyring (and the legacy audit key): match entries of any age with = ANY';

-- Migrating a 0.1 database, whose audit key was kept in the table crm.audit_key (docs/audit.md):
-- 1. crm.audit_legacy_key() prints the line to append to the key file; 2. after a reload,
-- crm.audit_legacy_key_drop() checks that the key file holds it and drops the table.
CREATE FUNCTION crm.audit_legacy_key() RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE k bytea;
BEGIN
  IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
    RAISE EXCEPTION 'permission denied for function crm.audit_legacy_key' USING ERRCODE = '42501',
      HINT = 'Migrating the audit key is a superuser''s step (see docs/audit.md).';
  END IF;
  IF to_regclass('crm.audit_key') IS NULL THEN
    RAISE EXCEPTION 'table crm.audit_key does not exist: the audit key is already in the key file' USING ERRCODE = '42P01';
  END IF;
  EXECUTE 'SELECT k.key FROM crm.audit_key k' INTO k;
  IF k IS NULL OR length(k) <> 32 THEN
    RAISE EXCEPTION 'table crm.audit_key holds no 32-byte key' USING ERRCODE = '55000';
  END IF;
  RETURN 'legacy:audit ' || encode(k, 'hex');
END $$;
COMMENT ON FUNCTION crm.audit_legacy_key() IS 'migration from 0.1: the line to append to the crm key file for the audit key kept in crm.audit_key (superuser)';
CREATE FUNCTION crm.audit_legacy_key_drop() RETURNS boolean
  LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'crm_audit_legacy_key_drop';
COMMENT ON FUNCTION crm.audit_legacy_key_drop() IS 'migration from 0.1: drop crm.audit_key once the key file holds its key (superuser; refuses otherwise); false when there is no table left';

-- Retention: detach (and drop) monthly partitions wholly older than keep; audited as MAINTENANCE.
CREATE FUNCTION crm.audit_retention(keep interval)
RETURNS text[] LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r record; gone text[] := '{}'; hi timestamptz;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied for crm.audit_retention' USING ERRCODE = '42501';
  END IF;
  IF keep IS NULL OR keep < interval '1 month' THEN
    RAISE EXCEPTION 'retention must keep at least one month of audit log' USING ERRCODE = '22023';
  END IF;
  PERFORM crm.audit_seal();
  FOR r IN SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'crm.audit_log'::regclass AND c.relname ~ '^audit_log_y[0-9]{4}m[0-9]{2}$'
            ORDER BY c.relname LOOP
    hi := (substring(r.bound from 'TO \(''([^'']*)''\)'))::timestamptz;
    IF hi <= now() - keep THEN
      PERFORM crm._audit_event('MAINTENANCE', NULL, NULL,
        jsonb_build_object('operation', 'retention', 'partition', r.relname, 'keep', keep::text,
                           'entries', (SELECT count(*) FROM crm.audit_log l WHERE l.logged_at < hi)));
      PERFORM crm._audit_detach(r.relname);
      gone := gone || r.relname::text;
    END IF;
  END LOOP;
  RETURN gone;
END $$;

-- Auditor API.
CREATE FUNCTION crm.audit_trail(object text, record_id bigint)
RETURNS TABLE (id bigint, logged_at timestamptz, action text, principal_id bigint, session_user_name text,
               field text, old_value text, new_value text, detail jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET max_parallel_workers_per_gather = 0 SET jit = off AS $$
  -- (the read events' arm is the expression of the index audit_log_seen, so that it is used;
  -- a few index probes per partition: parallel workers and JIT compilation, which its rough
  -- estimates can trigger, would only add their start-up: seconds, measured on a 10M-entry log)
  SELECT l.id, l.logged_at, l.action, l.principal_id, l.session_user_name, f.key,
         COALESCE(f.value ->> 'old', f.value ->> 'old_hash'), COALESCE(f.value ->> 'new', f.value ->> 'new_hash'),
         CASE WHEN f.key IS NULL THEN l.detail END
    FROM crm.audit_log l
    LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(l.detail -> 'fields') = 'object' THEN l.detail -> 'fields' END) f ON true
   WHERE l.object = $1 AND l.record_id = $2
      OR (l.action IN ('READ_SENSITIVE', 'EXPORT') AND l.object = $1
          AND COALESCE(l.detail -> 'customers', l.detail -> 'ids') @> jsonb_build_array($2))
   ORDER BY l.id, f.key
$$;
COMMENT ON FUNCTION crm.audit_trail(text, bigint) IS 'the history of one record, field by field (protected values as keyed hashes)';

-- Exact: the event lists the customer (or names it as its record: one customer read, a subject
-- export). Possible: the event lists no ids that could rule it out, with the reason: 'digest' (more
-- customers than crm.audit_max_ids: only their count, range and a digest; events whose range
-- excludes the customer are left out) or 'condition' (a sensitive field was used in a condition,
-- which can reveal something of records the statement did not return). The predicates are those of
-- the partial indexes audit_log_seen and audit_log_possible (crm._audit_tables).
CREATE FUNCTION crm.who_saw(customer_id bigint)
RETURNS TABLE (id bigint, logged_at timestamptz, action text, principal_id bigint, session_user_name text,
               object text, fields jsonb, row_count bigint, match text, reason text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET max_parallel_workers_per_gather = 0
  SET jit = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
  -- PL/pgSQL, not SQL, and a generic plan: planned once a session (planning it over every partition
  -- of the log costs more than running it: measured 5-14 ms a call on a 10M-entry log). No parallel
  -- workers or JIT: the estimates of a few index probes per partition can call for them, and their
  -- start-up alone took seconds there.
  RETURN QUERY
  SELECT l.id, l.logged_at, l.action, l.principal_id, l.session_user_name, l.object, l.detail -> 'fields',
         (l.detail ->> 'rows')::bigint, 'exact', NULL::text
    FROM crm.audit_log l
   WHERE l.action IN ('READ_SENSITIVE', 'EXPORT') AND l.object = 'customer'
     AND (COALESCE(l.detail -> 'customers', l.detail -> 'ids') @> jsonb_build_array($1) OR l.record_id = $1)
  UNION ALL
  SELECT l.id, l.logged_at, l.action, l.principal_id, l.session_user_name, l.object, l.detail -> 'fields',
         (l.detail ->> 'rows')::bigint, 'possible',
         concat_ws(', ', CASE WHEN l.detail ? 'customers_digest' THEN 'digest' END,
                   CASE WHEN l.detail ? 'used_in_condition' OR jsonb_typeof(l.detail -> 'ids') = 'string' THEN 'condition' END)
    FROM crm.audit_log l
   WHERE l.action IN ('READ_SENSITIVE', 'EXPORT') AND l.object = 'customer'
     AND (l.detail ? 'customers_digest' OR l.detail ? 'used_in_condition' OR jsonb_typeof(l.detail -> 'ids') = 'string')
     AND NOT COALESCE(COALESCE(l.detail -> 'customers', l.detail -> 'ids') @> jsonb_build_array($1), false)
     AND l.record_id IS DISTINCT FROM $1
     AND NOT COALESCE($1 NOT BETWEEN (l.detail #>> '{customers_range,0}')::bigint
                                 AND (l.detail #>> '{customers_range,1}')::bigint, false)
   ORDER BY 1;
END $$;
COMMENT ON FUNCTION crm.who_saw(bigint) IS 'every READ_SENSITIVE or EXPORT event that may have shown a customer''s sensitive data: match ''exact'' (its id is recorded) or ''possible'' (no ids that rule it out; reason ''digest'' or ''condition'')';

SELECT crm._audit_tables() WHERE pg_catalog.current_setting('row_security') OPERATOR(pg_catalog.<>) 'off';

-- Reads of sensitive fields, noted by the masking hook (auditread.c).
CREATE FUNCTION crm._saw(value anyelement, object text, field text, id bigint, owner bigint, own_only boolean)
RETURNS anyelement LANGUAGE c VOLATILE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_saw';
