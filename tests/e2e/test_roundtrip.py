"""Produce and consume round trips on every partition, through the proxy, with every client
against both upstreams: a 10-partition topic on the 2.0.2 mock, a 4-partition auto-created
topic on the 2.12 mock. Each partition must hold exactly its records, in produce order."""

import kpp_testbed as tb

RECORDS_PER_PARTITION = 20


def test_kcat_roundtrip(endpoint):
    topic, partitions = endpoint.create_topic("rt-kcat")
    expected = tb.expected_values("kcat", partitions, 5)
    for partition, values in expected.items():
        tb.kcat_produce(endpoint.bootstrap, topic, partition, values)
    received = []
    for partition in range(partitions):
        received += tb.kcat_consume(endpoint.bootstrap, topic, partition)
    tb.check_partition_streams(received, expected)


def test_confluent_roundtrip(endpoint):
    topic, partitions = endpoint.create_topic("rt-confluent")
    expected = tb.expected_values("ck", partitions, RECORDS_PER_PARTITION)
    acked, failed = tb.confluent_produce(endpoint.bootstrap, topic, expected)
    assert not failed, failed[:5]
    tb.check_partition_streams(sorted(acked), expected)
    received = tb.confluent_consume_assigned(endpoint.bootstrap, topic, partitions,
                                             partitions * RECORDS_PER_PARTITION)
    tb.check_partition_streams(received, expected)
    # Acknowledged offsets are the offsets the records are read back at.
    assert sorted(received) == sorted(acked)


def test_kafka_python_roundtrip(endpoint):
    topic, partitions = endpoint.create_topic("rt-kpy")
    expected = tb.expected_values("kp", partitions, RECORDS_PER_PARTITION)
    acked = tb.kafka_python_produce(endpoint.bootstrap, topic, expected)
    received = tb.kafka_python_consume_assigned(endpoint.bootstrap, topic, partitions,
                                                partitions * RECORDS_PER_PARTITION)
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked)


def test_node_rdkafka_roundtrip(endpoint):
    topic, partitions = endpoint.create_topic("rt-nrk")
    expected = tb.expected_values("nrk", partitions, RECORDS_PER_PARTITION)
    produced = tb.node_client("rdkafka", "produce", endpoint.bootstrap, topic=topic,
                              partitions=partitions, count=RECORDS_PER_PARTITION, prefix="nrk")
    acked = tb.node_records(produced, "delivery")
    assert len(acked) == partitions * RECORDS_PER_PARTITION, produced[-1]
    consumed = tb.node_client("rdkafka", "consume", endpoint.bootstrap, topic=topic,
                              partitions=partitions, expect=len(acked))
    received = tb.node_records(consumed, "record")
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked)


def test_kafkajs_roundtrip(endpoint):
    topic, partitions = endpoint.create_topic("rt-kjs")
    expected = tb.expected_values("kjs", partitions, RECORDS_PER_PARTITION)
    produced = tb.node_client("kafkajs", "produce", endpoint.bootstrap, topic=topic,
                              partitions=partitions, count=RECORDS_PER_PARTITION, prefix="kjs")
    acked = tb.node_records(produced, "delivery")
    assert len(acked) == partitions * RECORDS_PER_PARTITION, produced[-1]
    consumed = tb.node_client("kafkajs", "consume", endpoint.bootstrap, topic=topic,
                              partitions=partitions, expect=len(acked),
                              group=tb.unique_name("kjs-group"))
    received = tb.node_records(consumed, "record")
    tb.check_partition_streams(received, expected)
    assert sorted(received) == sorted(acked)


def test_cross_client_roundtrip(endpoint):
    """Written by one client library, read by the others: the proxy's answers must suit all."""
    topic, partitions = endpoint.create_topic("rt-cross")
    expected = tb.expected_values("x", partitions, RECORDS_PER_PARTITION)
    acked, failed = tb.confluent_produce(endpoint.bootstrap, topic, expected)
    assert not failed, failed[:5]
    total = partitions * RECORDS_PER_PARTITION
    tb.check_partition_streams(
        tb.kafka_python_consume_assigned(endpoint.bootstrap, topic, partitions, total), expected)
    consumed = tb.node_client("rdkafka", "consume", endpoint.bootstrap, topic=topic,
                              partitions=partitions, expect=total)
    tb.check_partition_streams(tb.node_records(consumed, "record"), expected)
    received = []
    for partition in range(partitions):
        received += tb.kcat_consume(endpoint.bootstrap, topic, partition)
    tb.check_partition_streams(received, expected)
