-- Workflows: a loan application approved through branches, parallel reviews and a 2-of-3
-- committee, told as a story with several principals; the status field owned by the workflow;
-- SLA escalation; versions; the diagram; and every refusal.
\set VERBOSITY terse
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_wf_admin, regress_wf_hq, regress_wf_hom, regress_wf_bm, regress_wf_rm, regress_wf_risk, regress_wf_comp, regress_wf_cc1, regress_wf_cc2, regress_wf_cc3, regress_wf_user;
RESET client_min_messages;
SELECT crm.add_org_unit('WF Head Office', NULL, 'head_office') AS hq \gset
SELECT crm.add_org_unit('WF Branch', :hq, 'branch') AS br \gset
SELECT crm.add_org_unit('WF Team', :br, 'team') AS tm \gset
SELECT crm.add_role('hq_reviewer', 'Head-office credit reviewer');
SELECT crm.add_role('risk_officer', 'Risk officer');
SELECT crm.add_role('credit_committee', 'Credit committee member');
DO $$ DECLARE r text; BEGIN
  FOREACH r IN ARRAY ARRAY['regress_wf_admin', 'regress_wf_hq', 'regress_wf_hom', 'regress_wf_bm', 'regress_wf_rm', 'regress_wf_risk', 'regress_wf_comp', 'regress_wf_cc1', 'regress_wf_cc2', 'regress_wf_cc3', 'regress_wf_user'] LOOP
    EXECUTE format('CREATE ROLE %I LOGIN IN ROLE crm_user', r);
  END LOOP;
END $$;
GRANT crm_admin TO regress_wf_admin;
SELECT crm.add_principal('regress_wf_admin', 'Admin', :hq, ARRAY['admin']) AS adm \gset
SELECT crm.add_principal('regress_wf_hom', 'Head of branches', :hq, ARRAY['branch_manager']) AS hom \gset
SELECT crm.add_principal('regress_wf_hq', 'HQ reviewer', :hq, ARRAY['hq_reviewer']) AS hqr \gset
SELECT crm.add_principal('regress_wf_bm', 'Branch manager', :br, ARRAY['branch_manager'], :hom) AS bm \gset
SELECT crm.add_principal('regress_wf_rm', 'RM 王', :tm, ARRAY['rm'], :bm) AS rm \gset
SELECT crm.add_principal('regress_wf_risk', 'Risk officer', :hq, ARRAY['risk_officer']) AS risk \gset
SELECT crm.add_principal('regress_wf_comp', 'Compliance officer', :hq, ARRAY['compliance']) AS comp \gset
SELECT crm.add_principal('regress_wf_cc1', 'Committee 1', :hq, ARRAY['credit_committee']) AS cc1 \gset
SELECT crm.add_principal('regress_wf_cc2', 'Committee 2', :hq, ARRAY['credit_committee']) AS cc2 \gset
SELECT crm.add_principal('regress_wf_cc3', 'Committee 3', :hq, ARRAY['credit_committee']) AS cc3 \gset
SELECT crm.add_principal('regress_wf_user', 'Another RM', :hq, ARRAY['rm']) AS other \gset
SELECT crm.create_object('loan_application', 'Loan application', 'private', '{}');
SELECT crm.add_field('loan_application', 'amount', 'money', '{"required": true}');
SELECT crm.add_field('loan_application', 'purpose', 'text', '{}');
SELECT crm.add_field('loan_application', 'status', 'picklist',
  '{"values": ["draft", "submitted", "branch_review", "head_office_review", "parallel_review", "credit_committee", "approved"]}');
SELECT crm.grant_object(r, 'loan_application', ARRAY['read'], 'all')
  FROM unnest(ARRAY['hq_reviewer', 'risk_officer', 'credit_committee', 'branch_manager', 'compliance']) r;

-- the definition
\set loan '{"status_field": "status", "start": "draft", "reject_to": "draft", "description": "loan approval", "states": {"draft": {}, "submitted": {"kind": "branch", "branches": [{"when": "amount > 5000000", "to": "head_office_review"}, {"default": true, "to": "branch_review"}]}, "branch_review": {"kind": "approval", "approvers": {"role": "branch_manager"}, "approve_to": "parallel_review", "sla_hours": 48}, "head_office_review": {"kind": "approval", "approvers": {"role": "hq_reviewer"}, "approve_to": "parallel_review", "sla_hours": 48}, "parallel_review": {"kind": "parallel", "branches": {"risk": {"approvers": {"role": "risk_officer"}}, "compliance": {"approvers": {"role": "compliance"}}}, "join_to": "credit_committee", "sla_hours": 48}, "credit_committee": {"kind": "approval", "approvers": {"principals": ["regress_wf_cc1", "regress_wf_cc2", "regress_wf_cc3"]}, "mode": {"quorum": 2, "of": 3}, "approve_to": "approved"}, "approved": {"kind": "end"}}, "transitions": [{"action": "submit", "from": "draft", "to": "submitted", "allowed": ["owner"], "guard": "amount > 0"}, {"action": "withdraw", "from": ["branch_review", "head_office_review"], "to": "draft", "allowed": ["owner"]}]}'
SET ROLE regress_wf_admin;
SELECT crm.define_workflow('loan_approval', 'loan_application', :'loan') AS version;
RESET ROLE;
SELECT crm.workflow_diagram('loan_approval', 'mermaid');

-- an RM drafts an application of 1,000,000 and starts the workflow
SET ROLE regress_wf_rm;
INSERT INTO crm_data.loan_application (amount, purpose, status) VALUES (1000000, '经营周转', 'approved');
INSERT INTO crm_data.loan_application (amount, purpose) VALUES (1000000, '经营周转') RETURNING status;
SELECT id AS loan1 FROM crm_data.loan_application WHERE purpose = '经营周转' \gset
SELECT crm.start_workflow('loan_approval', :loan1) > 0 AS started;
SELECT status FROM crm_data.loan_application WHERE id = :loan1;
SELECT crm.start_workflow('loan_approval', :loan1);
-- the status belongs to the workflow: not by UPDATE, not by DELETE, not even for superusers or replicas
UPDATE crm_data.loan_application SET status = 'approved' WHERE id = :loan1;
DELETE FROM crm_data.loan_application WHERE id = :loan1;
UPDATE crm_data.loan_application SET purpose = '经营周转 (更新)' WHERE id = :loan1 RETURNING status;
RESET ROLE;
UPDATE crm_data.loan_application SET status = 'approved' WHERE id = :loan1;
SET session_replication_role = replica;
UPDATE crm_data.loan_application SET status = 'approved' WHERE id = :loan1;
DELETE FROM crm_data.loan_application WHERE id = :loan1;
RESET session_replication_role;
ALTER TABLE crm_data.loan_application DISABLE TRIGGER crm_wf_loan_approval;
DROP TRIGGER crm_wf_loan_approval ON crm_data.loan_application;
PREPARE sneaky(text) AS UPDATE crm_data.loan_application SET status = $1 WHERE id = :loan1;
EXECUTE sneaky('approved');
SELECT crm._workflow_set_status('loan_application', :loan1, 'status', 'approved');
SET ROLE regress_wf_rm;
SELECT crm._workflow_set_status('loan_application', :loan1, 'status', 'approved');
-- unknown actions and actions not allowed here
SELECT crm.transition('loan_application', :loan1, 'approve_myself', NULL);
SELECT crm.transition('loan_application', :loan1, 'withdraw', NULL);
RESET ROLE;
SET ROLE regress_wf_bm;
SELECT crm.transition('loan_application', :loan1, 'submit', NULL);
-- the owner submits: 1,000,000 goes to branch review
SET ROLE regress_wf_rm;
SELECT crm.transition('loan_application', :loan1, 'submit', '请审批');
SELECT state, waiting_for = ARRAY[:bm]::bigint[] AS waits_for_branch_manager, due_at IS NOT NULL AS has_sla FROM crm.workflow_status('loan_application', :loan1);
SELECT count(*) AS rm_tasks FROM crm.my_approvals();
RESET ROLE;
SELECT min(id) AS t_pending FROM crm.approval_task WHERE status = 'pending' \gset
SET ROLE regress_wf_rm;
SELECT crm.approve(:t_pending, 'me');
SET ROLE regress_wf_bm;
SELECT workflow, object, state, requested_by = :rm AS from_rm, overdue FROM crm.my_approvals();
SELECT task_id AS t_bm FROM crm.my_approvals() \gset
SELECT crm.approve(:t_bm, '同意');
SELECT crm.approve(:t_bm, 'again');
-- parallel: risk and compliance; compliance rejects, and the application goes back to draft with the comment
SET ROLE regress_wf_risk;
SELECT task_id AS t_risk, state, branch FROM crm.my_approvals() \gset
SELECT :'state', :'branch';
SELECT crm.approve(:t_risk, NULL);
SET ROLE regress_wf_comp;
SELECT task_id AS t_comp FROM crm.my_approvals() \gset
SELECT crm.reject(:t_comp, '');
SELECT crm.reject(:t_comp, '缺少收入证明');
SET ROLE regress_wf_rm;
SELECT state, last_comment, waiting_for FROM crm.workflow_status('loan_application', :loan1);
SELECT status FROM crm_data.loan_application WHERE id = :loan1;
-- resubmitted; the branch manager sits on it for 48 hours: it goes to the branch manager's manager
SELECT crm.transition('loan_application', :loan1, 'submit', '已补充收入证明');
RESET ROLE;
SELECT crm.escalate_overdue(now() + interval '47 hours') AS escalated_early;
SELECT crm.escalate_overdue(now() + interval '49 hours') AS escalated;
SELECT state, waiting_for = ARRAY[:hom]::bigint[] AS waits_for_managers_manager FROM crm.workflow_status('loan_application', :loan1);
SELECT o.channel, o.recipient_kind, o.principal_id = :hom AS to_manager, o.subject FROM crm.outbox o WHERE o.rule = 'workflow:loan_approval';
SELECT max(id) AS t_bm_old FROM crm.approval_task WHERE approver_id = :bm \gset
SET ROLE regress_wf_bm;
SELECT count(*) AS bm_tasks_now FROM crm.my_approvals();
SELECT crm.approve(:t_bm_old, 'late');
SET ROLE regress_wf_hom;
SELECT crm.approve((SELECT task_id FROM crm.my_approvals()), '代为审批');
SET ROLE regress_wf_risk;
SELECT crm.approve((SELECT task_id FROM crm.my_approvals()), NULL);
SET ROLE regress_wf_comp;
SELECT crm.approve((SELECT task_id FROM crm.my_approvals()), '资料齐全');
-- the credit committee: 2 of 3; one vote per member; a delegation that would count someone twice is refused
SET ROLE regress_wf_cc1;
SELECT task_id AS t_cc1 FROM crm.my_approvals() \gset
SELECT crm.delegate(:t_cc1, :cc2, 'on leave');
SELECT crm.approve(:t_cc1, '同意');
SELECT crm.approve(:t_cc1, '同意');
SELECT state, cardinality(waiting_for) AS still_waiting_for FROM crm.workflow_status('loan_application', :loan1);
SET ROLE regress_wf_cc2;
SELECT crm.approve((SELECT task_id FROM crm.my_approvals()), '同意');
SET ROLE regress_wf_cc3;
SELECT count(*) AS cc3_tasks_left FROM crm.my_approvals();
SET ROLE regress_wf_rm;
SELECT state, ended_at IS NOT NULL AS ended, outcome, waiting_for FROM crm.workflow_status('loan_application', :loan1);
SELECT status FROM crm_data.loan_application WHERE id = :loan1;
UPDATE crm_data.loan_application SET status = 'draft' WHERE id = :loan1;
SELECT action, from_state, to_state, branch, comment, in_state IS NOT NULL AS timed FROM crm.workflow_history('loan_application', :loan1);
RESET ROLE;
-- audited: TRANSITION, APPROVE, REJECT
SELECT action, count(*) FROM crm.audit_log WHERE object = 'loan_application' AND record_id = :loan1
   AND action IN ('TRANSITION', 'APPROVE', 'REJECT') GROUP BY action ORDER BY action;

-- a large application goes to head-office review
SET ROLE regress_wf_rm;
INSERT INTO crm_data.loan_application (amount, purpose) VALUES (8000000, '购置厂房');
SELECT id AS loan2 FROM crm_data.loan_application WHERE purpose = '购置厂房' \gset
SELECT crm.start_workflow('loan_approval', :loan2) > 0 AS started;
SELECT crm.transition('loan_application', :loan2, 'submit', NULL);
SELECT crm.workflow_diagram('loan_approval', 'mermaid', :loan2) LIKE '%class head_office_review current%' AS highlighted;
RESET ROLE;

-- four eyes: a branch manager's own application is never its own task: it goes to the next
-- branch manager up, who cannot hand it back to the requester
SET ROLE regress_wf_bm;
INSERT INTO crm_data.loan_application (amount, purpose) VALUES (100, '自己的申请');
SELECT id AS loan3 FROM crm_data.loan_application WHERE purpose = '自己的申请' \gset
SELECT crm.start_workflow('loan_approval', :loan3) > 0 AS started;
SELECT crm.transition('loan_application', :loan3, 'submit', NULL);
SELECT state, waiting_for = ARRAY[:hom]::bigint[] AS waits_for_head_of_branches FROM crm.workflow_status('loan_application', :loan3);
SELECT count(*) AS own_tasks FROM crm.my_approvals();
SET ROLE regress_wf_hom;
SELECT crm.delegate((SELECT task_id FROM crm.my_approvals() WHERE record_id = :loan3), :bm, 'you do it');
RESET ROLE;
-- a principal who cannot see the record cannot start or move it
SET ROLE regress_wf_user;
SELECT crm.start_workflow('loan_approval', :loan2);
SELECT crm.transition('loan_application', :loan2, 'withdraw', NULL);
SELECT count(*) FROM crm.approval_task;
SELECT crm.define_workflow('x', 'loan_application', :'loan');
SELECT crm.escalate_overdue();
RESET ROLE;

-- a new version: the running instance finishes on version 1, a new one starts on version 2
SET ROLE regress_wf_admin;
SELECT crm.define_workflow('loan_approval', 'loan_application',
  jsonb_set(:'loan'::jsonb, '{states,credit_committee,mode}', '{"quorum": 3, "of": 3}')) AS version;
RESET ROLE;
SELECT version, state FROM crm.workflow_status('loan_application', :loan2);
SET ROLE regress_wf_hq;
SELECT crm.approve((SELECT task_id FROM crm.my_approvals()), NULL);
SET ROLE regress_wf_rm;
INSERT INTO crm_data.loan_application (amount, purpose) VALUES (2000000, '第三笔');
SELECT crm.start_workflow('loan_approval', (SELECT id FROM crm_data.loan_application WHERE purpose = '第三笔')) > 0 AS started;
SELECT version, state FROM crm.workflow_status('loan_application', (SELECT id FROM crm_data.loan_application WHERE purpose = '第三笔'));
RESET ROLE;
SELECT name, version, current FROM crm.workflow WHERE name = 'loan_approval' ORDER BY version;
-- a rule starts the workflow on every new application (as the rule's owner)
SET ROLE regress_wf_admin;
SELECT crm.create_rule('loan_autostart', 'loan_application', 'insert', 'amount > 0',
  '[{"type": "start_workflow", "workflow": "loan_approval"}]');
SET ROLE regress_wf_rm;
INSERT INTO crm_data.loan_application (amount, purpose) VALUES (300000, '自动启动');
SELECT version, state, requested_by = :adm AS started_by_rule_owner
  FROM crm.workflow_status('loan_application', (SELECT id FROM crm_data.loan_application WHERE purpose = '自动启动'));
RESET ROLE;
SELECT crm.drop_rule('loan_autostart');
SELECT workflow, step, branch, decided, pending, sla_breaches FROM crm.approval_cycle_times WHERE workflow = 'loan_approval'
 ORDER BY step, branch NULLS FIRST, org_unit_id;
SELECT crm.drop_workflow('loan_approval');
SET ROLE regress_wf_admin;
SELECT crm.cancel_workflow('loan_application', record_id, 'test over') FROM crm.workflow_instance WHERE ended_at IS NULL ORDER BY record_id;
RESET ROLE;
SELECT crm.drop_workflow('loan_approval');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname = 'crm_wf_loan_approval';
DELETE FROM crm_data.loan_application;

-- malformed definitions: each refused with a clear error, nothing made
\set d1 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "heaven"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d1');
\set d2 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "submitted": {}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "approved"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d2');
\set d3 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "submitted": {}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "approved"}, {"action": "park", "from": "draft", "to": "submitted"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d3');
\set d4 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "submitted": {"kind": "branch", "branches": [{"when": "amount > 1", "to": "approved"}]}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "submitted"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d4');
\set d5 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "credit_committee": {"kind": "approval", "approvers": {"principals": ["regress_wf_cc1", "regress_wf_cc2"]}, "mode": {"quorum": 3, "of": 2}, "approve_to": "approved", "reject_to": "draft"}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "credit_committee"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d5');
\set d6 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "approved", "guard": "amount * 2"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d6');
\set d7 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "approved", "guard": "interest_rate > 0.05"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d7');
\set d8 '{"status_field": "state_of_play", "start": "draft", "states": {"draft": {}, "approved": {"kind": "end"}}}'
SELECT crm.define_workflow('bad', 'loan_application', :'d8');
\set d9 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "rejected": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "rejected"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d9');
\set d10 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "approved", "allowed": ["pope"]}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d10');
\set d11 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "approved": {"kind": "end"}}, "transitions": [{"action": "go", "from": "draft", "to": "approved", "guard": "(SELECT true)"}]}'
SELECT crm.define_workflow('bad', 'loan_application', :'d11');
\set d12 '{"status_field": "status", "start": "draft", "states": {"draft": {}, "approved": {"kind": "end"}}}'
SELECT crm.define_workflow('bad', 'loan_application', :'d12');
SELECT crm.define_workflow('bad', 'loan_application', '[]');
SELECT crm.define_workflow('bad', 'nothing', :'d1');
SELECT crm.define_workflow('Bad Name', 'loan_application', :'d1');
SELECT count(*) AS bad_workflows FROM crm.workflow WHERE name = 'bad';
SELECT count(*) AS stray_triggers FROM pg_trigger WHERE tgname = 'crm_wf_bad';
-- NULLs are refused, not crashed on
SET ROLE regress_wf_rm;
SELECT crm.transition(NULL, 1, 'submit');
SELECT crm.start_workflow('loan_approval', NULL);
RESET ROLE;
