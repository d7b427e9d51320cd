"""Committed offsets of virtual partitions (DESIGN.md section 2, "Committed offsets (offset
store)"), against the librdkafka 2.0.2 mock with conftest.VIRTUAL_MAPPING_202: topics vp-*
are 100 virtual partitions over 10 physical ones.

The broker cannot hold the offsets of virtual partitions (it rejects commits for partitions
>= P, and one (group, topic, p) slot cannot hold the 10 offsets of p's virtual partitions).
The proxy keeps them in the compacted topic __kpr_offsets (made by the mock launcher):

- OffsetCommit: first a physical commit of p = the minimum virtual offset of the group over
  p's virtual partitions, with the client's generation and member id (the broker fences
  zombies; its error goes back on every virtual partition of the request), then the virtual
  offsets are written to the store, then the answer;
- OffsetFetch (every version, the "all topics" form included) reads the store to its end
  first, so any proxy instance in front of the same cluster sees every instance's commits,
  and a restarted proxy sees what was committed before.

What the tests check is what a group relies on: a member that commits and goes away is
followed by one that resumes exactly after the committed records of every virtual partition
(nothing lost, nothing repeated, in order), through another proxy instance too, and the
committed offsets (with their metadata) read back exactly, whatever the request version.

1. kafka-python and confluent-kafka groups resume exactly through a second proxy instance;
2. raw OffsetCommit v2 / OffsetFetch v1..v5 (the "all topics" form too) of partitions >= P,
   with metadata; commits with a stale generation or an unknown member id are fenced;
3. lag (end offset - committed offset) is 0 after a group read everything, sparse virtual
   partitions included, asked on the committing consumer's own connections;
4. commits survive a proxy restart; the mock holds each physical partition's minimum;
5. the same lag as a monitoring tool sees it, from fresh connections (last: the virtual end
   offsets it needs are learnt by scan-ahead, soft state that must reach every connection).

With KPP_E2E_DIRECT=1 the tests run against the mock alone on topics of 100 physical
partitions (V = P), which checks the tests themselves; the checks of the proxy's own
behaviour (the physical commit point, the "all topics" fetch that the 2.0.2 mock does not
implement) are left out there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

import kpp_testbed as tb
import offsets_support as osup
import vp_support as vs
from offsets_support import (check_fetched, coordinator_connection, error_name,
                             fetched_by_partition, offset_commit, offset_fetch)

V, P = 100, 10  # the vp-.* rule of conftest.VIRTUAL_MAPPING_202
MAPPING = osup.conftest_module().VIRTUAL_MAPPING_202

RECORDS_PER_PARTITION = 6


@pytest.fixture
def vp(vproxy202):
    """The session's proxy with the virtual mapping (the mock itself in direct mode)."""
    return vproxy202


def _vp_topic(endpoint, prefix: str) -> str:
    """A vp-* topic: P physical partitions through the proxy, V physical ones in direct mode
    (so that the clients see V partitions either way)."""
    physical = V if endpoint.direct else P
    topic, partitions = endpoint.create_topic(prefix, physical)
    assert partitions == physical
    return topic


# ---------------------------------------------------------------------------------------------
# Clients


def kafka_python_group_consumer(bootstrap: str, topic: str, group: str):
    import kafka

    return kafka.KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
        request_timeout_ms=15000, fetch_max_wait_ms=100)


def kafka_python_commit(consumer, offsets: dict, timeout_s: float = 20.0) -> None:
    """consumer.commit(offsets) with a deadline. kafka-python's own commit retries a retriable
    error, UNKNOWN_TOPIC_OR_PARTITION included, forever; here that error fails at once, other
    retriable ones (coordinator moves) are retried until timeout_s. Fails the test on error."""
    from kafka import errors

    coordinator = consumer._coordinator
    deadline = time.monotonic() + timeout_s
    while True:
        coordinator.ensure_coordinator_ready()
        future = coordinator._send_offset_commit_request(offsets)
        consumer._client.poll(future=future)
        if future.succeeded():
            return
        error = future.exception
        if not future.retriable() or isinstance(error, errors.UnknownTopicOrPartitionError) \
                or time.monotonic() > deadline:
            raise AssertionError(f"kafka-python: commit of {len(offsets)} partitions failed "
                                 f"(it names the first failed partition's error only): "
                                 f"{error!r}")
        time.sleep(0.1)


def kafka_python_consume(consumer, want: dict[int, int], timeout_s: float,
                         drain_s: float = 0.0) -> dict[int, list[tuple[int, str]]]:
    """Polls until every partition v of `want` delivered at least want[v] records (fails after
    timeout_s), then drain_s more to catch extra records; returns {v: [(offset, value)]}."""
    got: dict[int, list[tuple[int, str]]] = {}
    deadline = time.monotonic() + timeout_s

    def short():
        return {v: len(got.get(v, [])) for v, n in want.items() if len(got.get(v, [])) < n}

    while short():
        assert time.monotonic() < deadline, (
            f"kafka-python: partitions still short after {timeout_s:.0f} s "
            f"(partition: records so far): {dict(list(short().items())[:15])}; assignment "
            f"{len(consumer.assignment())} partitions")
        for batch in consumer.poll(timeout_ms=200).values():
            for m in batch:
                got.setdefault(m.partition, []).append((m.offset, m.value.decode()))
    drain_until = time.monotonic() + drain_s
    while time.monotonic() < drain_until:
        for batch in consumer.poll(timeout_ms=100).values():
            for m in batch:
                got.setdefault(m.partition, []).append((m.offset, m.value.decode()))
    return got


def confluent_group_consumer(bootstrap: str, topic: str, group: str, **extra):
    import confluent_kafka

    config = {"bootstrap.servers": bootstrap, "group.id": group,
              "auto.offset.reset": "earliest", "enable.auto.commit": False,
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
              "fetch.wait.max.ms": 100}
    config.update(extra)
    consumer = confluent_kafka.Consumer(config)
    consumer.subscribe([topic])
    return consumer


def confluent_consume(consumer, want: dict[int, int], timeout_s: float,
                      drain_s: float = 0.0) -> dict[int, list[tuple[int, str]]]:
    """As kafka_python_consume, for a confluent-kafka consumer (errors fail the test)."""
    got: dict[int, list[tuple[int, str]]] = {}
    deadline = time.monotonic() + timeout_s

    def take(messages):
        for message in messages:
            if message.error() is not None:
                raise AssertionError(f"confluent-kafka consumer error: {message.error()}")
            got.setdefault(message.partition(), []).append(
                (message.offset(), message.value().decode()))

    def short():
        return {v: len(got.get(v, [])) for v, n in want.items() if len(got.get(v, [])) < n}

    while short():
        assert time.monotonic() < deadline, (
            f"confluent-kafka: partitions still short after {timeout_s:.0f} s "
            f"(partition: records so far): {dict(list(short().items())[:15])}; assignment "
            f"{len(consumer.assignment())} partitions")
        take(consumer.consume(num_messages=1000, timeout=0.2))
    drain_until = time.monotonic() + drain_s
    while time.monotonic() < drain_until:
        take(consumer.consume(num_messages=1000, timeout=0.1))
    return got


def confluent_commit(consumer, topic: str, offsets: dict[int, int]) -> None:
    """A synchronous commit of {v: offset}; fails the test on any error, naming every partition
    that failed."""
    import confluent_kafka

    tps = [confluent_kafka.TopicPartition(topic, v, offset) for v, offset in offsets.items()]
    try:
        result = consumer.commit(offsets=tps, asynchronous=False)
    except confluent_kafka.KafkaException as error:
        raise AssertionError(f"confluent-kafka: commit of {len(tps)} partitions failed: "
                             f"{error}") from None
    failed = {tp.partition: str(tp.error) for tp in result or [] if tp.error is not None}
    assert not failed, (f"confluent-kafka: commit failed for {len(failed)} of {len(tps)} "
                        f"partitions: {dict(list(sorted(failed.items()))[:8])}")


def confluent_committed(consumer, topic: str, partitions) -> dict[int, int]:
    """{v: committed offset} as confluent-kafka reads it back (-1001: none); fails on errors."""
    import confluent_kafka

    answer = consumer.committed([confluent_kafka.TopicPartition(topic, v) for v in partitions],
                                timeout=15)
    errors = {tp.partition: str(tp.error) for tp in answer if tp.error is not None}
    assert not errors, f"confluent-kafka committed(): errors {dict(list(errors.items())[:8])}"
    return {tp.partition: tp.offset for tp in answer}


def check_consumed(got: dict[int, list[tuple[int, str]]], expected: dict[int, list[str]],
                   offsets: dict[str, int], what: str) -> None:
    """Every partition delivered exactly its expected values, in order, at their acked offsets,
    and no other partition delivered anything."""
    problems = []
    for v in sorted(set(got) | set(expected)):
        values = [value for _, value in got.get(v, [])]
        if values != expected.get(v, []):
            problems.append((v, "expected", expected.get(v, [])[:6], "got", values[:8]))
            continue
        wrong = [(offset, value) for offset, value in got[v] if offsets[value] != offset] \
            if v in got else []
        if wrong:
            problems.append((v, "at offsets other than acked", wrong[:4]))
    assert not problems, f"{what}: {len(problems)} partitions wrong: {problems[:6]}"


def produce_every_partition(endpoint, topic: str, prefix: str,
                            count: int = RECORDS_PER_PARTITION):
    """count records to each of the V partitions; returns (expected {v: values}, {value: acked
    offset})."""
    expected = tb.expected_values(prefix, V, count)
    acked, failed = tb.confluent_produce(endpoint.bootstrap, topic, expected)
    assert not failed, failed[:5]
    wrong = [(p, value) for p, _, value in acked if value.split("-")[-2] != str(p)]
    assert not wrong, f"records acked on other partitions than sent to: {wrong[:5]}"
    assert len(acked) == V * count, f"{len(acked)} of {V * count} records acked"
    return expected, {value: offset for _, offset, value in acked}


# ---------------------------------------------------------------------------------------------
# 0. sarama 1.22 (OffsetCommit v1, its default) resumes exactly


def sarama_group_run(binary: str, endpoint, topic: str, group: str, stop_after: int,
                     retention_ms: int = 0) -> list[tuple[int, int, str]]:
    argv = [binary, "group", "--bootstrap", endpoint.bootstrap, "--topic", topic,
            "--group", group, "--stop-after", str(stop_after), "--timeout-ms", "90000"]
    if retention_ms:
        argv += ["--retention-ms", str(retention_ms)]
    result = tb.run_checked(argv, timeout_s=120)
    lines = [json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")]
    done = lines[-1]
    assert done.get("type") == "done" and not done.get("error"), (done, result.stderr.decode()[-2000:])
    assert not done.get("committed_errors"), done["committed_errors"][:5]
    return [(line["partition"], line["offset"], line["value"]) for line in lines if line.get("type") == "record"]


@pytest.mark.parametrize("commit_version", ["v1", "v2"])
def test_sarama_group_resumes_exactly(vp, log_dir, commit_version):
    """A sarama 1.22 group member reads part of every virtual partition, marks and commits
    what it read with OffsetCommit v1 (sarama's default; v2 with a retention set) and leaves;
    a second member of the group reads the rest. Together they read every record exactly
    once: the commits of virtual partitions >= P are kept by the proxy, not refused by the
    broker (UNKNOWN_TOPIC_OR_PARTITION) or written over the physical commit."""
    binary = tb.sarama_binary(log_dir)
    topic = _vp_topic(vp, f"vp-sarama-{commit_version}")
    expected, _ = produce_every_partition(vp, topic, f"sarama{commit_version}", count=3)
    total = V * 3
    group = tb.unique_name(f"kpp-sarama-{commit_version}")
    retention_ms = 24 * 3600 * 1000 if commit_version == "v2" else 0
    first = sarama_group_run(binary, vp, topic, group, total * 2 // 5, retention_ms)
    second = sarama_group_run(binary, vp, topic, group, total - len(first), retention_ms)
    values = [value for _, _, value in first + second]
    twice = sorted({value for value in values if values.count(value) > 1})
    assert not twice, f"{len(twice)} records read twice after the commit: {twice[:5]}"
    missing = sorted(set(v for vs_ in expected.values() for v in vs_) - set(values))
    assert not missing, f"{len(missing)} records never read: {missing[:5]}"
    for partition, _, value in first + second:
        assert value.split("-")[-2] == str(partition), (partition, value)


# ---------------------------------------------------------------------------------------------
# 1. A group resumes exactly where it committed, through another proxy instance


def _kpy_cut(v: int) -> int:
    return 1 + v % 5  # records of v the first kafka-python member consumes (1..5)


def _ck_cut(v: int) -> int:
    return 1 + (3 * v + 2) % 5  # the same for the first confluent-kafka member


def test_group_resumes_through_another_proxy_instance(vp, mock202, log_dir):
    """A kafka-python group and a confluent-kafka group each consume the first 1..5 of the 6
    records of every virtual partition (a different cut per partition), commit explicit
    offsets (offset after the last consumed record; kafka-python with a metadata string) while
    members of their generation, and close. A fresh member of each group connecting through a
    SECOND proxy instance (same mapping, same mock) then gets exactly the remaining records of
    every virtual partition: nothing lost, nothing repeated, in order, at their acked offsets;
    and committed() through the second instance reads back exactly what was committed (offset
    and, for kafka-python, metadata). The second instance exits 0 on SIGTERM."""
    import kafka

    topic = _vp_topic(vp, "vp-off-resume")
    kpy_group = tb.unique_name("vp-off-kpy")
    ck_group = tb.unique_name("vp-off-ck")
    expected, offsets = produce_every_partition(vp, topic, "res")

    # kafka-python: consume the first _kpy_cut(v) of every v, commit, leave the group.
    kpy_commit = {}
    consumer = kafka_python_group_consumer(vp.bootstrap, topic, kpy_group)
    try:
        got = kafka_python_consume(consumer, {v: _kpy_cut(v) for v in range(V)}, timeout_s=60)
        check_consumed({v: got[v][:_kpy_cut(v)] for v in got},
                       {v: expected[v][:_kpy_cut(v)] for v in range(V)}, offsets,
                       "kafka-python, first member")
        kpy_commit = {v: (got[v][_kpy_cut(v) - 1][0] + 1, f"kpy-{v}") for v in range(V)}
        kafka_python_commit(consumer, {
            kafka.TopicPartition(topic, v): kafka.OffsetAndMetadata(offset, metadata)
            for v, (offset, metadata) in kpy_commit.items()})
    finally:
        consumer.close(autocommit=False)

    # confluent-kafka: the same with its own cut.
    consumer = confluent_group_consumer(vp.bootstrap, topic, ck_group)
    try:
        got = confluent_consume(consumer, {v: _ck_cut(v) for v in range(V)}, timeout_s=60)
        check_consumed({v: got[v][:_ck_cut(v)] for v in got},
                       {v: expected[v][:_ck_cut(v)] for v in range(V)}, offsets,
                       "confluent-kafka, first member")
        ck_commit = {v: got[v][_ck_cut(v) - 1][0] + 1 for v in range(V)}
        confluent_commit(consumer, topic, ck_commit)
    finally:
        consumer.close()

    with osup.proxy_instance(mock202, log_dir, "offsets-second", MAPPING) as second:
        remaining_kpy = {v: expected[v][_kpy_cut(v):] for v in range(V)}
        consumer = kafka_python_group_consumer(second.bootstrap, topic, kpy_group)
        try:
            got = kafka_python_consume(consumer, {v: len(remaining_kpy[v]) for v in range(V)},
                                       timeout_s=60, drain_s=1.0)
            read_back = {v: consumer.committed(kafka.TopicPartition(topic, v), metadata=True)
                         for v in range(V)}
        finally:
            consumer.close(autocommit=False)
        check_consumed(got, remaining_kpy, offsets,
                       "kafka-python, a new member through the second proxy instance")
        wrong = {v: (kpy_commit[v], read_back[v]) for v in range(V)
                 if read_back[v] is None
                 or (read_back[v].offset, read_back[v].metadata) != kpy_commit[v]}
        assert not wrong, (f"kafka-python committed() through the second instance differs for "
                           f"{len(wrong)} partitions (committed, read): "
                           f"{dict(list(wrong.items())[:8])}")

        remaining_ck = {v: expected[v][_ck_cut(v):] for v in range(V)}
        consumer = confluent_group_consumer(second.bootstrap, topic, ck_group)
        try:
            got = confluent_consume(consumer, {v: len(remaining_ck[v]) for v in range(V)},
                                    timeout_s=60, drain_s=1.0)
            read_back = confluent_committed(consumer, topic, range(V))
        finally:
            consumer.close()
        check_consumed(got, remaining_ck, offsets,
                       "confluent-kafka, a new member through the second proxy instance")
        wrong = {v: (ck_commit[v], read_back.get(v)) for v in range(V)
                 if read_back.get(v) != ck_commit[v]}
        assert not wrong, (f"confluent-kafka committed() through the second instance differs "
                           f"for {len(wrong)} partitions (committed, read): "
                           f"{dict(list(wrong.items())[:8])}")


# ---------------------------------------------------------------------------------------------
# 2. Raw commits: partitions >= P, metadata, every OffsetFetch version, stale generations


_NOT_COMMITTED = range(5, 10)  # v 5..9 get no commit: the all-topics form must not list them


def _raw_offset(v: int) -> int:
    """Decreasing in v, so that the minimum over p's virtual partitions (the physical commit
    point) is never v = p's own offset; one above 2^32 to check 64 bits."""
    return 2**33 + 7 if v == 42 else 5000 - 13 * v


def _raw_metadata(v: int) -> str:
    return {10: "", 11: "ünïcødé ✓ metadata", 12: "m" * 300}.get(v, f"meta-{v}")


def test_raw_commit_and_fetch_of_virtual_partitions(vp, capsys):
    """OffsetCommit v2 of 95 virtual partitions (all but 5..9; offsets up to above 2^32;
    metadata empty, non-ASCII and 300 bytes long) by a group with no members succeeds for every
    partition. OffsetFetch v1..v5 naming all 100 read back exactly the committed offsets and
    metadata, offset -1 for 5..9, no errors, no partition twice; the v2+ "all topics" form
    lists exactly the 95 committed virtual partitions, once each (none of the physical commit
    points). kafka-python's committed() (OffsetFetch v1) agrees.

    Then a real kafka-python group member: a raw commit with its generation and member id
    succeeds; one with generation + 1 and one with an unknown member id get the broker's error
    (the same non-zero code on every virtual partition of the request: ILLEGAL_GENERATION,
    UNKNOWN_MEMBER_ID) and change nothing. A commit to v = 100 or -1 gets
    UNKNOWN_TOPIC_OR_PARTITION. One commit naming an unmapped topic and a mapped one succeeds
    for both, and one fetch naming both reads both back. Last: OffsetFetch v5 answers the
    committed leader epoch of those v2 commits (which carry none) as -1, as Kafka does."""
    import kafka

    topic = _vp_topic(vp, "vp-off-raw")
    group = tb.unique_name("vp-off-raw")
    committed = {v: (_raw_offset(v), _raw_metadata(v)) for v in range(V)
                 if v not in _NOT_COMMITTED}

    with coordinator_connection(vp, group) as connection:
        errors = offset_commit(connection, group, -1, "", topic, committed)
        failed = {v: error_name(e) for v, e in errors.items() if e != vs.NONE}
        assert not failed, (f"OffsetCommit v2 of {len(committed)} virtual partitions: "
                            f"{len(failed)} failed: {dict(list(sorted(failed.items()))[:12])}")

        for version in range(1, 6):
            top_error, entries = offset_fetch(connection, version, group,
                                              {topic: list(range(V))})
            assert top_error in (None, vs.NONE), f"OffsetFetch v{version}: error {top_error}"
            fetched = fetched_by_partition(entries, topic)
            assert sorted(fetched) == list(range(V)), (
                f"OffsetFetch v{version} answers partitions {sorted(fetched)[:20]}..., asked for "
                f"0..{V - 1}")
            check_fetched(fetched, committed, _NOT_COMMITTED, f"OffsetFetch v{version}")

        if not vp.direct:  # the 2.0.2 mock answers the all-topics form with no topics
            for version in range(2, 6):
                top_error, entries = offset_fetch(connection, version, group, None)
                assert top_error == vs.NONE, \
                    f"OffsetFetch v{version}, all topics: error {top_error}"
                topics = {name for name, *_ in entries}
                assert topics == {topic}, (
                    f"OffsetFetch v{version}, all topics: lists topics {sorted(topics)}, the "
                    f"group committed to {topic} only")
                fetched = fetched_by_partition(entries, topic)
                assert sorted(fetched) == sorted(committed), (
                    f"OffsetFetch v{version}, all topics: lists partitions "
                    f"{sorted(fetched)[:20]}..., committed were {len(committed)} (all but "
                    f"{list(_NOT_COMMITTED)}); extra {sorted(set(fetched) - set(committed))}, "
                    f"missing {sorted(set(committed) - set(fetched))[:20]}")
                check_fetched(fetched, committed, (), f"OffsetFetch v{version}, all topics")

    reader = kafka.KafkaConsumer(bootstrap_servers=vp.bootstrap, group_id=group,
                                 enable_auto_commit=False, request_timeout_ms=15000)
    try:
        read_back = {v: reader.committed(kafka.TopicPartition(topic, v), metadata=True)
                     for v in range(V)}
    finally:
        reader.close(autocommit=False)
    wrong = {v: (committed.get(v), read_back[v]) for v in range(V)
             if (None if read_back[v] is None else tuple(read_back[v])) != committed.get(v)}
    assert not wrong, (f"kafka-python committed() differs for {len(wrong)} partitions "
                       f"(committed, read): {dict(list(wrong.items())[:8])}")

    # A real group member, and commits in its name with its generation and with stale ones.
    member_group = tb.unique_name("vp-off-fence")
    member = kafka_python_group_consumer(vp.bootstrap, topic, member_group)
    try:
        def joined():
            member.poll(timeout_ms=100)
            return len(member.assignment()) == V and \
                member._coordinator._generation.generation_id > 0
        tb.wait_until(joined, 60, f"a kafka-python member of {member_group} assigned all {V} "
                                  f"virtual partitions", interval_s=0)
        generation = member._coordinator._generation
        generation_id, member_id = generation.generation_id, generation.member_id
        chosen = (0, 3, 10, 33, 57, 99)
        good = {v: (100 + v, f"good-{v}") for v in chosen}
        with coordinator_connection(vp, member_group) as connection:
            errors = offset_commit(connection, member_group, generation_id, member_id, topic,
                                   good)
            assert errors == {v: vs.NONE for v in chosen}, (
                f"commit with the member's own generation {generation_id}: "
                f"{ {v: error_name(e) for v, e in errors.items()} }")
            _, entries = offset_fetch(connection, 2, member_group, {topic: list(chosen)})
            check_fetched(fetched_by_partition(entries, topic), good, (),
                          "after the member's commit")

            stale = {v: (900 + v, f"stale-{v}") for v in chosen}
            answers = {}
            for what, gen, mid in (("generation + 1", generation_id + 1, member_id),
                                   ("an unknown member id", generation_id,
                                    "kpp-e2e-zombie-member")):
                errors = offset_commit(connection, member_group, gen, mid, topic, stale)
                codes = set(errors.values())
                answers[what] = sorted(error_name(c) for c in codes)
                assert len(codes) == 1 and vs.NONE not in codes, (
                    f"commit with {what} (member's generation {generation_id}): errors "
                    f"{ {v: error_name(e) for v, e in errors.items()} }, expected one broker "
                    f"error on every partition")
                _, entries = offset_fetch(connection, 2, member_group, {topic: list(chosen)})
                check_fetched(fetched_by_partition(entries, topic), good, (),
                              f"after the refused commit with {what}")
            with capsys.disabled():
                print(f"\n[stale commits] generation {generation_id} member {member_id!r}: "
                      f"{answers}")
            assert answers == {"generation + 1": [error_name(osup.ILLEGAL_GENERATION)],
                               "an unknown member id": [error_name(osup.UNKNOWN_MEMBER_ID)]}, \
                answers
    finally:
        member.close(autocommit=False)

    # Partitions outside 0..V-1 do not exist.
    with coordinator_connection(vp, group) as connection:
        errors = offset_commit(connection, group, -1, "", topic,
                               {V: (1, "bad"), -1: (1, "bad")})
        assert errors == {V: vs.UNKNOWN_TOPIC_OR_PARTITION, -1: vs.UNKNOWN_TOPIC_OR_PARTITION}, \
            f"commit to partitions {V} and -1: {errors}"
        _, entries = offset_fetch(connection, 2, group, {topic: list(range(V))})
        check_fetched(fetched_by_partition(entries, topic), committed, _NOT_COMMITTED,
                      "after the commit to partitions that do not exist")

    # One request for a mapped and an unmapped topic (a consumer of both commits so): the
    # unmapped one is the broker's, the mapped one the store's; both read back in one request.
    plain, _ = vp.create_topic("plain-off", 3)
    mixed_group = tb.unique_name("vp-off-mixed")
    mixed = {plain: {p: (10 + p, f"plain-{p}") for p in range(3)},
             topic: {v: (20 + v, f"virtual-{v}") for v in (4, 10, 55)}}
    with coordinator_connection(vp, mixed_group) as connection:
        errors = osup.offset_commit_topics(connection, mixed_group, -1, "", mixed)
        assert set(errors.values()) == {vs.NONE}, (
            f"one commit of {plain} (unmapped) and {topic}: "
            f"{ {key: error_name(e) for key, e in errors.items() if e} }")
        for version in (1, 5):
            _, entries = offset_fetch(connection, version, mixed_group,
                                      {plain: [0, 1, 2], topic: [4, 10, 55, 56]})
            check_fetched(fetched_by_partition(entries, plain), mixed[plain], (),
                          f"OffsetFetch v{version} of the unmapped topic beside a mapped one")
            check_fetched(fetched_by_partition(entries, topic), mixed[topic], (56,),
                          f"OffsetFetch v{version} of the mapped topic beside an unmapped one")

    # OffsetCommit v2 carries no leader epoch: Kafka answers OffsetFetch v5+ with -1 for such
    # commits (its schema's default). A made-up epoch (e.g. 0) sends clients that validate
    # positions by epoch (KIP-320) into false truncation checks. (The 2.0.2 mock answers the
    # partition's current epoch whatever was committed, so only through the proxy.)
    if not vp.direct:
        with coordinator_connection(vp, group) as connection:
            _, entries = offset_fetch(connection, 5, group, {topic: list(range(V))})
        epochs = {partition: epoch for name, partition, _, epoch, _, _ in entries
                  if name == topic and partition in committed}
        wrong = {v: epoch for v, epoch in epochs.items() if epoch != -1}
        assert len(epochs) == len(committed) and not wrong, (
            f"OffsetFetch v5: committed leader epoch of {len(wrong)} virtual partitions "
            f"committed with OffsetCommit v2 (no epoch) is not -1: "
            f"{dict(list(sorted(wrong.items()))[:10])}")


# ---------------------------------------------------------------------------------------------
# 3. Consumer lag: end offset minus committed offset is 0 once a group read everything


SPARSE_V = 7             # one record, first on its physical partition, then none
CROWD = 150              # records to each other virtual partition of the same physical one
OTHERS = 2               # records to every other virtual partition


@dataclass
class LagGroup:
    """A group that read every virtual partition of its topic to the end and committed."""
    bootstrap: str                    # the proxy it read through
    topic: str
    group: str
    commit: dict[int, int]            # v -> offset after v's last record (what was committed)
    commit_problem: str | None        # the commit's failure, if it failed
    read_back: dict[int, int]         # v -> committed offset read back by the same consumer
    end_same_consumer: dict[int, int]  # v -> ListOffsets LATEST asked by the same consumer


@pytest.fixture(scope="module")
def lag_group(vproxy202) -> LagGroup:
    """Every virtual partition gets records; v = 7 exactly one, written first on physical
    partition 7, after which the other nine virtual partitions of physical 7 get 150 records
    each, interleaved (so all of them but one end before the physical end). A confluent-kafka
    group member reads everything up to the partition EOF of every virtual partition (which
    needs the proxy's virtual high watermarks), commits the offset after each partition's last
    record, reads the committed offsets back and asks ListOffsets LATEST of every partition
    (uncached watermarks, on its own connections), then closes. A failed commit is recorded,
    not raised, so that the tests report it with everything else."""
    import confluent_kafka

    endpoint = vproxy202
    topic = _vp_topic(endpoint, "vp-off-lag")
    group = tb.unique_name("vp-off-lag")
    crowd = [v for v in range(V) if v % P == SPARSE_V % P and v != SPARSE_V]
    producer = vs.confluent_producer(endpoint.bootstrap)
    acked = vs.confluent_send(producer, [(topic, SPARSE_V, None, f"lag-{SPARSE_V}-0".encode(),
                                          None)])
    acked += vs.confluent_send(producer, [
        (topic, v, None, f"lag-{v}-{i}".encode(), None)
        for i in range(CROWD) for v in crowd])
    acked += vs.confluent_send(producer, [
        (topic, v, None, f"lag-{v}-{i}".encode(), None)
        for i in range(OTHERS) for v in range(V) if v % P != SPARSE_V % P])
    last: dict[int, int] = {}
    for partition, offset, value in acked:
        assert value.split("-")[1] == str(partition), (partition, value)
        last[partition] = max(offset, last.get(partition, -1))
    assert sorted(last) == list(range(V))

    consumer = confluent_group_consumer(endpoint.bootstrap, topic, group,
                                        **{"enable.partition.eof": True})
    try:
        received: dict[int, int] = {}
        eof: dict[int, int] = {}
        deadline = time.monotonic() + 60

        def finished():
            return sum(received.values()) >= len(acked) and \
                all(eof.get(v) == last[v] + 1 for v in range(V))

        while not finished():
            if time.monotonic() > deadline:
                missing = {v: (last[v] + 1, eof.get(v)) for v in range(V)
                           if eof.get(v) != last[v] + 1}
                raise AssertionError(
                    f"not every virtual partition read to its end within 60 s: "
                    f"{sum(received.values())} of {len(acked)} records; (v: (offset after "
                    f"its last record, last partition EOF at)) {dict(list(missing.items())[:10])}")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                if error is not None:
                    assert error.code() == confluent_kafka.KafkaError._PARTITION_EOF, error
                    eof[message.partition()] = message.offset()
                    continue
                received[message.partition()] = received.get(message.partition(), 0) + 1
        assert sum(received.values()) == len(acked), \
            f"{sum(received.values())} records read, {len(acked)} produced"

        commit = {v: last[v] + 1 for v in range(V)}
        commit_problem = None
        try:
            confluent_commit(consumer, topic, commit)
        except AssertionError as error:
            commit_problem = str(error)
        read_back = confluent_committed(consumer, topic, range(V))
        end = {v: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, v),
                                                 timeout=10, cached=False)[1]
               for v in range(V)}
    finally:
        consumer.close()
    return LagGroup(endpoint.bootstrap, topic, group, commit, commit_problem, read_back, end)


def lag_problems(lag_group: LagGroup, client: str, end: dict[int, int],
                 committed: dict[int, int | None]) -> list[str]:
    """What differs from: end offset == committed offset == offset after the last record."""
    problems = []
    commit = lag_group.commit
    wrong = {v: (commit[v], committed[v]) for v in range(V) if committed[v] != commit[v]}
    if wrong:
        problems.append(f"{client}: committed offset differs for {len(wrong)} partitions "
                        f"(committed, read): {dict(list(wrong.items())[:8])}")
    ends = {v: (end[v], commit[v]) for v in range(V) if end[v] != commit[v]}
    if ends:
        problems.append(f"{client}: ListOffsets LATEST != offset after the last record for "
                        f"{len(ends)} partitions (v: (end offset, expected)): "
                        f"{dict(list(ends.items())[:10])}")
    lag = {v: None if committed[v] is None else end[v] - committed[v] for v in range(V)
           if committed[v] is None or end[v] != committed[v]}
    if lag:
        problems.append(f"{client}: lag (end - committed) != 0 for {len(lag)} partitions: "
                        f"{dict(list(lag.items())[:10])}")
    return problems


def test_lag_is_zero_after_reading_everything(lag_group, capsys):
    """After the lag_group member read every virtual partition to its end and committed (see
    the fixture: one sparse v = 7 among 1350 records of its physical partition, most virtual
    partitions ending before their physical partition's end), the commit succeeded, the
    committed offsets read back are the offsets after each partition's last record, and
    ListOffsets LATEST through the same proxy (the same consumer's connections) equals them:
    lag 0 on every virtual partition."""
    end, read_back = lag_group.end_same_consumer, lag_group.read_back
    with capsys.disabled():
        print(f"\n[lag, same consumer] v={SPARSE_V}: end {end[SPARSE_V]}, committed "
              f"{read_back[SPARSE_V]}; partitions with lag != 0: "
              f"{sum(1 for v in range(V) if end[v] != read_back[v])}")
    problems = [lag_group.commit_problem] if lag_group.commit_problem else []
    problems += lag_problems(lag_group, "confluent-kafka, the committing consumer", end,
                             read_back)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# 4. Commit, restart the proxy, fetch


def _restart_offset(v: int) -> int:
    return 7000 - 11 * v  # decreasing: p's minimum is at v = 90 + p, never at v = p


def test_commit_survives_proxy_restart(vp, mock202, log_dir):
    """A confluent-kafka consumer (assigned, not subscribed: generation -1) commits offsets of
    all 100 virtual partitions through a dedicated proxy instance A, which then stops (exit 0)
    before anything is read back. A new instance B with the same mapping in front of the same
    mock answers OffsetFetch (raw v1 and v5, and confluent-kafka's committed()) with exactly
    the committed offsets and metadata of all 100. The mock itself holds, for each physical
    partition p, the minimum of the group's virtual offsets over p's virtual partitions."""
    import confluent_kafka

    topic = _vp_topic(vp, "vp-off-restart")
    group = tb.unique_name("vp-off-restart")
    commit = {v: _restart_offset(v) for v in range(V)}

    with osup.proxy_instance(mock202, log_dir, "offsets-a", MAPPING) as first:
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": first.bootstrap, "group.id": group,
            "enable.auto.commit": False})
        try:
            confluent_commit(consumer, topic, commit)
        finally:
            consumer.close()

    with osup.proxy_instance(mock202, log_dir, "offsets-b", MAPPING) as second:
        with coordinator_connection(second, group) as connection:
            for version in (1, 5):
                top_error, entries = offset_fetch(connection, version, group,
                                                  {topic: list(range(V))})
                assert top_error in (None, vs.NONE), f"OffsetFetch v{version}: error {top_error}"
                fetched = fetched_by_partition(entries, topic)
                offsets_read = {v: (offset, error) for v, (offset, _, error) in fetched.items()}
                wrong = {v: (commit[v], offsets_read.get(v)) for v in range(V)
                         if offsets_read.get(v) != (commit[v], vs.NONE)}
                assert not wrong, (
                    f"OffsetFetch v{version} through the restarted proxy: {len(wrong)} of {V} "
                    f"partitions differ (committed, (read, error)): "
                    f"{dict(list(wrong.items())[:8])}")
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": second.bootstrap, "group.id": group,
            "enable.auto.commit": False})
        try:
            read_back = confluent_committed(consumer, topic, range(V))
        finally:
            consumer.close()
        wrong = {v: (commit[v], read_back.get(v)) for v in range(V)
                 if read_back.get(v) != commit[v]}
        assert not wrong, (f"confluent-kafka committed() through the restarted proxy differs "
                           f"for {len(wrong)} partitions: {dict(list(wrong.items())[:8])}")

    if not vp.direct:
        physical = osup.physical_committed(mock202, group, topic, P)
        expected = {p: min(commit[v] for v in range(p, V, P)) for p in range(P)}
        assert physical == expected, (
            f"physical commit points on the mock {physical}, expected the minimum virtual "
            f"offset of each physical partition {expected}")


# ---------------------------------------------------------------------------------------------
# 5. Lag as a monitoring tool sees it, on connections of its own


MONITOR_ROUNDS = 4


def test_lag_is_zero_for_a_monitoring_client(lag_group, capsys):
    """What `kafka-consumer-groups --describe` shows for the lag_group group: each of
    MONITOR_ROUNDS fresh kafka-python clients (new connections, as each run of such a tool
    makes; with the proxy's two threads a connection may land on either) reads the committed
    offsets (OffsetFetch) and the end offsets (ListOffsets LATEST) of all 100 virtual
    partitions: lag 0 everywhere, every time, sparse v = 7 included."""
    import kafka

    assert lag_group.commit_problem is None, lag_group.commit_problem
    problems = []
    summary = []
    for round_index in range(MONITOR_ROUNDS):
        client = kafka.KafkaConsumer(bootstrap_servers=lag_group.bootstrap,
                                     group_id=lag_group.group, enable_auto_commit=False,
                                     request_timeout_ms=15000)
        try:
            tps = [kafka.TopicPartition(lag_group.topic, v) for v in range(V)]
            end = {tp.partition: offset for tp, offset in client.end_offsets(tps).items()}
            committed = {tp.partition: client.committed(tp) for tp in tps}
        finally:
            client.close(autocommit=False)
        found = lag_problems(lag_group, f"kafka-python client {round_index + 1}", end,
                             committed)
        summary.append(f"client {round_index + 1}: v={SPARSE_V} end {end[SPARSE_V]}, "
                       f"{sum(1 for v in range(V) if end[v] != committed[v])} lagging")
        problems += found
    with capsys.disabled():
        print("\n[lag, monitoring clients] " + "; ".join(summary))
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(tb.direct_mode(), reason="checks the proxy's own start-up")
def test_missing_store_topic_stops_start_up_with_a_clear_message(mock202, log_dir):
    """The 2.0.2 mock does not implement CreateTopics, so a store topic it does not hold
    cannot be created: start-up stops (exit 2, before /ready) with an error line naming
    offset_store.topic and the topic, instead of serving groups whose commits could not be
    kept. The same mapping with the store topic the launcher made starts fine (the fixtures)."""
    name = "vproxy202-missing-store"
    config = MAPPING + "offset_store:\n  topic: \"__kpr_missing_store\"\n  partitions: 4\n"
    with pytest.raises(AssertionError, match=r"exited during start-up with rc=2"):
        tb.Proxy(mock202, log_dir, name, config)
    log = (log_dir / f"{name}.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if " ERROR " in line or "ERROR" in line.split()[1:2]]
    assert any("offset_store.topic" in line and "__kpr_missing_store" in line and "does not exist" in line
               and "CreateTopics" in line for line in errors), f"no clear start-up error; log:\n{log}"
    assert "Listening on" not in log, f"the proxy served clients without its offset store; log:\n{log}"
