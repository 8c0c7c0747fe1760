#!/usr/bin/env bash
# Shared helpers for make test / make demo / make bench: install what is missing, build and install
# crm, and run a throwaway PostgreSQL 15 cluster as the postgres OS user (initdb refuses root).
# Source this file; it defines functions and sets PGBIN.

PGVER=15
# CRM_PG_ROOT: a private copy of the PostgreSQL install (made by crm_private_root) that crm is
# installed into and run from, so that several checkouts on one machine do not overwrite each
# other's crm.so. Unset: the system's PostgreSQL.
CRM_PG_ROOT=${CRM_PG_ROOT:-}
PGBIN=$CRM_PG_ROOT/usr/lib/postgresql/$PGVER/bin
export CRM_PG_ROOT PGBIN
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '== %s\n' "$*" >&2; }

as_pg() {
  # Run a command as the postgres OS user when we are root, else as ourselves.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# CRM_PG_CONFIG: the pg_config of the PostgreSQL to build against (only 15 is built and tested).
# The install check asks it where things are rather than guessing paths.
CRM_PG_CONFIG=${CRM_PG_CONFIG:-/usr/lib/postgresql/$PGVER/bin/pg_config}
# CRM_INCLUDEDIR: where the system's C headers are (OpenSSL, GSSAPI); a test points it elsewhere.
CRM_INCLUDEDIR=${CRM_INCLUDEDIR:-/usr/include}
export CRM_PG_CONFIG CRM_INCLUDEDIR

# crm_missing_packages: print the Debian packages that the build and the tests need and that are
# not installed, one a line, each keyed on the file that is really used. postgresql-client-15
# ships pg_config and pgxs.mk too, so neither tells that the server headers are there: postgres.h
# in pg_config --includedir-server does.
crm_missing_packages() {
  local pgc=$CRM_PG_CONFIG inc="" share="" bin=""
  if [ -x "$pgc" ]; then
    inc=$("$pgc" --includedir-server 2>/dev/null) || inc=""
    share=$("$pgc" --sharedir 2>/dev/null) || share=""
    bin=$("$pgc" --bindir 2>/dev/null) || bin=""
  fi
  { [ -n "$inc" ] && [ -f "$inc/postgres.h" ]; } || echo postgresql-server-dev-$PGVER
  { [ -n "$bin" ] && [ -x "$bin/postgres" ] && [ -x "$bin/pgbench" ]; } || echo postgresql-$PGVER
  { [ -n "$share" ] && ls "$share"/extension/pgtap*.control >/dev/null 2>&1; } || echo postgresql-$PGVER-pgtap
  command -v pg_prove >/dev/null || echo libtap-parser-sourcehandler-pgtap-perl
  # libpq/libpq-be.h (the client authentication hook) includes gssapi/gssapi.h
  [ -f "$CRM_INCLUDEDIR/gssapi/gssapi.h" ] || echo libkrb5-dev
  # sha256.c uses OpenSSL's SHA-256 block function (the server links the same libcrypto)
  [ -f "$CRM_INCLUDEDIR/openssl/sha.h" ] || echo libssl-dev
  # test/fuzz_sqlsmith.sh fires random queries with sqlsmith
  command -v sqlsmith >/dev/null || echo sqlsmith
  command -v gcc >/dev/null || echo gcc
  command -v make >/dev/null || echo make
  return 0
}

# crm_ensure_packages: install what crm_missing_packages names (as root, from the machine's own
# Debian repositories), or say what to install.
crm_ensure_packages() {
  local need
  need=$(crm_missing_packages | tr '\n' ' ')
  need=${need% }
  [ -n "$need" ] || return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing packages: $need (run as root, or: sudo apt-get install $need)"; return 1
  fi
  log "installing into the system: $need"
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  need=$(crm_missing_packages | tr '\n' ' ')
  [ -z "$need" ] || { log "still missing after apt-get install: $need"; return 1; }
}

# crm_private_root: copy the system's PostgreSQL tree into $CRM_PG_ROOT once (the server finds its
# share and lib directories relative to its own binary).
crm_private_root() {
  [ -n "$CRM_PG_ROOT" ] || return 0
  [ -x "$PGBIN/postgres" ] && return 0
  log "copying PostgreSQL into $CRM_PG_ROOT"
  mkdir -p "$CRM_PG_ROOT/usr/lib/postgresql" "$CRM_PG_ROOT/usr/share/postgresql"
  cp -a /usr/lib/postgresql/$PGVER "$CRM_PG_ROOT/usr/lib/postgresql/"
  cp -a /usr/share/postgresql/$PGVER "$CRM_PG_ROOT/usr/share/postgresql/"
  chmod 755 "$CRM_PG_ROOT"
}

crm_build_install() {
  log "building crm"
  crm_private_root
  local mk=(make -C "$TOP" -s with_llvm=no PG_CONFIG="$CRM_PG_CONFIG")
  "${mk[@]}" >/dev/null
  if [ -n "$CRM_PG_ROOT" ]; then
    log "installing crm into $CRM_PG_ROOT (a private copy of PostgreSQL $PGVER; the system's is untouched)"
    "${mk[@]}" install DESTDIR="$CRM_PG_ROOT" >/dev/null
    return
  fi
  log "installing crm into the system's PostgreSQL $PGVER: $("$CRM_PG_CONFIG" --pkglibdir)/crm.so and $("$CRM_PG_CONFIG" --sharedir)/extension/crm* (set CRM_PG_ROOT to install into a private copy instead)"
  if [ "$(id -u)" = 0 ]; then "${mk[@]}" install >/dev/null
  else sudo "${mk[@]}" install >/dev/null; fi
}

crm_free_port() {
  local p
  for p in $(seq "${1:-55432}" 65000); do
    if ! (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && [ ! -e "/tmp/.s.PGSQL.$p" ]; then echo "$p"; return; fi
  done
  return 1
}

# A cluster directory made by these scripts holds crm-cluster.owner, naming the checkout and the
# user that made it. make test and make demo use a directory only when it is new, empty or made by
# this checkout, and a port only when nothing listens there: they never stop, restart or drop a
# cluster they did not start (another checkout's demo, a system cluster).
crm_owner_tag() { echo "crm cluster made from $TOP by uid $(id -u)"; }
crm_checkout_id() { printf '%s' "$TOP" | sha256sum | cut -c1-8; }

# crm_claim_dir DIR [fresh]: succeed when DIR does not exist or is empty, or (without "fresh") holds
# a cluster this checkout made; else say why and fail.
crm_claim_dir() {
  local dir=$1 fresh=${2:-} owner
  [ -e "$dir" ] || return 0
  [ -d "$dir" ] || { log "$dir exists and is not a directory: choose another CRM_DIR"; return 1; }
  [ -n "$(ls -A "$dir")" ] || return 0
  owner=$(cat "$dir/crm-cluster.owner" 2>/dev/null || echo "no crm-cluster.owner")
  if [ -z "$fresh" ] && [ "$owner" = "$(crm_owner_tag)" ]; then return 0; fi
  if [ -n "$fresh" ]; then
    log "$dir is not empty ($owner); this needs a new or empty directory: it is left alone. Choose another CRM_DIR."
  else
    log "$dir was not made by this checkout ($owner): it is left alone, and so is any server running there. Choose another CRM_DIR."
  fi
  return 1
}

# crm_claim_port PORT: succeed when PORT is a port number nothing listens on (TCP on 127.0.0.1,
# or a socket in /tmp).
crm_claim_port() {
  local p=$1
  if ! [[ "$p" =~ ^[0-9]+$ ]] || [ "$p" -lt 1024 ] || [ "$p" -gt 65535 ]; then
    log "CRM_PORT must be a port number from 1024 to 65535, not '$p'"; return 1
  fi
  if (echo >/dev/tcp/127.0.0.1/"$p") 2>/dev/null || [ -e "/tmp/.s.PGSQL.$p" ]; then
    log "port $p is in use: it is left alone. Choose another CRM_PORT."; return 1
  fi
}

# crm_start_cluster DIR [PORT]: initdb DIR (if new) and start it with crm preloaded.
# Exports PGHOST, PGPORT, PGUSER, PGDATA for the callers.
crm_start_cluster() {
  local dir=$1 port=${2:-}
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  chmod 700 "$dir"
  export PGDATA=$dir/data PGHOST=$dir PGUSER=postgres
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    crm_owner_tag >"$dir/crm-cluster.owner"
    as_pg $PGBIN/initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    cat >>"$PGDATA/postgresql.conf" <<CONF
shared_preload_libraries = 'crm'
unix_socket_directories = '$dir'
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
max_connections = 100
shared_buffers = 256MB
log_min_messages = warning
CONF
  fi
  grep -q "^crm.keyring" "$PGDATA/postgresql.conf" || echo "crm.keyring = '$dir/keys/master.keys'" >>"$PGDATA/postgresql.conf"
  # the master key file lives outside the data directory, readable by the server only
  if [ ! -f "$dir/keys/master.keys" ]; then
    mkdir -p "$dir/keys"
    { echo "# crm master keys: <id> <64 hex digits>; the last line is the current key"
      echo "k1 $(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"; } >"$dir/keys/master.keys"
    chmod 700 "$dir/keys"; chmod 600 "$dir/keys/master.keys"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir/keys"
  fi
  [ -d "$dir/keys" ] && chmod 700 "$dir/keys"
  if as_pg $PGBIN/pg_ctl -D "$PGDATA" status >/dev/null 2>&1; then
    export PGPORT=$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$PGDATA/postgresql.auto.conf" 2>/dev/null | tail -1)
    [ -n "$PGPORT" ] || export PGPORT=$(sed -n '4p' "$PGDATA/postmaster.pid")
    return 0
  fi
  [ -n "$port" ] || port=$(crm_free_port)
  export PGPORT=$port
  as_pg $PGBIN/pg_ctl -D "$PGDATA" -o "-p $port" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { tail -30 "$dir/server.log" >&2; return 1; }
}

crm_stop_cluster() {
  as_pg $PGBIN/pg_ctl -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}
