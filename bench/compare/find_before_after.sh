#!/usr/bin/env bash
# crm.find before and after a change, side by side: the "before" build (a git ref) and this
# checkout's build each run a throwaway cluster holding the same demo bank (same seed, one encrypted
# searchable field), and pgbench rounds alternate between them. Prints a markdown section.
# Not part of `make bench` (it needs two builds). Usage, from the checkout:
#   CRM_PG_ROOT=/tmp/pgroot-x CRM_BEFORE_REF=main bash bench/compare/find_before_after.sh
set -euo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
REF=${CRM_BEFORE_REF:-main}
N=${CRM_BENCH_CRYPT_CUSTOMERS:-100000}
T=${CRM_BENCH_SECONDS:-5}
R=${CRM_BENCH_ROUNDS:-5}
: "${CRM_PG_ROOT:?set CRM_PG_ROOT to the private PostgreSQL copy of this checkout (scripts/cluster.sh)}"
source "$TOP/scripts/cluster.sh"
work=$(mktemp -d /tmp/crm_find_ba.XXXXXX)
chmod 755 "$work"
after_bin=$PGBIN
before_root=$work/root-before
before_bin=$before_root/usr/lib/postgresql/$PGVER/bin
stop_all() {
  PGBIN=$before_bin crm_stop_cluster "$work/a"; PGBIN=$after_bin crm_stop_cluster "$work/b"
  # CRM_BENCH_LOGS=DIR: keep the two server logs there
  if [ -n "${CRM_BENCH_LOGS:-}" ]; then mkdir -p "$CRM_BENCH_LOGS"; cp "$work/a/server.log" "$CRM_BENCH_LOGS/before.log"; cp "$work/b/server.log" "$CRM_BENCH_LOGS/after.log"; fi
  rm -rf "$work"
}
trap stop_all EXIT

crm_build_install
mkdir -p "$work/src"
git -C "$TOP" archive "$REF" | tar -x -C "$work/src"
cp -a "$CRM_PG_ROOT" "$before_root"
make -C "$work/src" -s with_llvm=no >/dev/null
make -C "$work/src" -s with_llvm=no install DESTDIR="$before_root" >/dev/null

PGBIN=$before_bin crm_start_cluster "$work/a"; host_a=$PGHOST; port_a=$PGPORT
PGBIN=$after_bin crm_start_cluster "$work/b"; host_b=$PGHOST; port_b=$PGPORT
export PATH=$after_bin:$PATH
db=crm_find_ba
setup() {  # host port
  psql -X -q -h "$1" -p "$2" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  psql -X -q -h "$1" -p "$2" -d $db >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT count(*) FROM crm.generate_demo_data($N, 7);
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_officer') THEN CREATE ROLE bench_officer LOGIN; END IF;
END \$\$;
SELECT crm.add_role('bench_officer');
SELECT crm.grant_object('bench_officer', '*', ARRAY['read'], 'all');
SELECT crm.add_principal('bench_officer', 'Officer', (SELECT id FROM crm.org_unit WHERE parent_id IS NULL LIMIT 1), ARRAY['bench_officer']);
SELECT crm.add_field('customer', 'id_enc', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
SELECT crm.set_field_access('customer', 'id_number', 'bench_officer', 'read');
SELECT crm.set_field_access('customer', 'id_enc', 'bench_officer', 'read');
UPDATE crm_data.customer SET id_enc = id_number WHERE id_number IS NOT NULL;
CREATE INDEX ON crm_data.customer (id_number);
VACUUM ANALYZE crm_data.customer;
SQL
}
setup "$host_a" "$port_a" & pa=$!
setup "$host_b" "$port_b" & pb=$!
wait $pa; wait $pb
sample=$(psql -X -qAt -h "$host_b" -p "$port_b" -d $db -c "SELECT id_number FROM crm_data.customer WHERE id_number IS NOT NULL ORDER BY id LIMIT 1 OFFSET 777")
echo "SELECT id FROM crm.find('customer', 'id_enc', '$sample');" >"$work/find.sql"
echo "SELECT id FROM crm_data.customer WHERE id_number = '$sample';" >"$work/eq.sql"
tps() { pgbench -n -M prepared -h "$1" -p "$2" -U bench_officer -c 1 -T "$T" -f "$3" $db 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
fa=(); fb=(); ea=(); eb=(); r1=(); r2=()
for i in $(seq 1 "$R"); do
  if [ $((i % 2)) = 1 ]; then a=$(tps "$host_a" "$port_a" "$work/find.sql"); b=$(tps "$host_b" "$port_b" "$work/find.sql")
  else b=$(tps "$host_b" "$port_b" "$work/find.sql"); a=$(tps "$host_a" "$port_a" "$work/find.sql"); fi
  x=$(tps "$host_a" "$port_a" "$work/eq.sql"); y=$(tps "$host_b" "$port_b" "$work/eq.sql")
  fa+=("$a"); fb+=("$b"); ea+=("$x"); eb+=("$y")
  r1+=("$(python3 -c "print($b/$a)")"); r2+=("$(python3 -c "print(($b/$y)/($a/$x))")")
done
med() { python3 -c "import statistics as s; print(f'{s.median([$(IFS=,; echo "$*")]):.3f}')"; }
cat <<MD
## crm.find before and after (\`bench/compare/find_before_after.sh\`, $N customers, ${T}s pgbench runs, $R interleaved rounds, medians)

Two throwaway clusters on this machine at once, the same demo bank in each (seed 7, \`id_enc\` =
\`id_number\`, encrypted and searchable): before = \`$REF\` ($(git -C "$TOP" rev-parse --short "$REF")), after = this checkout
($(git -C "$TOP" rev-parse --short HEAD)$(git -C "$TOP" diff --quiet HEAD -- src || echo ', with uncommitted changes')). Each round runs crm.find on both (the order alternating), then the plain lookup on both.

| | before | after | after ÷ before |
|---|---|---|---|
| crm.find, queries/s | $(med "${fa[@]}") | $(med "${fb[@]}") | **$(med "${r1[@]}")** |
| plain indexed lookup, queries/s | $(med "${ea[@]}") | $(med "${eb[@]}") | |
| crm.find ÷ plain lookup, after ÷ before (per round) | | | **$(med "${r2[@]}")** |
MD
