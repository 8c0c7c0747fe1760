#!/usr/bin/env bash
# TAP: sqlsmith (Debian package sqlsmith) fires random queries at a small demo bank, as a superuser
# and as an RM login; the test fails on any backend crash (a signal or PANIC in the server log, the
# server restarting) or any internal error (XX000). Time-bounded: CRM_FUZZ_SECONDS in all (default
# 40), split between the two logins; CRM_FUZZ_SEED picks the queries (default 4242; "random" draws one,
# printed so that a failure can be replayed).
# It runs in a throwaway cluster of its own: as a superuser sqlsmith may call any function
# (pg_terminate_backend, lo_export, ...), which must not touch the cluster other tests use.
set -u
source "$(dirname "$0")/lib/tap.bash"
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../scripts/cluster.sh"
secs=${CRM_FUZZ_SECONDS:-40}
# make test uses a fixed seed (a superuser's sqlsmith also reaches PostgreSQL's own internal errors,
# and CI must not depend on the day's draw); CRM_FUZZ_SEED=random draws one
seed=${CRM_FUZZ_SEED:-4242}
[ "$seed" = random ] && seed=$(( $(date +%s) % 100000 ))
if ! command -v sqlsmith >/dev/null; then
  echo "not ok 1 - sqlsmith is not installed (apt-get install sqlsmith)"; echo "1..1"; exit 1
fi
tmp=$(mktemp -d /tmp/crm_fuzz.XXXXXX)
chmod 755 "$tmp"
trap 'crm_stop_cluster "$tmp/c"; rm -rf "$tmp"' EXIT
crm_start_cluster "$tmp/c" >/dev/null || { echo "not ok 1 - a cluster for the fuzz run"; echo "1..1"; exit 1; }
log=$tmp/c/server.log
db=crm_fuzz
psql -X -q -d postgres -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %e '" -c "SELECT pg_reload_conf()" \
  -c "CREATE DATABASE $db" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d $db >"$tmp/setup.out" 2>&1 <<'SQL' || { cat "$tmp/setup.out"; echo "not ok 1 - set-up"; echo "1..1"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT count(*) FROM crm.generate_demo_data(200, 7);
CREATE ROLE fuzz_rm LOGIN;
SELECT crm.add_principal('fuzz_rm', 'Fuzz RM', (SELECT min(id) FROM crm.org_unit)) AS rm \gset
UPDATE crm_data.customer SET owner_id = :rm WHERE id IN (SELECT id FROM crm_data.customer ORDER BY id LIMIT 20);
SQL
echo "# sqlsmith seed $seed, $secs s in all"
started=$(psql -X -qAt -d postgres -c "SELECT pg_postmaster_start_time()")

# fuzz LOGIN SECONDS: runs sqlsmith until the time is up; prints how many queries it sent
fuzz() {
  local who=$1 s=$2
  timeout --signal=INT "$s" sqlsmith --seed="$seed" --exclude-catalog --verbose --max-queries=1000000 \
    --target="host=$PGHOST port=$PGPORT dbname=$db user=$who options='-c statement_timeout=2000 -c lock_timeout=1000'" \
    >"$tmp/$who.out" 2>"$tmp/$who.err"
  # --verbose prints one character per query on lines of their own
  grep -E '^[.a-zA-Z]+$' "$tmp/$who.err" | grep -vE '^(done|[A-Z][a-z]+)$' | tr -d '\n' | wc -c
}
half=$(( secs / 2 ))
n_su=$(fuzz postgres "$half")
n_rm=$(fuzz fuzz_rm "$(( secs - half ))")
echo "# queries run: $n_su as superuser, $n_rm as the RM"
ok "$([ "$n_su" -gt 0 ] && [ "$n_rm" -gt 0 ] && echo ran)" "ran" "sqlsmith ran queries as the superuser and as the RM"
crashes=$(grep -cE 'terminated by signal|was terminated by exception|PANIC|server process .* exited with exit code [^01]' "$log")
[ "$crashes" = 0 ] || grep -E -A2 'terminated by signal|was terminated by exception|PANIC|exited with exit code' "$log" | cut -c1-400 | head -20 | sed 's/^/#   /'
ok "$crashes" "0" "no backend crashed (server log)"
# PostgreSQL's own internal errors that sqlsmith reaches without crm (core functions fed odd values):
# a message is accepted only when it starts with one of these and the reproducer raises the same in a
# database without crm, in this run.
core_prefix=("failed to find conversion function from unknown to text"
             "expected 2-element int8 array"
             "invalid INTERVAL typmod: "
             "unexpected end of flag array"
             "cannot advance OID counter anymore"
             "could not open server file")
core_repro=("SELECT coalesce(NULL::unknown, coalesce(NULL::unknown, NULL::unknown)::unknown)"
            "SELECT pg_catalog.int8_avg('{1}'::bigint[])"
            "SELECT pg_catalog.intervaltypmodout(40)"
            "SELECT pg_catalog.jsonb_to_tsvector('{}'::jsonb, '[[]]'::jsonb)"
            "SELECT pg_catalog.pg_stop_making_pinned_objects()"   # refused outside initdb, changes nothing
            "SELECT pg_catalog.lo_import(repeat('x', 5000))")     # ENAMETOOLONG is XX000 in lo_import
psql -X -q -d postgres -c "CREATE DATABASE fuzz_plain" >/dev/null
internal=0
while IFS= read -r msg; do
  known=
  for i in "${!core_prefix[@]}"; do
    case "$msg" in
      "${core_prefix[$i]}"*)
        psql -X -qAt -d fuzz_plain -c "${core_repro[$i]}" 2>&1 | grep -qF "ERROR:  ${core_prefix[$i]}" && known=1 ;;
    esac
  done
  if [ -n "$known" ]; then
    echo "# PostgreSQL's own XX000, reproduced without crm: $msg"
  else
    internal=$((internal + 1))
    grep -F -A3 "XX000 ERROR:  $msg" "$log" | cut -c1-400 | head -8 | sed 's/^/#   /'
  fi
done < <(sed -n 's/.* XX000 ERROR:  //p' "$log" | sort -u)
ok "$internal" "0" "no internal error (XX000) in the server log other than PostgreSQL's own"
ok "$(psql -X -qAt -d postgres -c "SELECT pg_postmaster_start_time()" 2>&1)" "$started" "the server is up"
finish
