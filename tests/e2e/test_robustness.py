"""Bad clients must not hurt good ones (DESIGN.md section 4): garbage gets its connection
closed, half-sent requests and abrupt disconnects are cleaned up, and a client connected all
along keeps producing and consuming; the proxy stays alive and healthy."""

import os
import socket
import struct
import time

import pytest

import kpp_testbed as tb

CLOSE_TIMEOUT_S = 10.0


def api_versions_request(correlation_id: int, client_id: bytes = b"kpp-raw") -> bytes:
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def connect(endpoint) -> socket.socket:
    host, port = tb.parse_bootstrap(endpoint.bootstrap)[0]
    sock = socket.create_connection((host, port), timeout=5)
    sock.settimeout(CLOSE_TIMEOUT_S)
    return sock


def read_response(sock) -> bytes:
    header = _read_exactly(sock, 4)
    (size,) = struct.unpack(">i", header)
    return _read_exactly(sock, size)


def _read_exactly(sock, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed by peer")
        data += chunk
    return data


def assert_closed_by_peer(sock, what: str) -> None:
    """Reads until the peer closes; a hang past CLOSE_TIMEOUT_S fails the test."""
    deadline = time.monotonic() + CLOSE_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return
    except (ConnectionResetError, BrokenPipeError):
        return
    except socket.timeout:
        pass
    pytest.fail(f"{what}: connection still open {CLOSE_TIMEOUT_S:.0f} s later")


class GoodClient:
    """A confluent-kafka producer and consumer connected before the bad clients arrive."""

    def __init__(self, endpoint):
        import confluent_kafka

        self.endpoint = endpoint
        self.topic, self.partitions = endpoint.create_topic("rb-good")
        self.producer = confluent_kafka.Producer({
            "bootstrap.servers": endpoint.bootstrap, "acks": "all", "linger.ms": 1,
            "message.timeout.ms": 15000})
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": endpoint.bootstrap, "group.id": tb.unique_name("rb"),
            "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.consumer.assign([confluent_kafka.TopicPartition(self.topic, p,
                                                             confluent_kafka.OFFSET_BEGINNING)
                              for p in range(self.partitions)])
        self.sent: dict[int, list[str]] = {p: [] for p in range(self.partitions)}
        self.received: list = []
        self.rounds = 0
        self.round_trip()  # connections to the bootstrap and all brokers are open now

    def round_trip(self) -> None:
        """Produces one record per partition and consumes until everything sent is back."""
        errors = []
        for partition in range(self.partitions):
            value = f"good-{partition}-{self.rounds}"
            self.sent[partition].append(value)
            self.producer.produce(self.topic, value=value.encode(), partition=partition,
                                  on_delivery=lambda e, m: e and errors.append(str(e)))
        self.rounds += 1
        assert self.producer.flush(20) == 0, "good producer stuck"
        assert not errors, errors
        total = sum(len(v) for v in self.sent.values())

        def caught_up():
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                self.received.append((message.partition(), message.offset(),
                                      message.value().decode()))
            return len(self.received) >= total
        tb.wait_until(caught_up, 30, "the good consumer to read its records", interval_s=0)
        tb.check_partition_streams(self.received, self.sent)

    def close(self) -> None:
        self.consumer.close()


def assert_proxy_healthy(endpoint) -> None:
    if endpoint.direct:
        return
    assert endpoint.proxy.alive(), f"proxy died:\n{endpoint.proxy.log_tail()}"
    status, body = endpoint.proxy.http_get("/health")
    assert status == 200, f"/health answered {status}: {body[:200]}"


@pytest.fixture
def good_client(proxy202):
    client = GoodClient(proxy202)
    yield client
    client.close()


def test_garbage_frame_sizes_close_only_that_connection(proxy202, good_client):
    bad_frames = {
        "frame size 0x7fffffff": struct.pack(">I", 0x7FFFFFFF) + b"\x00\x12\x00\x00" * 8,
        "negative frame size": struct.pack(">I", 0x80000000) + b"\x00" * 16,
        "frame size -1": b"\xff\xff\xff\xff" + os.urandom(64),
    }
    for what, frame in bad_frames.items():
        sock = connect(proxy202)
        try:
            sock.sendall(frame)
            assert_closed_by_peer(sock, what)
        finally:
            sock.close()
        good_client.round_trip()
    assert_proxy_healthy(proxy202)


def test_random_bytes_do_not_hurt_others(proxy202, good_client):
    """Random bytes after a valid request: the valid request may be answered, then the
    connection must close or stay harmlessly open; either way nobody else notices."""
    random_bytes = bytes.fromhex("7f3a91c4") + os.urandom(4096)
    sockets = []
    for seed in range(5):
        sock = connect(proxy202)
        sock.sendall(api_versions_request(seed) + struct.pack(">i", 40) + os.urandom(40)
                     + random_bytes)
        sockets.append(sock)
    good_client.round_trip()
    for sock in sockets:
        sock.settimeout(0.5)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
        sock.close()
    good_client.round_trip()
    assert_proxy_healthy(proxy202)


def test_malformed_known_api_body(proxy202, good_client):
    """Well-framed Produce and Metadata requests whose bodies lie about their lengths: the
    proxy answers with an error or closes the connection, and never crashes."""
    lying_bodies = [
        # Produce v3: transactional id null, acks -1, timeout, topics array of 0x7fffffff.
        struct.pack(">hhih", 0, 3, 7, 3) + b"raw" + struct.pack(">hhii", -1, -1, 1000,
                                                                  0x7FFFFFFF),
        # Produce v3 with one topic whose name length runs past the frame.
        struct.pack(">hhih", 0, 3, 8, 3) + b"raw" + struct.pack(">hhiih", -1, -1, 1000, 1,
                                                                   30000) + b"t",
        # Metadata v1 whose topics array count runs past the frame. (A count near 2^30 would
        # test the upstream, not the proxy: it aborts the 2.0.2 mock in rd_realloc.)
        struct.pack(">hhih", 3, 1, 9, 3) + b"raw" + struct.pack(">ih", 5, 200) + b"x",
    ]
    for body in lying_bodies:
        sock = connect(proxy202)
        try:
            sock.sendall(struct.pack(">i", len(body)) + body)
            try:
                read_response(sock)  # an error response is fine ...
            except (ConnectionError, OSError):
                pass  # ... and so is a close
        finally:
            sock.close()
        good_client.round_trip()
    assert_proxy_healthy(proxy202)


def test_half_frames_and_abrupt_disconnects(proxy202, good_client):
    request = api_versions_request(1)
    # Half a frame, then close.
    for cut in (2, 5, len(request) // 2, len(request) - 1):
        sock = connect(proxy202)
        sock.sendall(request[:cut])
        sock.close()
    # Half a frame, then stay connected while others work.
    idle = connect(proxy202)
    idle.sendall(request[: len(request) // 2])
    # Pipelined requests, then close before reading any response.
    for _ in range(5):
        sock = connect(proxy202)
        sock.sendall(b"".join(api_versions_request(i) for i in range(50)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    good_client.round_trip()
    # The idle connection still works once it completes its request.
    idle.sendall(request[len(request) // 2:])
    response = read_response(idle)
    assert struct.unpack(">i", response[:4])[0] == 1, "wrong correlation id"
    idle.close()
    good_client.round_trip()
    assert_proxy_healthy(proxy202)


def test_many_connections_open_and_close(proxy202, good_client):
    # The 2.0.2 mock accepts slowly from a short backlog: direct mode only checks the test.
    count = 10 if proxy202.direct else 100
    for round_index in range(3):
        sockets = [connect(proxy202) for _ in range(count)]
        for index, sock in enumerate(sockets):
            if index % 2 == 0:
                sock.sendall(api_versions_request(index))
        for sock in sockets:
            sock.close()
        good_client.round_trip()
    assert_proxy_healthy(proxy202)
