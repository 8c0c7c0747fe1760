#!/usr/bin/env bash
# TAP: make demo and make test never touch a cluster they did not start. A directory that holds
# another checkout's cluster (or a cluster these scripts did not make), or a port something
# listens on, is refused before anything is installed, built, stopped or dropped; CRM_DIR and
# CRM_PORT are checked, not trusted. The cluster of the make test that runs this stays up.
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
cd "$TOP"
outer_host=$PGHOST outer_port=$PGPORT
foreign=$(mktemp -d /tmp/crm_foreign.XXXXXX)
new=$(mktemp -d /tmp/crm_claim.XXXXXX); rmdir "$new"
trap 'crm_stop_cluster "$foreign"; rm -rf "$foreign" "$new"' EXIT

# someone else's demo: a running cluster with a database of theirs
crm_start_cluster "$foreign" >/dev/null 2>&1 || { echo "not ok 1 - set-up"; exit 1; }
echo "crm cluster made from /elsewhere/checkout by uid 1234" >"$foreign/crm-cluster.owner"
psql -X -q -d postgres -c "CREATE DATABASE someone_demo"
fport=$PGPORT
pid_before=$(head -1 "$foreign/data/postmaster.pid")
foreign_state() {  # postmaster pid, their database, any crm_demo made there
  echo "$(head -1 "$foreign/data/postmaster.pid" 2>/dev/null)" \
       "$(psql -X -qAt -h "$foreign" -p "$fport" -d postgres -c "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname IN ('someone_demo', 'crm_demo')")"
}
export PGHOST=$outer_host PGPORT=$outer_port

out=$(CRM_DIR=$foreign CRM_DEMO_CUSTOMERS=10 bash scripts/demo.sh 2>&1); rc=$?
ok "$rc" "1" "make demo with CRM_DIR holding another checkout's cluster fails"
ok "$(echo "$out" | grep -c "was not made by this checkout (crm cluster made from /elsewhere/checkout by uid 1234): it is left alone")" "1" "and says whose it is and that it is left alone"
ok "$(echo "$out" | grep -c 'building crm\|installing')" "0" "before building or installing anything"
ok "$(foreign_state)" "$pid_before someone_demo" "that cluster was not restarted and its databases are as they were (no crm_demo)"

rm "$foreign/crm-cluster.owner"
out=$(CRM_DIR=$foreign CRM_DEMO_CUSTOMERS=10 bash scripts/demo.sh 2>&1); rc=$?
ok "$rc $(echo "$out" | grep -c 'no crm-cluster.owner')" "1 1" "a cluster these scripts did not make at all is refused too"
ok "$(foreign_state)" "$pid_before someone_demo" "and left running as it was"

out=$(CRM_DIR=$foreign CRM_TEST_ONLY=test/none.sh bash scripts/test.sh 2>&1); rc=$?
ok "$rc $(echo "$out" | grep -c "is not empty.*left alone")" "1 1" "make test with a CRM_DIR that is not empty fails and says so"
ok "$(foreign_state)" "$pid_before someone_demo" "and does not touch the cluster there"

out=$(CRM_DIR=$new CRM_PORT=$outer_port CRM_DEMO_CUSTOMERS=10 bash scripts/demo.sh 2>&1); rc=$?
ok "$rc $(echo "$out" | grep -c "port $outer_port is in use")" "1 1" "make demo with a CRM_PORT in use (this test's own cluster) fails and says so"
ok "$([ -e "$new" ] && echo made || echo absent)" "absent" "without making its directory"
out=$(CRM_DIR=$new CRM_PORT=$fport CRM_TEST_ONLY=test/none.sh bash scripts/test.sh 2>&1); rc=$?
ok "$rc $(echo "$out" | grep -c "port $fport is in use")" "1 1" "make test with a CRM_PORT in use fails and says so"
out=$(CRM_DIR=$new CRM_PORT="5432; rm -rf /" bash scripts/demo.sh 2>&1); rc=$?
ok "$rc $(echo "$out" | grep -c "CRM_PORT must be a port number")" "1 1" "a CRM_PORT that is not a number is refused"
ok "$(psql -X -qAt -d postgres -c 'SELECT 1')" "1" "the cluster of the make test running this is still up"

# what the checks accept: a new or empty directory, and this checkout's own cluster directory
mkdir -p "$new"
crm_claim_dir "$new"; ok "$?" "0" "an empty directory is accepted"
crm_owner_tag >"$new/crm-cluster.owner"
crm_claim_dir "$new" >/dev/null 2>&1; ok "$?" "0" "this checkout's own cluster directory is accepted by make demo"
crm_claim_dir "$new" fresh >/dev/null 2>&1; ok "$?" "1" "but not by make test, which starts a fresh cluster"
crm_claim_port "$(crm_free_port 56000)"; ok "$?" "0" "a free port is accepted"
finish
