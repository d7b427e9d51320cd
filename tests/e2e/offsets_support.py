"""Helpers of the committed-offset end-to-end tests (test_offsets.py, test_offsets_node.py;
DESIGN.md section 2, "Committed offsets (offset store)"):

- more proxy instances beside the session's fixtures (a second proxy in front of the same
  mock, a restarted one), checked like the fixtures' on exit;
- a raw protocol client for FindCoordinator v0, OffsetCommit v2 and OffsetFetch v1..v5, for
  what clients do not show (metadata strings, every version, the "all topics" form, commits
  in another member's name) and to read the physical commits on the mock itself.
"""

from __future__ import annotations

import contextlib
import struct
import sys

import kpp_testbed as tb
import vp_support as vs

# Kafka error codes.
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25

# API keys of the raw requests.
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10


def conftest_module():
    """The conftest module pytest loaded (its mapping text and its failure-report lists)."""
    module = sys.modules.get("conftest")
    if module is None:
        import conftest as module  # noqa: PLC0415 - the tests directory is on sys.path
    return module


@contextlib.contextmanager
def proxy_instance(upstream, log_dir, name: str, mapping: str):
    """Another proxy process with `mapping` (conftest.VIRTUAL_MAPPING_*) in front of upstream,
    beside the session's fixtures (the mock itself in direct mode). Its log is attached to a
    failure report; when the block ends it must exit 0 on SIGTERM and have logged no schema
    mismatch."""
    if tb.direct_mode():
        yield tb.Endpoint(upstream, None)
        return
    conftest = conftest_module()
    proxy = tb.Proxy(upstream, log_dir, name, mapping)
    conftest._logs_to_show.append((f"{name} log", proxy.log_path))
    conftest._proxies.append((name, proxy))
    try:
        yield tb.Endpoint(upstream, proxy)
    finally:
        exit_code = proxy.stop()
    check_stopped(proxy, name, exit_code)


def check_stopped(proxy, name: str, exit_code: int) -> None:
    """As conftest checks its fixtures' proxies: exit 0, no schema mismatch but the mock's
    known deviations."""
    assert exit_code == 0, (
        f"{name} did not exit 0 within {tb.PROXY_SHUTDOWN_TIMEOUT_S} s of SIGTERM "
        f"(rc={exit_code}); log:\n{proxy.log_tail()}")
    known_deviation = getattr(conftest_module(), "_known_mock_deviation", lambda line: False)
    mismatches = [line for line in proxy.log_path.read_text(errors="replace").splitlines()
                  if "does not match the schema" in line and not known_deviation(line)]
    assert not mismatches, f"{name}: messages the schema files do not describe:\n" + \
        "\n".join(mismatches[:20])


def error_name(code: int) -> str:
    from kafka import errors

    return f"{code} {errors.for_code(code).__name__}" if code else "0"


# ---------------------------------------------------------------------------------------------
# Raw protocol: FindCoordinator v0, OffsetCommit v2, OffsetFetch v1..v5


def find_coordinator(bootstrap: str, group: str, timeout_s: float = 20.0) -> tuple[int, str, int]:
    """(node id, host, port) of the group's coordinator, as FindCoordinator v0 answers it
    (retried while the answer is an error, e.g. COORDINATOR_NOT_AVAILABLE)."""
    host, port = tb.parse_bootstrap(bootstrap)[0]
    answer = {}

    def found():
        with vs.KafkaConnection(host, port) as connection:
            reader = connection.request(FIND_COORDINATOR, 0, vs._string(group))
            error_code, node_id = reader.take("hi")
            coordinator_host = reader.string()
            coordinator_port = reader.take("i")
            assert reader.done(), "trailing bytes after a FindCoordinator v0 response"
        answer["last"] = error_code
        if error_code != vs.NONE:
            return None
        return node_id, coordinator_host, coordinator_port

    try:
        return tb.wait_until(found, timeout_s, f"the coordinator of group {group}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last error code {answer.get('last')}") from None


def coordinator_connection(endpoint, group: str) -> vs.KafkaConnection:
    """A connection to the group coordinator's address as clients see it (through the proxy:
    the proxy's port for that node)."""
    node_id, host, port = find_coordinator(endpoint.bootstrap, group)
    if not endpoint.direct:
        assert port == endpoint.proxy.broker_port(node_id), (
            f"FindCoordinator names node {node_id} at {host}:{port}, the proxy's port for it is "
            f"{endpoint.proxy.broker_port(node_id)}")
    return vs.KafkaConnection(host, port)


def offset_commit_topics(connection: vs.KafkaConnection, group: str, generation: int,
                         member: str, offsets: dict[str, dict[int, tuple[int, str | None]]],
                         retention_ms: int = -1) -> dict[tuple[str, int], int]:
    """OffsetCommit v2 of offsets {topic: {partition: (offset, metadata)}}, one request;
    returns {(topic, partition): error code}. Fails when the response does not name every
    (topic, partition) of the request exactly once."""
    topics = [vs._string(topic) + vs._array([struct.pack(">iq", partition, offset)
                                             + vs._string(metadata)
                                             for partition, (offset, metadata) in entries.items()])
              for topic, entries in offsets.items()]
    body = (vs._string(group) + struct.pack(">i", generation) + vs._string(member)
            + struct.pack(">q", retention_ms) + vs._array(topics))
    reader = connection.request(OFFSET_COMMIT, 2, body)
    answered = []
    for _ in range(reader.take("i")):
        name = reader.string()
        for _ in range(reader.take("i")):
            partition, error_code = reader.take("ih")
            answered.append(((name, partition), error_code))
    assert reader.done(), "trailing bytes after an OffsetCommit v2 response"
    listed = sorted(key for key, _ in answered)
    sent = sorted((topic, partition) for topic, entries in offsets.items() for partition in entries)
    assert listed == sent, (f"OffsetCommit response lists (topic, partition) {listed[:20]}..., "
                            f"the request {sent[:20]}...")
    return dict(answered)


def offset_commit(connection: vs.KafkaConnection, group: str, generation: int, member: str,
                  topic: str, offsets: dict[int, tuple[int, str | None]],
                  retention_ms: int = -1) -> dict[int, int]:
    """OffsetCommit v2 of one topic's offsets {partition: (offset, metadata)}; returns
    {partition: error code} (see offset_commit_topics)."""
    answer = offset_commit_topics(connection, group, generation, member, {topic: offsets},
                                  retention_ms)
    return {partition: error_code for (_, partition), error_code in answer.items()}


def offset_fetch(connection: vs.KafkaConnection, version: int, group: str,
                 topics: dict[str, list[int]] | None):
    """OffsetFetch of `version` (1..5); topics None is the "all topics" form (v2+). Returns
    (top-level error code, None before v2; [(topic, partition, offset, leader epoch or None,
    metadata, error code)] in response order)."""
    assert 1 <= version <= 5
    if topics is None:
        assert version >= 2, "the all-topics form needs OffsetFetch v2"
        topics_field = struct.pack(">i", -1)
    else:
        topics_field = vs._array([vs._string(name) + vs._array([struct.pack(">i", p)
                                                                for p in partitions])
                                  for name, partitions in topics.items()])
    reader = connection.request(OFFSET_FETCH, version, vs._string(group) + topics_field)
    if version >= 3:
        reader.take("i")  # throttle time
    entries = []
    count = reader.take("i")
    for _ in range(max(count, 0)):
        name = reader.string()
        for _ in range(reader.take("i")):
            partition, offset = reader.take("iq")
            leader_epoch = reader.take("i") if version >= 5 else None
            metadata = reader.string()
            error_code = reader.take("h")
            entries.append((name, partition, offset, leader_epoch, metadata, error_code))
    top_error = reader.take("h") if version >= 2 else None
    assert reader.done(), f"trailing bytes after an OffsetFetch v{version} response"
    return top_error, entries


def fetched_by_partition(entries, topic: str) -> dict[int, tuple[int, str | None, int]]:
    """{partition: (offset, metadata, error code)} of topic's entries; fails when a partition
    is listed twice."""
    result: dict[int, tuple[int, str | None, int]] = {}
    twice = []
    for name, partition, offset, _epoch, metadata, error_code in entries:
        if name != topic:
            continue
        if partition in result:
            twice.append((partition, result[partition], (offset, metadata, error_code)))
        result[partition] = (offset, metadata, error_code)
    assert not twice, f"OffsetFetch lists partitions of {topic} twice: {twice[:10]}"
    return result


def check_fetched(fetched: dict[int, tuple[int, str | None, int]],
                  committed: dict[int, tuple[int, str | None]], uncommitted, what: str) -> None:
    """Committed partitions read back with their offset and metadata, uncommitted ones as
    offset -1; no errors."""
    problems = []
    for partition, (offset, metadata) in committed.items():
        got = fetched.get(partition)
        if got != (offset, metadata, vs.NONE):
            problems.append((partition, "committed", (offset, metadata), "read", got))
    for partition in uncommitted:
        got = fetched.get(partition)
        if got is None or got[0] != -1 or got[2] != vs.NONE:
            problems.append((partition, "never committed, read", got))
    assert not problems, (f"{what}: {len(problems)} partitions read back wrong "
                          f"(partition, ..., (offset, metadata, error)): {problems[:8]}")


def physical_committed(upstream, group: str, topic: str, physical: int) -> dict[int, int]:
    """{p: committed offset} of the group's physical partitions, read from the mock itself."""
    node_id, host, port = find_coordinator(upstream.bootstrap, group)
    with vs.KafkaConnection(host, port) as connection:
        top_error, entries = offset_fetch(connection, 2, group, {topic: list(range(physical))})
    assert top_error == vs.NONE, f"OffsetFetch on the mock: error {top_error}"
    fetched = fetched_by_partition(entries, topic)
    errors = {p: e for p, (_, _, e) in fetched.items() if e != vs.NONE}
    assert not errors, f"OffsetFetch on the mock: partition errors {errors}"
    return {p: offset for p, (offset, _, _) in fetched.items()}
