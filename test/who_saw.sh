#!/usr/bin/env bash
# TAP: what READ_SENSITIVE records, and crm.who_saw(). An RM's unmasked read is an event with its
# customers' ids; a team lead's read of its reports' customers (ID numbers masked) records nothing;
# a masked field in the select list with the field in a condition (WHERE, sort key, grouping, an
# outer reference) is an event marked used_in_condition; a read of more than crm.audit_max_ids
# customers is a digest with its range. who_saw marks each answer exact or possible (with the
# reason), and on a log of 200,000 entries its plan (and audit_trail's) uses the indexes, with the
# same answers as a scan of the whole log.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_who_saw
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ws_tl') THEN CREATE ROLE ws_tl LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ws_rm') THEN CREATE ROLE ws_rm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ws_co') THEN CREATE ROLE ws_co LOGIN; END IF;
END $$;
SELECT crm.add_org_unit('WS HQ') AS hq \gset
SELECT crm.add_principal('ws_tl', 'TL', :hq, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('ws_rm', 'RM', :hq, ARRAY['rm'], :tl) AS rm \gset
SELECT crm.add_principal('ws_co', 'Compliance', :hq, ARRAY['compliance']) AS co \gset
-- 120 customers of the RM (more than crm.audit_max_ids), then one of the team lead's own
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number)
  SELECT :rm, 'C' || g, 'id_card', crm.make_cn_id_number('110105', '1980-01-01'::date + g, g) FROM generate_series(1, 120) g;
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number)
  VALUES (:tl, 'TL own', 'id_card', crm.make_cn_id_number('110105', '1970-05-05', 7));
SQL
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
su() { psql -X -qAt -d $db "$@" 2>&1; }
wait_for() {  # wait_for SQL: poll until it returns t (at most ~10 s)
  for i in $(seq 1 50); do [ "$(su -c "$1")" = t ] && return 0; sleep 0.2; done; return 1
}
last() { su -c "SELECT coalesce(max(id), 0) FROM crm.audit_log"; }
# read_events WHO START: the READ_SENSITIVE details of WHO since START, once a marker read (an RM's
# unmasked read of one customer) queued after them has arrived
marker=0
read_events() {
  marker=$((marker + 1))
  as ws_rm -c "SELECT id_number, $marker AS marker FROM crm_data.customer WHERE id = $c1" >/dev/null
  wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $2 AND action = 'READ_SENSITIVE' AND current_user_name = 'ws_rm')" \
    || echo "# the marker event did not arrive"
  su -c "SELECT coalesce(string_agg(detail::text, ' | ' ORDER BY id), 'none') FROM crm.audit_log
          WHERE id > $2 AND action = 'READ_SENSITIVE' AND current_user_name = '$1'"
}
c1=$(su -c "SELECT min(id) FROM crm_data.customer")
c2=$((c1 + 1)); c3=$((c1 + 2)); c120=$((c1 + 119))
tlc=$(su -c "SELECT id FROM crm_data.customer WHERE name = 'TL own'")

# an RM reads its own customers: exact ids
s=$(last)
as ws_rm -c "SELECT id_number FROM crm_data.customer WHERE id IN ($c2, $c3)" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND detail -> 'customers' = '[$c2, $c3]')"
ok "$?" "0" "an RM's unmasked read: READ_SENSITIVE with the customers' ids"
ok "$(su -c "SELECT detail ? 'used_in_condition' FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND detail -> 'customers' = '[$c2, $c3]'")" "f" \
   "(the field was only returned: not marked used_in_condition)"
rm_read=$(su -c "SELECT id FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND detail -> 'customers' = '[$c2, $c3]'")

# a team lead reads its reports' customers: ID numbers masked, nothing recorded
s=$(last)
ok "$(as ws_tl -c "SELECT id_number FROM crm_data.customer WHERE id = $c2")" "110105********$(su -c "SELECT right(id_number, 4) FROM crm_data.customer WHERE id = $c2")" \
   "(the team lead sees the ID number masked)"
as ws_tl -c "SELECT c.id_number, c.name FROM crm_data.customer c WHERE c.owner_id <> crm.current_principal() ORDER BY c.id_number" >/dev/null
as ws_tl -c "SELECT id_number, count(*) FROM crm_data.customer WHERE owner_id <> crm.current_principal() GROUP BY id_number" >/dev/null
as ws_tl -c "SELECT c FROM crm_data.customer c WHERE c.id < $c3" >/dev/null
as ws_tl -c "SELECT n FROM (SELECT id_number AS n FROM crm_data.customer WHERE id <> $tlc) s WHERE n LIKE '1101%'" >/dev/null
as ws_tl -c "PREPARE p AS SELECT id_number FROM crm_data.customer WHERE id < $c3" -c "EXECUTE p" -c "EXECUTE p" -c "EXECUTE p" \
   -c "EXECUTE p" -c "EXECUTE p" -c "EXECUTE p" -c "EXECUTE p" >/dev/null
ok "$(read_events ws_tl $s)" "none" \
   "a team lead's masked reads (select list, sorted or grouped by it, whole rows, through a sub-query, prepared): no READ_SENSITIVE"

# ... its own customer it reads unmasked: exact
s=$(last)
as ws_tl -c "SELECT id_number FROM crm_data.customer WHERE id IN ($c1, $tlc)" >/dev/null
ok "$(read_events ws_tl $s)" "{\"rows\": 2, \"fields\": [\"id_number\"], \"records\": 1, \"customers\": [$tlc]}" \
   "the team lead's read of its own customer with a masked one: READ_SENSITIVE with its own customer's id only"

# the raw field in a condition (the team lead reads it unmasked on its own records): recorded
s=$(last)
as ws_tl -c "SELECT id_number FROM crm_data.customer WHERE id_number LIKE '110105%' AND id IN ($c1, $c2)" >/dev/null
ok "$(read_events ws_tl $s)" \
   '{"ids": "not recorded: the fields were used in a condition or an inner expression", "rows": 2, "fields": ["id_number"], "records": 0, "used_in_condition": true}' \
   "masked in the select list but used in WHERE: READ_SENSITIVE, used_in_condition, no ids"
cond=$(su -c "SELECT max(id) FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND current_user_name = 'ws_tl'")
for q in "SELECT id_number FROM crm_data.customer WHERE id < $c3 ORDER BY upper(id_number)" \
         "SELECT count(*) FROM crm_data.customer GROUP BY id_number" \
         "SELECT 1 FROM crm_data.customer c WHERE EXISTS (SELECT 1 WHERE c.id_number LIKE '1%')" \
         "SELECT id_number FROM crm_data.customer c JOIN crm_data.customer d USING (id_number) WHERE c.id < $c3" \
         "SELECT 1 FROM crm_data.customer c WHERE c::text LIKE '%110105%'"; do
  s=$(last)
  as ws_tl -c "$q" >/dev/null
  ok "$(read_events ws_tl $s | grep -c '"used_in_condition": true')" "1" "used elsewhere, recorded: $q"
done

# an RM: returned and used in a condition: its ids, and marked
s=$(last)
as ws_rm -c "SELECT id_number FROM crm_data.customer WHERE id_number LIKE '110105%' AND id IN ($c1, $c2)" >/dev/null
ok "$(read_events ws_rm $s | cut -d'|' -f1 | sed 's/ *$//')" "{\"rows\": 2, \"fields\": [\"id_number\"], \"records\": 2, \"customers\": [$c1, $c2], \"used_in_condition\": true}" \
   "an RM's read returning the field and filtering on it: its ids, marked used_in_condition"
rm_cond=$(su -c "SELECT min(id) FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND detail ? 'used_in_condition'")

# more customers than crm.audit_max_ids: a digest and a range
s=$(last)
as ws_rm -c "SELECT id_number FROM crm_data.customer" >/dev/null
digest=$(su -c "SELECT min(id) FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND detail ? 'customers_digest'")
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND detail ? 'customers_digest')"
digest=$(su -c "SELECT min(id) FROM crm.audit_log WHERE id > $s AND action = 'READ_SENSITIVE' AND detail ? 'customers_digest'")
ok "$(su -c "SELECT detail -> 'records', detail -> 'customers_range', detail ? 'customers' FROM crm.audit_log WHERE id = $digest")" "120|[$c1, $c120]|f" \
   "a read of 120 customers (crm.audit_max_ids = 100): their count, range and digest, no list"

# who_saw: exact and possible, with reasons
ok "$(su -c "SELECT match || ':' || coalesce(reason, '-') FROM crm.who_saw($c2) WHERE id = $rm_read")" "exact:-" "who_saw: the RM's read is exact for a customer it listed"
ok "$(su -c "SELECT count(*) FROM crm.who_saw($c1) WHERE id = $rm_read")" "0" "... and absent for one it did not"
ok "$(su -c "SELECT match || ':' || reason FROM crm.who_saw($c2) WHERE id = $cond")" "possible:condition" "a read that used the field in a condition: possible, reason condition"
ok "$(su -c "SELECT match || ':' || reason FROM crm.who_saw($c2) WHERE id = $digest")" "possible:digest" "a read of more than crm.audit_max_ids customers: possible, reason digest"
ok "$(su -c "SELECT count(*) FROM crm.who_saw($tlc) WHERE id = $digest")" "0" "... but not for a customer outside its range"
ok "$(su -c "SELECT match || ':' || coalesce(reason, '-') FROM crm.who_saw($c1) WHERE id = $rm_cond")" "exact:-" \
   "a read that lists the customer and used the field in a condition: exact for the customers it lists"
ok "$(su -c "SELECT match || ':' || reason FROM crm.who_saw($c3) WHERE id = $rm_cond")" "possible:condition" "... and possible for the others"
ok "$(su -c "SELECT count(*) FILTER (WHERE match = 'exact') > 0, count(*) FILTER (WHERE match NOT IN ('exact', 'possible')), count(*) FILTER (WHERE (match = 'exact') <> (reason IS NULL))
             FROM crm.who_saw($c2)")" "t|0|0" "every answer is exact (no reason) or possible (with one)"
ok "$(su -c "SELECT count(*) FROM crm.who_saw($c2) w JOIN crm.audit_log l USING (id) WHERE l.current_user_name = 'ws_tl' AND w.match = 'exact'")" "0" \
   "the team lead never saw that customer's ID number unmasked: no exact answer for it"
s=$(last)
as ws_co -c "SELECT crm.subject_export($c3)" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $s AND action = 'EXPORT' AND record_id = $c3)"
ok "$(su -c "SELECT string_agg(match, ',') FROM crm.who_saw($c3) w WHERE w.id > $s AND w.action = 'EXPORT'")" "exact" "a subject export names its customer: exact"

# indexes: a log of 200,000 entries in three monthly partitions (era 1: not this database's, so the
# sealer leaves them alone), mostly row changes, 1 in 20 a read with its customers' ids, a few
# digests and condition reads
su >/dev/null <<'SQL'
CREATE TABLE crm.audit_log_y2020m01 PARTITION OF crm.audit_log FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-02-01 00:00+00');
CREATE TABLE crm.audit_log_y2020m02 PARTITION OF crm.audit_log FOR VALUES FROM ('2020-02-01 00:00+00') TO ('2020-03-01 00:00+00');
CREATE TABLE crm.audit_log_y2020m03 PARTITION OF crm.audit_log FOR VALUES FROM ('2020-03-01 00:00+00') TO ('2020-04-01 00:00+00');
INSERT INTO crm.audit_log (logged_at, era, xid, action, object, record_id, detail)
SELECT '2020-01-01 00:00+00'::timestamptz + g * interval '40 seconds', 1, g,
       CASE WHEN g % 20 = 0 OR g % 997 = 0 OR g % 1009 = 0 THEN 'READ_SENSITIVE' ELSE 'UPDATE' END, 'customer',
       CASE WHEN g % 20 = 0 OR g % 997 = 0 OR g % 1009 = 0 THEN NULL ELSE g % 20000 END,
       CASE WHEN g % 997 = 0 THEN jsonb_build_object('rows', 500, 'fields', '["id_number"]'::jsonb, 'records', 500,
                                                     'customers_range', jsonb_build_array(g % 20000, g % 20000 + 1000), 'customers_digest', md5(g::text))
            WHEN g % 1009 = 0 THEN jsonb_build_object('rows', 3, 'fields', '["id_number"]'::jsonb, 'records', 0, 'used_in_condition', true,
                                                      'ids', 'not recorded: the fields were used in a condition or an inner expression')
            WHEN g % 20 = 0 THEN jsonb_build_object('rows', 3, 'fields', '["id_number"]'::jsonb, 'records', 3,
                                                    'customers', jsonb_build_array(g % 19997, g % 19997 + 1, g % 19997 + 2))
            ELSE jsonb_build_object('fields', jsonb_build_object('segment', jsonb_build_object('old', 'mass', 'new', 'affluent'))) END
  FROM generate_series(1, 200000) g;
ANALYZE crm.audit_log;
SQL
plan() {  # plan FUNCTION(TYPES) ARGS: the plan of a crm SQL function's body, planned as the function is (generic, its settings)
  local body
  # (a SQL function's body, or the query of a PL/pgSQL one's RETURN QUERY)
  body=$(su -c "SELECT CASE WHEN prosrc ~ 'RETURN QUERY' THEN substring(prosrc from 'RETURN QUERY(.*);') ELSE prosrc END
                  FROM pg_proc WHERE oid = 'crm.$1'::regprocedure")
  su -c "SELECT count(set_config(split_part(c, '=', 1), substr(c, strpos(c, '=') + 1), false)) FROM pg_proc, unnest(proconfig) c
          WHERE oid = 'crm.$1'::regprocedure" \
     -c "SET plan_cache_mode = force_generic_plan" -c "PREPARE b(${1#*(} AS $body" -c "EXPLAIN (COSTS OFF) EXECUTE b($2)"
}
# (the small partitions of this month and the next, nearly empty, may be read whole)
p=$(plan "who_saw(bigint)" "12345")
ok "$(echo "$p" | grep -c 'Seq Scan on audit_log_y2020')" "0" "who_saw on a 200,000-entry log: no sequential scan"
ok "$(echo "$p" | grep -c 'Bitmap Index Scan on audit_log_y2020m0[123]_coalesce_idx')" "3" "... the ids it lists: the GIN index (audit_log_seen) of each partition"
ok "$(echo "$p" | grep -c 'Index Scan using audit_log_y2020m0[123]_id_idx')" "3" "... the events that list none: the partial index (audit_log_possible)"
p=$(plan "audit_trail(text,bigint)" "'customer', 12345")
ok "$(echo "$p" | grep -c 'Seq Scan on audit_log_y2020')" "0" "audit_trail: no sequential scan either"
ok "$(echo "$p" | grep -c 'Bitmap Index Scan on audit_log_y2020m0[123]_coalesce_idx')" "3" "... its read events' arm uses the GIN index"
# the same answers as a scan of the whole log, written independently
for x in 12345 3 19999; do
  ok "$(su -c "SELECT string_agg(id || match, ',' ORDER BY id) FROM crm.who_saw($x)")" \
     "$(su -c "SET enable_indexscan = off; SET enable_bitmapscan = off;
               SELECT string_agg(id || m, ',' ORDER BY id) FROM (
                 SELECT id, CASE WHEN record_id = $x OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(
                                    CASE WHEN jsonb_typeof(detail -> 'customers') = 'array' THEN detail -> 'customers' END) e WHERE e::bigint = $x)
                                 THEN 'exact'
                                 WHEN detail ? 'customers_digest' AND $x NOT BETWEEN (detail -> 'customers_range' ->> 0)::bigint AND (detail -> 'customers_range' ->> 1)::bigint THEN NULL
                                 WHEN detail ? 'customers_digest' OR detail ? 'used_in_condition' OR jsonb_typeof(detail -> 'ids') = 'string' THEN 'possible' END m
                   FROM crm.audit_log WHERE action IN ('READ_SENSITIVE', 'EXPORT') AND object = 'customer') t WHERE m IS NOT NULL")" \
     "who_saw($x) on the large log: the same events and marks as a full scan"
done
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
