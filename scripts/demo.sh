#!/usr/bin/env bash
# The main job, end to end on this machine: set up, start the real Seldon Core model
# microservice on loopback with the example model, score the sample file with the
# dashboard on http://127.0.0.1:8080/, print the summary and timing, stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
read -r HTTP GRPC METRICS < <(.venv/bin/python -c "from tests.servers import free_ports; print(*free_ports(3))")
LOG=$(mktemp)
setsid .venvs/seldon/bin/python scripts/seldon_loopback.py --model-dir examples/models EchoModel \
    --service-type MODEL --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -$SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$HTTP/health/ping', timeout=1)" 2>/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 0.5
done
echo "model microservice on 127.0.0.1:$HTTP (REST) and 127.0.0.1:$GRPC (gRPC); dashboard on ${DASHBOARD:-tcp:8080:interface=127.0.0.1}"
mkdir -p out
set +e
.venv/bin/seldon-batch-processor -d echo -g seldon -h "127.0.0.1:$HTTP" \
    -i examples/data/sample.txt -o out/sample.out.txt -w 20 --benchmark \
    --dashboard "${DASHBOARD:-tcp:8080:interface=127.0.0.1}" "$@"
status=$?
set -e
echo "output: out/sample.out.txt ($(wc -l < out/sample.out.txt) lines), exit status $status"
exit $status
