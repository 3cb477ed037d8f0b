#!/usr/bin/env bash
# A model to score against on this machine: the real Seldon Core model microservice (seldon-core 1.18.2, from
# .venvs/seldon, set up if missing, no root) serving the example EchoModel (it answers with its input) on
# 127.0.0.1 only, REST and gRPC each on its own port.
#
#   scripts/serve-model.sh [--rest-port N] [--grpc-port N] [--metrics-port N] [--background]
#   scripts/serve-model.sh --stop [--rest-port N]
#
#   --rest-port N     REST port (default 9000, Seldon's); score with -g seldon -h 127.0.0.1:N
#   --grpc-port N     gRPC port (default 5000, Seldon's); score with -g seldon -h 127.0.0.1:N -t grpc
#   --metrics-port N  the microservice's Prometheus port (default 6000)
#   --background      return once the model answers, leaving it running (its process group id goes to
#                     out/serve-model-REST.pid); `--stop` with the same --rest-port stops it
# Its log is out/serve-model-REST.log while it runs (kept when it fails to start). A port already taken on
# 127.0.0.1, or a model started with --background on the same --rest-port still running, is refused (exit 1).
# Without --background it runs in the foreground until Ctrl-C or SIGTERM (`kill PID`), then stops the
# microservice and every process it forked (they run in a process group of their own).
set -euo pipefail
cd "$(dirname "$0")/.."
REST=9000
GRPC=5000
METRICS=6000
MODE=foreground
while [ $# -gt 0 ]; do
    case "$1" in
        --rest-port|--grpc-port|--metrics-port)
            [ $# -ge 2 ] || { echo "serve-model.sh: $1 needs a port number" >&2; exit 2; }
            case "$1" in --rest-port) REST=$2 ;; --grpc-port) GRPC=$2 ;; *) METRICS=$2 ;; esac
            shift 2 ;;
        --background) MODE=background; shift ;;
        --stop) MODE=stop; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "serve-model.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for port in "$REST" "$GRPC" "$METRICS"; do
    case "$port" in
        ''|*[!0-9]*) echo "serve-model.sh: $port: not a port number" >&2; exit 2 ;;
    esac
done
if [ "$REST" = "$GRPC" ] || [ "$REST" = "$METRICS" ] || [ "$GRPC" = "$METRICS" ]; then
    echo "serve-model.sh: --rest-port $REST, --grpc-port $GRPC and --metrics-port $METRICS must differ" >&2
    exit 2
fi
PIDFILE=out/serve-model-$REST.pid
PY=.venvs/seldon/bin/python

stop_group() {  # SIGTERM the group, SIGKILL what is left after 10 s
    local group=$1
    kill -TERM -- "-$group" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 -- "-$group" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$group" 2>/dev/null || true
}

if [ "$MODE" = stop ]; then
    [ -f "$PIDFILE" ] || { echo "serve-model.sh: no model started with --background on port $REST ($PIDFILE)" >&2; exit 1; }
    stop_group "$(cat "$PIDFILE")"
    rm -f "$PIDFILE" "out/serve-model-$REST.log"
    echo "model microservice on 127.0.0.1:$REST stopped"
    exit 0
fi

if [ -f "$PIDFILE" ] && kill -0 -- "-$(cat "$PIDFILE")" 2>/dev/null; then
    echo "serve-model.sh: a model started with --background still runs on 127.0.0.1:$REST (process group" \
        "$(cat "$PIDFILE")); stop it first: scripts/serve-model.sh --stop --rest-port $REST" >&2
    exit 1
fi
scripts/setup.sh --demo >&2  # a first run installs .venvs/seldon: its progress shows
# A taken port is refused: the microservice would log "Connection in use" while another server answered for it.
taken=$("$PY" - "$REST" "$GRPC" "$METRICS" <<'EOF'
import socket, sys
for port in sys.argv[1:]:
    with socket.socket() as sock:  # SO_REUSEADDR (TIME_WAIT is no owner), not SO_REUSEPORT (gRPC's: it would share)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", int(port)))
        except OSError:
            print(port, end=" ")
EOF
)
if [ -n "$taken" ]; then
    echo "serve-model.sh: port ${taken% } on 127.0.0.1 is already in use (REST $REST, gRPC $GRPC, metrics" \
        "$METRICS): stop what holds it or choose other ports" >&2
    exit 1
fi
mkdir -p out
rm -f "$PIDFILE"  # a stale one: its process group is gone (checked above)
LOG=out/serve-model-$REST.log
setsid "$PY" scripts/seldon_loopback.py --model-dir examples/models EchoModel \
    --service-type MODEL --http-port "$REST" --grpc-port "$GRPC" --metrics-port "$METRICS" >"$LOG" 2>&1 &
SERVER=$!  # setsid runs it as the leader of a new session: its pid is its process group id
if [ "$MODE" = foreground ]; then
    trap 'trap "" INT TERM; stop_group "$SERVER"; rm -f "$LOG"' EXIT  # a second signal must not cut it short
    trap 'exit 130' INT
    trap 'exit 143' TERM
else
    trap 'trap "" INT TERM; stop_group "$SERVER"' EXIT  # until it answers; cleared below
fi
ready=
for _ in $(seq 1 240); do
    # Ready: REST answers and gRPC takes connections while the group just started is alive (the ports were
    # free above, so what answers is ours; a microservice that could not bind one of them has exited).
    if kill -0 -- "-$SERVER" 2>/dev/null && "$PY" -c "
import socket, urllib.request
urllib.request.urlopen('http://127.0.0.1:$REST/health/ping', timeout=1)
socket.create_connection(('127.0.0.1', $GRPC), timeout=1).close()" 2>/dev/null \
            && kill -0 -- "-$SERVER" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$ready" ]; then
    echo "serve-model.sh: the model microservice did not start; its log ($LOG) ends with:" >&2
    tail -n 20 "$LOG" >&2
    trap 'trap "" INT TERM; stop_group "$SERVER"' EXIT  # the log stays for a look
    exit 1
fi
echo "model microservice on 127.0.0.1:$REST (REST) and 127.0.0.1:$GRPC (gRPC); its log: $LOG"
if [ "$MODE" = background ]; then
    echo "$SERVER" > "$PIDFILE"
    trap - EXIT
    echo "stop it with: scripts/serve-model.sh --stop --rest-port $REST"
    exit 0
fi
echo "Ctrl-C (or kill $$) stops it"
wait "$SERVER" || true
