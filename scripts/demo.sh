#!/usr/bin/env bash
# make demo: install what is missing, build, start (or reuse) a cluster with crm preloaded, load a
# demo bank into database crm_demo, show a short tour, and leave the server running.
set -euo pipefail
source "$(dirname "$0")/cluster.sh"
cd "$TOP"

# CRM_DIR: the demo cluster's directory (default /tmp/crm_demo.<this checkout's id>, so checkouts
# do not share one); CRM_PORT: its port (default: the port it had, else the first free one from
# 5499). make demo uses only a directory that is new, empty or made by this checkout, and a port
# nothing listens on: it never stops, restarts or drops a cluster it did not start.
DEMO_DIR=${CRM_DIR:-${CRM_DEMO_DIR:-/tmp/crm_demo.$(crm_checkout_id)}}
CUSTOMERS=${CRM_DEMO_CUSTOMERS:-5000}
crm_claim_dir "$DEMO_DIR" || exit 1
running_port=
if [ -f "$DEMO_DIR/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/data" status >/dev/null 2>&1; then
  running_port=$(sed -n '4p' "$DEMO_DIR/data/postmaster.pid")
fi
port=${CRM_PORT:-}
if [ -n "$port" ] && [ "$port" != "$running_port" ]; then crm_claim_port "$port" || exit 1; fi
port=${port:-$running_port}

log "make demo installs what is missing from Debian's repositories (apt-get, as root) and crm into PostgreSQL $PGVER${CRM_PG_ROOT:+ (the copy in $CRM_PG_ROOT)}; its cluster: $DEMO_DIR"
crm_ensure_packages
crm_build_install
# a rebuilt library is only picked up by a restarted server (this checkout's own, see above)
[ -z "$running_port" ] || crm_stop_cluster "$DEMO_DIR"
crm_start_cluster "$DEMO_DIR" "${port:-$(crm_free_port 5499)}"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS crm_demo WITH (FORCE)" -c "CREATE DATABASE crm_demo"
tour() { printf '\n-- %s\n' "$1"; shift; psql -X -d crm_demo -P pager=off "$@"; }
tour "install (pgcrypto comes with it)" -q -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" -c "SELECT crm.preloaded()"
tour "a deterministic demo bank with $CUSTOMERS customers" -c "SELECT * FROM crm.generate_demo_data($CUSTOMERS, 42)"
tour "managed objects: real tables in crm_data" -c "SELECT name, label, sharing, field_count, table_name FROM crm.objects ORDER BY core DESC, name"
tour "the org tree and who reports to whom" -c "SELECT u.kind, count(DISTINCT u.id) AS units, count(p.id) AS principals FROM crm.org_unit u LEFT JOIN crm.principal p ON p.org_unit_id = u.id GROUP BY 1 ORDER BY 2"
tour "customers (as the DBA, who bypasses row security)" -c "SELECT id, name, id_number, mobile, risk_tolerance, segment, aum, owner_id FROM crm_data.customer ORDER BY id LIMIT 5"
tour "a custom object with validated fields" -c "SELECT crm.create_object('loan_application', '贷款申请 Loan application')" \
  -c "SELECT crm.add_field('loan_application', 'customer_id', 'reference', '{\"object\": \"customer\"}')" \
  -c "SELECT crm.add_field('loan_application', 'amount', 'money', '{\"required\": true}')" \
  -c "SELECT crm.add_field('loan_application', 'repayment_card', 'bank_card', '{\"sensitivity\": \"sensitive\"}')" \
  -c "SELECT name, type, sensitivity, mask FROM crm.fields WHERE object = 'loan_application' ORDER BY position"
tour "bad values are refused, naming the field and the reason" \
  -c "INSERT INTO crm_data.loan_application (owner_id, customer_id, amount, repayment_card) VALUES (1, 1, 500000, '6222021234567890121')" \
  -c "INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (1, '王五', 'id_card', '110105194912310021')" || true
psql -X -q -d crm_demo -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'demo_app') THEN CREATE ROLE demo_app LOGIN IN ROLE crm_app; END IF; END \$\$"
tour "a pooled app acts as an RM for one transaction" -U demo_app -c "BEGIN" -c "SELECT crm.act_as('demo_rm_00001')" \
  -c "SELECT p.login, p.display_name, p.roles FROM crm.principals p WHERE p.id = crm.current_principal()" \
  -c "SELECT count(*) AS customers_visible FROM crm_data.customer" -c "COMMIT" \
  -c "SELECT crm.current_principal() AS after_commit"
tour "row-level security: each principal sees its book, whatever the client" \
  -c "SELECT login, (SELECT count(*) FROM crm_data.customer) FROM (SELECT 'postgres (bypasses)' AS login) x" \
  -c "SET ROLE demo_rm_00001" -c "SELECT current_user AS login, count(*) AS customers, sum(aum) AS aum FROM crm_data.customer" \
  -c "SET ROLE demo_tl_0001" -c "SELECT current_user AS login, count(*) AS customers, sum(aum) AS aum FROM crm_data.customer" \
  -c "SET ROLE demo_bm_001" -c "SELECT current_user AS login, count(*) AS customers, sum(aum) AS aum FROM crm_data.customer" \
  -c "SET ROLE demo_compliance" -c "SELECT current_user AS login, count(*) AS customers, sum(aum) AS aum FROM crm_data.customer"
tour "field-level access: the team lead sees its reports' customers' ID numbers masked; the owner sees them" \
  -c "SET ROLE demo_tl_0001" -c "SELECT current_user AS login, c.id, c.name, c.id_number, c.mobile FROM crm_data.customer c ORDER BY c.id LIMIT 3" \
  -c "RESET ROLE" -c "SET ROLE demo_rm_00001" -c "SELECT current_user AS login, c.id, c.name, c.id_number FROM crm_data.customer c ORDER BY c.id LIMIT 2" \
  -c "RESET ROLE"
tour "why can a team lead see this customer?" \
  -c "SELECT privilege, allowed, because FROM crm.explain_access((SELECT id FROM crm.principal WHERE login = 'demo_tl_0001'), 'customer', (SELECT min(c.id) FROM crm_data.customer c JOIN crm.principal p ON p.id = c.owner_id WHERE p.manager_id = (SELECT id FROM crm.principal WHERE login = 'demo_tl_0001'))) WHERE privilege = 'read'"
tour "encryption at rest: the RM writes and reads plaintext; the table holds AES-256 ciphertext" \
  -c "SELECT crm.add_field('customer', 'passport_no', 'text', '{\"encrypted\": true, \"searchable\": true, \"sensitivity\": \"sensitive\"}')" \
  -c "SET ROLE demo_rm_00001" \
  -c "UPDATE crm_data.customer SET passport_no = 'E' || lpad(id::text, 8, '0') WHERE id = (SELECT min(id) FROM crm_data.customer) RETURNING id, name, passport_no" \
  -c "SELECT id, record->>'name' AS name FROM crm.find('customer', 'passport_no', (SELECT 'E' || lpad(min(id)::text, 8, '0') FROM crm_data.customer))" \
  -c "RESET ROLE" -c "SELECT id, left(passport_no, 40) || '…' AS stored_as_superuser_sees_it FROM crm_data.customer WHERE passport_no IS NOT NULL"
tour "the audit trail: every change field by field (protected values as keyed hashes), who read what, and a verified chain" \
  -c "SELECT crm.audit_seal() AS sealed_now" \
  -c "SELECT t.action, t.session_user_name, t.field, left(t.old_value, 24) AS old, left(t.new_value, 24) AS new FROM crm.audit_trail('customer', (SELECT min(c.id) FROM crm_data.customer c WHERE c.passport_no IS NOT NULL)) t ORDER BY t.id DESC, t.field LIMIT 6" \
  -c "SELECT ok, blocks, entries, unsealed, problem FROM crm.audit_verify()"
tour "suitability: a product above the customer's risk tolerance is refused, naming both levels" -U demo_rm_00001 \
  -c "INSERT INTO crm_data.holding (customer_id, product_id, amount) SELECT c.id, p.id, 1000 FROM crm_data.customer c, crm_data.product p WHERE c.owner_id = crm.current_principal() AND c.risk_tolerance = 'C1' AND c.kyc_status = 'verified' AND p.risk_level = 'R5' ORDER BY c.id, p.id LIMIT 1" || true
# a dozen suitability overrides through their workflow (RM asks, compliance approves); the demo
# spreads the requests over the past days so that the approval chart has something to show
psql -X -q -d crm_demo >/dev/null <<'SQL'
SET ROLE demo_rm_00001;
INSERT INTO crm_data.suitability_override (customer_id, product_id, reason, valid_until)
  SELECT c.id, (SELECT p.id FROM crm_data.product p WHERE p.risk_level = 'R5' ORDER BY p.id LIMIT 1), '专业投资者认定', crm.today() + 365
    FROM crm_data.customer c WHERE c.owner_id = crm.current_principal() AND c.risk_tolerance = 'C4' ORDER BY c.id LIMIT 12;
SELECT crm.start_workflow('suitability_override', o.id), crm.transition('suitability_override', o.id, 'submit', '请审批')
  FROM crm_data.suitability_override o ORDER BY o.id;
RESET ROLE;
UPDATE crm.approval_task a SET created_at = now() - make_interval(hours => (2 + (a.id * 7) % 60)::int), due_at = now() - make_interval(hours => (2 + (a.id * 7) % 60)::int) + interval '48 hours';
SET ROLE demo_compliance;
SELECT crm.approve(task_id, '同意') FROM crm.my_approvals() ORDER BY task_id LIMIT 10;
SELECT crm.reject(task_id, '材料不全') FROM crm.my_approvals() ORDER BY task_id LIMIT 2;
SQL
tour "workflows: compliance approved 10 suitability overrides and rejected 2; an instance's history" \
  -c "SELECT action, from_state, to_state, comment, round(extract(epoch FROM in_state) / 3600, 1) AS hours_in_state FROM crm.workflow_history('suitability_override', (SELECT min(record_id) FROM crm.workflow_instance))" \
  -c "SELECT workflow, step, decided, round(median_hours::numeric, 1) AS median_hours, round(p90_hours::numeric, 1) AS p90_hours, sla_breaches FROM crm.approval_cycle_times"
tour "rules: a birthday follow-up for each RM, 7 days ahead (a scheduled rule, idempotent)" \
  -c "SELECT crm.create_rule('birthday_followup', 'customer', 'schedule', 'crm.anniversary_key(birthday) = ANY (crm.anniversary_keys(7))', '[{\"type\": \"create_task\", \"assignee\": \"owner\", \"title\": \"客户生日提醒: {{name}}\", \"due_in_days\": 7}]', '{\"run_as\": \"demo_admin\", \"occurrence\": \"crm.next_anniversary(birthday)\"}')" \
  -c "SELECT crm.run_rule('birthday_followup') AS tasks_made, crm.run_rule('birthday_followup') AS made_again"
tour "analytics as the RM: one customer's 360, its recommendations and churn factors" -U demo_rm_00001 \
  -c "SELECT jsonb_pretty(crm.customer_360(c.id) - 'last_interactions' - 'consents') FROM crm_data.customer c WHERE c.owner_id = crm.current_principal() ORDER BY c.id LIMIT 1" \
  -c "SELECT code, risk_level, score, reason FROM crm.recommend_products((SELECT min(id) FROM crm_data.customer WHERE owner_id = crm.current_principal()), 3)" \
  -c "SELECT name, churn_score, top_factor FROM crm_report.churn_watch ORDER BY churn_score DESC, customer_id LIMIT 5"
tour "the branch manager's funnel (crm_report views: row security and masking apply)" -U demo_bm_001 \
  -c "SELECT stage, sum(opportunities) AS at_stage, sum(reached) AS reached FROM crm_report.sales_funnel GROUP BY stage, stage_order ORDER BY stage_order"
if command -v python3 >/dev/null; then
  python3 scripts/render_dashboard.py -d crm_demo >/dev/null && printf '\n-- dashboard charts (SVG): examples/*.svg, made from this database by scripts/render_dashboard.py\n'
fi
tour "an RM's own login cannot act as anyone" -U demo_rm_00002 -c "SELECT crm.act_as('demo_rm_00001')" || true

cat <<MSG

The server is left running. Connect with:
  psql -h $DEMO_DIR -p $PGPORT -U postgres crm_demo
or as a relationship manager:
  psql -h $DEMO_DIR -p $PGPORT -U demo_rm_00001 crm_demo
Stop it with:
  runuser -u postgres -- $PGBIN/pg_ctl -D $DEMO_DIR/data stop
MSG
