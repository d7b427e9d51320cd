"""Reload without restart (issue 14; DESIGN.md section 7, "Reload").

Through the proxy on the 2.0.2 mock:
- under load (an idempotent producer and a consumer group committing as it goes), SIGHUP with
  a file that raises V from 100 to 200 and adds a topic rule: the new partitions appear in
  Metadata, the producer writes to them, no client connection is closed, and every record is
  consumed exactly once from the virtual partition it was produced to;
- a file with a mistake is refused with the key named, and nothing changes;
- lowering V is refused at reload (POST /reload answers 409 naming the topic) and at the
  next start-up (the offset store recorded the topic's V);
- the admin views (/admin/mapping, /admin/shards, /admin/store), POST /drain, and
  `--check-config`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import kpp_testbed as tb
import vp_support as vp

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="reload is the proxy's")

PHYSICAL = 10


def mapping(virtual: int, extra_rule: str = "") -> str:
    return ("metrics_extra_placeholder\n"
            "mapping:\n"
            '  tag_header: "kpr.vp"\n'
            "  topics:\n"
            f'    "rl-.*": {{ virtual_partitions: {virtual}, physical_partitions: {PHYSICAL} }}\n'
            + extra_rule)


class ReloadProxy(tb.Proxy):
    """The test bed's proxy with the admin actions on, its file rewritable."""

    def _config_text(self) -> str:
        text = super()._config_text()
        # admin_endpoints goes under the `metrics:` section the test bed writes.
        text = text.replace("metrics:\n", "metrics:\n  admin_endpoints: true\n", 1)
        return text.replace("metrics_extra_placeholder\n", "")

    def rewrite(self, extra_config: str) -> None:
        self.extra_config = extra_config
        self.config_path.write_text(self._config_text())

    def post(self, path: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}{path}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def admin_json(self, path: str) -> dict:
        status, body = self.http_get(path, timeout_s=10)
        assert status == 200, (path, status, body)
        return json.loads(body)


def partition_count(bootstrap: str, topic: str) -> int:
    metadata = vp.metadata_of(bootstrap, [topic])
    return len(metadata.topics[topic].partitions)


class ClientLog(logging.Handler):
    """librdkafka's log lines (a dropped connection is logged as "Disconnected")."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def logger(self, name: str) -> logging.Logger:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return logger


@pytest.fixture
def reload_setup(tmp_path):
    cluster = tb.MockCluster("mock202", tmp_path)
    proxies: list[ReloadProxy] = []

    def start(name: str, extra: str) -> ReloadProxy:
        proxy = ReloadProxy(cluster, tmp_path, name, extra)
        proxies.append(proxy)
        return proxy

    yield cluster, start, tmp_path
    for proxy in proxies:
        proxy.stop()
    cluster.stop()


def test_raising_v_under_load_loses_nothing_and_drops_no_connection(reload_setup):
    import confluent_kafka

    cluster, start, _ = reload_setup
    topic = tb.unique_name("rl-load")
    assert cluster.create_topic(topic, PHYSICAL) == PHYSICAL
    proxy = start("reload-proxy", mapping(100))
    assert partition_count(proxy.bootstrap, topic) == 100

    errors: list[str] = []
    client_log = ClientLog()
    sent: dict[str, int] = {}  # value -> virtual partition
    acked: dict[str, int] = {}
    stop_producing = threading.Event()
    high_partitions_known = threading.Event()

    def on_error(error):
        errors.append(str(error))

    producer = confluent_kafka.Producer({
        "bootstrap.servers": proxy.bootstrap, "enable.idempotence": True, "linger.ms": 5,
        "topic.metadata.refresh.interval.ms": 1000, "error_cb": on_error,
        "logger": client_log.logger(tb.unique_name("rl-producer"))})

    def on_delivery(error, message):
        if error is None:
            acked[message.value().decode()] = message.partition()
        else:
            errors.append(f"delivery: {error}")

    def produce():
        index = 0
        while not stop_producing.is_set():
            partitions = 200 if high_partitions_known.is_set() else 100
            value = f"r-{index}"
            partition = (index * 7) % partitions
            sent[value] = partition
            producer.produce(topic, value=value.encode(), partition=partition, on_delivery=on_delivery)
            producer.poll(0)
            index += 1
            time.sleep(0.004)
        producer.flush(60)

    consumed: dict[str, list[tuple[int, int]]] = {}
    stop_consuming = threading.Event()
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": proxy.bootstrap, "group.id": tb.unique_name("rl-group"),
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "error_cb": on_error,
        "topic.metadata.refresh.interval.ms": 1000, "session.timeout.ms": 10000,
        "logger": client_log.logger(tb.unique_name("rl-consumer"))})
    consumer.subscribe([topic])

    def consume():
        while not stop_consuming.is_set():
            messages = consumer.consume(num_messages=200, timeout=0.5)
            for message in messages:
                if message.error():
                    errors.append(f"consume: {message.error()}")
                    continue
                consumed.setdefault(message.value().decode(), []).append((message.partition(), message.offset()))
            if messages:
                consumer.commit(asynchronous=False)

    producing = threading.Thread(target=produce, daemon=True)
    consuming = threading.Thread(target=consume, daemon=True)
    producing.start()
    consuming.start()
    time.sleep(4)

    other = tb.unique_name("rl-other")
    proxy.rewrite(mapping(200, f'    "{other}": {{ virtual_partitions: 30, physical_partitions: 3 }}\n'))
    os.kill(proxy.process.pid, signal.SIGHUP)
    tb.wait_until(lambda: "reload (SIGHUP) applied" in proxy.log_tail(200), 30, "the reload's log line")
    assert f"{topic} V 100 -> 200" in proxy.log_tail(200)
    assert partition_count(proxy.bootstrap, topic) == 200
    assert cluster.create_topic(other, 3) == 3
    tb.wait_until(lambda: partition_count(proxy.bootstrap, other) == 30, 30, "the new rule's partitions")

    tb.wait_until(lambda: len(producer.list_topics(topic, timeout=5).topics[topic].partitions) == 200, 30,
                  "the producer to learn 200 partitions")
    high_partitions_known.set()
    time.sleep(5)
    stop_producing.set()
    producing.join(90)
    assert not producing.is_alive()

    def all_consumed():
        return all(value in consumed for value in acked)
    tb.wait_until(all_consumed, 90, "every acknowledged record consumed")
    stop_consuming.set()
    consuming.join(30)
    dropped = [line for line in client_log.lines if "Disconnected" in line or "Connection refused" in line]
    assert not dropped, dropped[:5]
    # The log route works: both clients logged the new partition count.
    assert sum("partition count changed from 100 to 200" in line for line in client_log.lines) >= 2, \
        client_log.lines[-10:]
    consumer.close()

    assert not [error for error in errors if "Disconnected" in error or "delivery" in error], errors[:10]
    assert len(acked) == len(sent), (len(acked), len(sent))
    assert any(partition >= 100 for partition in acked.values()), "nothing was produced to the new partitions"
    duplicates = {value: reads for value, reads in consumed.items() if len(reads) > 1}
    assert not duplicates, list(duplicates.items())[:5]
    for value, partition in acked.items():
        assert consumed[value][0][0] == partition, (value, partition, consumed[value])
    # Order within each virtual partition: the producer's order.
    by_partition: dict[int, list[tuple[int, int]]] = {}
    for value, reads in consumed.items():
        index = int(value.split("-")[1])
        by_partition.setdefault(reads[0][0], []).append((reads[0][1], index))
    for partition, entries in by_partition.items():
        indexes = [index for _, index in sorted(entries)]
        assert indexes == sorted(indexes), f"virtual partition {partition} out of order"


def test_a_bad_file_or_a_lower_v_is_refused_and_changes_nothing(reload_setup):
    cluster, start, _ = reload_setup
    topic = tb.unique_name("rl-guard")
    assert cluster.create_topic(topic, PHYSICAL) == PHYSICAL
    proxy = start("guard-proxy", mapping(100))
    assert partition_count(proxy.bootstrap, topic) == 100
    good_file = proxy.config_path.read_text()

    # A mistake: the key is named, nothing changes.
    proxy.config_path.write_text(good_file.replace("physical_partitions: 10", "physical_partitions: ten"))
    status, body = proxy.post("/reload")
    assert status == 409 and "refused, nothing changed" in body and "physical_partitions" in body, body
    os.kill(proxy.process.pid, signal.SIGHUP)
    tb.wait_until(lambda: "reload (SIGHUP) refused" in proxy.log_tail(100), 30, "the refusal's log line")
    assert partition_count(proxy.bootstrap, topic) == 100

    # Lowering V strands records: refused with the topic named.
    proxy.rewrite(mapping(50))
    status, body = proxy.post("/reload")
    assert status == 409 and topic in body and "cannot lower V" in body, body
    assert partition_count(proxy.bootstrap, topic) == 100
    # Changing P too.
    proxy.config_path.write_text(good_file.replace("physical_partitions: 10", "physical_partitions: 5"))
    status, body = proxy.post("/reload")
    assert status == 409 and topic in body and "cannot change P" in body, body

    # Raising V works, and is what the store now remembers.
    proxy.rewrite(mapping(150))
    status, body = proxy.post("/reload")
    assert status == 200 and f"{topic} V 100 -> 150" in body, body
    assert partition_count(proxy.bootstrap, topic) == 150
    view = proxy.admin_json("/admin/mapping")
    entry = next(item for item in view["topics"] if item["topic"] == topic)
    assert entry == {"topic": topic, "rule": "mapping.topics.rl-.*", "virtual_partitions": 150,
                     "physical_partitions": PHYSICAL, "physical_seen": PHYSICAL,
                     "recorded_virtual_partitions": 150}, entry
    proxy.stop()

    # A restart with a lower V is refused: the offset store recorded 150.
    with pytest.raises(AssertionError, match="exited during start-up"):
        start("guard-proxy-lower", mapping(100))
    log = (proxy.log_path.parent / "guard-proxy-lower.log").read_text()
    assert topic in log and "cannot lower V to 100" in log, log[-2000:]
    # The same V starts.
    again = start("guard-proxy-same", mapping(150))
    assert partition_count(again.bootstrap, topic) == 150


def test_admin_views_drain_and_actions_off_by_default(reload_setup):
    cluster, start, tmp_path = reload_setup
    topic = tb.unique_name("rl-view")
    assert cluster.create_topic(topic, PHYSICAL) == PHYSICAL
    proxy = start("view-proxy", mapping(100))
    vp.metadata_of(proxy.bootstrap, [topic])

    shards = proxy.admin_json("/admin/shards")
    assert len(shards["shards"]) == 2
    assert shards["client_connections_open"] >= 0 and shards["max_connections"] == 1000
    assert sum(shard["requests"] for shard in shards["shards"]) >= 1
    store = proxy.admin_json("/admin/store")
    assert store["topic"] == "__kpr_offsets" and store["in_use"] and store["partitions"] > 0
    # The layout check of start-up saw the topic (it existed before the proxy started).
    mapping_view = proxy.admin_json("/admin/mapping")
    assert any(item["topic"] == topic and item["virtual_partitions"] == 100 for item in mapping_view["topics"])
    assert mapping_view["rules"][0] == {"key": "rl-.*", "regex": True, "virtual_partitions": 100,
                                        "physical_partitions": PHYSICAL}

    assert proxy.http_get("/ready")[0] == 200
    status, _ = proxy.post("/drain")
    assert status == 200
    assert proxy.http_get("/ready")[0] == 503
    assert proxy.http_get("/health")[0] == 200
    # Draining does not stop service: the open bootstrap still answers.
    assert partition_count(proxy.bootstrap, topic) == 100

    # Without metrics.admin_endpoints the actions are refused.
    plain = tb.Proxy(cluster, tmp_path, "plain-proxy", mapping(100).replace("metrics_extra_placeholder\n", ""))
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{plain.metrics_port}/reload", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
    finally:
        plain.stop()


def test_check_config_validates_and_prints_the_mapping(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text('listen: { address: "127.0.0.1:19092" }\n'
                    'kafka: { bootstrap_servers: ["127.0.0.1:9092"] }\n'
                    "mapping:\n  topics:\n    orders: { virtual_partitions: 64, physical_partitions: 8 }\n")
    result = subprocess.run([tb.proxy_bin(), "--check-config", "-c", str(good)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "orders" in result.stdout and "64" in result.stdout, result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("virtual_partitions: 64", "virtual_partitions: 4"))
    result = subprocess.run([tb.proxy_bin(), "--check-config", "-c", str(bad)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "mapping.topics" in result.stderr and "virtual_partitions" in result.stderr, result.stderr

    missing_cert = tmp_path / "tls.yaml"
    missing_cert.write_text(good.read_text().replace(
        'listen: { address: "127.0.0.1:19092" }',
        'listen:\n  address: "127.0.0.1:19092"\n  security:\n    protocol: SSL\n'
        f'    tls: {{ cert_path: "{tmp_path}/none.pem", key_path: "{tmp_path}/none.key" }}'))
    result = subprocess.run([tb.proxy_bin(), "--check-config", "-c", str(missing_cert)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "listen.security.tls" in result.stderr, result.stderr
