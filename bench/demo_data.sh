#!/usr/bin/env bash
# The cost of the demo bank and of the machinery on the write path of a managed table.
# 1. crm.generate_demo_data(N): rows per second for all objects.
# 2. Bulk INSERT of the same customer rows into crm_data.customer (stamp trigger + C validators in
#    CHECK constraints + foreign keys) vs into a plain copy of the table with none of them.
set -euo pipefail
N=${CRM_BENCH_CUSTOMERS:-100000}
db=crm_bench_demo
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -X -q -d $db -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE"
ms() { psql -X -qAt -d $db -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1; }

gen=$(ms "SELECT * FROM crm.generate_demo_data($N, 42)")
rows=$(psql -X -qAt -d $db -c "SELECT (SELECT count(*) FROM crm_data.customer) + (SELECT count(*) FROM crm_data.holding) + (SELECT count(*) FROM crm_data.interaction) + (SELECT count(*) FROM crm_data.opportunity) + (SELECT count(*) FROM crm_data.task) + (SELECT count(*) FROM crm_data.consent)")
principals=$(psql -X -qAt -d $db -c "SELECT count(*) FROM crm.principal")

psql -X -q -d $db <<'SQL'
CREATE TABLE bench_src AS SELECT owner_id, org_unit_id, name, customer_type, id_type, id_number, mobile, email, birthday,
  gender, risk_tolerance, segment, kyc_status, kyc_expires_on, aum FROM crm_data.customer;
CREATE TABLE bench_plain (LIKE crm_data.customer INCLUDING DEFAULTS);
ALTER TABLE bench_plain ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
ALTER TABLE bench_plain ALTER COLUMN created_at SET DEFAULT now(), ALTER COLUMN updated_at SET DEFAULT now();
CREATE INDEX ON bench_plain (owner_id); CREATE INDEX ON bench_plain (org_unit_id);
SQL
cols="owner_id, org_unit_id, name, customer_type, id_type, id_number, mobile, email, birthday, gender, risk_tolerance, segment, kyc_status, kyc_expires_on, aum"
best() {  # best of 3, emptying the target between runs
  local target=$1 b=999999999 t
  for i in 1 2 3; do
    psql -X -q -d $db -c "TRUNCATE $target CASCADE" >/dev/null 2>&1
    t=$(ms "INSERT INTO $target ($cols) SELECT $cols FROM bench_src")
    b=$(python3 -c "print(min($b, $t))")
  done
  echo "$b"
}
plain=$(best bench_plain)
managed=$(best crm_data.customer)
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db"

cat <<MD
## Demo bank and the write path of a managed table (\`bench/demo_data.sh\`, N = $N customers)

| measure | result |
|---|---|
| \`crm.generate_demo_data($N, 42)\` | $(python3 -c "print(f'{$gen/1000:.1f} s for $rows rows and $principals principals with login roles: {$rows/($gen/1000):,.0f} rows/s')") |
| bulk INSERT of $N customers, plain table (no trigger, checks or FKs) | $(python3 -c "print(f'{$plain:.0f} ms')") |
| the same into \`crm_data.customer\` (stamp trigger, C validators, FKs) | $(python3 -c "print(f'{$managed:.0f} ms')") |
| **ratio managed / plain** | **$(python3 -c "print(f'{$managed/$plain:.2f}x')")** |

Command: \`make bench\` (or \`CRM_BENCH_CUSTOMERS=$N bash bench/demo_data.sh\` against a running cluster).
MD
