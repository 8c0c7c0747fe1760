#!/usr/bin/env bash
# Reads on the record (issue 16), measured side by side in one run, pgbench -M prepared:
#  - an RM reading the ID numbers (sensitive, unmasked for it) of five of its own customers per
#    statement ÷ the same statement reading `aum` (not sensitive) instead;
#  - a team lead reading five customers of its reports (ID numbers masked for it) ÷ the same with aum;
#  - for each sensitive run: statements executed (pgbench's transactions, one statement each) and the
#    READ_SENSITIVE events that reached crm.audit_log (counted once the audit worker has drained),
#    and the losses the log itself counts ("audit queue overflow" entries).
# Each client is its own pgbench process logged in as its own RM (team lead); the five ids are drawn
# per transaction, distinct, among that RM's customers (that team lead's reports' customers).
# CRM_BENCH_CLIENTS="1 8", CRM_BENCH_SECONDS=10, CRM_BENCH_ROUNDS=3, CRM_BENCH_CUSTOMERS=100000;
# CRM_BENCH_SYNC=on adds a second pass with synchronous_commit = on (the first is always off).
set -euo pipefail
N=${CRM_BENCH_CUSTOMERS:-100000}
T=${CRM_BENCH_SECONDS:-10}
R=${CRM_BENCH_ROUNDS:-3}
CLIENTS=${CRM_BENCH_CLIENTS:-1 8}
SYNC=${CRM_BENCH_SYNC:-off}
STABLE=${CRM_BENCH_DRAIN_STABLE:-3}   # drained: no new event for this many 1 s polls in a row
DRAIN_MAX=${CRM_BENCH_DRAIN_MAX:-120} # ... or give up after this many seconds (reported)
db=crm_bench_reads
q() { psql -X -qAt -d $db "$@"; }
die() { echo "bench/reads_audit.sh: $*" >&2; exit 1; }
for c in $CLIENTS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "CRM_BENCH_CLIENTS must be positive integers, not '$c'"; done
case $SYNC in on|off) ;; *) die "CRM_BENCH_SYNC must be on or off, not '$SYNC'" ;; esac
maxc=$(printf '%s\n' $CLIENTS | sort -n | tail -1)

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null
psql -X -q -d postgres -c "CREATE DATABASE $db"
q -c "SET client_min_messages = warning; CREATE EXTENSION crm CASCADE" >/dev/null
# loading only: crm's audit triggers are switched off in the catalog (a bench-only bypass), so the
# log holds what the benchmark reads and little else
trg="UPDATE pg_trigger SET tgenabled = '%s' WHERE tgname IN ('crm_audit', 'crm_audit_flush') AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'crm_data'::regnamespace)"
q -c "$(printf "$trg" D)" >/dev/null
q -c "SELECT * FROM crm.generate_demo_data($N, 42)" >/dev/null
q -c "$(printf "$trg" A)" >/dev/null
q -c "VACUUM (FREEZE, ANALYZE)" >/dev/null

# one RM and one team lead per client (team leads reused when there are fewer than clients)
mapfile -t rms < <(q -c "SELECT login FROM crm.principal WHERE login ~ '^demo_rm_[0-9]+$' ORDER BY login LIMIT $maxc")
mapfile -t tls < <(q -c "SELECT login FROM crm.principal WHERE login ~ '^demo_tl_[0-9]+$' ORDER BY login LIMIT $maxc")
[ ${#rms[@]} -eq "$maxc" ] || die "$maxc clients need $maxc RMs; the demo bank of $N customers has ${#rms[@]}"
[ ${#tls[@]} -gt 0 ] || die "the demo bank has no team lead"
rm_pids=$(q -c "SELECT array_agg(id)::text FROM crm.principal WHERE login ~ '^demo_rm_[0-9]+$'")
tl_pids=$(q -c "SELECT array_agg(id)::text FROM crm.principal WHERE login ~ '^demo_tl_[0-9]+$'")

tmp=$(mktemp -d)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
script() {  # script FILE COLUMN IDS: five distinct customers drawn from IDS (a bigint[] literal)
  local n a="('$3'::bigint[])"
  n=$(python3 -c "print(len('$3'.strip('{}').split(',')))")
  [ "$n" -ge 5 ] || die "fewer than five customers to draw from ($3)"
  {
    echo "\\set s random(0, $((n - 1)))"
    for v in a b c d e; do echo "\\set $v 1 + permute((:s + $(( $(printf '%d' "'$v") - 97 ))) % $n, $n)"; done
    echo "SELECT id, $2 FROM crm_data.customer WHERE id IN ($a[:a], $a[:b], $a[:c], $a[:d], $a[:e]);"
  } >"$1"
}
for i in $(seq 0 $((maxc - 1))); do
  ids=$(q -c "SELECT array_agg(c.id ORDER BY c.id)::text FROM crm_data.customer c JOIN crm.principal p ON p.id = c.owner_id WHERE p.login = '${rms[$i]}'")
  script "$tmp/rm$i.sens.sql" id_number "$ids"; script "$tmp/rm$i.aum.sql" aum "$ids"
  tl=${tls[$((i % ${#tls[@]}))]}
  ids=$(q -c "SELECT array_agg(c.id ORDER BY c.id)::text FROM crm_data.customer c JOIN crm.principal p ON p.id = c.owner_id JOIN crm.principal t ON t.id = p.manager_id WHERE t.login = '$tl'")
  script "$tmp/tl$i.sens.sql" id_number "$ids"; script "$tmp/tl$i.aum.sql" aum "$ids"
done
rm_book=$(q -c "SELECT count(*) FROM crm_data.customer c JOIN crm.principal p ON p.id = c.owner_id WHERE p.login = '${rms[0]}'")
tl_book=$(q -c "SELECT count(*) FROM crm_data.customer c JOIN crm.principal p ON p.id = c.owner_id JOIN crm.principal t ON t.id = p.manager_id WHERE t.login = '${tls[0]}'")
tl_reports=$(q -c "SELECT count(*) FROM crm.principal p JOIN crm.principal t ON t.id = p.manager_id WHERE t.login = '${tls[0]}'")

# what each actor sees: the RM the ID numbers in clear, the team lead masked, all five rows each
five() { sed -n '$p' "$1" | sed "s/\[:a\]/[1]/; s/\[:b\]/[2]/; s/\[:c\]/[3]/; s/\[:d\]/[4]/; s/\[:e\]/[5]/"; }
rm_seen=$(psql -X -qAt -U "${rms[0]}" -d $db -c "$(five "$tmp/rm0.sens.sql")" | head -1 | cut -d'|' -f2)
tl_seen=$(psql -X -qAt -U "${tls[0]}" -d $db -c "$(five "$tmp/tl0.sens.sql")" | head -1 | cut -d'|' -f2)
[[ -n $rm_seen && $rm_seen != *'*'* ]] || die "the RM ${rms[0]} does not see ID numbers in clear (got '$rm_seen')"
[[ $tl_seen == *'*'* ]] || die "the team lead ${tls[0]} does not see ID numbers masked (got '$tl_seen')"
for f in rm tl; do
  u=${rms[0]}; [ $f = tl ] && u=${tls[0]}
  got=$(psql -X -qAt -U "$u" -d $db -c "$(five "$tmp/${f}0.sens.sql")" | wc -l)
  [ "$got" = 5 ] || die "$u reads $got of five of its customers"
done

# counts in the log: READ_SENSITIVE by RMs, by team leads, losses counted by the log, READ_SENSITIVE
# by anyone else
counts() {
  q -c "SELECT count(*) FILTER (WHERE action = 'READ_SENSITIVE' AND principal_id = ANY ('$rm_pids'::bigint[])),
               count(*) FILTER (WHERE action = 'READ_SENSITIVE' AND principal_id = ANY ('$tl_pids'::bigint[])),
               COALESCE(sum((detail->>'lost_events')::bigint) FILTER (WHERE action = 'MAINTENANCE' AND detail ? 'lost_events'), 0)
          FROM crm.audit_log" | tr '|' ' '
}
# drained: wait until the counts stop growing; prints "rm tl lost seconds-until-the-last-change" (the
# seconds end in + when they were still growing after DRAIN_MAX)
drain() {
  local last cur same=0 start changed
  start=$(date +%s.%N); changed=$start; last=$(counts)
  while [ $same -lt "$STABLE" ]; do
    if python3 -c "import sys; sys.exit(0 if $(date +%s.%N) - $start > $DRAIN_MAX else 1)"; then
      echo "$last $(python3 -c "print(f'{$changed - $start:.0f}+')")"; return
    fi
    sleep 1; cur=$(counts)
    if [ "$cur" = "$last" ]; then same=$((same + 1)); else same=0; last=$cur; changed=$(date +%s.%N); fi
  done
  echo "$last $(python3 -c "print(f'{$changed - $start:.0f}')")"
}
# the aum statements are not sensitive reads: as the RM, none is recorded
read r0 t0 l0 s0 < <(drain)
psql -X -qAt -U "${rms[0]}" -d $db -c "$(five "$tmp/rm0.aum.sql")" >/dev/null
read r1 t1 l1 s1 < <(drain)
[ "$r1" = "$r0" ] || die "reading aum was recorded as READ_SENSITIVE ($((r1 - r0)) events)"

# run WHO KIND CLIENTS: one pgbench process per client, each its own login; prints "tps statements"
run() {
  local pids=() i u
  for i in $(seq 0 $(($3 - 1))); do
    u=${rms[$i]}; [ "$1" = tl ] && u=${tls[$((i % ${#tls[@]}))]}
    pgbench -n -M prepared -U "$u" -c 1 -j 1 -T "$T" -f "$tmp/$1$i.$2.sql" $db >"$tmp/out$i" 2>&1 & pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || { cat "$tmp/out$i" >&2; die "pgbench ($1 $2, client $i) failed"; }; done
  for i in $(seq 0 $(($3 - 1))); do
    grep -q '^tps = ' "$tmp/out$i" || { cat "$tmp/out$i" >&2; die "pgbench ($1 $2, client $i) printed no tps"; }
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p; s/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$tmp/out$i" | paste -sd' '
  done | awk '{ s += $1; t += $2 } END { printf "%.1f %d\n", t, s }'
}

# pass SETTING: every client count, R rounds of: RM sensitive / RM aum / team lead sensitive / team
# lead aum (odd rounds sensitive first, even rounds aum first); prints one table row per client count
pass() {
  local c i w k st ev a b seen
  q -c "ALTER DATABASE $db SET synchronous_commit = $1" >/dev/null
  seen=$(psql -X -qAt -U "${rms[0]}" -d $db -c "SHOW synchronous_commit")
  [ "$seen" = "$1" ] || die "the RM's sessions run with synchronous_commit = $seen, not $1"
  read r0 t0 l0 s0 < <(drain)
  for c in $CLIENTS; do
    declare -A tot=() ratios=() tps=() slow=() rt=()
    for i in $(seq 1 "$R"); do
      for w in rm tl; do
        for k in $( [ $((i % 2)) = 1 ] && echo "sens aum" || echo "aum sens"); do
          read a b < <(run $w $k "$c")
          tps[$w.$k]="${tps[$w.$k]:-} $a"; rt[$k]=$a
          [ $k = aum ] && continue
          st=$b; tot[$w.st]=$(( ${tot[$w.st]:-0} + st ))
          read r1 t1 l1 s1 < <(drain)
          [ $w = rm ] && ev=$((r1 - r0)) || ev=$((t1 - t0))
          tot[$w.ev]=$(( ${tot[$w.ev]:-0} + ev )); tot[$w.lost]=$(( ${tot[$w.lost]:-0} + l1 - l0 ))
          slow[$w]="${slow[$w]:-} ${s1}"
          r0=$r1; t0=$t1; l0=$l1
        done
        ratios[$w]="${ratios[$w]:-} $(python3 -c "print(${rt[sens]} / ${rt[aum]})")"
      done
    done
    python3 - "$c" "${tot[rm.st]}" "${tot[rm.ev]}" "${tot[rm.lost]}" "${tot[tl.st]}" "${tot[tl.ev]}" "${tot[tl.lost]}" \
      "${ratios[rm]}" "${ratios[tl]}" "${tps[rm.sens]}" "${tps[rm.aum]}" "${tps[tl.sens]}" "${tps[tl.aum]}" "${slow[rm]} ${slow[tl]}" "$tmp/rounds.$1" <<'PY'
import statistics as s, sys
c, rst, rev, rlost, tst, tev, tlost = sys.argv[1:8]
f = lambda x: [float(v) for v in x.split()]
rr, tr, rs, ra, ts, ta = (f(x) for x in sys.argv[8:14])
drains = sys.argv[14].split()
pct = lambda e, n: f"{100.0 * int(e) / int(n):.1f}%" if int(n) else "-"
late = max(drains, key=lambda d: float(d.rstrip('+')))
print(f"| {c} | {int(rst):,} | {int(rev):,} (**{pct(rev, rst)}**) | **{s.median(rr):.2f}** ({s.median(rs):,.0f} / {s.median(ra):,.0f} tps) "
      f"| {int(tev):,} of {int(tst):,} ({pct(tev, tst)}) | **{s.median(tr):.2f}** ({s.median(ts):,.0f} / {s.median(ta):,.0f} tps) "
      f"| {int(rlost):,} / {int(tlost):,} | {late} s |")
r = lambda x: ", ".join(f"{v:.2f}" for v in x)
print(f"{c} client{'s' if c != '1' else ''}: RM [{r(rr)}], team lead [{r(tr)}]", file=open(sys.argv[15], "a"))
PY
    unset tot ratios tps slow rt
  done
}

head_row='| clients | RM statements | READ_SENSITIVE recorded | RM sensitive ÷ same query reading `aum` (tps) | team lead recorded (masked reads) | team lead ratio | lost, counted by the log (RM / team lead) | last event after the run |'
sep='|---|---|---|---|---|---|---|---|'
fsync=$(q -c "SHOW fsync")
declare -A table
for setting in off $( [ "$SYNC" = on ] && echo on ); do
  table[$setting]=$(pass "$setting")
done
q -c "ALTER DATABASE $db RESET synchronous_commit" >/dev/null
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null || true

commit=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$(dirname "$0")" status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit + uncommitted changes"
cat <<MD
## Reads on the record (\`bench/reads_audit.sh\`, $N customers, ${T}s pgbench runs, $R interleaved rounds, medians, prepared statements)

One statement per transaction: \`SELECT id, id_number FROM crm_data.customer WHERE id IN (five ids)\`,
the five drawn per transaction, distinct, among the actor's customers; "÷ \`aum\`" is the same statement
reading \`aum\` (not sensitive) instead, run in the same round. Each client is its own pgbench process
logged in as its own RM ($rm_book customers each, ID numbers in clear, e.g. \`${rm_seen:0:6}…\`) or its
own team lead (reads its $tl_reports reports' $tl_book customers, ID numbers masked: \`$tl_seen\`). Recorded:
READ_SENSITIVE events of that run's actors in \`crm.audit_log\` once the audit worker has drained (no
new event for ${STABLE} s), summed over the $R rounds, against pgbench's count of statements; "lost"
sums the \`lost_events\` of the log's "audit queue overflow" entries written meanwhile. Ratios are
medians of per-round ratios (sensitive tps ÷ aum tps, in brackets the median tps of each).
MD
for setting in off $( [ "$SYNC" = on ] && echo on ); do
  printf '\n`synchronous_commit = %s` (fsync = %s):\n\n%s\n%s\n%s\n' "$setting" "$fsync" "$head_row" "$sep" "${table[$setting]}"
  printf '\nRatios of each round (the noise): %s.\n' "$(sed ':a;N;$!ba;s/\n/; /g' "$tmp/rounds.$setting")"
done
cat <<MD

Command: \`CRM_BENCH_CUSTOMERS=$N CRM_BENCH_CLIENTS="$CLIENTS" CRM_BENCH_SECONDS=$T CRM_BENCH_ROUNDS=$R CRM_BENCH_SYNC=$SYNC bash bench/reads_audit.sh\`
against a cluster made by \`scripts/cluster.sh\` (or \`make bench\`), at commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores.
MD
