#!/usr/bin/env bash
# Workflow cost, as ratios measured side by side in one run, on copies of one database:
#  - crm.transition() of a simple workflow vs a plain UPDATE ... SET status of the same rows
#    (pgbench, prepared, 4 clients; each transaction moves one record there and back);
#  - starting N instances in one statement (SELECT crm.start_workflow(...) FROM ...): rows/s.
set -euo pipefail
N=${CRM_BENCH_WORKFLOW_RECORDS:-100000}
T=${CRM_BENCH_SECONDS:-8}
R=${CRM_BENCH_ROUNDS:-3}
src=crm_bench_wf_plain
wf=crm_bench_wf
q() { psql -X -qAt -d "$1" -c "$2"; }
med() { python3 -c "import statistics as s, sys; print(f'{s.median([float(x) for x in sys.argv[1:]]):.1f}')" "$@"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
for d in $src $wf; do psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $d" 2>/dev/null; done
psql -X -q -d postgres -c "CREATE DATABASE $src"
psql -X -q -v ON_ERROR_STOP=1 -d $src >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_wf_owner') THEN CREATE ROLE bench_wf_owner LOGIN IN ROLE crm_user; END IF; END \$\$;
SELECT crm.add_org_unit('Bench') AS u \gset
SELECT crm.add_principal('bench_wf_owner', 'Owner', :u, ARRAY['rm']) AS p \gset
SELECT crm.create_object('ticket', 'Ticket', 'private', '{}');
SELECT crm.add_field('ticket', 'title', 'text', '{}');
SELECT crm.add_field('ticket', 'status', 'text', '{}');
INSERT INTO crm_data.ticket (owner_id, title) SELECT :p, 'ticket ' || i FROM generate_series(1, $N) i;
VACUUM ANALYZE crm_data.ticket;
SQL
for i in $(seq 1 50); do psql -X -q -d postgres -c "CREATE DATABASE $wf TEMPLATE $src" 2>/dev/null && break; sleep 0.2; done
q $wf "SELECT crm.define_workflow('simple', 'ticket', '{\"status_field\": \"status\", \"start\": \"open\", \"states\": {\"open\": {}, \"pending\": {}, \"closed\": {\"kind\": \"end\"}}, \"transitions\": [{\"action\": \"go\", \"from\": \"open\", \"to\": \"pending\"}, {\"action\": \"back\", \"from\": \"pending\", \"to\": \"open\"}, {\"action\": \"close\", \"from\": \"pending\", \"to\": \"closed\"}]}')" >/dev/null
# the plain copy starts from the same status
q $src "UPDATE crm_data.ticket SET status = 'open'" >/dev/null

# starting N instances in one statement, as the records' owner
st=$( { echo '\timing on'; echo "SELECT count(crm.start_workflow('simple', id)) FROM crm_data.ticket;"; } | psql -X -qAt -U bench_wf_owner -d $wf 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
started=$(q $wf "SELECT count(*) FROM crm.workflow_instance WHERE ended_at IS NULL")
q $wf "VACUUM ANALYZE crm_data.ticket" >/dev/null; q $src "VACUUM ANALYZE crm_data.ticket" >/dev/null

tmp=$(mktemp -d); chmod 755 "$tmp"
printf '\\set id random(1, %s)\nBEGIN;\nSELECT crm.transition('"'"'ticket'"'"', :id, '"'"'go'"'"');\nSELECT crm.transition('"'"'ticket'"'"', :id, '"'"'back'"'"');\nCOMMIT;\n' "$N" > "$tmp/wf.sql"
printf '\\set id random(1, %s)\nBEGIN;\nUPDATE crm_data.ticket SET status = '"'"'pending'"'"' WHERE id = :id;\nUPDATE crm_data.ticket SET status = '"'"'open'"'"' WHERE id = :id;\nCOMMIT;\n' "$N" > "$tmp/plain.sql"
chmod 644 "$tmp"/*.sql
tps() { pgbench -n -M prepared -c 4 -j 4 -T "$T" -U bench_wf_owner -f "$2" "$1" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
a=(); b=()
for i in $(seq 1 "$R"); do a+=("$(tps $wf "$tmp/wf.sql")"); b+=("$(tps $src "$tmp/plain.sql")"); done
ma=$(med "${a[@]}"); mb=$(med "${b[@]}")
errors=$(q $wf "SELECT count(*) FROM crm.workflow_instance WHERE state NOT IN ('open', 'pending')")
rm -rf "$tmp"
for d in $src $wf; do psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $d" 2>/dev/null; done

cat <<MD
## Workflows (\`bench/workflows.sh\`, $N records, ${T}s pgbench runs, $R interleaved rounds, medians)

Each pgbench transaction (4 clients, prepared, as the records' owner) moves one random record there
and back: two \`crm.transition()\` calls of a workflow open ⇄ pending, against two plain
\`UPDATE crm_data.ticket SET status = …\` on a copy without the workflow. Both copies are audited.
A transition checks visibility, locks the instance, finds and authorises the action, writes history
and a TRANSITION audit event, and sets the status through the guard trigger.

| | transactions/s | ratio | aim |
|---|---|---|---|
| plain UPDATE of status | $mb | 1.00 | |
| crm.transition | $ma | **$(ratio $ma $mb)** | ≥ 0.3 |

Starting $N instances in one statement (\`SELECT count(crm.start_workflow('simple', id)) FROM crm_data.ticket\`):
$st ms, **$(python3 -c "print(f'{$started/($st/1000):,.0f}')") instances/s** ($started started).

Command: \`make bench\` (or \`bash bench/workflows.sh\` against a running cluster).
MD
