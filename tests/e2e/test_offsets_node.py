"""Committed offsets of virtual partitions (DESIGN.md section 2, "Committed offsets (offset
store)") seen by the Node clients, against the librdkafka 2.12 mock with
conftest.VIRTUAL_MAPPING_212: topics vp-* are 40 virtual partitions over 4 physical ones.

node-rdkafka (librdkafka 2.12) commits with flexible OffsetCommit (v8+) and reads back with
flexible OffsetFetch (v6, the highest the 2.12 mock and so the proxy advertise); kafkajs with
OffsetCommit v5 / OffsetFetch v4, metadata strings included. The offsets of the virtual
partitions live in the proxy's store (__kpr_offsets); a group member that commits and leaves
is followed by one that resumes exactly after the committed records of every virtual partition,
here through a second proxy instance in front of the same mock.

The clients are tools/node/offsets_client.js (group members that commit and resume) and
tools/node/vp_client.js (the producer). With KPP_E2E_DIRECT=1 the test runs against the mock
alone on its 4 physical partitions (V = P), which checks the test itself.
"""

from __future__ import annotations

import pytest

import kpp_testbed as tb
import offsets_support as osup

VIRTUAL, PHYSICAL = 40, 4  # the vp-.* rule of conftest.VIRTUAL_MAPPING_212
MAPPING = osup.conftest_module().VIRTUAL_MAPPING_212
RECORDS_PER_PARTITION = 6


def _cut(v: int) -> int:
    return 1 + v % 5  # records of v the first member consumes before committing (1..5)


def offsets_client(lib: str, bootstrap: str, timeout_s: float = 50.0, **options) -> list[dict]:
    return tb.node_client(lib, "group", bootstrap, timeout_s, script="offsets_client.js",
                          **options)


def of_type(lines: list[dict], kind: str) -> list[dict]:
    return [line for line in lines if line.get("type") == kind]


def one_of(lines: list[dict], kind: str) -> dict:
    found = of_type(lines, kind)
    assert len(found) == 1, f"expected one {kind!r} line, got {found}"
    return found[0]


def by_partition(mapping: dict) -> dict[int, object]:
    """JSON object keys are strings: {"3": x} -> {3: x}."""
    return {int(key): value for key, value in mapping.items()}


def records_by_partition(lines: list[dict]) -> dict[int, list[tuple[int, str]]]:
    got: dict[int, list[tuple[int, str]]] = {}
    for line in of_type(lines, "record"):
        got.setdefault(line["partition"], []).append((int(line["offset"]), line["value"]))
    return got


@pytest.mark.parametrize("lib", ["rdkafka", "kafkajs"])
def test_node_group_resumes_through_another_proxy_instance(vproxy212, mock212, log_dir, lib):
    """6 records to each of the 40 virtual partitions (node-rdkafka, explicit partitions). A
    member of a fresh group (node-rdkafka or kafkajs) reads the first 1..5 of every virtual
    partition (a different cut per partition), commits the offset after the last of them
    (kafkajs with a metadata string) while a member of its generation, reads the committed
    offsets back through the same proxy and leaves. A new member of the group connecting
    through a SECOND proxy instance (same mapping, same mock) gets exactly the remaining records
    of every virtual partition: nothing lost, nothing repeated, in order, at their acked
    offsets; and reads back the same committed offsets (and metadata) there."""
    endpoint = vproxy212
    physical = PHYSICAL
    virtual = physical if endpoint.direct else VIRTUAL
    topic, created = endpoint.create_topic(f"vp-off-{lib}", physical)
    assert created == physical
    partitions = f"0-{virtual - 1}"

    lines = tb.node_client("rdkafka", "produce", endpoint.bootstrap, 40, script="vp_client.js",
                           topic=topic, partitions=partitions, count=RECORDS_PER_PARTITION,
                           prefix=f"off-{lib}", order="round")
    done = lines[-1]
    assert done["error_count"] == 0 and done["delivered"] == virtual * RECORDS_PER_PARTITION, \
        f"delivery problems: {done}"
    acked = {line["value"]: int(line["offset"]) for line in of_type(lines, "delivery")}
    expected = {v: [f"off-{lib}-{v}-{i}" for i in range(RECORDS_PER_PARTITION)]
                for v in range(virtual)}
    assert set(acked) == {value for values in expected.values() for value in values}
    commit = {v: acked[expected[v][_cut(v) - 1]] + 1 for v in range(virtual)}
    metadata = {v: f"kjs-{v}" for v in range(virtual)} if lib == "kafkajs" else None

    def check_committed(answer: dict, where: str) -> None:
        assert answer["error"] is None, f"{lib} reading committed offsets {where}: {answer}"
        read = by_partition(answer["offsets"])
        wrong = {v: (commit[v], read.get(v)) for v in range(virtual) if read.get(v) != commit[v]}
        assert not wrong, (f"{lib}: committed offsets read {where} differ for {len(wrong)} "
                           f"partitions (committed, read): {dict(list(wrong.items())[:8])}")
        if metadata is not None:
            read_metadata = by_partition(answer["metadata"])
            wrong = {v: (metadata[v], read_metadata.get(v)) for v in range(virtual)
                     if read_metadata.get(v) != metadata[v]}
            assert not wrong, (f"{lib}: commit metadata read {where} differs for {len(wrong)} "
                               f"partitions (committed, read): {dict(list(wrong.items())[:8])}")

    def check_records(got, wanted, what: str) -> None:
        problems = []
        for v in sorted(set(got) | set(wanted)):
            values = [value for _, value in got.get(v, [])]
            if values != wanted.get(v, []):
                problems.append((v, "expected", wanted.get(v, []), "got", values))
            elif any(acked[value] != offset for offset, value in got.get(v, [])):
                problems.append((v, "offsets", got[v]))
        assert not problems, f"{lib}, {what}: {len(problems)} partitions wrong: {problems[:6]}"

    group = tb.unique_name(f"vp-off-{lib}")
    first = offsets_client(lib, endpoint.bootstrap, topic=topic, group=group,
                           partitions=partitions,
                           want=",".join(str(_cut(v)) for v in range(virtual)), commit=1)
    got = records_by_partition(first)
    check_records({v: records[:_cut(v)] for v, records in got.items()},
                  {v: expected[v][:_cut(v)] for v in range(virtual)}, "first member")
    committed_line = one_of(first, "commit")
    assert committed_line["error"] is None, f"{lib}: the commit failed: {committed_line}"
    assert by_partition(committed_line["offsets"]) == commit, committed_line
    check_committed(one_of(first, "committed"), "through the same proxy")

    with osup.proxy_instance(mock212, log_dir, f"offsets-node-{lib}", MAPPING) as second:
        remaining = {v: expected[v][_cut(v):] for v in range(virtual)}
        resumed = offsets_client(lib, second.bootstrap, topic=topic, group=group,
                                 partitions=partitions,
                                 want=",".join(str(len(remaining[v])) for v in range(virtual)),
                                 commit=0, drain_ms=1000)
        assert resumed[-1].get("stray", 0) == 0, f"records of other topics: {resumed[-1]}"
        check_records(records_by_partition(resumed), remaining,
                      "a new member through the second proxy instance")
        check_committed(one_of(resumed, "committed"), "through the second proxy instance")
