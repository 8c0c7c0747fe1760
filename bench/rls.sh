#!/usr/bin/env bash
# Record-level access on reads and writes, as ratios measured side by side in one run:
#  - an RM's "my customers" (count + sum of AUM, and a 50-row page ordered by name) under row-level
#    security vs the same query by the maintenance role with an explicit owner_id filter (RLS off);
#  - a team lead with 50 reports, and a branch manager over ~5% of customers, the same way;
#  - the RM query under a typical PL/pgSQL per-row policy, for scale;
#  - single-row UPDATE throughput by the RM under RLS vs the maintenance role, 1 and 4 clients.
set -euo pipefail
N=${CRM_BENCH_CUSTOMERS:-1000000}
T=${CRM_BENCH_SECONDS:-8}
db=crm_bench_rls
q() { psql -X -qAt -d $db "$@"; }
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION crm CASCADE" >/dev/null
q -c "SELECT * FROM crm.generate_demo_data($N, 42)" >/dev/null

# a team lead with 50 reports, and a region (two branches, ~5% of customers) with its manager
q >/dev/null <<'SQL'
SET client_min_messages = warning;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_tl50') THEN CREATE ROLE bench_tl50 LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_bm5') THEN CREATE ROLE bench_bm5 LOGIN; END IF;
END $$;
SELECT crm.add_principal('bench_tl50', 'TL of 50', (SELECT org_unit_id FROM crm.principal WHERE login = 'demo_rm_00001'), ARRAY['team_lead']);
SELECT crm.set_manager(p.id, (SELECT id FROM crm.principal WHERE login = 'bench_tl50'))
  FROM crm.principal p WHERE p.login ~ '^demo_rm_' ORDER BY p.login OFFSET 1 LIMIT 50;
SELECT crm.add_org_unit('Bench Region', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), 'branch') AS region \gset
SELECT crm.move_org_unit(u.id, :region) FROM crm.org_unit u WHERE u.kind = 'branch' AND u.name LIKE '%Branch %' ORDER BY u.id LIMIT 2;
SELECT crm.add_principal('bench_bm5', 'Region manager', :region, ARRAY['branch_manager']);
ANALYZE;
SQL

rm_id=$(q -c "SELECT id FROM crm.principal WHERE login = 'demo_rm_00001'")
tl_team=$(q -c "SELECT array_agg(id)::text FROM crm.principal WHERE id = (SELECT id FROM crm.principal WHERE login = 'bench_tl50') OR manager_id = (SELECT id FROM crm.principal WHERE login = 'bench_tl50')")
bm_units=$(q -c "WITH RECURSIVE s(id) AS (SELECT org_unit_id FROM crm.principal WHERE login = 'bench_bm5' UNION SELECT u.id FROM crm.org_unit u JOIN s ON u.parent_id = s.id) SELECT array_agg(id)::text FROM s")
bm_share=$(q -c "SELECT round(100.0 * count(*) FILTER (WHERE org_unit_id = ANY ('$bm_units'::bigint[])) / count(*), 1) FROM crm_data.customer")
rm_rows=$(q -c "SELECT count(*) FROM crm_data.customer WHERE owner_id = $rm_id")
tl_rows=$(q -c "SELECT count(*) FROM crm_data.customer WHERE owner_id = ANY ('$tl_team'::bigint[])")

dir=$(mktemp -d)
page="SELECT id, name, aum FROM crm_data.customer %s ORDER BY name LIMIT 50;"
agg="SELECT count(*), sum(aum) FROM crm_data.customer %s;"
mk() { printf "$agg\n$page\n" "$1" "$1" > "$dir/$2.sql"; }
mk "" rls
mk "WHERE owner_id = $rm_id" rm_explicit
mk "WHERE owner_id = ANY ('$tl_team'::bigint[])" tl_explicit
mk "WHERE org_unit_id = ANY ('$bm_units'::bigint[])" bm_explicit
tps() {  # tps of a script: user, clients, file
  pgbench -n -M prepared -U "$1" -c "$2" -j "$2" -T "$T" -f "$3" $db 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
# Interleave A and B for R rounds; print "tpsA tpsB ratio" as medians, ratio = per-round tpsA/tpsB.
R=${CRM_BENCH_ROUNDS:-3}
pair() {  # userA clientsA fileA userB clientsB fileB
  local as=() bs=() rs=() a b
  for i in $(seq 1 "$R"); do
    a=$(tps "$1" "$2" "$3"); b=$(tps "$4" "$5" "$6")
    as+=("$a"); bs+=("$b"); rs+=("$(python3 -c "print($a/$b)")")
  done
  python3 -c "import statistics as s; print(f'{s.median([${as[*]/%/,}]):.0f} {s.median([${bs[*]/%/,}]):.0f} {s.median([${rs[*]/%/,}]):.2f}')"
}

read rm_exp rm_rls rm_ratio < <(pair postgres 1 "$dir/rm_explicit.sql" demo_rm_00001 1 "$dir/rls.sql")
read tl_exp tl_rls tl_ratio < <(pair postgres 1 "$dir/tl_explicit.sql" bench_tl50 1 "$dir/rls.sql")
read bm_exp bm_rls bm_ratio < <(pair postgres 1 "$dir/bm_explicit.sql" bench_bm5 1 "$dir/rls.sql")

# a typical hand-written per-row policy, on a copy of the table
q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE TABLE public.customer_plpgsql AS SELECT * FROM crm_data.customer;
CREATE INDEX ON public.customer_plpgsql (owner_id);
CREATE INDEX ON public.customer_plpgsql (org_unit_id);
CREATE FUNCTION public.my_can_see(owner bigint, unit bigint) RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS \$f\$
BEGIN
  RETURN owner = crm.current_principal()
      OR EXISTS (SELECT 1 FROM crm.principal p WHERE p.id = owner AND p.manager_id = crm.current_principal());
END \$f\$;
ALTER TABLE public.customer_plpgsql ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.customer_plpgsql USING (public.my_can_see(owner_id, org_unit_id));
GRANT SELECT ON public.customer_plpgsql TO crm_user;
ANALYZE public.customer_plpgsql;
SQL
timeit() { psql -X -qAt -U "$1" -d $db -c '\timing on' -c "$2" -c "$2" -c "$2" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sort -n | head -1; }
ours_ms=$(timeit demo_rm_00001 "SELECT count(*), sum(aum) FROM crm_data.customer")
theirs_ms=$(timeit demo_rm_00001 "SELECT count(*), sum(aum) FROM public.customer_plpgsql")

# writes: single-row UPDATE of the RM's own customers
ids=$(q -c "SELECT array_agg(id ORDER BY id)::text FROM crm_data.customer WHERE owner_id = $rm_id")
cat > "$dir/upd.sql" <<SQL
\set i random(1, $rm_rows)
UPDATE crm_data.customer SET aum = aum + 1 WHERE id = ('$ids'::bigint[])[:i];
SQL
read w1_rls w1_plain w1_ratio < <(pair demo_rm_00001 1 "$dir/upd.sql" postgres 1 "$dir/upd.sql")
read w4_rls w4_plain w4_ratio < <(pair demo_rm_00001 4 "$dir/upd.sql" postgres 4 "$dir/upd.sql")

plan_rm=$(psql -X -qAt -U demo_rm_00001 -d $db -c "EXPLAIN (COSTS OFF) SELECT count(*), sum(aum) FROM crm_data.customer")
plan_page=$(psql -X -qAt -U demo_rm_00001 -d $db -c "EXPLAIN (COSTS OFF) SELECT id, name, aum FROM crm_data.customer ORDER BY name LIMIT 50")
plan_theirs=$(psql -X -qAt -U demo_rm_00001 -d $db -c "EXPLAIN (COSTS OFF) SELECT count(*), sum(aum) FROM public.customer_plpgsql")
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db"
rm -rf "$dir"

pass() { python3 -c "print('pass' if $1 else 'FAIL')"; }
cat <<MD
## Record-level access (\`bench/rls.sh\`, $N customers, ${T}s pgbench runs, $R interleaved rounds, medians, prepared statements)

Reads: "my customers" = \`count(*), sum(aum)\` plus a 50-row page ordered by name, one transaction.
"explicit" is the maintenance role (RLS bypassed) with the filter written out.

| who | rows | explicit filter, tps | under RLS, tps | cost ratio (explicit/RLS) | target | |
|---|---|---|---|---|---|---|
| RM (own book) | $rm_rows | $rm_exp | $rm_rls | **$rm_ratio** | ≤ 1.2 | $(pass "$rm_ratio <= 1.2") |
| team lead, 50 reports | $tl_rows | $tl_exp | $tl_rls | **$tl_ratio** | ≤ 1.5 | $(pass "$tl_ratio <= 1.5") |
| branch manager, ${bm_share}% of customers | — | $bm_exp | $bm_rls | **$bm_ratio** | ≤ 1.5 | $(pass "$bm_ratio <= 1.5") |

A typical PL/pgSQL per-row policy (\`USING (my_can_see(owner_id, org_unit_id))\`), same RM, count + sum:
$(python3 -c "print(f'{$theirs_ms:.1f} ms vs {$ours_ms:.2f} ms under crm: crm is {$theirs_ms/$ours_ms:,.0f}x faster')").

Writes: single-row UPDATE of the RM's own customers by id.

| clients | maintenance role (no RLS), tps | RM under RLS, tps | ratio RLS/plain | target | |
|---|---|---|---|---|---|
| 1 | $w1_plain | $w1_rls | **$w1_ratio** | ≥ 0.85 | $(pass "$w1_ratio >= 0.85") |
| 4 | $w4_plain | $w4_rls | **$w4_ratio** | ≥ 0.85 | $(pass "$w4_ratio >= 0.85") |

Plans as the RM:

\`\`\`
$plan_rm

$plan_page
\`\`\`

The per-row PL/pgSQL policy, same query:

\`\`\`
$plan_theirs
\`\`\`

Command: \`make bench\` (or \`CRM_BENCH_CUSTOMERS=$N bash bench/rls.sh\` against a running cluster).
MD
