#!/usr/bin/env bash
# make bench: build, start a throwaway cluster with crm preloaded, run every bench/*.sh against it
# and rewrite bench/RESULTS.md with what they measured. Each benchmark prints a markdown section
# and reports ratios measured side by side in the same run (absolute times are noise here).
# CRM_BENCH_ONLY="bench/reads_audit.sh ...": run only these, print their sections and leave
# bench/RESULTS.md as it is (paste what is worth keeping).
set -euo pipefail
source "$(dirname "$0")/cluster.sh"
cd "$TOP"

crm_ensure_packages
crm_build_install
dir=$(mktemp -d /tmp/crm_bench.XXXXXX)
trap 'crm_stop_cluster "$dir"; rm -rf "$dir"' EXIT
crm_start_cluster "$dir"
export CRM_BENCH_DIR=$dir

out=$dir/RESULTS.md
{
  echo "# Benchmarks"
  echo
  echo "Made by \`make bench\` (scripts/bench.sh runs every bench/*.sh against a throwaway cluster)."
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, PostgreSQL $(psql -X -qAt -d postgres -c 'SHOW server_version'),"
  echo "fsync off, synchronous_commit off. Run on $(date -u '+%Y-%m-%d %H:%M UTC'). Ratios are what count; times are one noisy run."
} >"$out"
only=${CRM_BENCH_ONLY:-}
for b in ${only:-bench/*.sh}; do
  [ -f "$b" ] || { log "no such benchmark: $b"; exit 1; }
  log "$b"
  echo >>"$out"
  bash "$b" >>"$out"
done
if [ -n "$only" ]; then cat "$out"; exit 0; fi
cp "$out" bench/RESULTS.md
cat bench/RESULTS.md
