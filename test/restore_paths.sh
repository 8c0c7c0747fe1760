#!/usr/bin/env bash
# TAP: every restore path of docs/backups.md works. A small demo bank, with what a bank adds (a
# custom object, an encrypted field, field levels, a share, a rule, workflows in flight), is dumped
# (pg_dump -Fc and plain SQL) and restored: pg_restore serial, -j 4, --single-transaction and the
# plain dump through psql into databases of the same cluster, and pg_restore -j 4 into a new
# cluster (roles from pg_dumpall --roles-only, the keyring copied). After each: no error; crm's
# catalogs (principals, grants, field levels, rules, workflows, ...) and the business tables row for
# row; the audit entries and blocks that were dumped, identical, the restore's own entries after
# them, and crm.audit_verify() passing; every demo login sees exactly what it saw before.
# Needs PGHOST/PGPORT/PGUSER of a running cluster with crm preloaded (make test provides them).
set -u
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/../scripts/cluster.sh"
tmp=${CRM_TEST_DIR:-$(mktemp -d)}/restore_paths
rm -rf "$tmp"; mkdir -p "$tmp"; chmod 777 "$tmp"
src=bank
# docs/backups.md's commands, block by block (<!-- run: NAME --> before a fenced block), run as they
# are written, in $tmp
doc=$(cd "$(dirname "$0")/.." && pwd)/docs/backups.md
block() { awk -v want="<!-- run: $1 -->" '$0 == want {f = 1; next} f && /^```/ {if (inb) exit; inb = 1; next} f && inb {print}' "$doc"; }
run_block() { [ -n "$(block "$1")" ] || { echo "# no block $1 in docs/backups.md"; return 1; }; (cd "$tmp" && set -e && eval "$(block "$1")"); }
paths="serial j4 single plain"
q() { local db=$1; shift; psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" "$@" 2>&1; }
dropall() { for d in $src bank_restored $(for p in $paths; do echo crm_rp_$p; done); do echo "DROP DATABASE IF EXISTS $d WITH (FORCE);"; done | psql -X -q -d postgres >/dev/null 2>&1; }
dropall
psql -X -q -d postgres -c "CREATE DATABASE $src" >/dev/null

psql -X -q -v ON_ERROR_STOP=1 -d $src >/dev/null 2>"$tmp/setup.err" <<'SQL' || { echo "not ok 1 - set-up"; sed 's/^/#   /' "$tmp/setup.err"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT crm.generate_demo_data(200, 11);
SELECT crm.create_object('loan_application', 'Loan application', 'private', '{}');
SELECT crm.add_field('loan_application', 'customer_id', 'reference', '{"object": "customer", "inherit_access": true}');
SELECT crm.add_field('loan_application', 'amount', 'money', '{"required": true}');
SELECT crm.add_field('customer', 'passport_no', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}');
SELECT crm.set_field_access('customer', 'mobile', 'rm', 'read');
SELECT crm.set_field_access('customer', 'email', 'team_lead', 'hidden', 'write');
SELECT crm.grant_object('rm', 'loan_application', ARRAY['read', 'create', 'edit'], 'own');
SELECT crm.create_rule('churn_alert', 'customer', 'update', 'NEW.aum < OLD.aum * 0.7',
  '[{"type": "create_task", "assignee": "owner_manager", "title": "流失预警: {{name}}", "priority": "high", "due_in_days": 2}]',
  '{"run_as": "demo_admin"}');
SET ROLE demo_rm_00001;
UPDATE crm_data.customer SET passport_no = 'E' || lpad(id::text, 8, '0') WHERE owner_id = crm.current_principal();
INSERT INTO crm_data.loan_application (owner_id, customer_id, amount)
  SELECT owner_id, id, 10000 * id FROM crm_data.customer WHERE owner_id = crm.current_principal();
SELECT crm.share('customer', (SELECT min(id) FROM crm_data.customer WHERE owner_id = crm.current_principal()), 'demo_rm_00002', 'read', NULL, 'cover');
UPDATE crm_data.customer SET aum = aum * 0.5 WHERE id = (SELECT min(id) FROM crm_data.customer WHERE owner_id = crm.current_principal() AND aum > 0);
INSERT INTO crm_data.suitability_override (customer_id, product_id, reason, valid_until)
  SELECT c.id, (SELECT p.id FROM crm_data.product p WHERE p.risk_level = 'R5' ORDER BY p.id LIMIT 1), '专业投资者认定', crm.today() + 365
    FROM crm_data.customer c WHERE c.owner_id = crm.current_principal() ORDER BY c.id LIMIT 3;
SELECT crm.start_workflow('suitability_override', o.id), crm.transition('suitability_override', o.id, 'submit', '请审批')
  FROM crm_data.suitability_override o ORDER BY o.id;
RESET ROLE;
SET ROLE demo_compliance;
SELECT crm.approve(task_id, '同意') FROM crm.my_approvals() ORDER BY task_id LIMIT 1;
RESET ROLE;
SQL

# What is compared, one line each: crm's catalogs and the business tables (count and digest of
# every row), then what every demo login sees (as itself: row security and masks apply).
snapshot() {
  tables "$1"
  local l logins
  logins=$(q "$1" -c "SELECT p.login FROM crm.principal p JOIN pg_roles r ON r.rolname = p.login ORDER BY 1")
  for l in $logins; do
    echo "SET ROLE $l; SELECT '$l ' || count(*) || ' ' || coalesce(md5(string_agg(c::text, E'\\n' ORDER BY c.id)), '-') FROM crm_data.customer c; RESET ROLE;"
  done | psql -X -qAt -v ON_ERROR_STOP=1 -d "$1" 2>&1
}
tables() {
  psql -X -qAt -v ON_ERROR_STOP=1 -d "$1" 2>&1 <<'SQL'
CREATE TEMP TABLE snap (what text);
DO $$
DECLARE t record; r text;
BEGIN
  FOR t IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND (n.nspname = 'crm_data' OR c.oid IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'crm'))
            ORDER BY 1, 2 LOOP
    EXECUTE format('SELECT %L || '' '' || count(*) || '' '' || coalesce(md5(string_agg(x::text, E''\n'' ORDER BY x::text)), ''-'') FROM %I.%I x',
                   t.nspname || '.' || t.relname, t.nspname, t.relname) INTO r;
    INSERT INTO snap VALUES (r);
  END LOOP;
END $$;
SELECT what FROM snap;
SQL
}
# The audit log that came back: the source's entries and blocks (its era) as they were in the
# source, up to the last one dumped; what the restore wrote after them, in its own era. (Entries
# that were not sealed yet when the dump was taken are sealed by the restored database, in a block
# of the source's era that the source itself does not have: only the blocks sealed before the dump
# are compared.)
audit_src_part() {  # DB ERA MAXID MAXBLOCK
  q "$1" -c "SELECT count(*) || ' ' || md5(string_agg(l::text, E'\n' ORDER BY l.id)) FROM crm.audit_log l WHERE l.era = $2 AND l.id <= $3" \
         -c "SELECT count(*) || ' ' || md5(string_agg(b::text, E'\n' ORDER BY b.block_no)) FROM crm.audit_block b WHERE b.era = $2 AND b.block_no <= $4"
}
check_restored() {  # DB LABEL ERRFILE
  local db=$1 label=$2 errs=$3 maxid
  ok "$(grep -v -E '^(NOTICE|psql:[^:]*:[0-9]+: NOTICE):' "$errs" | grep -c .)" 0 "$label: no error or warning"
  grep -v -E 'NOTICE:' "$errs" | head -10 | sed 's/^/#   /'
  ok "$(snapshot "$db")" "$before" "$label: catalogs, business tables and what each demo login sees are as in the source"
  maxid=$(q "$db" -c "SELECT max(id) FROM crm.audit_log WHERE era = $era")
  ok "$([ "${maxid:-0}" -ge "$dumped_upto" ] && echo t)" t "$label: every audit entry written before the dump came back"
  ok "$(audit_src_part "$db" $era "${maxid:-0}" "$dumped_blocks")" "$(audit_src_part $src $era "${maxid:-0}" "$dumped_blocks")" \
     "$label: the source's audit entries and blocks are identical"
  ok "$(q "$db" -c "SELECT count(*) FILTER (WHERE era <> $era AND id <= ${maxid:-0}) FROM crm.audit_log")" 0 \
     "$label: the restore's own audit entries come after the restored ones"
  # as docs/backups.md says: seal, then verify
  ok "$(q "$db" -c "SELECT crm.audit_seal();" -c "SELECT ok, problem FROM crm.audit_verify();" | tail -1)" "t|" "$label: crm.audit_verify() passes"
}

before=$(snapshot $src)
ok "$(echo "$before" | grep -c '^demo_')" "$(q $src -c "SELECT count(*) FROM crm.principal WHERE login LIKE 'demo\_%'")" "set-up: every demo login is compared"
ok "$(echo "$before" | grep -E '^demo_rm_00001 ' | grep -c -v ' 0 ')" 1 "set-up: an RM sees customers"
# entries committed before the dump starts must all come back
sleep 1
era=$(q $src -c "SELECT crm._audit_era()")
dumped_upto=$(q $src -c "SELECT crm.audit_seal()" -c "SELECT max(id) FROM crm.audit_log" | tail -1)
dumped_blocks=$(q $src -c "SELECT max(block_no) FROM crm.audit_block")

run_block dump 2>"$tmp/dump.err"; ok "$?" 0 "pg_dump -Fc and plain SQL, as docs/backups.md says"
# pg_dump warns about the self-references of crm.org_unit (parent) and crm.principal (manager),
# for --data-only dumps: nothing else
ok "$(grep -v -E '^pg_dump: (hint: .*|detail: (org_unit|principal)|warning: there are circular foreign-key constraints on this table:)$' "$tmp/dump.err")" "" \
   "pg_dump: no error, and no warning but the one about self-references"

for p in $paths; do
  db=crm_rp_$p
  run_block $p >/dev/null 2>"$tmp/$p.err"
  ok "$?" 0 "restore $p (docs/backups.md): exit status 0"
  psql -X -q -d postgres -c "ALTER DATABASE bank_restored RENAME TO $db" >/dev/null
  check_restored $db "$p" "$tmp/$p.err"
done

# What a restore session (a superuser, row_security off) is let do, and no more: TRUNCATE only of
# an audit table that holds nothing; crm's catalogs unchecked only for COPY, and only then.
db=crm_rp_serial
err() { q "$@" | grep -m1 -E 'ERROR' | sed 's/^psql:[^E]*//'; }
part=$(q $db -c "SELECT tableoid::regclass FROM crm.audit_log ORDER BY id DESC LIMIT 1")
ok "$(err $db -c "SET row_security = off" -c "TRUNCATE crm.audit_log")" "ERROR:  TRUNCATE audit_log is not allowed" "restore session: TRUNCATE of the log is refused"
ok "$(err $db -c "SET row_security = off" -c "TRUNCATE ONLY $part")" "ERROR:  TRUNCATE ${part#crm.} is not allowed" "restore session: TRUNCATE ONLY of a partition with entries is refused"
ok "$(err $db -c "SET row_security = off" -c "TRUNCATE crm.audit_block")" "ERROR:  TRUNCATE audit_block is not allowed" "restore session: TRUNCATE of the chain is refused"
ok "$(q $db -c "SELECT count(*) > 0 FROM crm.audit_log WHERE tableoid = '$part'::regclass")" t "(the partition still has its entries)"
empty=$(q $db -c "SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'crm.audit_log'::regclass
                  AND c.relname <> 'audit_log_default' AND pg_relation_size(c.oid) = 0 ORDER BY c.relname DESC LIMIT 1")
ok "$(err $db -c "SET ROLE demo_rm_00001" -c "TRUNCATE ONLY $empty")" "ERROR:  TRUNCATE ${empty#crm.} is not allowed" \
   "an empty audit partition: TRUNCATE by a role without the privilege is refused (and takes no lock first)"
ok "$(q $db -c "TRUNCATE ONLY $empty")" "" "TRUNCATE of an empty audit partition (what pg_restore -j does to the tables it made) is allowed"
bad="COPY crm.principal (login, display_name, org_unit_id) FROM PROGRAM 'printf \"ghost\\\\tGhost\\\\t999999\\\\n\"'"
ok "$(err $db -c "$bad")" 'ERROR:  insert or update on table "principal" violates foreign key constraint "principal_org_unit_id_fkey"' \
   "outside a restore session, COPY into crm's catalogs checks their foreign keys"
ok "$(err $db -c "SET row_security = off" -c "INSERT INTO crm.principal (login, display_name, org_unit_id) VALUES ('ghost', 'Ghost', 999999)")" \
   'ERROR:  insert or update on table "principal" violates foreign key constraint "principal_org_unit_id_fkey"' "in a restore session, INSERT into crm's catalogs is still checked"
ok "$(err $db -c "CREATE TABLE public.fk_probe (p bigint)" -c "INSERT INTO public.fk_probe VALUES (999999)" \
          -c "ALTER TABLE public.fk_probe ADD FOREIGN KEY (p) REFERENCES crm.principal (id)")" \
   'ERROR:  insert or update on table "fk_probe" violates foreign key constraint "fk_probe_p_fkey"' "outside a restore session, a foreign key to crm's catalogs checks the rows"

# A parallel restore may add the log's trigger before every partition's rows are in: until the
# log's own indexes are valid (the last partition's index attached), sessions and the audit writer
# write nothing into it. Simulated in a new database by marking audit_log_record invalid, in the
# transaction that installs crm (so that the writer's first look at the database finds it so).
db=crm_rp_loading
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
q $db -c "SET client_min_messages = warning" -c "BEGIN" -c "CREATE EXTENSION crm CASCADE" \
      -c "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'crm.audit_log_record'::regclass" -c "COMMIT" >/dev/null
probe_events() { q $db -c "SELECT count(*) FROM crm.audit_log WHERE detail ->> 'probe' = '$1'"; }
login_seen() { local i; for i in $(seq 1 $2); do
  [ "$(q $db -c "SELECT count(*) FROM crm.audit_log WHERE action = 'LOGIN' AND application_name = '$1'")" != 0 ] && { echo seen; return; }
  sleep 0.5; done; echo "not seen"; }
q $db -c "SELECT crm._audit_event('MAINTENANCE', NULL, NULL, '{\"probe\": \"loading\"}')" >/dev/null
PGAPPNAME=rp_loading psql -X -qAt -d $db -c "SELECT 1" >/dev/null
ok "$(probe_events loading)|$(login_seen rp_loading 8)" "0|not seen" "while the restored log's indexes are not all valid, neither sessions nor the writer write into it"
q $db -c "UPDATE pg_index SET indisvalid = true WHERE indexrelid = 'crm.audit_log_record'::regclass" >/dev/null
q $db -c "SELECT crm._audit_event('MAINTENANCE', NULL, NULL, '{\"probe\": \"loaded\"}')" >/dev/null
ok "$(probe_events loaded)|$(login_seen rp_loading 60)" "1|seen" "once they are, sessions write again and the writer writes the login it held"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1

# A new cluster: the roles first (the bootstrap superuser exists there already), then the keyring,
# then pg_restore -j 4. Its own directory and port; same binaries.
OLD_KEYRING=$(q postgres -c "SHOW crm.keyring")
new=$tmp/cluster2; mkdir -p "$new/keys"; chmod 700 "$new/keys"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$new"
NEW_KEYRING=$new/keys/master.keys
export OLD_KEYRING NEW_KEYRING
old_env=("PGHOST=$PGHOST" "PGPORT=$PGPORT" "PGDATA=${PGDATA:-}")
run_block roles 2>"$tmp/roles.err"; ok "$?" 0 "pg_dumpall --roles-only"
run_block newcluster_keyring 2>"$tmp/keyring.err"; ok "$?" 0 "the keyring copied for the new cluster"
if crm_start_cluster "$new" >"$tmp/cluster2.log" 2>&1; then
  run_block newcluster >/dev/null 2>"$tmp/new.err"
  ok "$?" 0 "restore into a new cluster (docs/backups.md): exit status 0"
  ok "$(grep -c 'ERROR' "$tmp/new.err")" "$(grep -c 'ERROR:  role "postgres" already exists' "$tmp/new.err")" "the only error loading the roles: the bootstrap superuser exists"
  grep -v 'role "postgres" already exists' "$tmp/new.err" > "$tmp/new_restore.err"
  psql -X -q -d postgres -c "ALTER DATABASE bank_restored RENAME TO crm_rp_new" >/dev/null
  src_host=${old_env[0]#PGHOST=}; src_port=${old_env[1]#PGPORT=}
  # the source's side of the comparisons is read from the first cluster
  q() { local db=$1; shift; if [ "$db" = $src ]; then PGHOST=$src_host PGPORT=$src_port psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" "$@" 2>&1;
        else psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" "$@" 2>&1; fi; }
  check_restored crm_rp_new "new cluster" "$tmp/new_restore.err"
  ok "$(q crm_rp_new -c "SET ROLE demo_rm_00001" -c "SELECT count(*) FROM crm_data.customer WHERE passport_no LIKE 'E%'")" \
     "$(q $src -c "SET ROLE demo_rm_00001" -c "SELECT count(*) FROM crm_data.customer WHERE passport_no LIKE 'E%'")" \
     "new cluster: the RM reads the encrypted field in plaintext (the keyring was copied)"
  crm_stop_cluster "$new"
else
  ok "failed" "started" "a new cluster starts"; sed 's/^/#   /' "$tmp/cluster2.log" | tail -5
fi
export "${old_env[@]}"
dropall
rm -rf "$tmp"
finish
