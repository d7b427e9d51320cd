#!/usr/bin/env bash
# The quick start: installs what is missing, builds, starts a mock Kafka cluster (librdkafka's,
# 3 brokers, topic "demo" with 10 physical partitions), starts kafka-partition-proxy in front
# of it showing the topic as 100 virtual partitions, produces records to virtual partitions
# with kcat, reads each one back alone, and shows what the physical topic holds.
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

echo "==> starting the mock cluster: 3 brokers, topic 'demo' with 10 partitions (and the proxy's offset store topic __kpr_offsets: the mock cannot create topics)"
mkfifo "$work/mock.in"
sleep infinity > "$work/mock.in" &
keep_open_pid=$!
build/tools/kpp-mock-cluster --brokers 3 --topic demo:10 --topic __kpr_offsets:4 < "$work/mock.in" > "$work/mock.out" 2> "$work/mock.err" &
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
mapping:
  topics:
    demo: { virtual_partitions: 100, physical_partitions: 10 }
YAML
echo "==> starting kafka-partition-proxy on 127.0.0.1:$port (brokers on $((port + 11))..$((port + 13)))"
build/proxy/kafka-partition-proxy -c "$work/proxy.yaml" > "$work/proxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 100); do curl -fs "127.0.0.1:$metrics_port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
sed 's/^/    proxy | /' "$work/proxy.log"

echo "==> the brokers hold topic 'demo' with $(kcat -b "$bootstrap" -L -t demo | grep -c '    partition ') physical partitions;"
echo "    through the proxy (kcat -L) it has $(kcat -b "127.0.0.1:$port" -L -t demo | grep -c '    partition ') partitions:"
kcat -b "127.0.0.1:$port" -L -t demo | sed -n '1,8p;$p' | sed 's/^/    /'
echo "    ..."

demo_partitions="3 13 23 57 99"
echo "==> producing 2 records to each of virtual partitions $demo_partitions through the proxy"
echo "    (3, 13 and 23 all live on physical partition 3; 57 on 7; 99 on 9)"
for partition in $demo_partitions; do
  printf 'hello-%s-a\nhello-%s-b\n' "$partition" "$partition" | kcat -b "127.0.0.1:$port" -P -t demo -p "$partition"
done

echo "==> reading each virtual partition back alone through the proxy (offset: value)"
for partition in $demo_partitions 42; do
  records="$(kcat -b "127.0.0.1:$port" -C -t demo -p "$partition" -o beginning -e -q -f '%o: %s\n' | paste -sd' ')"
  echo "    virtual partition $partition: ${records:-(empty)}"
done

echo "==> physical partition 3 read directly from the mock cluster: every record carries its"
echo "    virtual partition in the kpr.vp header (4-byte big-endian), offsets are shared"
/usr/bin/python3 - "$bootstrap" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "kpp-demo-direct",
                     "enable.auto.commit": False, "enable.partition.eof": True})
consumer.assign([TopicPartition("demo", 3, 0)])
while True:
    message = consumer.poll(10)
    if message is None or message.error():
        break
    tag = dict(message.headers() or []).get("kpr.vp")
    print(f"    offset {message.offset()}: {message.value().decode()}  kpr.vp = "
          f"{int.from_bytes(tag, 'big') if tag else 'none'} (bytes {tag.hex() if tag else '-'})")
consumer.close()
PY

echo "==> proxy metrics (excerpt of http://127.0.0.1:$metrics_port/metrics)"
curl -fs "127.0.0.1:$metrics_port/metrics" | grep -E '^kpp_(requests_total|bytes_total|fetch_scanned_bytes_total|fetch_delivered_bytes_total|produce_tagged_batches_total)' | sed 's/^/    /'
kill "$keep_open_pid" 2>/dev/null || true
echo "==> done: each virtual partition read back exactly its own records, in order"
