#!/bin/sh
# ao-node: the roles of one ao image in a cluster where the PKI and the
# join tokens are shared through directories (deploy/compose):
#
#   ao-node init                  the cluster CA and admin credential in $AO_PKI (once)
#   ao-node controller <name>     `ao controller run` on the shared CA, advertised as https://<name>:7070
#   ao-node tokens <worker>…      a join line per worker in $AO_JOIN/<worker>, once the controllers serve
#   ao-node worker <name>         join with $AO_JOIN/<name> (first start only), then `ao worker run`
#
# AO_PKI (default /pki) and AO_JOIN (default /join) are those directories;
# AO_CONTROLLER lists every controller, AO_STORE is the controllers' etcd.
set -eu
pki="${AO_PKI:-/pki}"
join="${AO_JOIN:-/join}"
role="${1:-}"
[ $# -gt 0 ] && shift
case "$role" in
  init)
    if [ -e "$pki/ca.crt" ]; then
      echo "ao-node: a cluster CA exists in $pki; keeping it" >&2
    else
      ao controller init --pki-dir "$pki"
    fi
    ;;
  controller)
    name="${1:?usage: ao-node controller <name>}"
    exec ao controller run --pki-dir "$pki" --listen 0.0.0.0:7070 --advertise "https://$name:7070"
    ;;
  tokens)
    mkdir -p "$join"
    i=0
    until ao --credentials "$pki/admin" worker ls >/dev/null 2>&1; do
      i=$((i + 1))
      [ "$i" -le 120 ] || { echo "ao-node: no controller answered at $AO_CONTROLLER within 60 s" >&2; exit 1; }
      sleep 0.5
    done
    for worker in "$@"; do
      [ -s "$join/$worker" ] && continue
      ao --credentials "$pki/admin" token create --ttl 1h > "$join/$worker.part"
      mv "$join/$worker.part" "$join/$worker"
      echo "ao-node: a join token for $worker is in $join/$worker" >&2
    done
    ;;
  worker)
    name="${1:?usage: ao-node worker <name>}"
    shift
    if [ ! -e "$AO_HOME/pki/worker/tls.crt" ]; then
      # The line `ao token create` printed: ao worker join <url> --token <t> --ca-hash <h>
      set -- $(cat "$join/$name") "$@"
      url="$4" token="$6" hash="$8"
      shift 8
      echo "$token" | ao worker join "$url" --token - --ca-hash "$hash" --id "$name"
    fi
    exec ao worker run "$@"
    ;;
  *)
    echo "usage: ao-node init | controller <name> | tokens <worker>… | worker <name> [ao worker run flags]" >&2
    exit 2
    ;;
esac
