#!/usr/bin/env bash
# crm.who_saw() and crm.audit_trail() on a large audit log, and what their indexes cost each insert.
#  - a log of N synthetic entries (default 10,000,000) over twelve monthly partitions, inserted
#    straight into crm.audit_log as superuser (era 1: not this database's, so the sealer leaves them
#    alone): 5 in 6 row changes of 1,000,000 customers, 1 in 6 READ_SENSITIVE listing 1-5 customers,
#    about 1 in 10,000 a digest (500 customers, a random range) and as many a read with the field
#    used in a condition (possible for every customer);
#  - who_saw(x) and audit_trail('customer', x) for 50 customers in one session (each called once
#    before it is timed): median, 90th percentile, max (ms); and the first call of 5 new sessions;
#  - insert cost: the same entries (the log's mix, and row changes only) into two plain tables of the
#    log's columns, one with the log's other indexes and one with audit_log_seen and
#    audit_log_possible too: the backend's CPU time, 5 interleaved rounds, medians.
# Prints a markdown section (make bench).
set -euo pipefail
N=${CRM_BENCH_WHO_SAW_ENTRIES:-10000000}
I=${CRM_BENCH_WHO_SAW_INSERTS:-500000}
db=crm_bench_who_saw
q() { psql -X -qAt -d $db "$@"; }
stats() { python3 -c "
import statistics as s, sys
v = sorted(float(x) for x in sys.argv[1:])
print(f'{s.median(v):.2f} | {v[int(len(v) * 0.9) - 1]:.2f} | {v[-1]:.2f}')" "$@"; }
med() { python3 -c "import statistics as s, sys; print(f'{s.median([float(x) for x in sys.argv[1:]]):.1f}')" "$@"; }
# gen(FROM, TO): the synthetic entries g = FROM..TO, as rows of the log's columns
gen="
SELECT '2025-01-01 00:00+00'::timestamptz + (g::float8 / $N) * interval '364 days' AS logged_at, 1::bigint AS era, g::bigint AS xid,
       CASE WHEN g % 10007 = 0 OR g % 10009 = 0 OR g % 6 = 0 THEN 'READ_SENSITIVE' ELSE 'UPDATE' END AS action,
       'customer'::text AS object,
       CASE WHEN g % 10007 = 0 OR g % 10009 = 0 OR g % 6 = 0 THEN NULL ELSE (g::bigint * 2654435761) % 1000000 + 1 END AS record_id,
       CASE WHEN g % 10007 = 0 THEN jsonb_build_object('rows', 500, 'fields', '[\"id_number\"]'::jsonb, 'records', 500,
                 'customers_range', jsonb_build_array((g::bigint * 40503) % 990000 + 1, (g::bigint * 40503) % 990000 + 10001), 'customers_digest', md5(g::text))
            WHEN g % 10009 = 0 THEN jsonb_build_object('rows', 1, 'fields', '[\"id_number\"]'::jsonb, 'records', 0, 'used_in_condition', true,
                 'ids', 'not recorded: the fields were used in a condition or an inner expression')
            WHEN g % 6 = 0 THEN jsonb_build_object('rows', 1 + g % 5, 'fields', '[\"id_number\"]'::jsonb, 'records', 1 + g % 5,
                 'customers', (SELECT jsonb_agg((g::bigint * 2654435761 + k * 7919) % 1000000 + 1) FROM generate_series(0, g % 5) k))
            ELSE jsonb_build_object('fields', jsonb_build_object('segment', jsonb_build_object('old', 'mass', 'new', 'affluent'))) END AS detail
  FROM generate_series(FROM_, TO_) g"
# CRM_BENCH_KEEP=1: keep the database, and reuse a log of N entries left by an earlier run
if [ -z "${CRM_BENCH_KEEP:-}" ] || [ "$(q -c "SELECT count(*) >= $N FROM crm.audit_log" 2>/dev/null)" != t ]; then
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null
psql -X -q -d postgres -c "CREATE DATABASE $db"
q -c "SET client_min_messages = warning; CREATE EXTENSION crm CASCADE" >/dev/null
for m in 01 02 03 04 05 06 07 08 09 10 11 12; do
  q -c "CREATE TABLE crm.audit_log_y2025m$m PARTITION OF crm.audit_log FOR VALUES FROM ('2025-$m-01 00:00+00') TO (('2025-$m-01 00:00+00'::timestamptz + interval '1 month'))"
done
start=$(date +%s)
for ((b = 1; b <= N; b += 1000000)); do
  e=$((b + 999999)); [ $e -gt $N ] && e=$N
  q -c "INSERT INTO crm.audit_log (logged_at, era, xid, action, object, record_id, detail) $(echo "$gen" | sed "s/FROM_/$b/; s/TO_/$e/")"
done
q -c "VACUUM ANALYZE crm.audit_log"
loaded=$(( $(date +%s) - start ))
fi
echo "## who_saw and audit_trail on a large log (\`bench/who_saw.sh\`)"
echo
echo "A log of $(q -c "SELECT to_char(count(*), 'FM999,999,999') FROM crm.audit_log") entries in $(q -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'crm.audit_log'::regclass") partitions (12 months filled), inserted straight into"
echo "\`crm.audit_log\`${loaded:+ in $loaded s}: $(q -c "SELECT to_char(count(*), 'FM999,999,999') FROM crm.audit_log WHERE action = 'READ_SENSITIVE'") READ_SENSITIVE listing 1-5 of 1,000,000 customers,"
echo "$(q -c "SELECT count(*) FILTER (WHERE detail ? 'customers_digest') || ' digests (500 customers in a range of 10,000) and ' || count(*) FILTER (WHERE detail ? 'used_in_condition') FROM crm.audit_log WHERE action = 'READ_SENSITIVE'")"
echo "reads with the field used in a condition (possible for every customer); the rest row changes."
q -c "SELECT 'Index sizes: ' || string_agg(i || ' ' || pg_size_pretty(s), ', ' ORDER BY i) || '.' FROM (SELECT i, sum(pg_relation_size(c.oid)) s FROM (VALUES ('audit_log_seen'), ('audit_log_possible'), ('audit_log_record'), ('audit_log_xid')) v(i)
        JOIN pg_inherits h ON h.inhparent = ('crm.' || i)::regclass JOIN pg_class c ON c.oid = h.inhrelid GROUP BY i) t"
echo
echo "| call (50 customers, one session, each called once before) | median ms | p90 ms | max ms |"
echo "|---|---|---|---|"
# 50 customers, each called once to warm up and then timed
ids=$(q -c "SELECT string_agg(((g * 7777) % 1000000 + 1)::text, ' ') FROM generate_series(1, 50) g")
for f in who_saw audit_trail; do
  script=""
  for x in $ids; do
    if [ $f = who_saw ]; then c="SELECT count(*) FROM crm.who_saw($x);"; else c="SELECT count(*) FROM crm.audit_trail('customer', $x);"; fi
    script+="$c"$'\n'"\\timing on"$'\n'"$c"$'\n'"\\timing off"$'\n'
  done
  times=$(echo "$script" | q 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
  echo "| \`crm.$f\` | $(stats $times) |"
  [ $f = who_saw ] && ws_med=$(med $times)
done
first=()
for x in $(echo $ids | cut -d' ' -f2-6); do
  first+=($(printf '\\timing on\nSELECT count(*) FROM crm.who_saw(%s);\n' $x | q 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'))
done
echo
x=$(echo $ids | cut -d' ' -f1)
echo "\`crm.who_saw\`: **$ws_med ms** median (target ≤ 10 ms: $(python3 -c "print('pass' if $ws_med <= 10 else 'FAIL')")). The first call in a new session: $(med ${first[@]}) ms"
echo "median of 5 (opening the partitions and their indexes). who_saw($x) returned $(q -c "SELECT count(*) FILTER (WHERE match = 'exact') || ' exact and ' || count(*) FILTER (WHERE match = 'possible') FROM crm.who_saw($x)") possible answers: a call costs"
echo "about the possible events it returns."
echo

# insert cost of the two partial indexes
for t in ins_base ins_new; do
  q -c "DROP TABLE IF EXISTS public.$t; CREATE TABLE public.$t (LIKE crm.audit_log INCLUDING DEFAULTS);
        CREATE INDEX ON public.$t USING brin (era, xid); CREATE INDEX ON public.$t (record_id)" >/dev/null 2>&1
done
q -c "CREATE INDEX ON public.ins_new USING gin ((COALESCE(detail -> 'customers', detail -> 'ids')) jsonb_path_ops) WHERE action IN ('READ_SENSITIVE', 'EXPORT');
      CREATE INDEX ON public.ins_new (id) WHERE action IN ('READ_SENSITIVE', 'EXPORT') AND object = 'customer'
        AND (detail ? 'customers_digest' OR detail ? 'used_in_condition' OR jsonb_typeof(detail -> 'ids') = 'string')" >/dev/null
q -c "DROP TABLE IF EXISTS public.ins_mix, public.ins_rows" >/dev/null 2>&1
q -c "CREATE TABLE public.ins_mix AS $(echo "$gen" | sed "s/FROM_/1/; s/TO_/$I/")" >/dev/null
q -c "CREATE TABLE public.ins_rows AS SELECT * FROM public.ins_mix WHERE action = 'UPDATE'" >/dev/null
echo "Insert cost of the two indexes (\`INSERT ... SELECT\` into plain tables of the log's columns with the log's other"
echo "indexes, without and with \`audit_log_seen\` and \`audit_log_possible\`; the inserting backend's CPU time (user +"
echo "system, from /proc: wall-clock time on a shared machine is noise), 5 interleaved rounds, medians):"
echo
echo "| entries | without, CPU ms | with, CPU ms | with ÷ without | µs more per entry |"
echo "|---|---|---|---|---|"
# the backend's own CPU time in ms (clock ticks of 10 ms)
ticks="SELECT (split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint) * 10 FROM (SELECT pg_read_file('/proc/self/stat') s) t"
for src in ins_mix ins_rows; do
  base=(); new=()
  for r in 1 2 3 4 5; do
    for t in ins_base ins_new; do
      q -c "TRUNCATE public.$t" >/dev/null
      cpu=$(q -c "$ticks" -c "INSERT INTO public.$t (logged_at, era, xid, action, object, record_id, detail) SELECT * FROM public.$src" -c "$ticks" | paste -sd' ' | awk '{print $2 - $1}')
      if [ $t = ins_base ]; then base+=($cpu); else new+=($cpu); fi
    done
  done
  n=$(q -c "SELECT count(*) FROM public.$src")
  b=$(med ${base[@]}); w=$(med ${new[@]})
  what="$n, the log's mix"; [ $src = ins_rows ] && what="$n row changes only"
  echo "| $what | $b | $w | **$(python3 -c "print(f'{$w / $b:.2f}')")** | $(python3 -c "print(f'{($w - $b) * 1000 / $n:.2f}')") |"
done
q -c "DROP TABLE public.ins_base, public.ins_new, public.ins_mix, public.ins_rows" >/dev/null
echo
echo "Command: \`bash bench/who_saw.sh\` against a running cluster (\`CRM_BENCH_WHO_SAW_ENTRIES\`, default 10,000,000;"
echo "\`CRM_BENCH_WHO_SAW_INSERTS\`, default 500,000; \`CRM_BENCH_KEEP=1\` keeps the log for the next run)."
[ -n "${CRM_BENCH_KEEP:-}" ] || psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db"
