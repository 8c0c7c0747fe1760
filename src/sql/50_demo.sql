------------------------------------------------------------------------------------------------
-- Demo bank: crm.generate_demo_data(customers, seed). Deterministic (hash-based, no random()),
-- set-based, reuses login roles, units and principals that exist. Superuser only: it makes
-- login roles, which are cluster-wide.
------------------------------------------------------------------------------------------------
-- a deterministic number in [0, 1) from (seed, i, salt)
CREATE FUNCTION crm._demo_rnd(seed integer, i bigint, salt integer) RETURNS double precision
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN ((pg_catalog.hashint8extended(i, (seed::bigint OPERATOR(pg_catalog.*) 1000003) OPERATOR(pg_catalog.+) salt)
           OPERATOR(pg_catalog.&) 281474976710655)::double precision) OPERATOR(pg_catalog./) 281474976710656.0::double precision;

CREATE FUNCTION crm._demo_unit(name text, parent_id bigint, kind text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE u bigint;
BEGIN
  SELECT x.id INTO u FROM crm.org_unit x WHERE COALESCE(x.parent_id, 0) = COALESCE(_demo_unit.parent_id, 0) AND x.name = _demo_unit.name;
  IF u IS NULL THEN
    INSERT INTO crm.org_unit (name, kind, parent_id) VALUES (_demo_unit.name, _demo_unit.kind, _demo_unit.parent_id) RETURNING id INTO u;
  END IF;
  RETURN u;
END $$;

CREATE FUNCTION crm._demo_principal(login text, display_name text, unit bigint, roles text[], manager bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE p bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = _demo_principal.login) THEN
    EXECUTE format('CREATE ROLE %I LOGIN IN ROLE crm_user', _demo_principal.login);
  ELSIF NOT pg_has_role(_demo_principal.login, 'crm_user', 'MEMBER') THEN
    EXECUTE format('GRANT crm_user TO %I', _demo_principal.login);
  END IF;
  SELECT x.id INTO p FROM crm.principal x WHERE x.login = _demo_principal.login;
  IF p IS NULL THEN
    INSERT INTO crm.principal (login, display_name, org_unit_id, manager_id)
      VALUES (_demo_principal.login, _demo_principal.display_name, unit, manager) RETURNING id INTO p;
    INSERT INTO crm.principal_role (principal_id, role) SELECT p, r FROM unnest(roles) r;
  END IF;
  RETURN p;
END $$;

CREATE FUNCTION crm.generate_demo_data(customers integer DEFAULT 1000, seed integer DEFAULT 42)
RETURNS TABLE (what text, how_many bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n_rm int;
  n_team int;
  n_branch int;
  ho bigint;
  head_admin bigint;
  branches bigint[] := '{}';
  bms bigint[] := '{}';
  teams bigint[] := '{}';
  tls bigint[] := '{}';
  rm_ids bigint[];
  rm_units bigint[];
  b int; t int; r int;
  first_id bigint;
  last_id bigint;
  prod_ids bigint[];
  prod_cum int[];
  cities text[] := ARRAY['北京', '上海', '深圳', '广州', '杭州', '南京', '成都', '武汉', '西安', '苏州'];
  regions text[] := ARRAY['110101', '310101', '440305', '440104', '330106', '320102', '510104', '420102', '610103', '320505'];
  surnames text[] := ARRAY['王','李','张','刘','陈','杨','黄','赵','吴','周','徐','孙','马','朱','胡','郭','何','高','林','罗','郑','梁','谢','宋','唐','许','韩','冯','邓','曹'];
  given text[] := ARRAY['伟','芳','娜','敏','静','丽','强','磊','军','洋','勇','艳','杰','娟','涛','明','超','秀','霞','平','刚','桂','英','华','玉','萍','红','鹏','辉','建','文','斌','宇','浩','凯','晨','欣','怡','佳','琳'];
  industries text[] := ARRAY['科技', '贸易', '实业', '投资', '建设', '医药', '物流', '食品', '能源', '电子'];
BEGIN
  IF customers IS NULL OR customers < 1 OR customers > 20000000 THEN
    RAISE EXCEPTION 'customers must be between 1 and 20000000, not %', crm._short(customers) USING ERRCODE = '22023';
  END IF;
  IF seed IS NULL THEN
    RAISE EXCEPTION 'seed must not be NULL' USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM crm.object o WHERE o.name = 'customer' AND o.core) THEN
    RAISE EXCEPTION 'the core objects do not exist in this database' USING ERRCODE = '55000', HINT = 'Call crm.init() first.';
  END IF;
  n_rm := greatest(12, customers / 100);
  n_team := greatest(3, (n_rm + 7) / 8);
  n_branch := greatest(3, (n_team + 29) / 30);

  -- org tree and principals (reused when they exist)
  ho := crm._demo_unit('总行 Head Office', NULL, 'head_office');
  head_admin := crm._demo_principal('demo_admin', '系统管理员 Admin', ho, ARRAY['admin'], NULL);
  PERFORM crm._demo_principal('demo_compliance', '合规 Compliance', ho, ARRAY['compliance'], head_admin);
  PERFORM crm._demo_principal('demo_auditor', '稽核 Auditor', ho, ARRAY['auditor'], head_admin);
  FOR b IN 1 .. n_branch LOOP
    branches := branches || crm._demo_unit(format('%s分行 Branch %s', cities[1 + (b - 1) % 10], b), ho, 'branch');
    bms := bms || crm._demo_principal(format('demo_bm_%s', lpad(b::text, 3, '0')),
                   format('%s行长 Branch manager %s', surnames[1 + (b * 7) % 30], b), branches[b], ARRAY['branch_manager'], head_admin);
  END LOOP;
  FOR t IN 1 .. n_team LOOP
    b := 1 + (t - 1) % n_branch;
    teams := teams || crm._demo_unit(format('财富团队 Team %s', t), branches[b], 'team');
    tls := tls || crm._demo_principal(format('demo_tl_%s', lpad(t::text, 4, '0')),
                   format('%s%s 团队长 Team lead %s', surnames[1 + (t * 11) % 30], given[1 + (t * 13) % 40], t), teams[t], ARRAY['team_lead'], bms[b]);
  END LOOP;
  FOR r IN 1 .. n_rm LOOP
    t := 1 + (r - 1) % n_team;
    PERFORM crm._demo_principal(format('demo_rm_%s', lpad(r::text, 5, '0')),
              format('%s%s 客户经理 RM %s', surnames[1 + (r * 17) % 30], given[1 + (r * 19) % 40], r), teams[t], ARRAY['rm'], tls[t]);
  END LOOP;
  SELECT array_agg(p.id ORDER BY p.login), array_agg(p.org_unit_id ORDER BY p.login) INTO rm_ids, rm_units
    FROM crm.principal p WHERE p.login ~ '^demo_rm_[0-9]+$' AND substr(p.login, 9)::int <= n_rm;

  -- products (by code, once per database)
  INSERT INTO crm_data.product (owner_id, org_unit_id, code, name, product_type, risk_level, term_days, matures_on)
  SELECT head_admin, ho, format('P%s', lpad(k::text, 4, '0')),
         format('%s %s号', (ARRAY['安心存', '稳盈理财', '成长基金', '康宁保险', '国债', '结构性存款', '消费贷'])[1 + (k - 1) % 7], k),
         (ARRAY['deposit', 'wealth_management', 'fund', 'insurance', 'bond', 'structured', 'loan'])[1 + (k - 1) % 7],
         (ARRAY['R1', 'R2', 'R4', 'R2', 'R1', 'R3', 'R2'])[1 + (k - 1) % 7]::text
           || '',
         (ARRAY[90, 180, 365, 730, 1095])[1 + k % 5],
         date '2026-01-01' + (k * 17) % 900
    FROM generate_series(1, 42) k
   WHERE NOT EXISTS (SELECT 1 FROM crm_data.product p WHERE p.code = format('P%s', lpad(k::text, 4, '0')));
  -- funds and structured products of higher risk, so every tolerance has choices
  UPDATE crm_data.product p SET risk_level = 'R5' WHERE p.code IN ('P0003', 'P0017', 'P0031');
  UPDATE crm_data.product p SET risk_level = 'R3' WHERE p.code IN ('P0010', 'P0024');
  SELECT array_agg(p.id ORDER BY p.risk_level, p.id) INTO prod_ids FROM crm_data.product p WHERE p.code ~ '^P[0-9]{4}$' AND p.product_type <> 'loan';
  SELECT array_agg((SELECT count(*) FROM crm_data.product p WHERE p.code ~ '^P[0-9]{4}$' AND p.product_type <> 'loan' AND p.risk_level <= 'R' || lvl)::int ORDER BY lvl)
    INTO prod_cum FROM generate_series(1, 5) lvl;

  -- customers
  SELECT COALESCE(max(c.id), 0) INTO first_id FROM crm_data.customer c;
  INSERT INTO crm_data.customer (owner_id, org_unit_id, name, customer_type, id_type, id_number, mobile, email,
                                 birthday, gender, risk_tolerance, segment, kyc_status, kyc_expires_on, risk_assessed_on, aum)
  SELECT rm_ids[1 + (i % n_rm)], rm_units[1 + (i % n_rm)],
         CASE WHEN corp THEN cities[1 + (h2 % 10)] || surnames[1 + h3 % 30] || given[1 + h4 % 40] || industries[1 + h1 % 10] || '有限公司'
              ELSE surnames[1 + h1 % 30] || given[1 + h2 % 40] || CASE WHEN h3 % 3 > 0 THEN given[1 + h4 % 40] ELSE '' END END,
         CASE WHEN corp THEN 'corporate' ELSE 'individual' END,
         CASE WHEN corp THEN 'uscc' ELSE 'id_card' END,
         CASE WHEN corp THEN crm.make_uscc('91' || left(regions[1 + h2 % 10], 6) || lpad((i % 1000000000)::text, 9, '0'))
              ELSE crm.make_cn_id_number(regions[1 + h2 % 10], bday, ((h4 % 500) * 2 + CASE WHEN male THEN 1 ELSE 0 END)::int) END,
         '1' || (ARRAY['3', '5', '8', '9', '7'])[1 + h1 % 5] || lpad((h5 % 1000000000)::text, 9, '0'),
         CASE WHEN h3 % 10 < 4 THEN format('c%s@example.com', i) END,
         CASE WHEN NOT corp THEN bday END,
         CASE WHEN corp THEN NULL WHEN male THEN 'M' ELSE 'F' END,
         'C' || (1 + least(4, floor(crm._demo_rnd(seed, i, 7) * 5)::int)),
         CASE WHEN corp THEN 'corporate' WHEN aum >= 6000000 THEN 'private_banking' WHEN aum >= 500000 THEN 'affluent' ELSE 'mass' END,
         CASE WHEN h5 % 20 = 0 THEN 'expired' WHEN h5 % 20 = 1 THEN 'pending' ELSE 'verified' END,
         date '2026-06-01' + (h4 % 730)::int,
         crm.today() - (h3 % 330)::int,
         aum
    FROM (SELECT i, h1, h2, h3, h4, h5, (h1 % 20 = 7) AS corp, (h3 % 2 = 1) AS male,
                 date '1945-01-01' + (h5 % 21000)::int AS bday,
                 round((exp(crm._demo_rnd(seed, i, 3) * 9.2) * 1000)::numeric, 2) AS aum
            FROM (SELECT g AS i,
                         (hashint8extended(g, seed * 31 + 1) & 9223372036854775807) AS h1, (hashint8extended(g, seed * 31 + 2) & 9223372036854775807) AS h2,
                         (hashint8extended(g, seed * 31 + 3) & 9223372036854775807) AS h3, (hashint8extended(g, seed * 31 + 4) & 9223372036854775807) AS h4,
                         (hashint8extended(g, seed * 31 + 5) & 9223372036854775807) AS h5
                    FROM generate_series(first_id + 1, first_id + customers) g) hashed) x;
  SELECT max(c.id) INTO last_id FROM crm_data.customer c;

  -- holdings: 0 to 3 per customer, only products the customer's tolerance allows
  INSERT INTO crm_data.holding (owner_id, org_unit_id, customer_id, product_id, amount, opened_on, matures_on)
  SELECT c.owner_id, c.org_unit_id, c.id,
         prod_ids[1 + (hashint8extended(c.id * 4 + k, seed) & 9223372036854775807) % prod_cum[substr(c.risk_tolerance, 2)::int]],
         round((c.aum * (0.1 + crm._demo_rnd(seed, c.id * 4 + k, 11) * 0.3))::numeric, 2),
         date '2024-01-01' + ((hashint8extended(c.id * 4 + k, seed + 1) & 9223372036854775807) % 1000)::int,
         date '2026-09-01' + ((hashint8extended(c.id * 4 + k, seed + 2) & 9223372036854775807) % 720)::int
    FROM crm_data.customer c
   CROSS JOIN LATERAL generate_series(1, ((hashint8extended(c.id, seed + 3) & 9223372036854775807) % 4)::int) k
   WHERE c.id > first_id AND c.id <= last_id
     -- only where suitability allows it: KYC current (products are already within the tolerance)
     AND c.kyc_status = 'verified' AND (c.kyc_expires_on IS NULL OR c.kyc_expires_on >= crm.today());

  -- interactions: 0 to 3 per customer over the last two years
  INSERT INTO crm_data.interaction (owner_id, org_unit_id, customer_id, channel, occurred_at, summary)
  SELECT c.owner_id, c.org_unit_id, c.id,
         (ARRAY['phone', 'visit', 'branch', 'wecom', 'email', 'sms', 'video'])[1 + (hashint8extended(c.id * 4 + k, seed + 4) & 9223372036854775807) % 7],
         timestamptz '2024-12-01 09:00+08' + make_interval(mins => ((hashint8extended(c.id * 4 + k, seed + 5) & 9223372036854775807) % 1050000)::int),
         (ARRAY['季度回访', '产品到期提醒', '风险测评更新', '理财咨询', '生日问候', '投诉处理'])[1 + (hashint8extended(c.id * 4 + k, seed + 6) & 9223372036854775807) % 6]
    FROM crm_data.customer c
   CROSS JOIN LATERAL generate_series(1, ((hashint8extended(c.id, seed + 7) & 9223372036854775807) % 4)::int) k
   WHERE c.id > first_id AND c.id <= last_id;

  -- opportunities for about a third of the customers, in every stage
  INSERT INTO crm_data.opportunity (owner_id, org_unit_id, customer_id, product_id, name, stage, amount, expected_close)
  SELECT c.owner_id, c.org_unit_id, c.id, prod_ids[1 + (hashint8extended(c.id, seed + 8) & 9223372036854775807) % prod_cum[substr(c.risk_tolerance, 2)::int]],
         '配置建议 ' || c.id,
         CASE WHEN c.kyc_status = 'verified' AND (c.kyc_expires_on IS NULL OR c.kyc_expires_on >= crm.today())
              THEN (ARRAY['lead', 'lead', 'qualified', 'qualified', 'proposal', 'negotiation', 'won', 'lost'])[1 + (hashint8extended(c.id, seed + 9) & 9223372036854775807) % 8]
              ELSE (ARRAY['lead', 'lead', 'qualified', 'qualified', 'proposal', 'negotiation', 'lost', 'lost'])[1 + (hashint8extended(c.id, seed + 9) & 9223372036854775807) % 8] END,
         round((c.aum * 0.2 + 10000)::numeric, 2),
         date '2026-11-01' + ((hashint8extended(c.id, seed + 10) & 9223372036854775807) % 180)::int
    FROM crm_data.customer c
   WHERE c.id > first_id AND c.id <= last_id AND (hashint8extended(c.id, seed + 11) & 9223372036854775807) % 3 = 0;

  -- open tasks for about one customer in ten, and marketing consent for most
  INSERT INTO crm_data.task (owner_id, org_unit_id, customer_id, assignee_id, title, due_on, status, priority, completed_at)
  SELECT c.owner_id, c.org_unit_id, c.id, c.owner_id, '客户回访 Follow up', t.due_on, t.status, 'normal',
         CASE WHEN t.status = 'done' THEN (t.due_on + ((hashint8extended(c.id, seed + 16) & 9223372036854775807) % 7)::int - 4)::timestamptz END
    FROM crm_data.customer c
   CROSS JOIN LATERAL (SELECT date '2026-11-15' + ((hashint8extended(c.id, seed + 12) & 9223372036854775807) % 40)::int AS due_on,
                              (ARRAY['open', 'open', 'done'])[1 + (hashint8extended(c.id, seed + 13) & 9223372036854775807) % 3] AS status) t
   WHERE c.id > first_id AND c.id <= last_id AND (hashint8extended(c.id, seed + 14) & 9223372036854775807) % 10 = 0;
  INSERT INTO crm_data.consent (owner_id, org_unit_id, customer_id, purpose, channel, granted_at, evidence)
  SELECT c.owner_id, c.org_unit_id, c.id, 'marketing', 'sms', c.created_at, 'demo: signed form'
    FROM crm_data.customer c
   WHERE c.id > first_id AND c.id <= last_id AND (hashint8extended(c.id, seed + 15) & 9223372036854775807) % 10 < 6;

  RETURN QUERY
    SELECT 'org units', count(*) FROM crm.org_unit
    UNION ALL SELECT 'principals', count(*) FROM crm.principal
    UNION ALL SELECT 'customers', count(*) FROM crm_data.customer
    UNION ALL SELECT 'products', count(*) FROM crm_data.product
    UNION ALL SELECT 'holdings', count(*) FROM crm_data.holding
    UNION ALL SELECT 'interactions', count(*) FROM crm_data.interaction
    UNION ALL SELECT 'opportunities', count(*) FROM crm_data.opportunity
    UNION ALL SELECT 'tasks', count(*) FROM crm_data.task
    UNION ALL SELECT 'consents', count(*) FROM crm_data.consent;
END $$;
COMMENT ON FUNCTION crm.generate_demo_data(integer, integer) IS 'a deterministic demo bank: org tree, principals with login roles, customers, products, holdings, interactions, opportunities, tasks, consents';
