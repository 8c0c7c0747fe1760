#!/usr/bin/env bash
# Field masking cost, as ratios measured side by side in one run on the same rows:
#  - SELECT * of every customer by an actor who sees id_number masked vs one who may read it;
#  - a query without protected columns by the masked actor vs the reader (the hook has nothing to do);
#  - planning time of a 5-table join for the masked actor vs the reader.
set -euo pipefail
N=${CRM_BENCH_MASK_CUSTOMERS:-100000}
T=${CRM_BENCH_SECONDS:-8}
R=${CRM_BENCH_ROUNDS:-3}
db=crm_bench_mask
q() { psql -X -qAt -d $db "$@"; }
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
q -c "SELECT * FROM crm.generate_demo_data($N, 7)" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_masked') THEN CREATE ROLE bench_masked LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_reader') THEN CREATE ROLE bench_reader LOGIN; END IF;
END $$;
SELECT crm.add_role('bench_viewer'), crm.add_role('bench_officer');
SELECT crm.grant_object('bench_viewer', '*', ARRAY['read'], 'all'), crm.grant_object('bench_officer', '*', ARRAY['read'], 'all');
SELECT crm.set_field_access('customer', 'id_number', 'bench_officer', 'read');
SELECT crm.add_principal('bench_masked', 'Viewer', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), ARRAY['bench_viewer']);
SELECT crm.add_principal('bench_reader', 'Officer', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), ARRAY['bench_officer']);
ANALYZE;
SQL
check=$(psql -X -qAt -U bench_masked -d $db -c "SELECT id_number FROM crm_data.customer WHERE id_type = 'id_card' LIMIT 1")
dir=$(mktemp -d)
echo "SELECT * FROM crm_data.customer;" > "$dir/star.sql"
echo "SELECT id, owner_id, segment, aum FROM crm_data.customer;" > "$dir/plain.sql"
tps() { pgbench -n -M prepared -U "$1" -c 1 -T "$T" -f "$2" $db 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
pair() {  # userA fileA userB fileB: medians of tpsA, tpsB and per-round tpsA/tpsB
  local as=() bs=() rs=() a b
  for i in $(seq 1 "$R"); do
    a=$(tps "$1" "$2"); b=$(tps "$3" "$4"); as+=("$a"); bs+=("$b"); rs+=("$(python3 -c "print($a/$b)")")
  done
  python3 -c "import statistics as s; print(f'{s.median([${as[*]/%/,}]):.2f} {s.median([${bs[*]/%/,}]):.2f} {s.median([${rs[*]/%/,}]):.2f}')"
}
read star_read star_masked star_ratio < <(pair bench_reader "$dir/star.sql" bench_masked "$dir/star.sql")
read plain_read plain_masked plain_ratio < <(pair bench_reader "$dir/plain.sql" bench_masked "$dir/plain.sql")
join="EXPLAIN (SUMMARY) SELECT c.name, c.id_number, p.name, h.amount, i.channel, o.stage FROM crm_data.customer c
  JOIN crm_data.holding h ON h.customer_id = c.id JOIN crm_data.product p ON p.id = h.product_id
  JOIN crm_data.interaction i ON i.customer_id = c.id JOIN crm_data.opportunity o ON o.customer_id = c.id WHERE c.id < 1000"
pm=$(for i in $(seq 1 21); do echo "$join;"; done | psql -X -qAt -U bench_masked -d $db 2>/dev/null | sed -n 's/^Planning Time: \([0-9.]*\) ms/\1/p' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
pr=$(for i in $(seq 1 21); do echo "$join;"; done | psql -X -qAt -U bench_reader -d $db 2>/dev/null | sed -n 's/^Planning Time: \([0-9.]*\) ms/\1/p' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db"
rm -rf "$dir"
pass() { python3 -c "print('pass' if $1 else 'FAIL')"; }
cat <<MD
## Field masking (\`bench/masking.sh\`, $N customers, ${T}s pgbench runs, $R interleaved rounds, medians)

Two principals that may read every customer: a "reader" whose role may read \`id_number\`, and a
"masked" one whose role sees it masked (e.g. \`$check\`); everything else is the same.

| query | reader, tps | masked, tps | cost ratio (reader/masked) | target | |
|---|---|---|---|---|---|
| \`SELECT * FROM crm_data.customer\` ($N rows) | $star_read | $star_masked | **$star_ratio** | ≤ 1.3 | $(pass "$star_ratio <= 1.3") |
| no protected column (\`id, owner_id, segment, aum\`) | $plain_read | $plain_masked | **$plain_ratio** | ≤ 1.05 | $(pass "$plain_ratio <= 1.05") |

Planning time of a 5-table join (customer, holding, product, interaction, opportunity), median of
21: masked $pm ms, reader $pr ms, ratio **$(python3 -c "print(f'{$pm/$pr:.2f}')")** (target ≤ 1.2:
$(pass "$pm/$pr <= 1.2")).

Not measured here: "hook loaded vs library absent" — without the library crm fails closed (no rows),
so the reader, whose queries the hook leaves untouched, stands in for "no masking work".

Command: \`make bench\` (or \`bash bench/masking.sh\` against a running cluster).
MD
