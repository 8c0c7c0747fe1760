#!/usr/bin/env bash
# TAP: the install check (crm_missing_packages in scripts/cluster.sh, used by make test, make demo
# and make bench) and the Makefile key on what the build really needs. postgresql-client-15 ships
# pg_config and pgxs.mk but no server headers: a machine that has only it must be told to install
# postgresql-server-dev-15, not be sent to the compiler. Simulated with a pg_config whose
# --includedir-server (and --sharedir) is an empty directory, and an empty system include directory.
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
tmp=$(mktemp -d /tmp/crm_instcheck.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
real=$CRM_PG_CONFIG
mkdir -p "$tmp/empty" "$tmp/bin" "$tmp/path"
# what postgresql-client-15 alone gives: pg_config and pgxs.mk, and directories without the files
cat >"$tmp/bin/pg_config" <<SH
#!/bin/sh
case "\$1" in
  --includedir-server) echo "$tmp/empty/server" ;;
  --sharedir) echo "$tmp/empty/share" ;;
  *) exec "$real" "\$@" ;;
esac
SH
chmod 755 "$tmp/bin/pg_config"

missing() { crm_missing_packages | tr '\n' ' ' | sed 's/ $//'; }
has() { case " $1 " in *" $2 "*) echo yes ;; *) echo no ;; esac; }

ok "$(missing)" "" "on this machine (after make test installed what it needs) nothing is missing"
ok "$("$real" --pgxs | xargs test -f && echo yes)" "yes" "pgxs.mk is there (postgresql-client-15 ships it too), so it cannot be the key"

out=$(CRM_PG_CONFIG=$tmp/bin/pg_config missing)
ok "$(has "$out" postgresql-server-dev-15)" "yes" "server headers not in pg_config --includedir-server: postgresql-server-dev-15 is missing"
ok "$(has "$out" postgresql-15-pgtap)" "yes" "no pgtap.control under pg_config --sharedir: postgresql-15-pgtap is missing"
ok "$(has "$out" libssl-dev)$(has "$out" libkrb5-dev)" "nono" "the system headers are there: OpenSSL and GSSAPI are not reported"

out=$(CRM_INCLUDEDIR=$tmp/empty missing)
ok "$out" "libkrb5-dev libssl-dev" "an include directory without gssapi/gssapi.h and openssl/sha.h: exactly libkrb5-dev and libssl-dev"

out=$(CRM_PG_CONFIG=$tmp/nothing/pg_config missing)
ok "$(has "$out" postgresql-server-dev-15)$(has "$out" postgresql-15)" "yesyes" "no pg_config at all: the server and its headers are missing"

# pg_prove and sqlsmith are looked up on PATH: a PATH with only the other tools
for t in ls gcc make tr sed; do ln -s "$(command -v $t)" "$tmp/path/$t"; done
out=$(PATH=$tmp/path missing)
ok "$out" "libtap-parser-sourcehandler-pgtap-perl sqlsmith" "no pg_prove or sqlsmith on PATH: exactly their packages"

# not root: say what to install and fail, install nothing
nonroot=(); [ "$(id -u)" = 0 ] && nonroot=(runuser -u postgres --)
out=$("${nonroot[@]}" env CRM_PG_CONFIG="$tmp/bin/pg_config" bash -c "source '$TOP/scripts/cluster.sh'; crm_ensure_packages" 2>&1)
rc=$?
ok "$rc $(echo "$out" | grep -c 'missing packages: postgresql-server-dev-15')" "1 1" "not root: crm_ensure_packages fails and names postgresql-server-dev-15"

# the Makefile: a clear message instead of 'postgres.h: No such file or directory'
out=$(make -C "$TOP" PG_CONFIG="$tmp/bin/pg_config" 2>&1)
rc=$?
ok "$rc" "2" "make with a client-only pg_config fails"
ok "$(echo "$out" | grep -c 'PostgreSQL server headers are missing.*postgresql-server-dev-15')" "1" "and says which package to install"
ok "$(echo "$out" | grep -c 'No such file')" "0" "before the compiler runs"
out=$(make -C "$TOP" PG_CONFIG="$tmp/nothing/pg_config" installcheck 2>&1)
ok "$? $(echo "$out" | grep -c 'does not name a PostgreSQL with PGXS')" "2 1" "make installcheck with no pg_config says so"
finish
