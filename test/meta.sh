#!/usr/bin/env bash
# TAP: the release metadata agrees with crm.control (where the version lives): META.json (PGXN)
# and the LICENSE (the PostgreSQL License), and claims PostgreSQL 15 only.
set -u
source "$(dirname "$0")/../scripts/cluster.sh"
source "$(dirname "$0")/lib/tap.bash"
cd "$TOP"
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" crm.control)
meta() { perl -MJSON::PP -e 'local $/; my $m = decode_json(<STDIN>); print eval "\$m->$ARGV[0]" // "(none)"' "$1" <META.json 2>&1; }
ok "$(meta '{name}')" "crm" "META.json parses and names crm"
ok "$(meta '{version}')" "$version.0" "META.json's version is crm.control's ($version) as semver"
ok "$(meta '{provides}{crm}{version}')" "$version.0" "so is the version of the extension it provides"
ok "$(meta '{provides}{crm}{file}')" "crm.control" "it points at crm.control"
ok "$(meta '{prereqs}{runtime}{requires}{PostgreSQL}')" ">= 15.0.0, < 16.0.0" "it claims PostgreSQL 15 only"
ok "$(meta '{license}')" "postgresql" "META.json's license is postgresql"
ok "$(head -1 LICENSE)" "PostgreSQL License" "LICENSE is the PostgreSQL License"
ok "$(grep -c 'Permission to use, copy, modify, and distribute this software' LICENSE debian/copyright | tr '\n' ' ')" "LICENSE:1 debian/copyright:1 " "its grant is in LICENSE and in debian/copyright"
ok "$(cat debian/pgversions)" "$PGVER" "debian/pgversions builds for PostgreSQL $PGVER only"
ok "$(grep -c '^Package: postgresql-PGVERSION-crm$' debian/control.in) $(grep -c "^Package: postgresql-$PGVER-crm$" debian/control)" "1 1" "debian/control is debian/control.in for $PGVER (pg_buildext updatecontrol)"
finish
