#!/usr/bin/env bash
# Audit cost, as ratios measured side by side in one run, on copies of the same database:
#  - single-row UPDATE of a customer by id (pgbench, prepared) at 1 and 8 clients: crm's audit vs no
#    audit, vs a typical PL/pgSQL trigger (to_jsonb(OLD/NEW) + SHA-256 chain through a one-row head),
#    vs pgaudit (pgaudit.log = 'write');
#  - one UPDATE of 100,000 customers, audited vs not;
#  - crm.audit_verify() over 1,000,000 entries: rows/s, and as a fraction of raw SHA-256 speed.
# The unaudited copies have crm's audit triggers switched off in the catalog (a bench-only bypass).
set -euo pipefail
N=${CRM_BENCH_AUDIT_CUSTOMERS:-100000}
T=${CRM_BENCH_SECONDS:-8}
R=${CRM_BENCH_ROUNDS:-5}
V=${CRM_BENCH_VERIFY_ENTRIES:-1000000}
dir=${CRM_BENCH_DIR:-}
src=crm_bench_audit
q() { psql -X -qAt -d "$1" -c "$2"; }
for d in $src crm_bench_noaudit crm_bench_plpgsql crm_bench_pgaudit; do psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $d" 2>/dev/null; done

# pgaudit: preload it (Debian package) when this script runs the cluster; else it is not measured
pgaudit=no
if [ -n "$dir" ]; then
  if [ ! -f /usr/lib/postgresql/15/lib/pgaudit.so ] && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-pgaudit >/dev/null 2>&1 || true
  fi
  if [ -f /usr/lib/postgresql/15/lib/pgaudit.so ]; then
    q postgres "ALTER SYSTEM SET shared_preload_libraries = 'crm', 'pgaudit'" >/dev/null
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/data" -m fast -w restart -o "-p $PGPORT" -l "$dir/server.log" >/dev/null
    pgaudit=yes
  fi
fi

psql -X -q -d postgres -c "CREATE DATABASE $src"
q $src "SET client_min_messages = warning; CREATE EXTENSION crm CASCADE" >/dev/null
q $src "SELECT * FROM crm.generate_demo_data($N, 7)" >/dev/null
# steady state: every copy starts with hint bits set and nothing left for autovacuum to catch up on
q $src "VACUUM (FREEZE, ANALYZE)" >/dev/null
clone() {  # clone NAME: a copy of the source database (retry while the audit worker is connected to it)
  for i in $(seq 1 50); do
    psql -X -q -d postgres -c "CREATE DATABASE $1 TEMPLATE $src" 2>/dev/null && return 0; sleep 0.2
  done
  return 1
}
off="UPDATE pg_trigger SET tgenabled = 'D' WHERE tgrelid = 'crm_data.customer'::regclass AND tgname IN ('crm_audit', 'crm_audit_flush')"
clone crm_bench_noaudit; q crm_bench_noaudit "$off" >/dev/null
clone crm_bench_plpgsql; q crm_bench_plpgsql "$off" >/dev/null
psql -X -q -d crm_bench_plpgsql >/dev/null <<'SQL'
CREATE TABLE public.bench_audit (id bigserial PRIMARY KEY, at timestamptz, old jsonb, new jsonb, hash bytea);
CREATE TABLE public.bench_head (one boolean PRIMARY KEY, hash bytea);
INSERT INTO public.bench_head VALUES (true, '\x00');
CREATE FUNCTION public.bench_audit_trg() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE h bytea;
BEGIN
  UPDATE public.bench_head SET hash = sha256(hash || convert_to(to_jsonb(NEW)::text, 'UTF8')) RETURNING hash INTO h;
  INSERT INTO public.bench_audit (at, old, new, hash) VALUES (now(), to_jsonb(OLD), to_jsonb(NEW), h);
  RETURN NULL;
END $$;
CREATE TRIGGER bench_audit_trg AFTER UPDATE ON crm_data.customer FOR EACH ROW EXECUTE FUNCTION public.bench_audit_trg();
SQL
if [ $pgaudit = yes ]; then
  clone crm_bench_pgaudit; q crm_bench_pgaudit "$off" >/dev/null
  q crm_bench_pgaudit "CREATE EXTENSION IF NOT EXISTS pgaudit" >/dev/null 2>&1 || true
  q postgres "ALTER DATABASE crm_bench_pgaudit SET pgaudit.log = 'write'" >/dev/null
fi

tmp=$(mktemp -d)
chmod 755 "$tmp"
printf '\\set id random(1, %s)\nUPDATE crm_data.customer SET aum = aum + 1 WHERE id = :id;\n' "$N" > "$tmp/update.sql"
# every run starts right after a checkpoint, so none of them pays more full-page writes than another
tps() { psql -X -q -d "$1" -c "CHECKPOINT" >/dev/null; pgbench -n -M prepared -c "$2" -j "$2" -T "$T" -f "$tmp/update.sql" "$1" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
med() { python3 -c "import statistics as s, sys; print(f'{s.median([float(x) for x in sys.argv[1:]]):.1f}')" "$@"; }
dbs="$src crm_bench_noaudit crm_bench_plpgsql"
[ $pgaudit = yes ] && dbs="$dbs crm_bench_pgaudit"
declare -A res
for c in 1 8; do
  for i in $(seq 1 "$R"); do
    for d in $dbs; do res[$d.$c]="${res[$d.$c]:-} $(tps $d $c)"; done
  done
done
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
for c in 1 8; do
  for d in $dbs; do eval "m_${d}_$c=$(med ${res[$d.$c]})"; done
done

# one UPDATE of every customer
bulk() { { echo '\timing on'; echo "UPDATE crm_data.customer SET aum = aum + 1;"; } | psql -X -qAt -d "$1" 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'; }
ba=(); bn=()
for i in $(seq 1 "$R"); do ba+=("$(bulk $src)"); bn+=("$(bulk crm_bench_noaudit)"); done
bulk_a=$(med "${ba[@]}"); bulk_n=$(med "${bn[@]}")

# verification speed over V entries
have=$(q $src "SELECT count(*) FROM crm.audit_log")
while [ "$have" -lt "$V" ]; do
  q $src "UPDATE crm_data.customer SET aum = aum + 1 WHERE id IN (SELECT id FROM crm_data.customer ORDER BY id LIMIT $((V - have)))" >/dev/null
  have=$(q $src "SELECT count(*) FROM crm.audit_log")
done
q $src "SELECT crm.audit_seal()" >/dev/null; sleep 1; q $src "SELECT crm.audit_seal()" >/dev/null
entries=$(q $src "SELECT entries FROM crm.audit_verify()")
vt=$( { echo '\timing on'; echo "SELECT ok FROM crm.audit_verify();"; } | psql -X -qAt -d $src 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
vok=$(q $src "SELECT ok FROM crm.audit_verify()")
st=$( { echo '\timing on'; echo "SELECT count(sha256(convert_to(l::text, 'UTF8'))) FROM crm.audit_log l;"; } | psql -X -qAt -d $src 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
rows=$(q $src "SELECT count(*) FROM crm.audit_log")

for d in $dbs; do psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $d" 2>/dev/null; done
if [ $pgaudit = yes ]; then
  q postgres "ALTER SYSTEM RESET shared_preload_libraries" >/dev/null
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/data" -m fast -w restart -o "-p $PGPORT" -l "$dir/server.log" >/dev/null
fi
rm -rf "$tmp"
pass() { python3 -c "print('pass' if $1 else 'FAIL')"; }
a1=$(ratio $m_crm_bench_audit_1 $m_crm_bench_noaudit_1); a8=$(ratio $m_crm_bench_audit_8 $m_crm_bench_noaudit_8)
p1=$(ratio $m_crm_bench_audit_1 $m_crm_bench_plpgsql_1); p8=$(ratio $m_crm_bench_audit_8 $m_crm_bench_plpgsql_8)
cat <<MD
## Audit (\`bench/audit.sh\`, $N customers, ${T}s pgbench runs, $R interleaved rounds, medians)

Single-row \`UPDATE crm_data.customer SET aum = aum + 1 WHERE id = :id\` (pgbench, prepared), on copies
of one database: crm's audit (row trigger in C, entries written per statement straight into the partition, sealed every
second), no audit, a PL/pgSQL trigger writing \`to_jsonb(OLD)\`/\`to_jsonb(NEW)\` with a SHA-256 chain
through a one-row head table, and pgaudit (\`pgaudit.log = 'write'\`).

| clients | no audit, tps | crm audit, tps | crm ÷ none | target | | PL/pgSQL + chain, tps | crm ÷ PL/pgSQL | pgaudit, tps | crm ÷ pgaudit |
|---|---|---|---|---|---|---|---|---|---|
| 1 | $m_crm_bench_noaudit_1 | $m_crm_bench_audit_1 | **$a1** | ≥ 0.75 | $(pass "$a1 >= 0.75") | $m_crm_bench_plpgsql_1 | **$p1** | $([ $pgaudit = yes ] && echo "$m_crm_bench_pgaudit_1 | **$(ratio $m_crm_bench_audit_1 $m_crm_bench_pgaudit_1)**" || echo "not measured | -") |
| 8 | $m_crm_bench_noaudit_8 | $m_crm_bench_audit_8 | **$a8** | ≥ 0.75 | $(pass "$a8 >= 0.75") | $m_crm_bench_plpgsql_8 | **$p8** | $([ $pgaudit = yes ] && echo "$m_crm_bench_pgaudit_8 | **$(ratio $m_crm_bench_audit_8 $m_crm_bench_pgaudit_8)**" || echo "not measured | -") |

One \`UPDATE\` of all $N customers: audited $bulk_a ms, not audited $bulk_n ms: cost ratio
**$(ratio $bulk_a $bulk_n)** (target ≤ 1.6: $(pass "$bulk_a / $bulk_n <= 1.6")).

\`crm.audit_verify()\` over $entries sealed entries (ok: $vok): $vt ms, **$(python3 -c "print(f'{$entries/($vt/1000):,.0f}')") entries/s**;
SHA-256 of each row's text alone over the $rows rows: $st ms ($(python3 -c "print(f'{$rows/($st/1000):,.0f}')") rows/s), so
verification runs at **$(python3 -c "print(f'{($entries/$vt)/($rows/$st):.2f}')")** of raw SHA-256 speed (it hashes each entry and each chain link, and compares every block).

Command: \`make bench\` (or \`bash bench/audit.sh\` against a running cluster; pgaudit needs \`CRM_BENCH_DIR\`).
MD
