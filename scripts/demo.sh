#!/usr/bin/env bash
# The main job, end to end on this machine: set up what the demo uses (.venv and .venvs/seldon, no
# root), start the real Seldon Core model microservice on loopback with the example model, score the
# sample file with the live dashboard, print the summary and timing; the dashboard stays up after the
# batch until Ctrl-C, then the model server is stopped.
#
#   scripts/demo.sh [--port N] [seldon-batch-processor options...]
#     --port N   the dashboard's port on 127.0.0.1 (default $DEMO_PORT, else 8080)
#   Options after it go to the processor, e.g. -t grpc, --batch-interval 0.5, --dashboard-linger 60.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${DEMO_PORT:-8080}
case "${1:-}" in
    --port) [ $# -ge 2 ] || { echo "demo.sh: --port needs a number" >&2; exit 2; }; PORT=$2; shift 2 ;;
    --port=*) PORT=${1#--port=}; shift ;;
esac
case "$PORT" in
    ''|*[!0-9]*) echo "demo.sh: --port $PORT: not a port number" >&2; exit 2 ;;
esac
scripts/setup.sh --demo
read -r HTTP GRPC METRICS < <(.venv/bin/python -c "from tests.servers import free_ports; print(*free_ports(3))")
LOG=$(mktemp)
setsid .venvs/seldon/bin/python scripts/seldon_loopback.py --model-dir examples/models EchoModel \
    --service-type MODEL --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -$SERVER 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 120); do
    .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$HTTP/health/ping', timeout=1)" 2>/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 0.5
done
echo "model microservice on 127.0.0.1:$HTTP (REST) and 127.0.0.1:$GRPC (gRPC)"
echo "dashboard: http://127.0.0.1:$PORT/ (stays up after the batch until Ctrl-C)"
OUT=out/sample.out.txt
mkdir -p out
rm -f "$OUT"  # a file left by an earlier run is never reported as this run's
set +e
.venv/bin/seldon-batch-processor -d echo -g seldon -h "127.0.0.1:$HTTP" \
    -i examples/data/sample.txt -o "$OUT" -w 20 --benchmark \
    --dashboard "tcp:$PORT:interface=127.0.0.1" --dashboard-linger forever "$@"
status=$?
set -e
if [ -f "$OUT" ]; then
    echo "output: $OUT ($(wc -l < "$OUT") lines), exit status $status"
else
    echo "no output was written, exit status $status"
fi
exit $status
