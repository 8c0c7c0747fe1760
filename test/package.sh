#!/usr/bin/env bash
# TAP: debian/ builds the postgresql-15-crm package with Debian's PostgreSQL extension tooling
# (pg_buildext and the pgxs_loop debhelper sequence of postgresql-server-dev-all), in a temporary
# copy of the checkout; the package installs with apt-get install ./….deb into the system's
# PostgreSQL 15, a cluster run from the system's binaries preloads it and CREATE EXTENSION crm works
# from it; removing the package removes its files. Needs root (CI runs as root): it installs the
# build tools from Debian's repositories and writes into /usr/lib/postgresql/15. crm files already
# there (from make install) are put back afterwards.
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
cd "$TOP"
if [ "$(id -u)" != 0 ]; then echo "1..0 # SKIP needs root: it installs a package into the system"; exit 0; fi

sys=/usr/lib/postgresql/$PGVER
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" crm.control)
tmp=$(mktemp -d /tmp/crm_package.XXXXXX)
chmod 755 "$tmp"
installed=
cleanup() {
  crm_stop_cluster "$tmp/cluster"
  if [ -n "$installed" ]; then DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq postgresql-$PGVER-crm >/dev/null 2>&1; fi
  # put back what make install had left in the system's PostgreSQL
  [ -s "$tmp/before.tar" ] && tar -xpPf "$tmp/before.tar"
  rm -rf "$tmp"
}
trap cleanup EXIT

# the build tools, from the machine's own Debian repositories
tools=()
command -v dpkg-buildpackage >/dev/null || tools+=(dpkg-dev)
command -v dh >/dev/null || tools+=(debhelper)
[ -f /usr/share/perl5/Debian/Debhelper/Sequence/pgxs_loop.pm ] || tools+=(postgresql-server-dev-all)
command -v fakeroot >/dev/null || tools+=(fakeroot)
if [ ${#tools[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tools[@]}" >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log"; echo "not ok 1 - installing ${tools[*]}"; exit 1; }
fi
missing=$(dpkg-checkbuilddeps 2>&1) || { echo "# $missing"; echo "not ok 1 - build dependencies"; exit 1; }

# a copy of the checkout (tracked files and new ones git does not ignore): no build output in it
mkdir "$tmp/src"
if git -C "$TOP" rev-parse >/dev/null 2>&1; then
  git -C "$TOP" ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
else
  cp -a "$TOP/." "$tmp/src/" && make -C "$tmp/src" -s clean >/dev/null 2>&1
fi
touch "$tmp/stamp"
(cd "$tmp/src" && dpkg-buildpackage -b -us -uc) >"$tmp/build.log" 2>&1
rc=$?
[ "$rc" = 0 ] || tail -40 "$tmp/build.log" | sed 's/^/# /'
ok "$rc" "0" "dpkg-buildpackage builds the package from debian/ (pg_buildext, pgxs_loop)"
deb=$(ls "$tmp"/postgresql-$PGVER-crm_*.deb 2>/dev/null | head -1)
ok "$(dpkg-deb -f "$deb" Package Version 2>&1 | tr '\n' ' ')" "Package: postgresql-$PGVER-crm Version: $version " "it is postgresql-$PGVER-crm, version $version as in crm.control"
ok "$(dpkg-deb -f "$deb" Depends | grep -o "postgresql-$PGVER ([^)]*)" | wc -l)" "1" "it depends on the PostgreSQL $PGVER server"
files=$(dpkg-deb -c "$deb" | awk '{print $6}')
ok "$(echo "$files" | grep -cE "^\./usr/lib/postgresql/$PGVER/lib/crm\.so$|^\./usr/share/postgresql/$PGVER/extension/crm\.control$|^\./usr/share/postgresql/$PGVER/extension/crm--$version\.sql$")" "3" "it holds crm.so, crm.control and crm--$version.sql"
ok "$(echo "$files" | grep -E 'postgresql/[0-9]+' | grep -vc "postgresql/$PGVER/")" "0" "and nothing for another PostgreSQL version"
ok "$(echo "$files" | grep -cE 'doc/postgresql-[0-9]+-crm/(copyright|README\.md(\.gz)?)$')" "2" "with its copyright and README"
ok "$(find "$TOP/debian" "$TOP/src" -newer "$tmp/stamp" | wc -l)" "0" "nothing was written into the checkout's debian/ or src/ (built in a copy)"

# install it (what make install left is kept aside and put back at the end)
before=$(ls -d $sys/lib/crm.so $sys/lib/bitcode/crm $sys/lib/bitcode/crm.index.bc /usr/share/postgresql/$PGVER/extension/crm.control /usr/share/postgresql/$PGVER/extension/crm--*.sql 2>/dev/null)
[ -z "$before" ] || tar -cpf "$tmp/before.tar" -P $before
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >"$tmp/install.log" 2>&1
rc=$?
if [ "$rc" != 0 ]; then cat "$tmp/install.log" | sed 's/^/# /'; DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >>"$tmp/install.log" 2>&1; rc=$?; fi
installed=1
ok "$rc $(dpkg-query -W -f '${Status} ${Version}' postgresql-$PGVER-crm 2>&1)" "0 install ok installed $version" "apt-get install ./postgresql-$PGVER-crm_${version}_*.deb installs it"
ok "$(dpkg -S $sys/lib/crm.so 2>&1 | cut -d: -f1)" "postgresql-$PGVER-crm" "the system's crm.so now belongs to the package"

# a cluster run from the system's binaries, crm preloaded from the package
PGBIN=$sys/bin CRM_PG_ROOT=
crm_start_cluster "$tmp/cluster" >"$tmp/start.log" 2>&1
rc=$?
[ "$rc" = 0 ] || sed 's/^/# /' "$tmp/start.log"
ok "$rc" "0" "a cluster of the system's PostgreSQL starts with shared_preload_libraries = 'crm'"
pid=$(head -1 "$tmp/cluster/data/postmaster.pid" 2>/dev/null)
ok "$(grep -c " $sys/lib/crm.so$" /proc/$pid/maps 2>/dev/null | sed 's/^[1-9][0-9]*$/loaded/')" "loaded" "the server loaded the package's $sys/lib/crm.so"
out=$(psql -X -qAt -v ON_ERROR_STOP=1 -d postgres 2>&1 <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION crm CASCADE;
SELECT extversion FROM pg_extension WHERE extname = 'crm';
SELECT crm.preloaded();
SELECT count(*) > 0 FROM crm.objects WHERE core;
SELECT ok FROM crm.audit_verify();
SQL
)
ok "$(echo "$out" | tr '\n' ' ')" "$version t t t " "CREATE EXTENSION crm CASCADE from the package: version $version, preloaded, core objects made, audit chain verifies"
crm_stop_cluster "$tmp/cluster"

DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq postgresql-$PGVER-crm >/dev/null 2>&1
rc=$?
installed=
ok "$rc $(ls $sys/lib/crm.so /usr/share/postgresql/$PGVER/extension/crm.control 2>/dev/null | wc -l)" "0 0" "apt-get remove removes its files"
finish
