-- Rules: event and scheduled automation, tasks, the outbox, consent; and every refusal.
\set VERBOSITY terse
SET crm.today = '2027-02-20';
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_rl_admin, regress_rl_bm, regress_rl_tl, regress_rl_rm, regress_rl_rm2, regress_rl_user, regress_rl_connector;
RESET client_min_messages;
SELECT crm.add_org_unit('Rules Branch', NULL, 'branch') AS rb \gset
SELECT crm.add_org_unit('Rules Team', :rb, 'team') AS rt \gset
CREATE ROLE regress_rl_admin LOGIN IN ROLE crm_admin;
CREATE ROLE regress_rl_bm LOGIN;
CREATE ROLE regress_rl_tl LOGIN;
CREATE ROLE regress_rl_rm LOGIN;
CREATE ROLE regress_rl_rm2 LOGIN;
CREATE ROLE regress_rl_user LOGIN IN ROLE crm_user;
SELECT crm.add_principal('regress_rl_admin', 'Rule Admin', :rb, ARRAY['admin']) AS adm \gset
SELECT crm.add_principal('regress_rl_bm', 'Branch Manager', :rb, ARRAY['branch_manager']) AS bm \gset
SELECT crm.add_principal('regress_rl_tl', 'Team Lead', :rt, ARRAY['team_lead'], :bm) AS tl \gset
SELECT crm.add_principal('regress_rl_rm', 'RM', :rt, ARRAY['rm'], :tl) AS rm \gset
SELECT crm.add_principal('regress_rl_rm2', 'RM without manager', :rt, ARRAY['rm']) AS rm2 \gset
INSERT INTO crm_data.customer (owner_id, name, birthday, mobile, id_type, id_number, aum, risk_tolerance, kyc_status, risk_assessed_on) VALUES
  (:rm, '张小规', '1980-02-27', '13812345678', 'id_card', '11010519491231002X', 1000000, 'C3', 'verified', '2027-01-01'),  -- birthday in 7 days
  (:rm, '李小规', '1992-02-29', '13912345678', NULL, NULL, 500000, 'C3', 'verified', '2027-01-01'),  -- Feb 29: 28 Feb in 2027
  (:rm, '王小规', '1970-06-01', NULL, NULL, NULL, 2000000, 'C3', 'verified', '2027-01-01'),
  (:rm2, '赵小规', '1985-02-25', '13712345678', NULL, NULL, 300000, 'C3', 'verified', '2027-01-01');
SELECT id AS zhang FROM crm_data.customer WHERE name = '张小规' \gset
SELECT id AS li FROM crm_data.customer WHERE name = '李小规' \gset
SELECT id AS wang FROM crm_data.customer WHERE name = '王小规' \gset
SELECT id AS zhao FROM crm_data.customer WHERE name = '赵小规' \gset

-- date helpers: Feb 29 in common years, wrap-around at the year's end, the 2-argument immutable forms
SELECT crm.today(), crm.days_until('2027-03-01'), crm.days_until('2027-02-01');
SELECT crm.days_until_anniversary('1980-02-27'), crm.days_until_anniversary('1992-02-29'),
       crm.next_anniversary('1992-02-29'), crm.next_anniversary('1992-02-29', '2028-01-01');
SELECT crm.days_until_anniversary('1990-01-05', '2026-12-30'), crm.next_anniversary('1990-12-30', '2026-12-31'),
       crm.days_until_anniversary('1990-02-20');
SELECT crm.anniversary_key('1992-02-29'), crm.anniversary_key('1980-12-31'),
       crm.anniversary_keys(3, '2027-02-26'), crm.anniversary_keys(2, '2028-02-27'), crm.anniversary_keys(2, '2026-12-30');
SELECT provolatile FROM pg_proc WHERE oid IN ('crm.days_until_anniversary(date)'::regprocedure, 'crm.days_until_anniversary(date,date)'::regprocedure) ORDER BY 1;
SELECT crm.days_until('infinity');
SET crm.today = 'next tuesday';
RESET crm.today;
SELECT crm.today() = current_date AS today_is_today;
SET crm.today = '2027-02-20';

-- 1. 7 days before a customer's birthday, a follow-up task for the customer's RM (scheduled, idempotent)
-- (made by a crm_admin login that is a principal: the rule runs as that principal)
SET ROLE regress_rl_admin;
SELECT crm.create_rule('birthday_followup', 'customer', 'schedule',
  'crm.days_until_anniversary(birthday) BETWEEN 0 AND 7',
  '[{"type": "create_task", "assignee": "owner", "title": "客户生日提醒: {{name}}", "body": "生日 {{birthday}}, 证件 {{id_number}}", "due_in_days": 7}]',
  '{"occurrence": "crm.next_anniversary(birthday)", "description": "birthday follow-up"}');
RESET ROLE;
SELECT part, sql FROM crm.explain_rule('birthday_followup') WHERE part LIKE 'query%';
SELECT crm.run_rule('birthday_followup') AS fired;
SELECT crm.run_rule('birthday_followup') AS fired_again;
SET crm.today = '2027-02-22';
SELECT crm.run_rule('birthday_followup') AS fired_two_days_later;
SET crm.today = '2027-02-20';
SELECT t.title, t.body, t.due_on, t.assignee_id = :rm AS to_rm, t.customer_id = :zhang AS zhang
  FROM crm_data.task t WHERE t.title LIKE '客户生日提醒%' ORDER BY t.title;
SELECT r.record_id = :zhang AS zhang, r.occurrence FROM crm.rule_fired r WHERE r.rule = 'birthday_followup' ORDER BY 2;
-- the RM sees its tasks; another RM does not
SET ROLE regress_rl_rm;
SELECT count(*) AS rm_sees FROM crm_data.task WHERE title LIKE '客户生日提醒%';
SET ROLE regress_rl_rm2;
SELECT count(*) AS rm2_sees FROM crm_data.task WHERE title LIKE '客户生日提醒%';
RESET ROLE;
-- run_due runs it only when due, then schedules the next run a cadence later
UPDATE crm.rule_state SET next_run_at = now() - interval '1 minute' WHERE rule = 'birthday_followup';
SELECT rule, fired, error FROM crm.run_due();
SELECT rule, fired, error FROM crm.run_due();
SELECT runs, last_fired, next_run_at > now() + interval '23 hours' AS tomorrow FROM crm.rule_state WHERE rule = 'birthday_followup';

-- the same rule written to use an index on crm.anniversary_key(birthday): the same customers
SELECT crm.create_rule('birthday_indexed', 'customer', 'schedule',
  'crm.anniversary_key(birthday) = ANY (crm.anniversary_keys(7))',
  '[{"type": "create_task", "assignee": "owner", "title": "生日(索引): {{name}}", "due_in_days": 7}]',
  '{"run_as": "regress_rl_admin", "occurrence": "crm.next_anniversary(birthday)"}');
SELECT crm.run_rule('birthday_indexed') AS fired;
SELECT (SELECT array_agg(record_id ORDER BY record_id) FROM crm.rule_fired WHERE rule = 'birthday_indexed')
     = (SELECT array_agg(id ORDER BY id) FROM crm_data.customer WHERE crm.days_until_anniversary(birthday) BETWEEN 0 AND 7) AS same_customers;
SELECT crm.drop_rule('birthday_indexed');
SELECT count(*) AS fired_rows_left FROM crm.rule_fired WHERE rule = 'birthday_indexed';

-- 2. 30 days before a holding matures, a renewal SMS to the customer, only with marketing consent
INSERT INTO crm_data.product (owner_id, code, name, product_type, risk_level) VALUES (:adm, 'RL-WM-1', '稳健理财1号', 'wealth_management', 'R2');
SELECT id AS prod FROM crm_data.product WHERE code = 'RL-WM-1' \gset
INSERT INTO crm_data.holding (customer_id, product_id, amount, opened_on, matures_on) VALUES
  (:zhang, :prod, 100000, '2026-03-22', '2027-03-22'),
  (:li, :prod, 50000, '2026-03-22', '2027-03-22'),
  (:wang, :prod, 80000, '2026-03-22', '2027-03-22'),
  (:zhang, :prod, 70000, '2026-06-01', '2027-06-01');
INSERT INTO crm_data.consent (customer_id, purpose, channel, granted_at) VALUES (:zhang, 'marketing', 'sms', now() - interval '1 day');
INSERT INTO crm_data.consent (customer_id, purpose, channel, granted_at, withdrawn_at) VALUES (:li, 'marketing', 'any', now() - interval '2 days', now() - interval '1 day');
SELECT crm.has_consent(:zhang, 'marketing', 'sms'), crm.has_consent(:zhang, 'marketing', 'email'), crm.has_consent(:li, 'marketing', 'sms');
SELECT crm.create_rule('renewal_sms', 'holding', 'schedule', 'crm.days_until(matures_on) = 30',
  '[{"type": "notify", "channel": "sms", "to": "customer", "purpose": "marketing", "template": "尊敬的客户: 您的产品将于{{matures_on}}到期, 金额{{amount}}元, 欢迎续作。"}]',
  '{"run_as": "regress_rl_admin", "occurrence": "matures_on"}');
SELECT crm.run_rule('renewal_sms') AS fired;
SELECT crm.run_rule('renewal_sms') AS fired_again;
SELECT o.channel, o.recipient_kind, o.customer_id = :zhang AS zhang, o.address, o.body, o.purpose, o.status, o.occurrence
  FROM crm.outbox o WHERE o.rule = 'renewal_sms';
SELECT s.record_id IS NOT NULL AS has_record, s.reason FROM crm.rule_skip s WHERE s.rule = 'renewal_sms' ORDER BY reason;

-- 3. AUM falling by more than 30% in one update: a churn alert for the RM's manager (event rule)
SELECT crm.create_rule('churn_alert', 'customer', 'update', 'NEW.aum < OLD.aum * 0.7',
  '[{"type": "create_task", "assignee": "owner_manager", "title": "流失预警: {{name}} AUM {{aum}}", "body": "证件 {{id_number}}", "priority": "high", "due_in_days": 2}]',
  '{"run_as": "regress_rl_admin"}');
SELECT part, sql FROM crm.explain_rule('churn_alert') WHERE part = 'trigger';
SET ROLE regress_rl_rm;
UPDATE crm_data.customer SET aum = 900000 WHERE id = :zhang;   -- -10%: nothing
UPDATE crm_data.customer SET aum = 600000 WHERE id = :zhang;   -- -33%: alert
UPDATE crm_data.customer SET segment = 'affluent' WHERE id = :wang;  -- no AUM change: nothing
RESET ROLE;
UPDATE crm_data.customer SET aum = 100000 WHERE id = :zhao;    -- its RM has no manager: skipped, and why
-- the manager's task: the ID number masked, as the team lead may see it on a report's customer
SELECT t.title, t.body, t.priority, t.due_on, t.assignee_id = :tl AS to_manager, t.owner_id = :rm AS owned_by_rm
  FROM crm_data.task t WHERE t.title LIKE '流失预警%';
SELECT s.reason FROM crm.rule_skip s WHERE s.rule = 'churn_alert';
SET ROLE regress_rl_tl;
SELECT title FROM crm_data.task WHERE title LIKE '流失预警%';
RESET ROLE;
-- the audit log shows the task made by the rule's owner
SELECT a.action, a.principal_id = :adm AS by_rule_owner FROM crm.audit_log a
 WHERE a.object = 'task' AND a.record_id = (SELECT id FROM crm_data.task WHERE title LIKE '流失预警%');

-- insert and delete events, set_field, call, a role as assignee, a webhook
CREATE TABLE public.rl_calls (record_id bigint, called_as name, is_super boolean);
GRANT INSERT ON public.rl_calls TO regress_rl_admin;
CREATE FUNCTION public.rl_note(id bigint) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO public.rl_calls SELECT id, current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) $$;
GRANT EXECUTE ON FUNCTION public.rl_note(bigint) TO regress_rl_admin;
SET ROLE regress_rl_admin;
SELECT crm.create_rule('big_new_customer', 'customer', 'insert', 'aum >= 5000000',
  '[{"type": "set_field", "field": "segment", "value": "private_banking"},
    {"type": "create_task", "assignee": {"role": "branch_manager"}, "title": "新增大客户 {{name}}"},
    {"type": "call", "function": "public.rl_note"},
    {"type": "notify", "channel": "webhook", "to": "endpoint", "url": "https://hooks.example.invalid/crm", "template": "new customer {{name}} aum {{aum}} mobile {{mobile}}"}]');
SELECT crm.create_rule('customer_gone', 'customer', 'delete', 'OLD.aum > 0',
  '[{"type": "notify", "channel": "email", "to": "owner", "template": "客户 {{name}} 已删除"}]');
RESET ROLE;
INSERT INTO crm_data.customer (owner_id, name, aum) VALUES (:rm, '钱小规', 8000000), (:rm, '孙小规', 10);
SELECT name, segment FROM crm_data.customer WHERE name IN ('钱小规', '孙小规') ORDER BY name;
SELECT t.title, t.assignee_id = :bm AS to_branch_manager FROM crm_data.task t WHERE t.title LIKE '新增大客户%';
SELECT c.called_as, c.is_super FROM public.rl_calls c;
SELECT o.recipient_kind, o.address, o.body FROM crm.outbox o WHERE o.rule = 'big_new_customer';
DELETE FROM crm_data.customer WHERE name = '钱小规';
SELECT o.recipient_kind, o.principal_id = :rm AS to_owner, o.body FROM crm.outbox o WHERE o.rule = 'customer_gone';

-- disable: no trigger at all; enable: back
SELECT crm.disable_rule('churn_alert');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname = 'crm_rule_churn_alert';
UPDATE crm_data.customer SET aum = 1 WHERE id = :wang;
SELECT count(*) AS alerts FROM crm_data.task WHERE title LIKE '流失预警%';
SELECT crm.enable_rule('churn_alert');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname = 'crm_rule_churn_alert';
SELECT crm.alter_rule('churn_alert', condition => 'NEW.aum < OLD.aum * 0.5');
SELECT part, sql FROM crm.explain_rule('churn_alert') WHERE part = 'trigger';

-- cycles: two rules that keep changing what fires the other are stopped with a clear error
SELECT crm.create_rule('ping', 'customer', 'update', 'NEW.segment = ''mass''',
  '[{"type": "set_field", "field": "segment", "value": "affluent"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('pong', 'customer', 'update', 'NEW.segment = ''affluent''',
  '[{"type": "set_field", "field": "segment", "value": "mass"}]', '{"run_as": "regress_rl_admin"}');
UPDATE crm_data.customer SET segment = 'mass' WHERE id = :wang;
SELECT segment FROM crm_data.customer WHERE id = :wang;
SELECT crm.drop_rule('pong');
-- a rule that sets what it tests once: the record already holds the value, so it stops by itself
UPDATE crm_data.customer SET segment = 'mass' WHERE id = :wang;
SELECT segment FROM crm_data.customer WHERE id = :wang;
SELECT crm.drop_rule('ping');

-- bad input: each refused with a clear error, nothing made
SELECT crm.create_rule('r1', 'no_such_object', 'update', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'upsert', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('R 1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1"; DROP TABLE crm.rule; --', 'customer', 'update', 'true', '[]', '{}');
SELECT crm.create_rule('churn_alert', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'NEW.aum >', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'NEW.wealth > 1', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'aum > 1; DROP TABLE crm.rule', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true FROM pg_authid', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'aum > (SELECT 1)', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'EXISTS (SELECT 1 FROM crm_data.task)', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'schedule', 'sum(aum) > 1', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'NEW.aum * 2', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'random() > 0.5', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'public.rl_note(NEW.id) IS NULL', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'insert', 'OLD.aum > 1', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'schedule', 'NEW.aum > 1', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 't.aum > 1', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', '$1 > 1', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', '', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "send_fax"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '{"type": "create_task"}', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "Hi {{nickname}}"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x", "assignee": "the boss"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x", "assignee": {"role": "pope"}}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x", "assignee": {"principal": "nobody_here"}}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "notify", "channel": "fax", "template": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "notify", "channel": "sms", "template": "x", "purpose": "spam"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'product', 'update', 'true', '[{"type": "notify", "channel": "sms", "template": "x"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "set_field", "field": "segment", "value": "royalty"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "set_field", "field": "aum", "value": "lots"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "set_field", "field": "owner_id", "value": 1}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "call", "function": "public.no_such_fn"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "start_workflow", "workflow": "kyc_review"}]', '{"run_as": "regress_rl_admin"}');
SELECT crm.create_rule('r1', 'customer', 'schedule', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin", "cadence": "fortnightly"}');
SELECT crm.create_rule('r1', 'customer', 'schedule', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin", "cadence": "10 seconds"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "regress_rl_admin", "cadence": "daily"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x"}]', '{"run_as": "nobody_here"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x"}]', '{"colour": "red"}');
SELECT crm.create_rule('r1', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x"}]');
SELECT count(*) AS rules_named_r1 FROM crm.rule WHERE name = 'r1';
SELECT count(*) AS stray_triggers FROM pg_trigger WHERE tgname LIKE 'crm_rule_r1%';
SELECT crm.drop_rule('no_such_rule');
SELECT crm.alter_rule('churn_alert', condition => 'NEW.aum <');
SELECT part, sql FROM crm.explain_rule('churn_alert') WHERE part = 'trigger';

-- who may: rules are crm_admin's; the log of rules and the outbox are not for CRM users; crm's
-- internals are not callable, not even on a table of one's own; the test date is superuser-only
CREATE TABLE public.rl_mine (id bigint);
ALTER TABLE public.rl_mine OWNER TO regress_rl_user;
SET ROLE regress_rl_user;
SELECT crm.create_rule('r2', 'customer', 'update', 'true', '[{"type": "create_task", "title": "x"}]');
SELECT crm.drop_rule('churn_alert');
SELECT crm.run_due();
SELECT count(*) FROM crm.outbox;
SELECT crm.outbox_claim(1);
SELECT crm._run_rule('birthday_followup');
SELECT crm._render('{{id_number}}', 'customer', '{"id_number": "x"}', 1, 1, 'principal');
SELECT crm._rule_trigger('churn_alert', 'customer', 'update', 'true');
SELECT crm._rule_call('public.rl_note(bigint)', 1, 'postgres');
CREATE TRIGGER t AFTER INSERT ON public.rl_mine FOR EACH ROW EXECUTE FUNCTION crm._rule_fire('churn_alert');
SET crm.today = '2030-01-01';
SET crm.rule_max_depth = 100;
RESET ROLE;

-- the outbox: claim (SKIP LOCKED), done, failed with backoff
CREATE ROLE regress_rl_connector LOGIN IN ROLE crm_connector;
SET ROLE regress_rl_connector;
SELECT channel, status, attempts FROM crm.outbox_claim(1);
SELECT crm.outbox_done(id) FROM crm.outbox WHERE rule = 'renewal_sms';
SELECT status FROM crm.outbox WHERE rule = 'renewal_sms';
SELECT channel, attempts FROM crm.outbox_claim(1);
SELECT crm.outbox_failed(id, 'gateway timeout') FROM crm.outbox WHERE rule = 'big_new_customer';
SELECT status, attempts, last_error, next_attempt_at > now() + interval '25 seconds' AS backs_off FROM crm.outbox WHERE rule = 'big_new_customer';
SELECT count(*) AS due_now FROM crm.outbox_claim(10) WHERE rule = 'big_new_customer';
RESET ROLE;

-- rule changes are audited as POLICY events
SELECT a.action, a.detail->>'operation' AS operation FROM crm.audit_log a WHERE a.object = 'rule' AND a.action = 'POLICY' LIMIT 1;
SELECT crm.drop_rule('customer_gone');
SELECT crm.drop_rule('big_new_customer');
RESET crm.today;
