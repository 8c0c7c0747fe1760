#!/usr/bin/env bash
# A reference outbox relay: what a connector to an SMS gateway, mail server, WeCom, DingTalk or a
# webhook does, minus the sending. It LISTENs on crm_outbox, claims messages with
# crm.outbox_claim() (SKIP LOCKED: run as many relays as you like), prints what it would send, and
# marks each one done. It claims when a NOTIFY arrives and at least every CRM_RELAY_POLL seconds
# (so retries whose backoff has passed go out too).
#
#   scripts/outbox_relay.sh [psql connection options]     e.g. -d bank -U relay_login
#
# The login needs role crm_connector. CRM_RELAY_ROUNDS=N stops after N rounds (default: run until
# killed); CRM_RELAY_FAIL=channel marks that channel's messages failed instead (to see the backoff).
set -u
poll=${CRM_RELAY_POLL:-5}
rounds=${CRM_RELAY_ROUNDS:-0}
fail=${CRM_RELAY_FAIL:-}

coproc PSQL { psql -X -qAt -F $'\x1f' -v ON_ERROR_STOP=0 "$@" 2>&1; }
out=()
send() {  # run one SQL command in the relay's session; its output lines land in out[]
  out=()
  printf '%s\n\\echo __crm_relay_end__\n' "$1" >&"${PSQL[1]}"
  local line
  while IFS= read -r line <&"${PSQL[0]}"; do
    [ "$line" = "__crm_relay_end__" ] && return 0
    out+=("$line")
  done
  echo "relay: the database session ended" >&2
  exit 1
}

send "LISTEN crm_outbox;"
n=0 waited=$poll
while [ "$rounds" -eq 0 ] || [ "$n" -lt "$rounds" ]; do
  n=$((n + 1))
  if [ "$waited" -ge "$poll" ] || printf '%s\n' "${out[@]}" | grep -q 'Asynchronous notification "crm_outbox"'; then
    waited=0
    send "SELECT id, channel, recipient_kind, coalesce(address, ''), coalesce(subject, ''), replace(body, E'\n', ' '), attempts FROM crm.outbox_claim(50);"
    claimed=("${out[@]}")
    for row in "${claimed[@]}"; do
      case "$row" in *$'\x1f'*) ;; *) echo "relay: $row" >&2; continue ;; esac
      IFS=$'\x1f' read -r id channel kind address subject body attempts <<<"$row"
      if [ -n "$fail" ] && [ "$channel" = "$fail" ]; then
        send "SELECT crm.outbox_failed($id, 'relay told to fail $channel');"
        echo "failed  #$id $channel (attempt $attempts): ${out[*]}"
      else
        echo "send    #$id $channel to ${address:-$kind}${subject:+ [$subject]}: $body"
        send "SELECT crm.outbox_done($id);"
      fi
    done
  fi
  send "SELECT pg_catalog.pg_sleep(1);"
  waited=$((waited + 1))
done
printf '\\q\n' >&"${PSQL[1]}"
wait "$PSQL_PID" 2>/dev/null
