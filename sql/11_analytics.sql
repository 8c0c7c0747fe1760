-- Analytics and decision support on a small, hand-checked bank: suitability and its override
-- workflow, recommendations, churn scores, customer 360, and the BI views as different viewers.
\set VERBOSITY terse
SET crm.today = '2027-03-01';
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_an_bma, regress_an_bmb, regress_an_rm1, regress_an_rm2, regress_an_comp;
RESET client_min_messages;
SELECT crm.add_org_unit('AN HQ', NULL, 'head_office') AS hq \gset
SELECT crm.add_org_unit('AN Branch A', :hq, 'branch') AS ba \gset
SELECT crm.add_org_unit('AN Team A1', :ba, 'team') AS ta \gset
SELECT crm.add_org_unit('AN Branch B', :hq, 'branch') AS bb \gset
DO $$ DECLARE r text; BEGIN
  FOREACH r IN ARRAY ARRAY['regress_an_bma', 'regress_an_bmb', 'regress_an_rm1', 'regress_an_rm2', 'regress_an_comp'] LOOP
    EXECUTE format('CREATE ROLE %I LOGIN IN ROLE crm_user', r);
  END LOOP;
END $$;
SELECT crm.add_principal('regress_an_bma', 'BM A', :ba, ARRAY['branch_manager']) AS bma \gset
SELECT crm.add_principal('regress_an_bmb', 'BM B', :bb, ARRAY['branch_manager']) AS bmb \gset
SELECT crm.add_principal('regress_an_rm1', 'RM 1', :ta, ARRAY['rm'], :bma) AS rm1 \gset
SELECT crm.add_principal('regress_an_rm2', 'RM 2', :bb, ARRAY['rm'], :bmb) AS rm2 \gset
SELECT crm.add_principal('regress_an_comp', 'Compliance', :hq, ARRAY['compliance']) AS comp \gset
INSERT INTO crm_data.product (owner_id, code, name, product_type, risk_level) VALUES
  (:bma, 'AN-R1', '安心存', 'deposit', 'R1'), (:bma, 'AN-R2', '稳盈理财', 'wealth_management', 'R2'),
  (:bma, 'AN-R3', '成长基金', 'fund', 'R3'), (:bma, 'AN-R5', '结构性票据', 'structured', 'R5'),
  (:bma, 'AN-LOAN', '消费贷', 'loan', 'R2');
SELECT id AS r1 FROM crm_data.product WHERE code = 'AN-R1' \gset
SELECT id AS r2 FROM crm_data.product WHERE code = 'AN-R2' \gset
SELECT id AS r3 FROM crm_data.product WHERE code = 'AN-R3' \gset
SELECT id AS r5 FROM crm_data.product WHERE code = 'AN-R5' \gset
-- customers (created 2026-12-01); c5's KYC has expired, c7's risk assessment is older than a year
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number, segment, risk_tolerance, kyc_status, kyc_expires_on, risk_assessed_on, aum, created_at) VALUES
  (:rm1, '甲一', 'id_card', '11010519491231002X', 'affluent', 'C3', 'verified', '2028-01-01', '2026-10-01', 1000000, '2026-12-01'),
  (:rm1, '乙二', NULL, NULL, 'affluent', 'C2', 'verified', '2028-01-01', '2026-10-01', 800000, '2026-12-01'),
  (:rm1, '丙三', NULL, NULL, 'affluent', 'C3', 'verified', '2028-01-01', '2026-10-01', 900000, '2026-12-01'),
  (:rm2, '丁四', NULL, NULL, 'mass', 'C1', 'verified', '2028-01-01', '2026-10-01', 100000, '2026-12-01'),
  (:rm1, '戊五', NULL, NULL, 'affluent', 'C3', 'expired', '2027-01-01', '2026-10-01', 700000, '2026-12-01'),
  (:rm2, '己六', NULL, NULL, 'affluent', 'C3', 'verified', '2028-01-01', '2026-10-01', 2000000, '2026-12-01'),
  (:rm1, '庚七', NULL, NULL, 'affluent', 'C3', 'verified', '2028-01-01', '2025-12-01', 600000, '2026-12-01');
SELECT id AS c1 FROM crm_data.customer WHERE name = '甲一' \gset
SELECT id AS c2 FROM crm_data.customer WHERE name = '乙二' \gset
SELECT id AS c3 FROM crm_data.customer WHERE name = '丙三' \gset
SELECT id AS c4 FROM crm_data.customer WHERE name = '丁四' \gset
SELECT id AS c5 FROM crm_data.customer WHERE name = '戊五' \gset
SELECT id AS c6 FROM crm_data.customer WHERE name = '己六' \gset
SELECT id AS c7 FROM crm_data.customer WHERE name = '庚七' \gset

-- suitability: within tolerance, with KYC and assessment current, a holding is accepted
INSERT INTO crm_data.holding (customer_id, product_id, amount, opened_on, matures_on) VALUES
  (:c1, :r1, 100000, '2026-06-01', '2027-06-01'), (:c3, :r2, 60000, '2026-06-01', '2027-09-01'),
  (:c3, :r3, 70000, '2026-06-01', '2027-09-01'), (:c6, :r2, 50000, '2026-06-01', '2027-09-01'),
  (:c4, :r1, 20000, '2026-01-01', '2027-01-30');
-- and refused, naming both levels, KYC or the assessment, otherwise
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c2, :r3, 1000);
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c1, :r5, 1000);
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c5, :r1, 1000);
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c7, :r1, 1000);
UPDATE crm_data.holding SET product_id = :r5 WHERE customer_id = :c1;
-- opportunities: any stage is fine until it is won
INSERT INTO crm_data.opportunity (customer_id, product_id, name, stage, amount) VALUES (:c2, :r3, 'c2 fund', 'proposal', 10000);
UPDATE crm_data.opportunity SET stage = 'won' WHERE name = 'c2 fund';
INSERT INTO crm_data.opportunity (customer_id, product_id, name, stage, amount) VALUES (:c2, :r3, 'c2 fund won', 'won', 10000);
-- an RM cannot get around it by acting through its own session either
SET ROLE regress_an_rm1;
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c2, :r3, 1000);
RESET ROLE;
-- the matrix is configuration: a bank that lets C2 hold R3
UPDATE crm.suitability_matrix SET max_risk = 'R3' WHERE tolerance = 'C2';
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c2, :r3, 1000) RETURNING amount;
DELETE FROM crm_data.holding WHERE customer_id = :c2;
UPDATE crm.suitability_matrix SET max_risk = 'R2' WHERE tolerance = 'C2';
-- an override: the RM asks, compliance approves through the suitability_override workflow
SET ROLE regress_an_rm1;
INSERT INTO crm_data.suitability_override (customer_id, product_id, reason, valid_until)
  VALUES (:c1, :r5, '客户为专业投资者', '2027-12-31');
SELECT id AS ov FROM crm_data.suitability_override WHERE customer_id = :c1 \gset
SELECT crm.start_workflow('suitability_override', :ov) > 0 AS started;
SELECT crm.transition('suitability_override', :ov, 'submit', '请合规审批');
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c1, :r5, 1000);
SET ROLE regress_an_comp;
SELECT crm.approve((SELECT task_id FROM crm.my_approvals() WHERE record_id = :ov), '同意例外');
SET ROLE regress_an_rm1;
INSERT INTO crm_data.holding (customer_id, product_id, amount, opened_on) VALUES (:c1, :r5, 1000, '2027-03-01') RETURNING amount;
-- the override is for that customer and product only, and the RM cannot approve it itself
INSERT INTO crm_data.holding (customer_id, product_id, amount) VALUES (:c3, :r5, 1000);
INSERT INTO crm_data.suitability_override (customer_id, product_id, reason) VALUES (:c3, :r5, 'please');
UPDATE crm_data.suitability_override SET status = 'approved' WHERE customer_id = :c3;
INSERT INTO crm_data.suitability_override (customer_id, product_id, reason, status) VALUES (:c3, :r5, 'self-approved', 'approved');
RESET ROLE;
DELETE FROM crm_data.holding WHERE product_id = :r5;

-- recommendations for 甲一 (C3, affluent, AUM 1M): suitable, not held, not loans; peers are the other
-- affluent C3 customers with 500k–5M (丙三, 戊五, 己六, 庚七): 丙三 and 己六 hold R2, 丙三 holds R3
SELECT code, risk_level, score, reason FROM crm.recommend_products(:c1, 5);
-- 丁四 (C1): only R1, which it holds: nothing
SELECT count(*) AS for_c4 FROM crm.recommend_products(:c4, 5);
SET ROLE regress_an_rm2;
SELECT * FROM crm.recommend_products(:c1, 5);
RESET ROLE;

-- churn: 丁四's AUM halved since a snapshot 120 days ago (5 × 4 = 20 points), a complaint 10 days ago
-- (20), a holding matured a month ago and not renewed (15); 甲一 last heard from 200 days ago
-- ((200 − 90) / 30 × 10 = 36.7)
INSERT INTO crm.aum_snapshot (customer_id, as_of, aum) VALUES (:c4, '2026-11-01', 200000), (:c1, '2026-11-01', 1000000);
INSERT INTO crm_data.interaction (customer_id, channel, occurred_at, summary) VALUES
  (:c4, 'phone', '2027-02-19 10:00+08', '客户投诉: 理财收益低'), (:c1, 'visit', '2026-08-13 12:00', '季度回访');
SELECT score, factors FROM crm.churn_score(:c4);
SELECT score, factors->0->>'factor' AS top, factors->0->>'points' AS points FROM crm.churn_score(:c1);
UPDATE crm.churn_weight SET weight = 0 WHERE factor = 'open_complaint';
SELECT score FROM crm.churn_score(:c4);
UPDATE crm.churn_weight SET weight = 20 WHERE factor = 'open_complaint';
SELECT customer_id = :c4 AS c4, score FROM crm.churn_scores(ARRAY[:c4, :c1]::bigint[]) ORDER BY score DESC;

-- customer 360 for an app: everything the caller may see, as it may see it
SELECT crm.customer_360(:c1) -> 'customer' ->> 'id_number' AS own_rm_sees,
       jsonb_array_length(crm.customer_360(:c1) -> 'holdings') AS holdings,
       crm.customer_360(:c1) -> 'suitability' ->> 'max_product_risk' AS max_risk,
       crm.customer_360(:c1) -> 'churn' ->> 'score' AS churn;
SET ROLE regress_an_bma;
SELECT crm.customer_360(:c1) -> 'customer' ->> 'id_number' AS branch_manager_sees;
SET ROLE regress_an_rm2;
SELECT crm.customer_360(:c1) IS NULL AS other_rm_sees_nothing;
RESET ROLE;

-- the BI views, as three viewers: the same query, different rows, masked
SET ROLE regress_an_rm1;
SELECT name, id_number, aum, products_held, open_opportunities, churn_score FROM crm_report.customer_360 ORDER BY customer_id;
SET ROLE regress_an_bma;
SELECT name, id_number, aum, products_held FROM crm_report.customer_360 ORDER BY customer_id;
SET ROLE regress_an_bmb;
SELECT name, aum FROM crm_report.customer_360 ORDER BY customer_id;
SELECT org_unit, customers, aum, own_aum FROM crm_report.aum_by_org_unit WHERE org_unit LIKE 'AN %' ORDER BY org_unit_id;
SET ROLE regress_an_bma;
SELECT org_unit, customers, aum, own_aum FROM crm_report.aum_by_org_unit WHERE org_unit LIKE 'AN %' ORDER BY org_unit_id;
RESET ROLE;
SELECT org_unit, customers, aum, own_aum FROM crm_report.aum_by_org_unit WHERE org_unit LIKE 'AN %' ORDER BY org_unit_id;

-- the funnel: 6 opportunities of team A1 in March 2027 (lead 2, qualified 1, proposal 1, won 1, lost 1)
INSERT INTO crm_data.opportunity (customer_id, product_id, name, stage, amount, created_at) VALUES
  (:c1, :r2, 'f1', 'lead', 100, '2027-03-02'), (:c3, :r2, 'f2', 'lead', 200, '2027-03-02'),
  (:c1, :r3, 'f3', 'qualified', 300, '2027-03-03'), (:c3, :r1, 'f4', 'proposal', 400, '2027-03-03'),
  (:c1, :r2, 'f5', 'won', 500, '2027-03-04'), (:c3, :r3, 'f6', 'lost', 600, '2027-03-05');
SET ROLE regress_an_bma;
SELECT stage, opportunities, reached, amount, conversion_to_next, lost_in_month FROM crm_report.sales_funnel
 WHERE month = '2027-03-01' ORDER BY stage_order;
SET ROLE regress_an_bmb;
SELECT count(*) AS other_branch_sees FROM crm_report.sales_funnel WHERE month = '2027-03-01';
RESET ROLE;

-- RM league table and task SLA
INSERT INTO crm_data.task (customer_id, assignee_id, title, due_on, status, completed_at) VALUES
  (:c1, :rm1, 't1', '2027-02-20', 'done', '2027-02-19'), (:c1, :rm1, 't2', '2027-02-20', 'done', '2027-02-25'),
  (:c3, :rm1, 't3', '2027-02-25', 'open', NULL), (:c3, :rm1, 't4', '2027-03-10', 'open', NULL);
SET ROLE regress_an_bma;
SELECT display_name, customers, aum, cross_sell_ratio, interactions_per_customer, tasks, tasks_done, task_completion
  FROM crm_report.rm_performance ORDER BY principal_id;
SELECT open, overdue, done, done_on_time, on_time_rate FROM crm_report.task_sla WHERE assignee_id = :rm1;
SELECT name, churn_score, top_factor FROM crm_report.churn_watch ORDER BY customer_id;
RESET ROLE;
-- a data dictionary for BI tools: every view and column has a comment
SELECT c.relname, count(*) AS columns, count(d.description) AS described, obj_description(c.oid, 'pg_class') IS NOT NULL AS view_described
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
  LEFT JOIN pg_description d ON d.objoid = c.oid AND d.objsubid = a.attnum
 WHERE c.relnamespace = 'crm_report'::regnamespace GROUP BY c.relname, c.oid ORDER BY 1;
SELECT c.relname, c.reloptions FROM pg_class c WHERE c.relnamespace = 'crm_report'::regnamespace ORDER BY 1;
RESET crm.today;
