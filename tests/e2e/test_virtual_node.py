"""Virtual partitions (DESIGN.md section 2) seen by the Node clients: node-rdkafka (librdkafka
2.12) through the proxy in front of the 2.12 mock, where vp-* topics are 40 virtual over 4
physical partitions, and kafkajs through both proxies (100 over 10 on the 2.0.2 mock).

Virtual partition v lives on physical partition v % P; every record produced through the proxy
carries the header kpr.vp = v (4-byte big-endian); untagged records belong to v = p; virtual
offsets are the physical offsets. Each consumer of v must get exactly v's records, in order.

The clients are tools/node/vp_client.js. With KPP_E2E_DIRECT=1 (no proxy) the tests that do
not depend on the proxy run on the physical partitions alone (V = P), which checks the test
bed itself; the others are skipped.
"""

from __future__ import annotations

import re

import pytest

import kpp_testbed as tb

VP_CLIENT = tb.NODE_TOOLS_DIR / "vp_client.js"
TAG_HEADER = "kpr.vp"
# (virtual, physical) of the vp-* rule on each upstream (conftest.VIRTUAL_MAPPING_*).
VP_LAYOUT = {"mock212": (40, 4), "mock202": (100, 10)}
# The wrong-* rule on the 2.12 mock says 3 physical partitions; its topics have 4.
WRONG_RULE_PHYSICAL = 3
INVALID_PARTITIONS = 37

RECORDS_PER_PARTITION = 20
SPARSE_BULK = 10_000           # untagged records of the physical partition on each side
SPARSE_FETCH_BYTES = 64 * 1024  # so that reading the physical partition takes many fetches
SPARSE_EOF_BOUND_MS = 20_000


# ---------------------------------------------------------------------------------------------
# Helpers


def vp_client(lib: str, op: str, bootstrap: str, timeout_s: float = tb.CLIENT_TIMEOUT_S,
              allow_error: bool = False, **options) -> list[dict]:
    """Runs tools/node/vp_client.js through the test bed's Node runner."""
    return tb.node_client(lib, op, bootstrap, timeout_s, script=VP_CLIENT.name, allow_error=allow_error,
                          **options)


def done_of(lines: list[dict]) -> dict:
    return lines[-1]


def of_type(lines: list[dict], kind: str) -> list[dict]:
    return [line for line in lines if line.get("type") == kind]


def records_of(lines: list[dict], kind: str = "record") -> list[tuple[int, int, str]]:
    return [(line["partition"], int(line["offset"]), line["value"]) for line in of_type(lines, kind)]


def as_list(partitions) -> str:
    return ",".join(str(p) for p in partitions)


def vp_topic(endpoint, prefix: str) -> tuple[str, int, int]:
    """Creates a vp-* topic; returns (name, V, P) as the clients see them. In direct mode there
    is no mapping: V = P."""
    virtual, physical = VP_LAYOUT[endpoint.kind]
    name, created = endpoint.create_topic(prefix, physical)
    assert created == physical, f"{name}: upstream made {created} partitions, expected {physical}"
    return name, (physical if endpoint.direct else virtual), physical


def within(partitions: list[int], virtual: int) -> list[int]:
    """The partitions a test uses, folded into 0..virtual-1 (a no-op through the proxy; in
    direct mode, where V = P, it keeps the test running on physical partitions)."""
    return list(dict.fromkeys(v % virtual for v in partitions))


def needs_proxy(endpoint) -> None:
    if endpoint.direct:
        pytest.skip("virtual partitions need the proxy")


def rdkafka_produce(bootstrap: str, topic: str, partitions: list[int], count: int, prefix: str,
                    **options) -> tuple[list[tuple[int, int, str]], dict]:
    """Produces count records to each partition; returns (acked (partition, offset, value),
    the done line). Fails the test on any delivery error."""
    lines = vp_client("rdkafka", "produce", bootstrap, topic=topic,
                      partitions=as_list(partitions), count=count, prefix=prefix, **options)
    done = done_of(lines)
    assert done["error_count"] == 0, f"delivery errors: {done['errors']}"
    assert done["delivered"] == len(partitions) * count, done
    return records_of(lines, "delivery"), done


def rdkafka_consume_each(bootstrap: str, topic: str, partitions: list[int], expect, **options):
    """Reads each partition alone from the beginning (one assignment at a time); returns the
    client's lines after checking that nothing came from a partition not being read."""
    expect_text = as_list(expect) if isinstance(expect, (list, tuple)) else str(expect)
    lines = vp_client("rdkafka", "consume", bootstrap, topic=topic, mode="each",
                      partitions=as_list(partitions), expect=expect_text, **options)
    stray = of_type(lines, "stray_record")
    assert not stray and done_of(lines)["stray"] == 0, f"records of other partitions: {stray[:5]}"
    return lines


def partition_done(lines: list[dict]) -> dict[int, dict]:
    return {line["partition"]: line for line in of_type(lines, "partition_done")}


def check_acked_offsets(acked: list[tuple[int, int, str]], physical: int) -> None:
    """Virtual offsets are physical offsets: the virtual partitions sharing a physical partition
    never share an offset."""
    by_physical: dict[int, list[int]] = {}
    for partition, offset, _ in acked:
        by_physical.setdefault(partition % physical, []).append(offset)
    for p, offsets in by_physical.items():
        duplicates = sorted({o for o in offsets if offsets.count(o) > 1})
        assert not duplicates, f"physical partition {p}: offsets acked twice {duplicates[:10]}"


def metric_total(endpoint, name: str, **labels) -> float:
    """The sum of the proxy's samples of metric `name` whose labels include `labels`."""
    status, text = endpoint.proxy.http_get("/metrics")
    assert status == 200, f"/metrics answered {status}"
    sample = re.compile(r"^" + re.escape(name) + r"(\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
    total = 0.0
    for line in text.splitlines():
        match = sample.match(line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels") or ""))
        if all(have.get(key) == value for key, value in labels.items()):
            total += float(match.group("value"))
    return total


def physical_metadata(endpoint, topic: str) -> dict[int, dict]:
    """partition -> {leader, replicas, isrs} read from the upstream mock itself."""
    lines = vp_client("rdkafka", "metadata", endpoint.upstream.bootstrap, timeout_s=30,
                      topic=topic)
    topics = {t["name"]: t for t in of_type(lines, "metadata")[0]["topics"]}
    return {p["id"]: p for p in topics[topic]["partitions"]}


# ---------------------------------------------------------------------------------------------
# node-rdkafka on the 2.12 mock (40 virtual over 4 physical)


def test_rdkafka_every_virtual_partition(vproxy212):
    """Metadata lists 40 partitions led like their physical ones; 20 records to each of the 40,
    each read back alone: exactly its records, in order, at the acknowledged offsets."""
    endpoint = vproxy212
    topic, virtual, physical = vp_topic(endpoint, "vp-all")

    lines = vp_client("rdkafka", "metadata", endpoint.bootstrap, timeout_s=30, topic=topic)
    topics = {t["name"]: t for t in of_type(lines, "metadata")[0]["topics"]}
    assert topic in topics, f"{topic} missing from {sorted(topics)}"
    seen = {p["id"]: p for p in topics[topic]["partitions"]}
    assert sorted(seen) == list(range(virtual)), \
        f"{topic}: partitions {sorted(seen)}, expected 0..{virtual - 1}"
    upstream = physical_metadata(endpoint, topic)
    assert sorted(upstream) == list(range(physical))
    for v, entry in seen.items():
        p = upstream[v % physical]
        assert (entry["leader"], sorted(entry["replicas"]), sorted(entry["isrs"])) == \
            (p["leader"], sorted(p["replicas"]), sorted(p["isrs"])), \
            f"virtual partition {v}: {entry} differs from physical {v % physical}: {p}"

    partitions = list(range(virtual))
    expected = tb.expected_values("all", virtual, RECORDS_PER_PARTITION)
    # Interleaved, so Produce requests for virtual partitions sharing a physical one are in
    # flight together (librdkafka sends one partition per Produce request).
    acked, _ = rdkafka_produce(endpoint.bootstrap, topic, partitions, RECORDS_PER_PARTITION,
                               "all", order="round")
    tb.check_partition_streams(sorted(acked), expected)
    check_acked_offsets(acked, physical)

    consumed = rdkafka_consume_each(endpoint.bootstrap, topic, partitions, RECORDS_PER_PARTITION,
                                    drain_ms=300, partition_timeout_ms=10_000, timeout_s=120)
    received = records_of(consumed)
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked), "consumed offsets differ from acknowledged ones"
    timed_out = [p for p, line in partition_done(consumed).items() if line["timed_out"]]
    assert not timed_out, f"partitions not finished in time: {timed_out}"


def produce_counters(endpoint) -> tuple[float, float]:
    """(client Produce requests, extra physical Produce requests) the proxy counted so far."""
    return (metric_total(endpoint, "kpp_requests_total", api_key="0"),
            metric_total(endpoint, "kpp_produce_extra_requests_total"))


def check_three_on_one(endpoint, topic: str, partitions: list[int], count: int, prefix: str,
                       acked: list[tuple[int, int, str]]) -> None:
    """All of acked landed on physical partition 0 of a fresh topic, and each virtual
    partition, read alone, holds exactly its records."""
    expected = {v: [f"{prefix}-{v}-{i}" for i in range(count)] for v in partitions}
    tb.check_partition_streams(sorted(acked), expected)
    # A fresh topic: these batches are everything physical partition 0 holds.
    offsets = sorted(offset for _, offset, _ in acked)
    assert offsets == list(range(len(partitions) * count)), \
        f"acknowledged offsets on physical partition 0: {offsets}"
    consumed = rdkafka_consume_each(endpoint.bootstrap, topic, partitions, count, drain_ms=300)
    received = records_of(consumed)
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked)


def test_one_produce_request_three_virtual_partitions(vproxy212):
    """One Produce request carrying virtual partitions 0, 4 and 8, which all live on physical
    partition 0: the proxy sends them as three physical requests and all three land.
    librdkafka puts one partition in each Produce request (rd_kafka_ProduceRequest takes one
    toppar), so kafkajs, which sends one request per broker, makes the request; node-rdkafka
    reads it back."""
    endpoint = vproxy212
    topic, virtual, _ = vp_topic(endpoint, "vp-one-request")
    partitions = within([0, 4, 8], virtual)
    count = 5
    before = None if endpoint.direct else produce_counters(endpoint)
    lines = vp_client("kafkajs", "produce", endpoint.bootstrap, topic=topic,
                      partitions=as_list(partitions), count=count, prefix="one", order="round")
    done = done_of(lines)
    assert done["error_count"] == 0 and done["delivered"] == len(partitions) * count, done
    if before is not None:
        # The proxy's counters (no other client runs meanwhile) show the case under test.
        after = produce_counters(endpoint)
        assert after[0] - before[0] == 1, \
            f"kafkajs sent {after[0] - before[0]:.0f} Produce requests, the test wants one"
        assert after[1] - before[1] == len(partitions) - 1, \
            f"{after[1] - before[1]:.0f} extra physical Produce requests, expected " \
            f"{len(partitions) - 1} (entries sharing a physical partition go one per request)"
    check_three_on_one(endpoint, topic, partitions, count, "one", records_of(lines, "delivery"))


def test_rdkafka_three_virtual_partitions_in_flight(vproxy212):
    """node-rdkafka with linger.ms 200 to virtual partitions 0, 4 and 8 at once: three Produce
    requests for physical partition 0 in flight together on one connection. All three land."""
    endpoint = vproxy212
    topic, virtual, _ = vp_topic(endpoint, "vp-in-flight")
    partitions = within([0, 4, 8], virtual)
    count = 5
    acked, _ = rdkafka_produce(endpoint.bootstrap, topic, partitions, count, "fly",
                               order="round", linger_ms=200)
    check_three_on_one(endpoint, topic, partitions, count, "fly", acked)


def test_rdkafka_sparse_virtual_partition_reaches_eof(vproxy212):
    """One record of virtual partition 23 amid 20,000 untagged records of physical partition 3:
    its consumer gets exactly that record and then the end-of-partition event in bounded time;
    empty virtual partition 35 reaches the end too; virtual partition 3 owns the untagged ones."""
    endpoint = vproxy212
    needs_proxy(endpoint)
    topic, virtual, physical = vp_topic(endpoint, "vp-sparse")
    needle, empty = 23, 35
    p = needle % physical
    assert empty % physical == p and p < virtual
    upstream = endpoint.upstream.bootstrap

    def bulk(prefix: str, first_offset: int) -> None:
        _, done = rdkafka_produce(upstream, topic, [p], SPARSE_BULK, prefix, emit_deliveries=0,
                                  batch_num_messages=500, linger_ms=20)
        assert done["by_partition"][str(p)] == {
            "count": SPARSE_BULK, "first": first_offset,
            "last": first_offset + SPARSE_BULK - 1}, done["by_partition"]

    bulk("bulk-a", 0)
    acked, _ = rdkafka_produce(endpoint.bootstrap, topic, [needle], 1, "needle")
    assert acked == [(needle, SPARSE_BULK, f"needle-{needle}-0")], \
        f"the record of {needle} should lie at physical offset {SPARSE_BULK}: {acked}"
    bulk("bulk-b", SPARSE_BULK + 1)

    consumed = rdkafka_consume_each(
        endpoint.bootstrap, topic, [needle, empty, p], [1, 0, 2 * SPARSE_BULK], eof=1,
        drain_ms=500, fetch_max_bytes=SPARSE_FETCH_BYTES, partition_timeout_ms=40_000,
        timeout_s=150)
    received = records_of(consumed)
    expected = {needle: [f"needle-{needle}-0"], empty: [],
                p: [f"bulk-a-{p}-{i}" for i in range(SPARSE_BULK)]
                + [f"bulk-b-{p}-{i}" for i in range(SPARSE_BULK)]}
    tb.check_partition_streams(received, expected)
    assert [r for r in received if r[0] == needle] == acked
    v3_offsets = [offset for partition, offset, _ in received if partition == p]
    assert v3_offsets == list(range(SPARSE_BULK)) + list(range(SPARSE_BULK + 1,
                                                               2 * SPARSE_BULK + 1))

    finished = partition_done(consumed)
    for v in (needle, empty, p):
        line = finished[v]
        assert line["eof"] and not line["timed_out"], \
            f"virtual partition {v}: no end-of-partition event after its records: {line}"
        assert line["ms"] <= SPARSE_EOF_BOUND_MS + 500, \
            f"virtual partition {v}: end of partition after {line['ms']} ms"
    # An end-of-partition event before a partition's records would be a lie about the log.
    early = [e for e in of_type(consumed, "eof")
             if e["received"] < len(expected[e["partition"]])]
    assert not early, f"end-of-partition events before the records: {early}"
    needle_eofs = [e for e in of_type(consumed, "eof") if e["partition"] == needle]
    assert all(int(e["offset"]) > SPARSE_BULK for e in needle_eofs), needle_eofs


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_rdkafka_compressed_virtual_partitions(vproxy212, codec):
    """Compressed batches to virtual partitions >= 4 (two of them on one physical partition)
    round-trip, and on the physical topic every record carries its tag."""
    endpoint = vproxy212
    topic, virtual, physical = vp_topic(endpoint, f"vp-{codec}")
    partitions = within([5, 9, 14, 39], virtual)
    count = 50
    acked, _ = rdkafka_produce(endpoint.bootstrap, topic, partitions, count, codec,
                               order="round", compression=codec, linger_ms=50)
    expected = {v: [f"{codec}-{v}-{i}" for i in range(count)] for v in partitions}
    tb.check_partition_streams(sorted(acked), expected)
    check_acked_offsets(acked, physical)
    consumed = rdkafka_consume_each(endpoint.bootstrap, topic, partitions, count, drain_ms=300)
    received = records_of(consumed)
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked)
    if not endpoint.direct:
        check_physical_tags(endpoint, topic, physical, acked)


def check_physical_tags(endpoint, topic: str, physical: int,
                        acked: list[tuple[int, int, str]]) -> None:
    """Reads the physical partitions straight from the mock: each acknowledged record lies on
    v % P at its acknowledged offset with exactly one header, kpr.vp = v (4-byte big-endian)."""
    physical_partitions = sorted({v % physical for v, _, _ in acked})
    wanted = [sum(1 for v, _, _ in acked if v % physical == p) for p in physical_partitions]
    consumed = rdkafka_consume_each(endpoint.upstream.bootstrap, topic, physical_partitions,
                                    wanted, eof=1, drain_ms=200)
    lines = of_type(consumed, "record")
    by_position = {(line["partition"], int(line["offset"])): line for line in lines}
    assert len(by_position) == len(lines) == len(acked), \
        f"the physical partitions hold {len(lines)} records, {len(acked)} were acknowledged"
    for v, offset, value in acked:
        line = by_position.get((v % physical, offset))
        assert line is not None, f"{value}: not at physical {v % physical} offset {offset}"
        assert line["value"] == value, f"physical {v % physical}@{offset}: {line} != {value}"
        assert line["headers"] == [{"key": TAG_HEADER, "hex": v.to_bytes(4, "big").hex()}], \
            f"{value} (virtual partition {v}): physical record headers {line['headers']}"


def test_rdkafka_physical_records_carry_tag(vproxy212):
    """Read directly from the 2.12 mock, every record produced through the proxy carries the
    kpr.vp header with its virtual partition as a 4-byte big-endian int."""
    endpoint = vproxy212
    needs_proxy(endpoint)
    topic, virtual, physical = vp_topic(endpoint, "vp-tag")
    partitions = [0, 1, 6, 15, 21, 38, 39]
    acked, _ = rdkafka_produce(endpoint.bootstrap, topic, partitions, 10, "tag", order="round")
    check_acked_offsets(acked, physical)
    check_physical_tags(endpoint, topic, physical, acked)


def test_wrong_physical_count_is_a_topic_error(vproxy212):
    """A wrong-* topic has 4 physical partitions where its rule says 3: metadata through the
    proxy answers it with a topic error (INVALID_PARTITIONS), and the proxy logs it loudly,
    by name. A vp-* topic in the same answer is fine."""
    import confluent_kafka.admin

    endpoint = vproxy212
    needs_proxy(endpoint)
    wrong, created = endpoint.create_topic("wrong-count")
    assert created != WRONG_RULE_PHYSICAL, created
    good, virtual, _ = vp_topic(endpoint, "vp-beside-wrong")

    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": endpoint.bootstrap})
    for query in ({"topic": wrong}, {}):
        metadata = admin.list_topics(timeout=15, **query)
        assert wrong in metadata.topics, f"{wrong} missing from metadata {query}"
        error = metadata.topics[wrong].error
        assert error is not None and error.code() == INVALID_PARTITIONS, \
            f"{wrong} ({created} physical, rule says {WRONG_RULE_PHYSICAL}): topic error " \
            f"{error!r}, expected INVALID_PARTITIONS ({INVALID_PARTITIONS}); query {query}"
    assert good in metadata.topics and metadata.topics[good].error is None, \
        metadata.topics.get(good)
    assert len(metadata.topics[good].partitions) == virtual

    # kafkajs (which talks to the 2.12 mock too) sees the same error code.
    lines = vp_client("kafkajs", "metadata", endpoint.bootstrap, timeout_s=40, topic=wrong,
                      allow_error=True)
    done = done_of(lines)
    assert done.get("error") and (done.get("error_code") == INVALID_PARTITIONS
                                  or done.get("error_type") == "INVALID_PARTITIONS"), done

    loud = re.compile(r"^\S+\s+(WARN|ERROR|CRIT)\b.*" + re.escape(wrong))
    tb.wait_until(lambda: any(loud.search(line) for line in
                              endpoint.proxy.log_path.read_text(errors="replace").splitlines()),
                  5.0, f"a WARN or ERROR line naming {wrong} in {endpoint.proxy.log_path}")


# ---------------------------------------------------------------------------------------------
# kafkajs on both upstreams (100 over 10 on the 2.0.2 mock, 40 over 4 on the 2.12 mock)


KAFKAJS_PARTITIONS = {"mock202": [0, 10, 13, 23, 42, 57, 77, 99],
                      "mock212": [0, 4, 13, 21, 30, 39]}
KAFKAJS_READ_ALONE = {"mock202": [13, 57, 99], "mock212": [4, 21, 39]}


@pytest.fixture(params=["mock202", "mock212"])
def vendpoint(request):
    return request.getfixturevalue("vproxy202" if request.param == "mock202" else "vproxy212")


def kafkajs_produced(endpoint, prefix: str):
    """A fresh vp-* topic with 10 records in each of KAFKAJS_PARTITIONS, produced by kafkajs in
    one send (so one Produce request per broker carries partitions that share a physical one);
    returns (topic, V, acked, expected)."""
    topic, virtual, physical = vp_topic(endpoint, prefix)
    partitions = within(KAFKAJS_PARTITIONS[endpoint.kind], virtual)
    count = 10
    lines = vp_client("kafkajs", "produce", endpoint.bootstrap, topic=topic,
                      partitions=as_list(partitions), count=count, prefix="kjs", order="round")
    done = done_of(lines)
    assert done["error_count"] == 0 and done["delivered"] == len(partitions) * count, done
    acked = records_of(lines, "delivery")
    expected = {v: [f"kjs-{v}-{i}" for i in range(count)] for v in partitions}
    tb.check_partition_streams(sorted(acked), expected)
    check_acked_offsets(acked, physical)
    return topic, virtual, acked, expected


def test_kafkajs_produce_virtual_partitions(vendpoint):
    """kafkajs produces to explicit virtual partitions (several >= P); node-rdkafka reads each
    alone and finds exactly its records at the offsets kafkajs was given."""
    endpoint = vendpoint
    topic, _, acked, expected = kafkajs_produced(endpoint, "vp-kjs-produce")
    consumed = rdkafka_consume_each(endpoint.bootstrap, topic, sorted(expected), 10, drain_ms=300)
    received = records_of(consumed)
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked)


def test_kafkajs_group_reads_virtual_partitions(vendpoint):
    """A kafkajs consumer group subscribed to the topic (all V partitions assigned to its one
    member) gets every record exactly once, on the partition it was produced to."""
    endpoint = vendpoint
    topic, _, acked, expected = kafkajs_produced(endpoint, "vp-kjs-group")
    lines = vp_client("kafkajs", "consume", endpoint.bootstrap, topic=topic, mode="group",
                      partitions=as_list(sorted(expected)), expect=len(acked), drain_ms=1500,
                      group=tb.unique_name("kjs-vp"), fail_on_crash=1, timeout_s=30)
    received = records_of(lines)
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked), "group consumer: offsets differ from acked ones"


def test_kafkajs_reads_each_virtual_partition(vendpoint):
    """kafkajs reads a few virtual partitions each alone (a fresh group whose assignor gives its
    member just that partition): exactly that partition's records."""
    endpoint = vendpoint
    topic, virtual, acked, expected = kafkajs_produced(endpoint, "vp-kjs-alone")
    alone = within(KAFKAJS_READ_ALONE[endpoint.kind], virtual)
    assert set(alone) <= set(expected), (alone, sorted(expected))
    lines = vp_client("kafkajs", "consume", endpoint.bootstrap, topic=topic, mode="each",
                      partitions=as_list(alone), expect=10, drain_ms=800,
                      group=tb.unique_name("kjs-vp-alone"), fail_on_crash=1, timeout_s=40)
    stray = of_type(lines, "stray_record")
    assert not stray, f"records of partitions not assigned: {stray[:5]}"
    received = records_of(lines)
    tb.check_partition_streams(received, {v: expected[v] for v in alone})
    assert sorted(received) == sorted(r for r in acked if r[0] in alone)
