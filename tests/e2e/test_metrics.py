"""Metrics after real traffic (issue 14, DESIGN.md section 7): the earlier Rust
kafka-partition-remapper's six names with plausible values, the per-virtual-topic figures
equal to what the clients produced and consumed, the bound on topic labels, and every
exported family documented in docs/metrics.md (and every metric the Grafana dashboard
uses exported).

A confluent-kafka producer and consumer go through the proxy onto a mapped topic of the
librdkafka 2.0.2 mock (conftest.VIRTUAL_MAPPING_202: vp-.* is 100 virtual over 10
physical); then /metrics is scraped and parsed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

import pytest

import conftest
import kpp_testbed as tb

V, P = 100, 10  # the vp-.* rule of conftest.VIRTUAL_MAPPING_202
DOCS = tb.REPO_ROOT / "docs" / "metrics.md"
DASHBOARD = tb.REPO_ROOT / "deploy" / "grafana" / "kafka-partition-proxy.json"
RUST_NAMES = {
    "kafka_proxy_requests_total": "counter",
    "kafka_proxy_request_duration_seconds": "histogram",
    "kafka_proxy_active_client_connections": "gauge",
    "kafka_proxy_partitions_remapped_total": "counter",
    "kafka_proxy_bytes_received_total": "counter",
    "kafka_proxy_bytes_sent_total": "counter",
}
RUST_BUCKETS = ["0.0001", "0.0005", "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1", "+Inf"]
OTHER = "__other__"

# ---------------------------------------------------------------------------------------------
# The Prometheus text format, as much as the proxy writes

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                self.types[name] = kind.strip()
            elif line and not line.startswith("#"):
                match = _SAMPLE.match(line)
                assert match, f"not a Prometheus sample line: {line!r}"
                labels = dict(_LABEL.findall(match.group(2) or ""))
                self.samples.append((match.group(1), labels, float(match.group(3))))

    def values(self, name: str, **labels: str) -> list[float]:
        return [value for sample, found, value in self.samples
                if sample == name and all(found.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        found = self.values(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples, expected one"
        return found[0]

    def total(self, name: str, **labels: str) -> float:
        return sum(self.values(name, **labels))

    def label_values(self, name: str, label: str) -> list[str]:
        return [found[label] for sample, found, _ in self.samples if sample == name and label in found]


def scrape(endpoint) -> Scrape:
    status, body = endpoint.proxy.http_get("/metrics")
    assert status == 200, f"/metrics answered {status}"
    return Scrape(body)


def documented_families() -> dict[str, str]:
    """name -> type from the tables of docs/metrics.md (| `name` | type | labels | meaning |)."""
    rows = re.findall(r'^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(counter|gauge|histogram)\s*\|',
                      DOCS.read_text(), re.MULTILINE)
    documented: dict[str, str] = {}
    for name, kind in rows:
        assert name not in documented, f"{name} is documented twice in {DOCS}"
        documented[name] = kind
    return documented


# ---------------------------------------------------------------------------------------------
# Clients


def produce_counting_requests(bootstrap: str, topic: str, expected: dict[int, list[str]]) -> int:
    """Produces expected[v] to each virtual partition v and returns how many Produce requests
    librdkafka says it sent (from its statistics: brokers[*].req.Produce)."""
    import confluent_kafka

    last_stats: list[dict] = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.timeout.ms": 20000,
        "statistics.interval.ms": 100, "stats_cb": lambda text: last_stats.append(json.loads(text))})
    failed = []

    def on_delivery(error, message):
        if error is not None:
            failed.append((message.partition(), str(error)))

    for partition, values in expected.items():
        for index, value in enumerate(values):
            producer.produce(topic, value=value.encode(), key=f"k-{index}".encode(),
                             partition=partition, on_delivery=on_delivery)
            producer.poll(0)
    assert producer.flush(30) == 0, "records still in flight after 30 s"
    assert not failed, f"deliveries failed: {failed[:5]}"
    # Statistics come every 100 ms: wait for one taken after the last answer.
    deadline = time.monotonic() + 2.0
    seen = len(last_stats)
    while time.monotonic() < deadline and len(last_stats) < seen + 2:
        producer.poll(0.1)
    assert last_stats, "librdkafka sent no statistics"
    requests = sum(broker.get("req", {}).get("Produce", 0)
                   for broker in last_stats[-1]["brokers"].values())
    return requests


def record_bytes(expected: dict[int, list[str]]) -> int:
    return sum(len(value) + len(f"k-{index}") for values in expected.values()
               for index, value in enumerate(values))


def wait_for_connections(endpoint, count: int) -> Scrape:
    latest: list[Scrape] = []

    def settled() -> bool:
        latest.append(scrape(endpoint))
        return latest[-1].value("kafka_proxy_active_client_connections") == count
    tb.wait_until(settled, 15.0, f"{count} client connections open on the proxy")
    return latest[-1]


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.fixture
def vp(vproxy202):
    if vproxy202.direct:
        pytest.skip("the proxy's metrics need the proxy (KPP_E2E_DIRECT is set)")
    return vproxy202


def test_rust_names_and_topic_figures_after_traffic(vp):
    topic, partitions = vp.create_topic("vp-metrics", P)
    assert partitions == P
    used = [0, 1, 7, 10, 11, 23, 55, 99]  # on physical 0, 1, 7, 0, 1, 3, 5, 9
    expected = {v: [f"metrics-{v}-{i}-{'x' * 40}" for i in range(25)] for v in used}
    produced = sum(len(values) for values in expected.values())
    produce_requests = produce_counting_requests(vp.bootstrap, topic, expected)
    assert produce_requests >= 1
    consumed = tb.confluent_consume_assigned(vp.bootstrap, topic, V, produced)
    assert len(consumed) == produced, f"consumed {len(consumed)} of {produced} records"
    consumed_bytes = sum(len(value) for _, _, value in consumed)

    # The clients closed their connections: the gauge returns to 0 (nothing else is open).
    metrics = wait_for_connections(vp, 0)

    # The Rust tool's six names, with its types.
    for name, kind in RUST_NAMES.items():
        assert metrics.types.get(name) == kind, f"{name}: type {metrics.types.get(name)}, expected {kind}"
    produce_counted = metrics.value("kafka_proxy_requests_total", api_key="Produce")
    assert produce_counted >= produce_requests, (
        f"kafka_proxy_requests_total{{api_key=Produce}} = {produce_counted}, but the producer sent "
        f"{produce_requests} Produce requests")
    assert metrics.value("kafka_proxy_requests_total", api_key="Fetch") >= 1
    assert metrics.value("kafka_proxy_requests_total", api_key="Metadata") >= 1
    # The same counters as ours: per API and per shard.
    for api in metrics.label_values("kafka_proxy_requests_total", "api_key"):
        assert metrics.value("kafka_proxy_requests_total", api_key=api) == \
            metrics.value("kpp_requests_total", api=api), api
    assert metrics.total("kafka_proxy_requests_total") == metrics.total("kpp_shard_requests_total")

    # The latency histogram per API, with the Rust tool's buckets; every Produce (acks=all) was
    # answered, so each is timed once.
    buckets = metrics.label_values("kafka_proxy_request_duration_seconds_bucket", "le")
    produce_buckets = [sample for sample in metrics.samples
                       if sample[0] == "kafka_proxy_request_duration_seconds_bucket"
                       and sample[1].get("api_key") == "Produce"]
    assert [labels["le"] for _, labels, _ in produce_buckets] == RUST_BUCKETS, buckets
    cumulative = [value for _, _, value in produce_buckets]
    assert cumulative == sorted(cumulative), f"buckets not cumulative: {cumulative}"
    produce_timed = metrics.value("kafka_proxy_request_duration_seconds_count", api_key="Produce")
    assert cumulative[-1] == produce_timed
    assert produce_requests <= produce_timed <= produce_counted
    assert metrics.value("kafka_proxy_request_duration_seconds_sum", api_key="Produce") > 0

    # Bytes: frames carry more than the records' keys and values.
    received = metrics.value("kafka_proxy_bytes_received_total")
    sent = metrics.value("kafka_proxy_bytes_sent_total")
    assert received > record_bytes(expected), (received, record_bytes(expected))
    assert sent > consumed_bytes, (sent, consumed_bytes)
    assert received == metrics.value("kpp_bytes_total", direction="from_clients")
    assert sent == metrics.value("kpp_bytes_total", direction="to_clients")

    # Each used virtual partition was remapped at least once for Produce and once for Fetch.
    remapped = metrics.value("kafka_proxy_partitions_remapped_total")
    assert remapped >= 2 * len(used), f"kafka_proxy_partitions_remapped_total = {remapped}"
    assert remapped == metrics.total("kpp_topic_partitions_remapped_total")
    assert metrics.value("kpp_topic_partitions_remapped_total", topic=topic) == remapped

    # Per virtual topic: exactly what the clients produced and consumed.
    assert metrics.value("kpp_topic_produced_records_total", topic=topic) == produced
    assert metrics.value("kpp_topic_delivered_records_total", topic=topic) == len(consumed)
    produced_bytes = metrics.value("kpp_topic_produced_bytes_total", topic=topic)
    delivered_bytes = metrics.value("kpp_topic_delivered_bytes_total", topic=topic)
    fetched_bytes = metrics.value("kpp_topic_fetched_bytes_total", topic=topic)
    assert produced_bytes > record_bytes(expected)
    assert delivered_bytes > consumed_bytes
    assert fetched_bytes >= delivered_bytes, "read amplification below 1"
    assert metrics.value("kpp_fetch_scanned_bytes_total") == fetched_bytes
    assert metrics.value("kpp_fetch_delivered_bytes_total") == delivered_bytes
    assert metrics.label_values("kpp_topic_produced_records_total", "topic") == [topic]
    assert metrics.value("kpp_topic_labels_used") == 1
    assert metrics.value("kpp_topic_labels_max") == 100

    # Active connections: exactly what is open now.
    sockets = [socket.create_connection(("127.0.0.1", vp.proxy.port), timeout=5) for _ in range(3)]
    try:
        metrics = wait_for_connections(vp, 3)
        assert metrics.value("kpp_client_connections_active") == 3
        assert metrics.total("kpp_shard_client_connections_active") == 3
        assert len(metrics.values("kpp_shard_client_connections_active")) == 2  # threads: 2
    finally:
        for each in sockets:
            each.close()
    wait_for_connections(vp, 0)


def test_every_family_is_documented_and_the_dashboard_uses_exported_ones(vp):
    metrics = scrape(vp)
    documented = documented_families()
    missing = sorted(name for name in metrics.types if name not in documented)
    assert not missing, f"exported but not documented in {DOCS.name}: {missing}"
    wrong = sorted((name, kind, documented[name]) for name, kind in metrics.types.items()
                   if documented[name] != kind)
    assert not wrong, f"(name, exported type, documented type): {wrong}"
    # Documented names that are not exported would mislead users.
    stale = sorted(name for name in documented if name not in metrics.types)
    assert not stale, f"documented in {DOCS.name} but not exported: {stale}"

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    used = set()
    for expr in exprs:
        for name in re.findall(r'\b((?:kafka_proxy|kpp)_[a-z0-9_]+)', expr):
            family = re.sub(r'_(bucket|count|sum)$', '', name)  # a histogram's series
            used.add(family if family in metrics.types else name)
    unknown = sorted(name for name in used if name not in metrics.types)
    assert not unknown, f"the dashboard queries metrics the proxy does not export: {unknown}"
    assert set(RUST_NAMES) <= used, f"the dashboard leaves out {sorted(set(RUST_NAMES) - used)}"
    assert {"kpp_topic_produced_records_total", "kpp_topic_delivered_records_total",
            "kpp_topic_fetched_bytes_total", "kpp_topic_delivered_bytes_total"} <= used
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


# ---------------------------------------------------------------------------------------------
# The bound on topic labels

LABEL_BOUND = 2
BOUND_MAPPING = """mapping:
  tag_header: "kpr.vp"
  topics:
    "lb-.*": { virtual_partitions: 8, physical_partitions: 2 }
"""


class _BoundedProxy(tb.Proxy):
    def _config_text(self) -> str:
        return super()._config_text().replace(
            "metrics:\n", f"metrics:\n  topic_labels_max: {LABEL_BOUND}\n", 1)

    def reload(self, extra_config: str) -> None:
        """Rewrites the file with `extra_config` and applies it (SIGHUP)."""
        self.extra_config = extra_config
        self.config_path.write_text(self._config_text())
        applied = self.log_tail(2000).count("reload (SIGHUP) applied")
        os.kill(self.process.pid, signal.SIGHUP)
        tb.wait_until(lambda: self.log_tail(2000).count("reload (SIGHUP) applied") > applied, 30,
                      "the reload's log line")


@pytest.fixture(scope="module")
def bounded(mock202, log_dir):
    if tb.direct_mode():
        pytest.skip("the proxy's metrics need the proxy (KPP_E2E_DIRECT is set)")
    proxy = _BoundedProxy(mock202, log_dir, "bounded", BOUND_MAPPING)
    conftest._logs_to_show.append(("bounded log", proxy.log_path))
    conftest._proxies.append(("bounded", proxy))
    try:
        yield tb.Endpoint(mock202, proxy)
    finally:
        assert proxy.stop() == 0, f"proxy did not exit 0; log:\n{proxy.log_tail()}"


def test_topics_beyond_the_label_bound_count_as_other(bounded):
    # Four mapped topics, met one after the other: the first two get labels, the rest share one.
    topics = []
    counts = [3, 5, 7, 11]
    for index, count in enumerate(counts):
        topic, partitions = bounded.create_topic(f"lb-{index}", 2)
        assert partitions == 2
        expected = {v: [f"{topic}-{v}-{i}" for i in range(count)] for v in (index % 8, 5)}
        acked, failed = tb.confluent_produce(bounded.bootstrap, topic, expected)
        assert not failed and len(acked) == 2 * count
        topics.append(topic)
    for topic, count in zip(topics[2:], counts[2:]):
        consumed = tb.confluent_consume_assigned(bounded.bootstrap, topic, 8, 2 * count)
        assert len(consumed) == 2 * count

    metrics = scrape(bounded)
    labelled = metrics.label_values("kpp_topic_produced_records_total", "topic")
    assert labelled == topics[:2] + [OTHER], labelled
    for topic, count in zip(topics[:2], counts[:2]):
        assert metrics.value("kpp_topic_produced_records_total", topic=topic) == 2 * count
        assert metrics.value("kpp_topic_delivered_records_total", topic=topic) == 0
    assert metrics.value("kpp_topic_produced_records_total", topic=OTHER) == 2 * sum(counts[2:])
    assert metrics.value("kpp_topic_delivered_records_total", topic=OTHER) == 2 * sum(counts[2:])
    for name in ("kpp_topic_produced_bytes_total", "kpp_topic_delivered_bytes_total",
                 "kpp_topic_fetched_bytes_total", "kpp_topic_partitions_remapped_total"):
        assert metrics.label_values(name, "topic") == labelled, name
    assert metrics.value("kpp_topic_labels_used") == LABEL_BOUND
    assert metrics.value("kpp_topic_labels_max") == LABEL_BOUND
    # The Rust tool's total still counts every topic.
    assert metrics.value("kafka_proxy_partitions_remapped_total") == \
        metrics.total("kpp_topic_partitions_remapped_total")


def test_a_topic_mapped_by_a_reload_gets_its_label_and_counts_go_on(mock202, log_dir):
    if tb.direct_mode():
        pytest.skip("the proxy's metrics need the proxy (KPP_E2E_DIRECT is set)")
    proxy = _BoundedProxy(mock202, log_dir, "relabel", BOUND_MAPPING)
    conftest._logs_to_show.append(("relabel log", proxy.log_path))
    conftest._proxies.append(("relabel", proxy))
    endpoint = tb.Endpoint(mock202, proxy)
    try:
        old_topic, _ = endpoint.create_topic("lb-before", 2)
        new_topic, _ = endpoint.create_topic("nt-after", 2)

        def produce(topic: str, count: int, partition: int = 3) -> None:
            acked, failed = tb.confluent_produce(endpoint.bootstrap, topic,
                                                 {partition: [f"r{i}" for i in range(count)]})
            assert not failed and len(acked) == count

        produce(old_topic, 4)
        produce(new_topic, 6, 1)  # not mapped yet (2 partitions): passes through, not counted per topic
        metrics = scrape(endpoint)
        assert metrics.label_values("kpp_topic_produced_records_total", "topic") == [old_topic]

        proxy.reload(BOUND_MAPPING + '    "nt-.*": { virtual_partitions: 6, physical_partitions: 2 }\n')
        produce(new_topic, 5)
        produce(old_topic, 2)
        metrics = scrape(endpoint)
        # The rebuilt mapping memo finds the old topic's slot again: its count goes on. Both
        # labels are taken now, so the other series appears (at 0).
        assert metrics.label_values("kpp_topic_produced_records_total", "topic") == [old_topic, new_topic, OTHER]
        assert metrics.value("kpp_topic_produced_records_total", topic=OTHER) == 0
        assert metrics.value("kpp_topic_produced_records_total", topic=old_topic) == 6
        assert metrics.value("kpp_topic_produced_records_total", topic=new_topic) == 5
    finally:
        assert proxy.stop() == 0, f"proxy did not exit 0; log:\n{proxy.log_tail()}"
