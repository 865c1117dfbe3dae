#!/usr/bin/env bash
# Run the nginx + nchan benchmark peer in the foreground on 127.0.0.1:PORT.
#
#   bash scripts/peers/run_nchan.sh 8082            # Ctrl-C / SIGTERM / SIGQUIT stops it
#   NCHAN_PREFIX=/tmp/nchan-x bash scripts/peers/run_nchan.sh 8082   # choose the prefix dir
#
# Renders nchan.conf.template into a fresh prefix dir (mktemp unless NCHAN_PREFIX is
# given; pid file, error.log and temp dirs live there) and execs
#   nginx -c <prefix>/nginx.conf -p <prefix>/
# so the PID of this script becomes nginx's master process. Run setup_nchan.sh first.
set -euo pipefail

port=${1:?usage: run_nchan.sh PORT}
[[ $port =~ ^[0-9]+$ ]] || { echo "run_nchan: PORT must be a number" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nginx_bin=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[[ -x $nginx_bin ]] || { echo "run_nchan: nginx not found; run scripts/peers/setup_nchan.sh" >&2; exit 1; }

prefix=${NCHAN_PREFIX:-$(mktemp -d "${TMPDIR:-/tmp}/nchan-peer.XXXXXX")}
prefix=$(cd "$prefix" 2>/dev/null && pwd || { mkdir -p "$prefix" && cd "$prefix" && pwd; })
mkdir -p "$prefix"/tmp/{body,proxy,fastcgi,uwsgi,scgi} "$prefix"/logs
# nginx workers run as "nobody" when started as root: they must be able to reach the
# temp dirs (nginx chowns the *_temp_path dirs themselves at startup).
chmod 755 "$prefix" "$prefix"/tmp
conns=${NCHAN_WORKER_CONNECTIONS:-16384}
[[ $conns =~ ^[0-9]+$ ]] || { echo "run_nchan: NCHAN_WORKER_CONNECTIONS must be a number" >&2; exit 2; }
hard=$(ulimit -Hn)
nofile=$((conns + 1000))
if [[ $hard != unlimited ]] && ((nofile > hard)); then nofile=$hard; fi
sed -e "s|@PORT@|$port|g" -e "s|@PREFIX@|$prefix|g" -e "s|@CONNS@|$conns|g" -e "s|@NOFILE@|$nofile|g" \
  "$here/nchan.conf.template" >"$prefix/nginx.conf"

# -e: send the startup error log (before the config is read) to the prefix too,
# instead of the compiled-in default.
"$nginx_bin" -t -q -e "$prefix/error.log" -c "$prefix/nginx.conf" -p "$prefix/"
echo "run_nchan: nginx+nchan on http://127.0.0.1:$port (prefix $prefix)" >&2
exec "$nginx_bin" -e "$prefix/error.log" -c "$prefix/nginx.conf" -p "$prefix/"
