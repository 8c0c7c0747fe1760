#!/usr/bin/env bash
# make test: install what is missing, build, start a throwaway cluster with crm preloaded, run
# every pg_regress test (sql/), pgTAP test (test/*.sql) and shell test (test/*.sh), stop the
# cluster, and end with one line "N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/cluster.sh"
cd "$TOP"

# CRM_DIR: the directory of the throwaway cluster (new or empty; default a new /tmp/crm_test.*);
# CRM_PORT: its port (default the first free one from 55432). Neither may be in use: make test
# never touches a cluster it did not start.
if [ -n "${CRM_DIR:-}" ]; then crm_claim_dir "$CRM_DIR" fresh || exit 1; fi
if [ -n "${CRM_PORT:-}" ]; then crm_claim_port "$CRM_PORT" || exit 1; fi

crm_ensure_packages
crm_build_install

if [ -n "${CRM_DIR:-}" ]; then
  made_dir=; [ -e "$CRM_DIR" ] || made_dir=1
  mkdir -p "$CRM_DIR"; dir=$(cd "$CRM_DIR" && pwd)
else
  made_dir=1; dir=$(mktemp -d /tmp/crm_test.XXXXXX)
fi
cleanup() {
  crm_stop_cluster "$dir"
  [ -z "${CRM_TEST_KEEP:-}" ] || return 0
  if [ -n "$made_dir" ]; then rm -rf "$dir"; else find "$dir" -mindepth 1 -delete; fi
}
trap cleanup EXIT
crm_start_cluster "$dir" "${CRM_PORT:-}"
log "cluster on port $PGPORT, sockets in $dir"
export CRM_TEST_DIR=$dir

# CRM_TEST_ONLY="06_access test/crypt.sql test/dump_restore.sh": run only these (a developer's
# shortcut; make test runs everything)
only=${CRM_TEST_ONLY:-}
wanted() { [ -z "$only" ] && return 0; local w; for w in $only; do [ "$w" = "$1" ] && return 0; done; return 1; }

pass=0
fail=0
count_tap() {  # count TAP "ok"/"not ok" lines of a file; a run that failed without any "not ok" counts once
  local out=$1 rc=$2 ok notok
  ok=$(grep -cE '^\s*ok [0-9]+' "$out" || true)
  notok=$(grep -cE '^\s*not ok [0-9]+' "$out" || true)
  if [ "$rc" != 0 ] && [ "$notok" = 0 ]; then notok=1; fi
  pass=$((pass + ok)); fail=$((fail + notok))
}

# pg_regress: one result per test file
log "pg_regress"
rm -rf results regression.diffs regression.out
set +e
regress=()
if [ -n "$only" ]; then
  # 00_setup and 99_teardown always run: the teardown drops the roles and the database the tests made
  for f in sql/*.sql; do
    t=$(basename "$f" .sql)
    { wanted "$t" || [ "$t" = 00_setup ] || [ "$t" = 99_teardown ]; } && regress+=("$t")
  done
  if [ ${#regress[@]} -eq 2 ]; then regress=(00_setup 01_install 99_teardown); fi
  make -s with_llvm=no PG_CONFIG="$CRM_PG_CONFIG" installcheck REGRESS="${regress[*]}" >"$dir/regress.out" 2>&1
else
  make -s with_llvm=no PG_CONFIG="$CRM_PG_CONFIG" installcheck >"$dir/regress.out" 2>&1
fi
rrc=$?
set -e
cat "$dir/regress.out"
rok=$(grep -cE '\.\.\. ok' "$dir/regress.out" || true)
rfail=$(grep -cE '\.\.\. FAILED' "$dir/regress.out" || true)
if [ "$rrc" != 0 ] && [ "$rfail" = 0 ]; then rfail=1; fi
[ -f regression.diffs ] && head -200 regression.diffs
pass=$((pass + rok)); fail=$((fail + rfail))

# pgTAP: one result per assertion
log "pgTAP"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS crm_tap" -c "CREATE DATABASE crm_tap"
psql -X -q -d crm_tap -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION crm CASCADE"
for f in test/*.sql; do
  [ -e "$f" ] || continue
  wanted "$f" || continue
  set +e
  pg_prove --verbose -d crm_tap "$f" >"$dir/tap.out" 2>&1
  rc=$?
  set -e
  cat "$dir/tap.out"
  count_tap "$dir/tap.out" "$rc"
done

# shell tests (TAP output): dump/restore and others that need more than one database or session
for f in test/*.sh; do
  [ -e "$f" ] || continue
  wanted "$f" || continue
  log "$f"
  set +e
  bash "$f" >"$dir/sh.out" 2>&1
  rc=$?
  set -e
  cat "$dir/sh.out"
  count_tap "$dir/sh.out" "$rc"
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
