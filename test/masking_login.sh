#!/usr/bin/env bash
# TAP: masking through real logins and client tools: COPY table TO, COPY (query) TO, \copy,
# cursors, and pg_dump --enable-row-security run by a masked login (no real ID number in the dump).
set -u
source "$(dirname "$0")/lib/tap.bash"
db=crm_masking_login
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL' || { echo "not ok 1 - set-up"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ml_tl') THEN CREATE ROLE ml_tl LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ml_rm') THEN CREATE ROLE ml_rm LOGIN; END IF;
END $$;
SELECT crm.add_org_unit('ML HQ') AS hq \gset
SELECT crm.add_principal('ml_tl', 'TL', :hq, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('ml_rm', 'RM', :hq, ARRAY['rm'], :tl) AS rm \gset
INSERT INTO crm_data.customer (owner_id, name, id_type, id_number) VALUES (:rm, '李四', 'id_card', '11010519491231002X');
SQL
real=11010519491231002X
masked='110105********002X'
as() { local who=$1; shift; psql -X -qAt -U "$who" -d $db "$@" 2>&1; }
ok "$(as ml_tl -c 'COPY crm_data.customer TO STDOUT' | grep -cF "$real")" "0" "COPY table TO: no real ID number"
ok "$(as ml_tl -c 'COPY crm_data.customer TO STDOUT' | grep -cF "$masked")" "1" "COPY table TO: the masked one"
ok "$(as ml_tl -c 'COPY (SELECT id_number FROM crm_data.customer) TO STDOUT')" "$masked" "COPY (SELECT ...) TO is masked"
ok "$(as ml_tl -c '\copy (SELECT id_number FROM crm_data.customer) TO STDOUT')" "$masked" "psql's \\copy is masked"
ok "$(as ml_tl -c 'BEGIN' -c 'DECLARE c CURSOR FOR SELECT id_number FROM crm_data.customer' -c 'FETCH c' -c 'COMMIT' | grep -v -e BEGIN -e COMMIT -e DECLARE)" \
   "$masked" "a cursor (DECLARE ... FETCH) is masked"
ok "$(as ml_rm -c 'SELECT id_number FROM crm_data.customer')" "$real" "the owner reads the real value"
# pg_dump as a masked login: it cannot read the identity sequence's state, so it stops; nothing real leaks
out=$(pg_dump -U ml_tl --enable-row-security --data-only -t crm_data.customer -d $db 2>&1)
ok "$(echo "$out" | grep -cF "$real")" "0" "pg_dump --enable-row-security by the masked login holds no real ID number"
out=$(pg_dump -U ml_tl --enable-row-security --data-only -t crm_data.customer --exclude-table-data='crm_data.customer_id_seq' -d $db 2>&1)
ok "$(echo "$out" | grep -cF "$real")$(echo "$out" | grep -cF "$masked")" "01" "with the sequence's state left out it dumps the rows: masked, not real"
ok "$(pg_dump -U ml_tl --data-only -t crm_data.customer -d $db 2>&1 | grep -cF "$real")" "0" \
   "nor without --enable-row-security"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
finish
