#!/usr/bin/env bash
# TAP: make installcheck (the PGXS convention) against a running server with crm preloaded, here a
# cluster of its own standing for "any server": it can run twice in a row, and leaves no roles,
# databases or settings behind; roles that were there before (a regress_* role of someone else, a
# crm group role) stay. A run cut short (no sql/99_teardown.sql) leaves roles, one a superuser:
# the next full run removes them.
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
cd "$TOP"
tmp=$(mktemp -d /tmp/crm_installcheck.XXXXXX)
trap 'crm_stop_cluster "$tmp"; rm -rf "$tmp"' EXIT

# every role the tests make is a regress_* role that sql/00_setup.sql names
made=$( (grep -ohE "CREATE ROLE [a-z_0-9]+" sql/*.sql | awk '{print $3}'
         grep -ohE "ARRAY\['[a-z_0-9]+'(, '[a-z_0-9]+')*\] LOOP" sql/*.sql | grep -oE "'[a-z_0-9]+'" | tr -d "'") | sort -u)
ok "$(echo "$made" | grep -vc '^regress_')" "0" "every role sql/ makes is named regress_*"
ok "$(for r in $made; do grep -qw "$r" sql/00_setup.sql || echo "$r"; done | tr '\n' ' ')" "" "and sql/00_setup.sql drops each one a run cut short left behind"

crm_start_cluster "$tmp" >/dev/null 2>&1 || { echo "not ok 3 - set-up"; exit 1; }
psql -X -q -d postgres -c "CREATE ROLE regress_someone_else" -c "CREATE ROLE crm_auditor NOLOGIN"
state() {
  psql -X -qAt -d postgres \
    -c "SELECT 'roles: ' || string_agg(rolname || CASE WHEN rolsuper THEN '(super)' ELSE '' END, ',' ORDER BY rolname) FROM pg_roles" \
    -c "SELECT 'databases: ' || string_agg(datname, ',' ORDER BY datname) FROM pg_database" \
    -c "SELECT 'role/database settings: ' || count(*) FROM pg_db_role_setting" \
    -c "SELECT 'ALTER SYSTEM: ' || count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'" | tr '\n' ' '
}
before=$(state)
all=$(ls sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | grep -v '^99_reinstall$' | tr '\n' ' ')
# 99_reinstall (DROP EXTENSION in the regression database) runs in make test's own pass
installcheck() { make -s with_llvm=no PG_CONFIG="$CRM_PG_CONFIG" installcheck REGRESS="$1" EXTRA_REGRESS_OPTS="--outputdir=$tmp/out" 2>&1; }

for run in first second; do
  out=$(installcheck "$all")
  ok "$(echo "$out" | grep -oE 'All [0-9]+ tests passed')" "All $(echo $all | wc -w) tests passed" "make installcheck: the $run run in a row passes"
  [ "$(echo "$out" | grep -c 'tests passed')" = 1 ] || echo "$out" | grep -E 'FAILED|failed' | sed 's/^/# /'
  ok "$(state)" "$before" "after the $run run the roles, databases and settings are as before (others' roles kept)"
done

out=$(installcheck "${all/99_teardown/}")
ok "$(echo "$out" | grep -c 'tests passed')" "1" "a run without sql/99_teardown.sql (as if cut short) passes"
after=$(state)
ok "$(echo "$after" | grep -o 'regress_[a-z_0-9]*(super)' | tr '\n' ' ')" "regress_super(super) " "and leaves roles behind, one of them a superuser"
ok "$(echo "$after" | grep -o 'databases: [^ ]*')" "databases: contrib_regression,postgres,template0,template1" "and its database"
out=$(installcheck "$all")
ok "$(echo "$out" | grep -oE 'All [0-9]+ tests passed')" "All $(echo $all | wc -w) tests passed" "the next full run passes"
# the crm group roles that the cut-short run's CREATE EXTENSION made now count as the server's
ok "$(state | sed 's/crm_admin,//; s/crm_app,//; s/crm_connector,//; s/crm_user,//')" "$before" "and removes what the cut-short run left, but the crm group roles it made"
finish
