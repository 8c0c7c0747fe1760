#!/usr/bin/env bash
# TAP: the audit chain and the events that outlive their transaction. Sealing and verification;
# tampering as superuser through a path that bypasses the guards (the triggers switched off in the
# catalog), one kind at a time — edit, delete, insert, reorder, rewrite-and-rehash — each caught and
# named; digests; READ_SENSITIVE, EXPORT, DENIED, ACT_AS, LOGIN and LOGIN_FAILED written by the
# worker, also when their transaction rolls back; who_saw.
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_audit_chain
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ac_rm') THEN CREATE ROLE ac_rm LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ac_app') THEN CREATE ROLE ac_app LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ac_pw') THEN CREATE ROLE ac_pw LOGIN PASSWORD 'right-password'; END IF;
END $$;
GRANT crm_app TO ac_app;
SELECT crm.add_org_unit('AC HQ') AS hq \gset
SELECT crm.add_principal('ac_rm', 'RM', :hq, ARRAY['rm']) AS rm \gset
SQL
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
su() { psql -X -qAt -d $db "$@" 2>&1; }
for i in 1 2 3 4 5; do
  as ac_rm -c "INSERT INTO crm_data.customer (name, id_type, id_number) VALUES ('C$i', 'id_card', crm.make_cn_id_number('110105', '1980-01-0$i', $i))" >/dev/null
done
as ac_rm -c "UPDATE crm_data.customer SET segment = 'affluent'" >/dev/null
su -c "SELECT crm.audit_seal()" >/dev/null
ok "$(su -c "SELECT ok, problem IS NULL FROM crm.audit_verify()")" "t|t" "the sealed log verifies"
ok "$(su -c "SELECT blocks > 0 AND entries >= 10 FROM crm.audit_verify()")" "t" "blocks and entries were checked"
# a seal leaves every complete block range of the log's BRIN index summarized (else each seal would
# reread every range filled since the last vacuum): 20,000 entries fill several ranges; after a seal,
# summarizing again finds at most the partial range at the end
su -c "UPDATE crm_data.customer SET segment = 'mass'; INSERT INTO crm_data.customer (name, owner_id) SELECT 'bulk ' || g, (SELECT id FROM crm.principal WHERE login = 'ac_rm') FROM generate_series(1, 20000) g" >/dev/null
su -c "SELECT crm.audit_seal()" >/dev/null
ok "$(su -c "SELECT sum(pg_catalog.pg_relation_size(i.indrelid) / 8192 / 128) >= 3, sum(pg_catalog.brin_summarize_new_values(i.indexrelid::regclass)) <= 1
              FROM pg_inherits h JOIN pg_index i ON i.indrelid = h.inhrelid JOIN pg_class c ON c.oid = i.indexrelid
              JOIN pg_am a ON a.oid = c.relam AND a.amname = 'brin' WHERE h.inhparent = 'crm.audit_log'::regclass")" "t|t" \
   "a seal summarizes the log's complete BRIN ranges itself (at most the partial last one is left)"
ok "$(su -c "SELECT ok, problem IS NULL FROM crm.audit_verify()")" "t|t" "... and the log still verifies"
su -c "DELETE FROM crm_data.customer WHERE name LIKE 'bulk %'" >/dev/null   # the RM's book as the tests below expect it
digest=$(su -c "SELECT crm.audit_digest()")
ok "$(su -c "SELECT ok FROM crm.audit_verify('$digest'::jsonb)")" "t" "the log extends its own digest"
ok "$(su -c "SELECT crm.audit_verify(jsonb_set('$digest'::jsonb, '{hash}', '\"00\"'))" | grep -c 'signature does not match')" "1" "an edited digest is refused"

# tampering: superuser switches the guards off in the catalog (bypassing the utility hook), then
# changes the log; each in a transaction that is rolled back
bypass="UPDATE pg_trigger SET tgenabled = 'D' WHERE tgname LIKE 'crm_append_only%';"
tamper() { su -c "BEGIN; $bypass $1; SELECT coalesce(first_broken_id::text, '-') || '|' || coalesce(problem, '-') FROM crm.audit_verify(); ROLLBACK;" | tail -1; }
target=$(su -c "SELECT min(id) + 3 FROM crm.audit_log WHERE action = 'INSERT' AND object = 'customer'")
blk=$(su -c "SELECT block_no FROM crm.audit_block WHERE $target = ANY (ids)")
ok "$(tamper "UPDATE crm.audit_log SET detail = '{}' WHERE id = $target")" "$target|entry $target (block $blk) was altered: its hash does not match the chain" "an edited entry is caught and named"
ok "$(tamper "UPDATE crm.audit_log SET logged_at = logged_at + interval '1 second' WHERE id = $target")" "$target|entry $target (block $blk) was altered: its hash does not match the chain" "... even a changed time"
ok "$(tamper "DELETE FROM crm.audit_log WHERE id = $target")" "$target|entry $target of block $blk is missing (deleted or moved out of the block)" "a deleted entry is caught and named"
ok "$(tamper "INSERT INTO crm.audit_log (id, logged_at, xid, era, session_user_name, current_user_name, action) SELECT $target + 100000, logged_at, xid, era, 'x', 'x', 'UPDATE' FROM crm.audit_log WHERE id = $target")" \
   "$((target + 100000))|entry $((target + 100000)) was inserted: block $blk does not hold it" "an inserted entry is caught and named"
read sa sb sblk < <(su -c "SELECT ids[1], ids[2], block_no FROM crm.audit_block WHERE entries >= 2 ORDER BY entries DESC, block_no LIMIT 1" | tr '|' ' ')
ok "$(tamper "UPDATE crm.audit_log SET id = CASE id WHEN $sa THEN $sb ELSE $sa END WHERE id IN ($sa, $sb)")" \
   "$sa|entry $sa (block $sblk) was altered: its hash does not match the chain" "two entries swapped (reordered) are caught"
ok "$(tamper "UPDATE crm.audit_block SET block_hash = ('\\x' || repeat('00', 32))::bytea WHERE block_no = $blk")" \
   "-|block $blk was altered: its hash does not match its contents" "an edited block is caught"
# rewrite and rehash: edit an entry, throw the blocks away and seal again: the log is consistent
# with itself, but no longer extends the digest kept outside
ok "$(su -c "BEGIN; $bypass UPDATE crm.audit_log SET detail = '{}' WHERE id = $target; DELETE FROM crm.audit_block; UPDATE pg_trigger SET tgenabled = 'A' WHERE tgname LIKE 'crm_append_only%'; COMMIT;" >/dev/null; \
      su -c "SELECT crm.audit_seal()" >/dev/null; su -c "SELECT ok FROM crm.audit_verify()")" "t" \
   "(a superuser rewrote an entry and re-sealed everything: the chain agrees with itself)"
ok "$(su -c "SELECT ok || '|' || problem FROM crm.audit_verify('$digest'::jsonb)" | grep -c '^false|.*\(no longer extends the digest\|of the digest is not in the log\)')" \
   "1" "but the digest kept outside catches the rewrite"
ok "$(su -c "SELECT tgenabled FROM pg_trigger WHERE tgname = 'crm_append_only' AND tgrelid = 'crm.audit_log'::regclass")" "A" \
   "(the guards are back on)"

# events that outlive their transaction, written by the worker
wait_for() {  # wait_for SQL: poll until it returns t (at most ~8 s)
  for i in $(seq 1 40); do [ "$(su -c "$1")" = t ] && return 0; sleep 0.2; done; return 1
}
c1=$(su -c "SELECT min(id) FROM crm_data.customer")
start=$(su -c "SELECT coalesce(max(id), 0) FROM crm.audit_log")
as ac_rm -c "BEGIN" -c "SELECT id_number FROM crm_data.customer WHERE id = $c1" -c "ROLLBACK" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'READ_SENSITIVE' AND detail -> 'customers' @> '$c1')"
ok "$?" "0" "READ_SENSITIVE for a read whose transaction rolled back"
ok "$(su -c "SELECT detail -> 'fields' FROM crm.audit_log WHERE id > $start AND action = 'READ_SENSITIVE' ORDER BY id LIMIT 1")" '["id_number"]' "it names the field"
ok "$(su -c "SELECT count(*) FROM crm.who_saw($c1) WHERE action = 'READ_SENSITIVE'")" "1" "who_saw lists it for that customer"
as ac_rm -c "SELECT id, id_number FROM crm_data.customer" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'READ_SENSITIVE' AND record_id IS NULL AND detail -> 'customers' @> '$c1')"
ok "$(su -c "SELECT count(*) > 0 FROM crm.audit_trail('customer', $c1) WHERE action = 'READ_SENSITIVE' AND field IS NULL")" "t" \
   "audit_trail lists a read of many customers that included this one"
as ac_rm -c "SELECT name, segment FROM crm_data.customer" >/dev/null
sleep 1.5
ok "$(su -c "SELECT count(*) FROM crm.audit_log WHERE id > $start AND action = 'READ_SENSITIVE'")" "2" "a query without sensitive fields writes no READ_SENSITIVE"
s2=$(su -c "SELECT coalesce(max(id), 0) FROM crm.audit_log")
as ac_rm -c "SELECT (SELECT c.id_number) FROM crm_data.customer c WHERE c.id = $c1" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $s2 AND action = 'READ_SENSITIVE' AND detail -> 'fields' ? 'id_number')"
ok "$?" "0" "a sensitive field read through an outer reference (sub-select) is a READ_SENSITIVE too"
s3=$(su -c "SELECT coalesce(max(id), 0) FROM crm.audit_log")
as ac_rm -c "SELECT count(*) FROM crm_data.customer WHERE id_number LIKE '1101%'" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $s3 AND action = 'READ_SENSITIVE' AND detail ->> 'ids' LIKE 'not recorded%')"
ok "$?" "0" "so is a sensitive field used only in a condition (a predicate reveals values too)"
s5=$(su -c "SELECT coalesce(max(id), 0) FROM crm.audit_log")
cmax=$(su -c "SELECT max(id) FROM crm_data.customer")
ok "$(as ac_rm -c "SELECT id_number, 1/(id - $cmax) FROM crm_data.customer" -c "SELECT 'alive'" | tail -1)" "alive" \
   "a statement that fails after reading sensitive rows (the event is written while the transaction aborts)"
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $s5 AND action = 'READ_SENSITIVE' AND current_user_name = 'ac_rm' AND detail -> 'customers' @> '$cmax')"
ok "$?" "0" "... is still a READ_SENSITIVE, with the rows it read"
s4=$(su -c "SELECT coalesce(max(id), 0) FROM crm.audit_log")
big=$(for i in $(seq 1 140); do printf 'SELECT 1 FROM crm_data.opportunity UNION ALL '; done)
as ac_rm -c "COPY ($big SELECT 1) TO STDOUT" >/dev/null
as ac_rm -c "SELECT id_number FROM crm_data.customer WHERE id = $c1" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $s4 AND action = 'READ_SENSITIVE')"
ok "$?" "0" "an event too big for the queue does not make the others be lost"
ok "$(su -c "SELECT detail ->> 'truncated' FROM crm.audit_log WHERE id > $s4 AND action = 'EXPORT'")" "true" "(it is kept, marked truncated)"
as ac_rm -c "COPY (SELECT id, name FROM crm_data.customer) TO STDOUT" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'EXPORT' AND detail ->> 'how' = 'COPY TO')"
ok "$?" "0" "COPY ... TO of a managed table: EXPORT"
as ac_rm -c "SELECT * FROM crm.audit_log" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'DENIED' AND detail ->> 'statement' LIKE '%crm.audit_log%')"
ok "$?" "0" "a statement refused for want of privilege: DENIED, with the statement"
as ac_app -c "BEGIN" -c "SELECT crm.act_as('ac_rm')" -c "ROLLBACK" >/dev/null
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'ACT_AS' AND detail ->> 'app_login' = 'ac_app')"
ok "$?" "0" "act_as: ACT_AS, also when rolled back"
PGPASSWORD=wrong-password psql -X -qAt -h 127.0.0.1 -U ac_pw -d $db -c "SELECT 1" >/dev/null 2>&1
PGPASSWORD=right-password psql -X -qAt -h 127.0.0.1 -U ac_pw -d $db -c "SELECT 1" >/dev/null 2>&1
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'LOGIN_FAILED' AND session_user_name = 'ac_pw' AND client_addr = '127.0.0.1')"
ok "$?" "0" "a failed login (no transaction at all): LOGIN_FAILED with the address"
wait_for "SELECT EXISTS (SELECT 1 FROM crm.audit_log WHERE id > $start AND action = 'LOGIN' AND session_user_name = 'ac_pw')"
ok "$?" "0" "a login: LOGIN"
su -c "SELECT crm.audit_seal()" >/dev/null; sleep 1.2; su -c "SELECT crm.audit_seal()" >/dev/null
ok "$(su -c "SELECT ok FROM crm.audit_verify()")" "t" "the worker's entries are chained too"
ok "$(su -c "SELECT crm.audit_retention('2 months')")" "{}" "retention has nothing older than two months to detach"
ok "$(su -c "SELECT crm._audit_detach('audit_log_y' || to_char(now() AT TIME ZONE 'UTC', 'YYYY\"m\"MM'))" | grep -c 'is not a partition that ended more than a month ago')" "1" \
   "the current month cannot be detached, not even by hand"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
