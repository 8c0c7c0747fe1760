------------------------------------------------------------------------------------------------
-- Analytics and decision support: suitability (investor appropriateness), churn scores,
-- recommendations, customer 360, and the BI views of schema crm_report.
------------------------------------------------------------------------------------------------
-- Which product risk levels each risk tolerance allows (institutions map them differently).
CREATE TABLE crm.suitability_matrix (
  tolerance text PRIMARY KEY CHECK (tolerance ~ '^C[1-9]$'),
  max_risk  text NOT NULL CHECK (max_risk ~ '^R[1-9]$')
);
COMMENT ON TABLE crm.suitability_matrix IS 'the highest product risk level (R1..R5) each customer risk tolerance (C1..C5) may hold';
CREATE TABLE crm.setting (
  name  text PRIMARY KEY,
  value text NOT NULL,
  description text
);
COMMENT ON TABLE crm.setting IS 'crm''s business settings (not PostgreSQL settings)';
CREATE TABLE crm.churn_weight (
  factor      text PRIMARY KEY,
  weight      numeric NOT NULL CHECK (weight >= 0),
  unit        text NOT NULL,
  description text NOT NULL
);
COMMENT ON TABLE crm.churn_weight IS 'weights of the churn score''s factors; the score is the sum of weight × measure, capped at 100';
CREATE TABLE crm.aum_snapshot (
  customer_id bigint NOT NULL,
  as_of       date NOT NULL,
  aum         numeric NOT NULL,
  PRIMARY KEY (customer_id, as_of)
);
COMMENT ON TABLE crm.aum_snapshot IS 'customers'' AUM on past dates (crm.snapshot_aum), for the churn score''s AUM trend; rows of customers the reader can see';
SELECT pg_catalog.pg_extension_config_dump('crm.suitability_matrix', '');
SELECT pg_catalog.pg_extension_config_dump('crm.setting', '');
SELECT pg_catalog.pg_extension_config_dump('crm.churn_weight', '');
SELECT pg_catalog.pg_extension_config_dump('crm.aum_snapshot', '');

CREATE FUNCTION crm._suitability_check() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'crm_suitability_check';

-- A customer's row in crm_data.customer is visible to the caller (row security decides).
CREATE FUNCTION crm._customer_visible(customer_id bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT EXISTS (SELECT 1 FROM crm_data.customer c WHERE c.id = $1)
$$;
ALTER TABLE crm.aum_snapshot ENABLE ROW LEVEL SECURITY;
CREATE POLICY visible_customers ON crm.aum_snapshot FOR SELECT USING (crm._customer_visible(customer_id));

CREATE FUNCTION crm.snapshot_aum(as_of date DEFAULT crm.today()) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n bigint;
BEGIN
  IF NOT crm._caller_has_role('crm_admin') THEN
    RAISE EXCEPTION 'permission denied to snapshot AUM' USING ERRCODE = '42501';
  END IF;
  INSERT INTO crm.aum_snapshot (customer_id, as_of, aum)
    SELECT c.id, snapshot_aum.as_of, c.aum FROM crm_data.customer c WHERE c.aum IS NOT NULL
    ON CONFLICT (customer_id, as_of) DO UPDATE SET aum = EXCLUDED.aum;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
COMMENT ON FUNCTION crm.snapshot_aum(date) IS 'record every customer''s AUM for a date (schedule it monthly); the churn score compares with these';

-- Churn scores of the customers the caller can see (all of them, or those listed), with factors.
CREATE FUNCTION crm.churn_scores(customer_ids bigint[] DEFAULT NULL)
RETURNS TABLE (customer_id bigint, score numeric, factors jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT c.id,
         least(100, round(coalesce(sum(f.measure * w.weight), 0), 1)),
         coalesce(jsonb_agg(jsonb_build_object('factor', f.factor, 'measure', round(f.measure, 2), 'points', round(f.measure * w.weight, 1),
                                               'unit', w.unit)
                            ORDER BY f.measure * w.weight DESC, f.factor) FILTER (WHERE f.measure * w.weight > 0), '[]')
    FROM crm_data.customer c
    CROSS JOIN LATERAL (
      SELECT (SELECT greatest(0, (s.aum - c.aum) / nullif(s.aum, 0) * 10) FROM crm.aum_snapshot s
               WHERE s.customer_id = c.id AND s.as_of <= crm.today() - 90 ORDER BY s.as_of DESC LIMIT 1) AS aum_drop,
             greatest(0, crm.today() - coalesce((SELECT max(i.occurred_at)::date FROM crm_data.interaction i WHERE i.customer_id = c.id),
                                                c.created_at::date) - 90) / 30.0 AS no_contact,
             (SELECT count(*) FROM crm_data.holding h WHERE h.customer_id = c.id AND h.matures_on BETWEEN crm.today() - 90 AND crm.today()
                 AND NOT EXISTS (SELECT 1 FROM crm_data.holding n WHERE n.customer_id = c.id AND n.opened_on >= h.matures_on)) AS not_renewed,
             (SELECT count(*) FROM crm_data.interaction i WHERE i.customer_id = c.id AND i.occurred_at >= crm.today() - 180
                 AND (i.summary LIKE '%投诉%' OR i.summary ILIKE '%complaint%')) AS complaints) m
    CROSS JOIN LATERAL (VALUES ('aum_drop', coalesce(m.aum_drop, 0)), ('no_contact', m.no_contact),
                               ('maturity_not_renewed', m.not_renewed::numeric), ('open_complaint', m.complaints::numeric)) f(factor, measure)
    JOIN crm.churn_weight w ON w.factor = f.factor
   WHERE $1 IS NULL OR c.id = ANY ($1)
   GROUP BY c.id
$$;
COMMENT ON FUNCTION crm.churn_scores(bigint[]) IS 'churn score (0..100) and its contributing factors, largest first, for the customers the caller can see';
CREATE FUNCTION crm.churn_score(customer_id bigint, OUT score numeric, OUT factors jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT s.score, s.factors FROM crm.churn_scores(ARRAY[$1]) s
$$;
COMMENT ON FUNCTION crm.churn_score(bigint) IS 'one customer''s churn score and factors (NULL when the caller cannot see the customer)';

-- Suitable products a customer does not hold, ranked by how often similar customers hold them.
CREATE FUNCTION crm.recommend_products(customer_id bigint, n integer DEFAULT 5)
RETURNS TABLE (product_id bigint, code text, name text, risk_level text, score numeric, reason text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  c record;
  band text;
  lo numeric;
  hi numeric;
  peers bigint;
BEGIN
  IF NOT coalesce(crm._visible('customer', recommend_products.customer_id), false) THEN
    RAISE EXCEPTION 'customer % does not exist or is not visible to you', crm._short(recommend_products.customer_id) USING ERRCODE = '42501';
  END IF;
  IF n IS NULL OR n < 1 OR n > 100 THEN
    RAISE EXCEPTION 'n must be between 1 and 100, not %', crm._short(n) USING ERRCODE = '22023';
  END IF;
  SELECT x.segment, x.risk_tolerance, x.aum, m.max_risk INTO c FROM crm_data.customer x
    LEFT JOIN crm.suitability_matrix m ON m.tolerance = x.risk_tolerance WHERE x.id = recommend_products.customer_id;
  IF c.max_risk IS NULL THEN
    RETURN;   -- no risk tolerance: nothing is suitable
  END IF;
  SELECT b.label, b.lo, b.hi INTO band, lo, hi FROM (VALUES ('< 500k', 0::numeric, 500000::numeric), ('500k–5M', 500000, 5000000),
                                                            ('5M–50M', 5000000, 50000000), ('≥ 50M', 50000000, 1e18)) b(label, lo, hi)
   WHERE coalesce(c.aum, 0) >= b.lo AND coalesce(c.aum, 0) < b.hi;
  SELECT count(*) INTO peers FROM crm_data.customer x
   WHERE x.segment IS NOT DISTINCT FROM c.segment AND x.risk_tolerance = c.risk_tolerance
     AND coalesce(x.aum, 0) >= lo AND coalesce(x.aum, 0) < hi AND x.id <> recommend_products.customer_id;
  RETURN QUERY
  SELECT p.id, p.code, p.name, p.risk_level,
         round(coalesce(h.holders, 0)::numeric / greatest(peers, 1), 4),
         format('%s of %s similar customers (%s, %s, AUM %s) hold it; risk %s within %s',
                coalesce(h.holders, 0), peers, coalesce(c.segment, 'no segment'), c.risk_tolerance, band, p.risk_level, c.risk_tolerance)
    FROM crm_data.product p
    LEFT JOIN (SELECT hh.product_id, count(DISTINCT hh.customer_id) AS holders
                 FROM crm_data.holding hh JOIN crm_data.customer x ON x.id = hh.customer_id
                WHERE x.segment IS NOT DISTINCT FROM c.segment AND x.risk_tolerance = c.risk_tolerance
                  AND coalesce(x.aum, 0) >= lo AND coalesce(x.aum, 0) < hi AND x.id <> recommend_products.customer_id
                GROUP BY hh.product_id) h ON h.product_id = p.id
   WHERE p.risk_level <= c.max_risk AND p.product_type <> 'loan'
     AND (p.matures_on IS NULL OR p.matures_on > crm.today())
     AND NOT EXISTS (SELECT 1 FROM crm_data.holding o WHERE o.customer_id = recommend_products.customer_id AND o.product_id = p.id)
   ORDER BY 5 DESC, p.risk_level DESC, p.code
   LIMIT n;
END $$;
COMMENT ON FUNCTION crm.recommend_products(bigint, integer) IS 'suitable products (risk within the customer''s tolerance, not a loan, not matured) the customer does not hold, ranked by the share of similar customers (segment, tolerance, AUM band) holding them; deterministic';

-- Everything about one customer the caller may see, as it may see it (row security and masking apply).
CREATE FUNCTION crm.customer_360(customer_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT jsonb_build_object(
    'customer', jsonb_build_object('id', c.id, 'name', c.name, 'customer_type', c.customer_type, 'segment', c.segment,
                                   'id_type', c.id_type, 'id_number', c.id_number, 'mobile', c.mobile, 'email', c.email,
                                   'birthday', c.birthday, 'gender', c.gender, 'owner_id', c.owner_id, 'org_unit_id', c.org_unit_id),
    'aum', c.aum,
    'suitability', jsonb_build_object('risk_tolerance', c.risk_tolerance,
                                      'max_product_risk', (SELECT m.max_risk FROM crm.suitability_matrix m WHERE m.tolerance = c.risk_tolerance),
                                      'kyc_status', c.kyc_status, 'kyc_expires_on', c.kyc_expires_on, 'risk_assessed_on', c.risk_assessed_on),
    'holdings', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', h.id, 'product', p.name, 'code', p.code, 'risk_level', p.risk_level,
                                                             'amount', h.amount, 'opened_on', h.opened_on, 'matures_on', h.matures_on) ORDER BY h.id), '[]')
                   FROM crm_data.holding h JOIN crm_data.product p ON p.id = h.product_id WHERE h.customer_id = c.id),
    'last_interactions', (SELECT coalesce(jsonb_agg(x ORDER BY x.occurred_at DESC), '[]') FROM (
                            SELECT i.occurred_at, i.channel, i.summary FROM crm_data.interaction i WHERE i.customer_id = c.id
                             ORDER BY i.occurred_at DESC LIMIT 5) x),
    'open_tasks', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', t.id, 'title', t.title, 'due_on', t.due_on, 'priority', t.priority) ORDER BY t.due_on, t.id), '[]')
                     FROM crm_data.task t WHERE t.customer_id = c.id AND t.status = 'open'),
    'open_opportunities', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', o.id, 'name', o.name, 'stage', o.stage, 'amount', o.amount) ORDER BY o.id), '[]')
                             FROM crm_data.opportunity o WHERE o.customer_id = c.id AND o.stage NOT IN ('won', 'lost')),
    'consents', (SELECT coalesce(jsonb_agg(jsonb_build_object('purpose', k.purpose, 'channel', k.channel, 'granted_at', k.granted_at) ORDER BY k.purpose, k.channel), '[]')
                   FROM crm_data.consent k WHERE k.customer_id = c.id AND k.withdrawn_at IS NULL),
    'churn', (SELECT jsonb_build_object('score', s.score, 'factors', s.factors) FROM crm.churn_scores(ARRAY[c.id]) s))
    FROM crm_data.customer c WHERE c.id = $1
$$;
COMMENT ON FUNCTION crm.customer_360(bigint) IS 'one customer as the caller may see it: profile, AUM, suitability, holdings, last interactions, open tasks and opportunities, consents, churn (NULL when not visible)';

-- Suitability checks on holdings and won opportunities, and the override workflow.
CREATE FUNCTION crm._init_suitability() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE t text;
BEGIN
  -- defaults, seeded here (not by the install script) so that a restore brings back the dumped,
  -- possibly edited, rows instead of colliding with fresh ones
  INSERT INTO crm.suitability_matrix VALUES ('C1', 'R1'), ('C2', 'R2'), ('C3', 'R3'), ('C4', 'R4'), ('C5', 'R5')
    ON CONFLICT DO NOTHING;
  INSERT INTO crm.setting VALUES
    ('risk_assessment_validity', '1 year', 'how long a customer''s risk assessment (customer.risk_assessed_on) stays valid for suitability'),
    ('churn_watch_threshold', '30', 'churn score from which crm_report.churn_watch lists a customer')
    ON CONFLICT DO NOTHING;
  INSERT INTO crm.churn_weight VALUES
    ('aum_drop', 4, 'per 10% less AUM than 90 days ago', 'AUM trend: how much the customer''s AUM fell against the snapshot of at least 90 days ago'),
    ('no_contact', 10, 'per 30 days without contact beyond 90', 'days since the last interaction'),
    ('maturity_not_renewed', 15, 'per holding', 'holdings matured in the last 90 days with nothing new opened since'),
    ('open_complaint', 20, 'per complaint', 'interactions of the last 180 days recording a complaint (投诉 / complaint)')
    ON CONFLICT DO NOTHING;

  FOREACH t IN ARRAY ARRAY['holding', 'opportunity'] LOOP
    IF EXISTS (SELECT 1 FROM crm.object o WHERE o.name = t) AND NOT EXISTS (
         SELECT 1 FROM pg_trigger g WHERE g.tgrelid = format('crm_data.%I', t)::regclass AND g.tgname = 'crm_suitability') THEN
      EXECUTE format('CREATE TRIGGER crm_suitability BEFORE INSERT OR UPDATE ON crm_data.%I FOR EACH ROW EXECUTE FUNCTION crm._suitability_check()', t);
      EXECUTE format('ALTER TABLE crm_data.%I ENABLE ALWAYS TRIGGER crm_suitability', t);
    END IF;
  END LOOP;
  IF EXISTS (SELECT 1 FROM crm.object o WHERE o.name = 'suitability_override')
     AND NOT EXISTS (SELECT 1 FROM crm.workflow w WHERE w.name = 'suitability_override') THEN
    PERFORM crm.define_workflow('suitability_override', 'suitability_override', '{
      "status_field": "status", "start": "draft", "description": "an exception to suitability, approved by compliance",
      "states": {"draft": {},
                 "compliance_review": {"kind": "approval", "approvers": {"role": "compliance"}, "approve_to": "approved", "reject_to": "rejected", "sla_hours": 48},
                 "approved": {"kind": "end"}, "rejected": {"kind": "end"}},
      "transitions": [{"action": "submit", "from": "draft", "to": "compliance_review", "allowed": ["owner", "rm", "team_lead", "branch_manager"]}]}');
  END IF;
  PERFORM crm._init_reports();
END $$;

-- The BI views (schema crm_report). Like crm_data they belong to the database, not to the
-- extension, so pg_dump keeps them; security_invoker: each viewer sees only its rows, masked.
CREATE FUNCTION crm._init_reports() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE v text;
BEGIN
  IF (SELECT count(*) FROM crm.object o WHERE o.name IN ('customer', 'opportunity', 'task', 'holding', 'interaction')) < 5 THEN
    RETURN;   -- the core objects are not (all) crm's here
  END IF;
  IF to_regnamespace('crm_report') IS NULL THEN
    CREATE SCHEMA crm_report;
    IF crm._creating_extension() THEN
      ALTER EXTENSION crm DROP SCHEMA crm_report;
    END IF;
    COMMENT ON SCHEMA crm_report IS 'views for BI tools: each viewer sees its own rows, masked as its field levels say';
  END IF;
  REVOKE ALL ON SCHEMA crm_report FROM PUBLIC;
  GRANT USAGE ON SCHEMA crm_report TO crm_user, crm_auditor, crm_admin;

  CREATE OR REPLACE VIEW crm_report.customer_360 WITH (security_invoker = true) AS
  SELECT c.id AS customer_id, c.name, c.customer_type, c.id_number, c.segment, c.risk_tolerance, c.kyc_status, c.kyc_expires_on,
         c.risk_assessed_on, c.aum::numeric(20, 2) AS aum, c.owner_id, c.org_unit_id,
         coalesce(h.products_held, 0)::integer AS products_held, coalesce(h.holdings_amount, 0)::numeric(20, 2) AS holdings_amount,
         i.last_interaction_at, coalesce(t.open_tasks, 0)::integer AS open_tasks,
         coalesce(o.open_opportunities, 0)::integer AS open_opportunities, coalesce(o.pipeline, 0)::numeric(20, 2) AS pipeline_amount,
         ch.score AS churn_score
    FROM crm_data.customer c
    LEFT JOIN LATERAL (SELECT count(DISTINCT x.product_id) AS products_held, sum(x.amount) AS holdings_amount
                         FROM crm_data.holding x WHERE x.customer_id = c.id) h ON true
    LEFT JOIN LATERAL (SELECT max(x.occurred_at) AS last_interaction_at FROM crm_data.interaction x WHERE x.customer_id = c.id) i ON true
    LEFT JOIN LATERAL (SELECT count(*) AS open_tasks FROM crm_data.task x WHERE x.customer_id = c.id AND x.status = 'open') t ON true
    LEFT JOIN LATERAL (SELECT count(*) AS open_opportunities, sum(x.amount) AS pipeline FROM crm_data.opportunity x
                        WHERE x.customer_id = c.id AND x.stage NOT IN ('won', 'lost')) o ON true
    LEFT JOIN LATERAL crm.churn_scores(ARRAY[c.id]) ch ON true;
  COMMENT ON VIEW crm_report.customer_360 IS 'one row per customer you can see: profile, AUM, products held, last interaction, open tasks and opportunities, risk tolerance, KYC, churn score';

  CREATE OR REPLACE VIEW crm_report.sales_funnel WITH (security_invoker = true) AS
  WITH o AS (
    SELECT x.org_unit_id, date_trunc('month', x.created_at)::date AS month, x.stage, x.amount,
           coalesce(array_position(ARRAY['lead', 'qualified', 'proposal', 'negotiation', 'won'], x.stage), 1) AS pos
      FROM crm_data.opportunity x),
  f AS (
    SELECT o.org_unit_id, o.month, s.stage, s.pos::integer AS stage_order,
           count(*) FILTER (WHERE o.stage = s.stage)::integer AS opportunities,
           count(*) FILTER (WHERE o.pos >= s.pos)::integer AS reached,
           coalesce(sum(o.amount) FILTER (WHERE o.stage = s.stage), 0)::numeric(20, 2) AS amount
      FROM o CROSS JOIN unnest(ARRAY['lead', 'qualified', 'proposal', 'negotiation', 'won']) WITH ORDINALITY s(stage, pos)
     GROUP BY o.org_unit_id, o.month, s.stage, s.pos)
  SELECT f.org_unit_id, f.month, f.stage, f.stage_order, f.opportunities, f.reached, f.amount,
         round(lead(f.reached) OVER w::numeric / nullif(f.reached, 0), 4) AS conversion_to_next,
         (SELECT count(*) FROM o WHERE o.org_unit_id = f.org_unit_id AND o.month = f.month AND o.stage = 'lost')::integer AS lost_in_month
    FROM f WINDOW w AS (PARTITION BY f.org_unit_id, f.month ORDER BY f.stage_order);
  COMMENT ON VIEW crm_report.sales_funnel IS 'opportunities per org unit, month created and stage: how many are at the stage, how many reached it (are at it or later; lost ones count as leads), and the conversion to the next stage';

  CREATE OR REPLACE VIEW crm_report.aum_by_org_unit WITH (security_invoker = true) AS
  WITH RECURSIVE tree(ancestor, unit, depth) AS (
    SELECT u.id, u.id, 0 FROM crm.org_unit u
    UNION ALL
    SELECT t.ancestor, u.id, t.depth + 1 FROM tree t JOIN crm.org_unit u ON u.parent_id = t.unit WHERE t.depth < 64)
  SELECT u.id AS org_unit_id, u.name AS org_unit, u.kind, u.parent_id,
         count(c.id)::integer AS customers,
         coalesce(sum(c.aum), 0)::numeric(20, 2) AS aum,
         coalesce(sum(c.aum) FILTER (WHERE c.org_unit_id = u.id), 0)::numeric(20, 2) AS own_aum
    FROM crm.org_unit u JOIN tree t ON t.ancestor = u.id
    LEFT JOIN crm_data.customer c ON c.org_unit_id = t.unit
   GROUP BY u.id, u.name, u.kind, u.parent_id;
  COMMENT ON VIEW crm_report.aum_by_org_unit IS 'customers and AUM of each org unit with everything below it (rolled up the org tree), and of the unit itself; only customers you can see';

  CREATE OR REPLACE VIEW crm_report.rm_performance WITH (security_invoker = true) AS
  SELECT p.id AS principal_id, p.display_name, p.org_unit_id,
         c.customers::integer, c.aum::numeric(20, 2),
         round(coalesce(h.products, 0)::numeric / nullif(c.customers, 0), 2) AS cross_sell_ratio,
         round(coalesce(i.interactions, 0)::numeric / nullif(c.customers, 0), 2) AS interactions_per_customer,
         coalesce(t.tasks, 0)::integer AS tasks, coalesce(t.done, 0)::integer AS tasks_done,
         round(t.done::numeric / nullif(t.tasks, 0), 4) AS task_completion
    FROM crm.principals p
    JOIN (SELECT x.owner_id, count(*) AS customers, sum(x.aum) AS aum FROM crm_data.customer x GROUP BY x.owner_id) c ON c.owner_id = p.id
    LEFT JOIN (SELECT x.owner_id, count(*) AS products FROM (SELECT DISTINCT y.owner_id, y.customer_id, y.product_id FROM crm_data.holding y) x
                GROUP BY x.owner_id) h ON h.owner_id = p.id
    LEFT JOIN (SELECT x.owner_id, count(*) AS interactions FROM crm_data.interaction x
                WHERE x.occurred_at >= crm.today() - 365 GROUP BY x.owner_id) i ON i.owner_id = p.id
    LEFT JOIN (SELECT x.assignee_id, count(*) AS tasks, count(*) FILTER (WHERE x.status = 'done') AS done FROM crm_data.task x
                GROUP BY x.assignee_id) t ON t.assignee_id = p.id;
  COMMENT ON VIEW crm_report.rm_performance IS 'per owning principal: customers, AUM, cross-sell ratio (distinct products held per customer), interactions per customer over the last 365 days, tasks assigned and completed';

  CREATE OR REPLACE VIEW crm_report.task_sla WITH (security_invoker = true) AS
  SELECT t.org_unit_id, t.assignee_id,
         count(*) FILTER (WHERE t.status = 'open')::integer AS open,
         count(*) FILTER (WHERE t.status = 'open' AND t.due_on < crm.today())::integer AS overdue,
         count(*) FILTER (WHERE t.status = 'done')::integer AS done,
         count(*) FILTER (WHERE t.status = 'done' AND (t.due_on IS NULL OR t.completed_at::date <= t.due_on))::integer AS done_on_time,
         round((count(*) FILTER (WHERE t.status = 'done' AND (t.due_on IS NULL OR t.completed_at::date <= t.due_on)))::numeric
               / nullif(count(*) FILTER (WHERE t.status = 'done'), 0), 4) AS on_time_rate
    FROM crm_data.task t
   GROUP BY t.org_unit_id, t.assignee_id;
  COMMENT ON VIEW crm_report.task_sla IS 'tasks per org unit and assignee: open, overdue (open past due), done, done on time, on-time rate';

  CREATE OR REPLACE VIEW crm_report.churn_watch WITH (security_invoker = true) AS
  SELECT c.id AS customer_id, c.name, c.owner_id, c.org_unit_id, c.aum::numeric(20, 2) AS aum, s.score AS churn_score,
         s.factors->0->>'factor' AS top_factor, s.factors
    FROM crm_data.customer c JOIN LATERAL crm.churn_scores(ARRAY[c.id]) s ON true
   WHERE s.score >= coalesce((SELECT x.value::numeric FROM crm.setting x WHERE x.name = 'churn_watch_threshold'), 30);
  COMMENT ON VIEW crm_report.churn_watch IS 'customers whose churn score is at or above crm.setting churn_watch_threshold (default 30), with their largest factor';

  -- every column described, for BI tools' data dictionaries
  FOR v IN SELECT unnest(ARRAY['customer_360', 'sales_funnel', 'aum_by_org_unit', 'rm_performance', 'task_sla', 'churn_watch']) LOOP
    EXECUTE format('GRANT SELECT ON crm_report.%I TO crm_user, crm_auditor, crm_admin', v);
    IF crm._creating_extension() THEN
      EXECUTE format('ALTER EXTENSION crm DROP VIEW crm_report.%I', v);
    END IF;
  END LOOP;
  PERFORM crm._comment_report_columns();
END $$;

CREATE FUNCTION crm._comment_report_columns() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES
    ('customer_360', 'customer_id', 'customer id (crm_data.customer.id)'), ('customer_360', 'name', 'customer name (masked as your level says)'),
    ('customer_360', 'customer_type', 'individual or corporate'), ('customer_360', 'id_number', 'ID number (masked unless your level lets you read it)'), ('customer_360', 'segment', 'mass, affluent, private_banking, corporate'),
    ('customer_360', 'risk_tolerance', 'risk tolerance C1 (lowest) .. C5'), ('customer_360', 'kyc_status', 'pending, verified, expired, rejected'),
    ('customer_360', 'kyc_expires_on', 'date the KYC expires'), ('customer_360', 'risk_assessed_on', 'date of the last risk assessment'),
    ('customer_360', 'aum', 'assets under management'), ('customer_360', 'owner_id', 'owning principal (the RM)'),
    ('customer_360', 'org_unit_id', 'org unit of the customer'), ('customer_360', 'products_held', 'distinct products held'),
    ('customer_360', 'holdings_amount', 'sum of holding amounts'), ('customer_360', 'last_interaction_at', 'time of the last interaction'),
    ('customer_360', 'open_tasks', 'open tasks about the customer'), ('customer_360', 'open_opportunities', 'opportunities not won or lost'),
    ('customer_360', 'pipeline_amount', 'amount of the open opportunities'), ('customer_360', 'churn_score', 'churn score 0..100 (crm.churn_scores)'),
    ('sales_funnel', 'org_unit_id', 'org unit of the opportunities'), ('sales_funnel', 'month', 'month the opportunities were created'),
    ('sales_funnel', 'stage', 'funnel stage: lead, qualified, proposal, negotiation, won'), ('sales_funnel', 'stage_order', '1 (lead) .. 5 (won)'),
    ('sales_funnel', 'opportunities', 'opportunities now at this stage'), ('sales_funnel', 'reached', 'opportunities at this stage or later'),
    ('sales_funnel', 'amount', 'amount of the opportunities at this stage'), ('sales_funnel', 'conversion_to_next', 'reached(next stage) / reached(this stage)'),
    ('sales_funnel', 'lost_in_month', 'opportunities of the month that were lost'),
    ('aum_by_org_unit', 'org_unit_id', 'org unit'), ('aum_by_org_unit', 'org_unit', 'org unit name'), ('aum_by_org_unit', 'kind', 'head_office, branch, sub_branch, team'),
    ('aum_by_org_unit', 'parent_id', 'parent org unit'), ('aum_by_org_unit', 'customers', 'customers of the unit and all units below it'),
    ('aum_by_org_unit', 'aum', 'AUM of the unit and all units below it'), ('aum_by_org_unit', 'own_aum', 'AUM of customers of this unit itself'),
    ('rm_performance', 'principal_id', 'owning principal'), ('rm_performance', 'display_name', 'principal''s name'),
    ('rm_performance', 'org_unit_id', 'principal''s org unit'), ('rm_performance', 'customers', 'customers owned'), ('rm_performance', 'aum', 'their AUM'),
    ('rm_performance', 'cross_sell_ratio', 'distinct products held per customer'), ('rm_performance', 'interactions_per_customer', 'interactions in the last 365 days per customer'),
    ('rm_performance', 'tasks', 'tasks assigned to the principal'), ('rm_performance', 'tasks_done', 'of which done'), ('rm_performance', 'task_completion', 'done / assigned'),
    ('task_sla', 'org_unit_id', 'org unit of the tasks'), ('task_sla', 'assignee_id', 'assigned principal'), ('task_sla', 'open', 'open tasks'),
    ('task_sla', 'overdue', 'open tasks past their due date'), ('task_sla', 'done', 'done tasks'), ('task_sla', 'done_on_time', 'done by their due date'),
    ('task_sla', 'on_time_rate', 'done on time / done'),
    ('churn_watch', 'customer_id', 'customer id'), ('churn_watch', 'name', 'customer name'), ('churn_watch', 'owner_id', 'owning principal'),
    ('churn_watch', 'org_unit_id', 'org unit'), ('churn_watch', 'aum', 'AUM'), ('churn_watch', 'churn_score', 'churn score 0..100'),
    ('churn_watch', 'top_factor', 'the factor contributing most'), ('churn_watch', 'factors', 'all contributing factors with their points, largest first')
  ) x(v, col, txt) LOOP
    EXECUTE format('COMMENT ON COLUMN crm_report.%I.%I IS %L', r.v, r.col, r.txt);
  END LOOP;
END $$;

DO $init$
BEGIN
  IF pg_catalog.current_setting('row_security') OPERATOR(pg_catalog.=) 'on' THEN
    PERFORM crm._init_suitability();
  END IF;
END
$init$;
