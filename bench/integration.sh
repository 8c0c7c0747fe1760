#!/usr/bin/env bash
# Bulk import: N staging rows through crm.import() (each validated, upserted by source id, with an
# external reference and an audit entry), as an integration principal: rows/s, all or nothing.
set -euo pipefail
N=${CRM_BENCH_IMPORT_ROWS:-100000}
db=crm_bench_import
q() { psql -X -qAt -d $db "$@"; }
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null
psql -X -q -d postgres -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_integration') THEN CREATE ROLE bench_integration LOGIN IN ROLE crm_user; END IF; END \$\$;
SELECT crm.add_org_unit('Bench HQ') AS hq \gset
SELECT crm.add_principal('bench_integration', 'Integration', :hq, ARRAY['admin']);
CREATE TABLE public.staging (external_id text, name text, id_type text, id_number text, mobile text, segment text, aum text);
INSERT INTO public.staging
  SELECT 'CB-' || i, '客户' || i, 'id_card', crm.make_cn_id_number('110105', date '1950-01-01' + i % 20000, (i % 999) + 1),
         '138' || lpad((i % 100000000)::text, 8, '0'), (ARRAY['mass', 'affluent', 'private_banking'])[1 + i % 3], (i % 1000 * 1000)::text
    FROM generate_series(1, $N) i;
GRANT SELECT ON public.staging TO bench_integration;
SQL
t=$( { echo '\timing on'; echo "SELECT status, count(*) FROM crm.import('customer', 'public.staging', 'core_banking') GROUP BY status;"; } \
     | psql -X -qAt -U bench_integration -d $db 2>&1)
ms=$(echo "$t" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
summary=$(echo "$t" | grep -v '^Time' | tr '\n' ' ')
customers=$(q -c "SELECT count(*) FROM crm_data.customer")
refs=$(q -c "SELECT count(*) FROM crm.external_ref")
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null
cat <<MD
## Bulk import (\`bench/integration.sh\`)

\`crm.import('customer', staging, 'core_banking')\` of $N staging rows (name, ID number, mobile,
segment, AUM as text) as an integration principal: each row checked against the customer's fields
and validators, matched by source id and by ID number (golden record), inserted with its external
reference, stamped, guarded and audited. Report: $summary; $customers customers and $refs external
references afterwards.

**$(python3 -c "print(f'{$ms/1000:.1f}')") s, $(python3 -c "print(f'{$N/($ms/1000):,.0f}')") rows/s** (target: well under a minute).

Command: \`make bench\` (or \`bash bench/integration.sh\` against a running cluster).
MD
