#!/usr/bin/env bash
# The main job, end to end on this machine: set up what the demo uses (.venv and .venvs/seldon, no
# root), start the real Seldon Core model microservice on loopback with the example model, score the
# sample file with the live dashboard, print the summary and timing; the dashboard stays up after the
# batch until Ctrl-C, then the model server is stopped. The batch is paced (--max-rate, default 80/s: about
# 25 s) so the dashboard can be watched moving; `--max-rate R` after the options (or $DEMO_RATE) changes it.
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
RATE=${DEMO_RATE:-80}  # 2,000 lines at 80 requests/s: about 25 s to watch the dashboard move
read -r HTTP GRPC METRICS < <(.venv/bin/python -c "from tests.servers import free_ports; print(*free_ports(3))")
trap 'scripts/serve-model.sh --stop --rest-port "$HTTP" >/dev/null 2>&1' EXIT
trap 'exit 143' TERM  # a SIGTERM (e.g. from a test) still stops the model server
scripts/serve-model.sh --background --rest-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" | grep -v '^stop it with'
echo "dashboard: http://127.0.0.1:$PORT/ (stays up after the batch until Ctrl-C, or as --dashboard-linger says)"
OUT=out/sample.out.txt
mkdir -p out
rm -f "$OUT"  # a file left by an earlier run is never reported as this run's
set +e
MODEL_PORT=$HTTP  # gRPC has its own port: -t grpc goes there
prev=
for arg in "$@"; do
    case "$prev $arg" in
        "-t grpc"|"--transport grpc"|*" --transport=grpc"|*" -tgrpc") MODEL_PORT=$GRPC ;;
        "-t rest"|"--transport rest"|*" --transport=rest"|*" -trest") MODEL_PORT=$HTTP ;;
    esac
    prev=$arg
done
.venv/bin/seldon-batch-processor -d echo -g seldon -h "127.0.0.1:$MODEL_PORT" \
    -i examples/data/sample.txt -o "$OUT" -w 20 --benchmark --max-rate "$RATE" \
    --dashboard "tcp:$PORT:interface=127.0.0.1" --dashboard-linger forever "$@"
status=$?
set -e
if [ -f "$OUT" ]; then
    echo "output: $OUT ($(wc -l < "$OUT") lines), exit status $status"
else
    echo "no output was written, exit status $status"
fi
exit $status
