#!/usr/bin/env bash
# The quick start: installs what is missing, builds, starts a mock Kafka cluster (librdkafka's,
# 3 brokers, topic "demo" with 10 partitions), starts kafka-partition-proxy in front of it,
# produces records through the proxy with kcat and reads them back.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

echo "==> installing what is missing (tools/setup.sh)"
bash tools/setup.sh --skip-node >/dev/null
echo "==> building (build/)"
bash tools/build.sh build -Dbuildtype=release

work="$(mktemp -d /tmp/kpp-demo.XXXXXX)"
cleanup() {
  [[ -n "${proxy_pid:-}" ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null || true
  [[ -n "${mock_pid:-}" ]] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "==> starting the mock cluster: 3 brokers, topic 'demo' with 10 partitions"
mkfifo "$work/mock.in"
sleep infinity > "$work/mock.in" &
keep_open_pid=$!
build/tools/kpp-mock-cluster --brokers 3 --topic demo:10 < "$work/mock.in" > "$work/mock.out" 2> "$work/mock.err" &
mock_pid=$!
for _ in $(seq 100); do grep -q '^BOOTSTRAP' "$work/mock.out" 2>/dev/null && break; sleep 0.1; done
bootstrap="$(sed -n 's/^BOOTSTRAP //p' "$work/mock.out")"
echo "    mock brokers: $bootstrap"

port="$(free_port)"
metrics_port="$(free_port)"
cat > "$work/proxy.yaml" <<YAML
listen:
  address: "127.0.0.1:$port"
  broker_port_base: $((port + 10))
kafka:
  bootstrap_servers: ["${bootstrap%%,*}"]
metrics:
  address: "127.0.0.1:$metrics_port"
logging:
  level: info
YAML
echo "==> starting kafka-partition-proxy on 127.0.0.1:$port (brokers on $((port + 11))..$((port + 13)))"
build/proxy/kafka-partition-proxy -c "$work/proxy.yaml" > "$work/proxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 100); do curl -fs "127.0.0.1:$metrics_port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
sed 's/^/    proxy | /' "$work/proxy.log"

echo "==> what a client sees through the proxy (kcat -L):"
kcat -b "127.0.0.1:$port" -L -t demo | sed 's/^/    /'

echo "==> producing 3 records to each of the 10 partitions through the proxy"
for partition in $(seq 0 9); do
  printf 'hello-%s-a\nhello-%s-b\nhello-%s-c\n' "$partition" "$partition" "$partition" |
    kcat -b "127.0.0.1:$port" -P -t demo -p "$partition"
done

echo "==> reading each partition back through the proxy"
for partition in $(seq 0 9); do
  records="$(kcat -b "127.0.0.1:$port" -C -t demo -p "$partition" -o beginning -e -q | paste -sd' ')"
  echo "    partition $partition: $records"
done

echo "==> proxy metrics (excerpt of http://127.0.0.1:$metrics_port/metrics)"
curl -fs "127.0.0.1:$metrics_port/metrics" | grep -E '^kpp_(requests_total|bytes_total|request_latency_seconds_count)' | sed 's/^/    /'
kill "$keep_open_pid" 2>/dev/null || true
echo "==> done: every record went through kafka-partition-proxy and came back in order"
