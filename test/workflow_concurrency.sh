#!/usr/bin/env bash
# TAP: two approvers acting on the same step at the same moment produce exactly one transition.
# A 2-of-3 committee step with one approval in: two more members approve at once, each in its own
# session; the first to lock the instance moves it on, the second finds its task already closed.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_wf_concurrency
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ DECLARE r text; BEGIN
  FOREACH r IN ARRAY ARRAY['wc_rm', 'wc_a', 'wc_b', 'wc_c'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN EXECUTE format('CREATE ROLE %I LOGIN IN ROLE crm_user', r); END IF;
  END LOOP;
END $$;
SELECT crm.add_org_unit('WC HQ') AS hq \gset
SELECT crm.add_role('committee', 'Committee');
SELECT crm.add_principal('wc_rm', 'RM', :hq, ARRAY['rm']);
SELECT crm.add_principal(l, l, :hq, ARRAY['committee']) FROM unnest(ARRAY['wc_a', 'wc_b', 'wc_c']) l;
SELECT crm.create_object('deal', 'Deal', 'private', '{}');
SELECT crm.add_field('deal', 'status', 'text', '{}');
SELECT crm.grant_object('committee', 'deal', ARRAY['read'], 'all');
SELECT crm.define_workflow('deal_ok', 'deal', '{"status_field": "status", "start": "draft", "states": {"draft": {},
  "committee": {"kind": "approval", "approvers": {"role": "committee"}, "mode": {"quorum": 2, "of": 3}, "approve_to": "done", "reject_to": "draft"},
  "done": {"kind": "end"}}, "transitions": [{"action": "submit", "from": "draft", "to": "committee"}]}');
SQL
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
su() { psql -X -qAt -d $db "$@" 2>&1; }
ok_runs=0
for round in 1 2 3 4 5; do
  id=$(as wc_rm -c "INSERT INTO crm_data.deal DEFAULT VALUES RETURNING id")
  as wc_rm -c "SELECT crm.start_workflow('deal_ok', $id)" >/dev/null
  as wc_rm -c "SELECT crm.transition('deal', $id, 'submit')" >/dev/null
  as wc_a -c "SELECT crm.approve((SELECT task_id FROM crm.my_approvals() WHERE record_id = $id))" >/dev/null
  # both at once: each holds its transaction open a moment after approving
  ( as wc_b -c "BEGIN" -c "SELECT crm.approve((SELECT task_id FROM crm.my_approvals() WHERE record_id = $id))" -c "SELECT pg_sleep(0.5)" -c "COMMIT" > /tmp/wc_b.$$ ) &
  ( as wc_c -c "BEGIN" -c "SELECT crm.approve((SELECT task_id FROM crm.my_approvals() WHERE record_id = $id))" -c "SELECT pg_sleep(0.5)" -c "COMMIT" > /tmp/wc_c.$$ ) &
  wait
  moved=$(su -c "SELECT count(*) FROM crm.workflow_history h JOIN crm.workflow_instance i ON i.id = h.instance_id
                  WHERE i.record_id = $id AND h.to_state = 'done' AND h.action = 'approved'")
  approvals=$(su -c "SELECT count(*) FROM crm.approval_task a JOIN crm.workflow_instance i ON i.id = a.instance_id WHERE i.record_id = $id AND a.status = 'approved'")
  state=$(su -c "SELECT status FROM crm_data.deal WHERE id = $id")
  refused=$(cat /tmp/wc_b.$$ /tmp/wc_c.$$ | grep -c 'is already cancelled')
  [ "$moved|$approvals|$state|$refused" = "1|2|done|1" ] && ok_runs=$((ok_runs + 1)) || echo "# round $round: moved=$moved approvals=$approvals state=$state refused=$refused: $(cat /tmp/wc_b.$$ /tmp/wc_c.$$ | tr '\n' ' ')"
done
rm -f /tmp/wc_b.$$ /tmp/wc_c.$$
ok "$ok_runs" "5" "5 rounds of two simultaneous approvals on a 2-of-3 step: one transition, two approvals, the other refused"
ok "$(su -c "SELECT count(*) FROM crm.audit_log WHERE object = 'deal' AND action = 'TRANSITION' AND detail->>'to' = 'done'")" "5" "and one TRANSITION to done audited per deal"
finish
