"""Metadata through the proxy shows only proxy addresses: every broker on its own proxy port
(base + node id) on 127.0.0.1, and no upstream (mock) port anywhere in the answer."""

import json

import kpp_testbed as tb


def check_metadata(endpoint, brokers, topic, partitions, raw_text):
    """brokers: {node id: (host, port)}; partitions: {partition: leader id}."""
    assert brokers == endpoint.expected_brokers(), \
        f"brokers {brokers} != expected {endpoint.expected_brokers()}"
    assert sorted(partitions) == list(range(topic[1])), \
        f"topic {topic[0]}: partitions {sorted(partitions)}, expected {topic[1]}"
    for partition, leader in partitions.items():
        assert leader in brokers, f"partition {partition}: leader {leader} not a listed broker"
    if not endpoint.direct:
        for port in endpoint.upstream.ports:
            assert f":{port}" not in raw_text and f'"port":{port}' not in raw_text \
                and f"'port': {port}" not in raw_text, \
                f"upstream port {port} leaked into metadata: {raw_text[:2000]}"


def test_kcat_metadata(endpoint):
    topic = endpoint.create_topic("md-kcat")
    metadata, raw = tb.kcat_metadata(endpoint.bootstrap)
    brokers = {}
    for broker in metadata["brokers"]:
        host, _, port = broker["name"].rpartition(":")
        brokers[broker["id"]] = (host, int(port))
    topics = {t["topic"]: t for t in metadata["topics"]}
    assert topic[0] in topics, f"{topic[0]} missing from {sorted(topics)}"
    partitions = {p["partition"]: p["leader"] for p in topics[topic[0]]["partitions"]}
    check_metadata(endpoint, brokers, topic, partitions, raw)
    if not endpoint.direct:
        assert metadata["controllerid"] in brokers, \
            f"controller id {metadata['controllerid']} is not a listed broker"


def test_confluent_metadata(endpoint):
    import confluent_kafka.admin

    topic = endpoint.create_topic("md-confluent")
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": endpoint.bootstrap})
    metadata = admin.list_topics(timeout=15)
    brokers = {b.id: (b.host, b.port) for b in metadata.brokers.values()}
    assert topic[0] in metadata.topics
    partitions = {p.id: p.leader for p in metadata.topics[topic[0]].partitions.values()}
    raw = json.dumps({"brokers": [{"host": h, "port": p} for h, p in brokers.values()],
                      "orig": metadata.orig_broker_name}, separators=(",", ":"))
    check_metadata(endpoint, brokers, topic, partitions, raw)


def test_kafka_python_metadata(endpoint):
    import kafka

    topic = endpoint.create_topic("md-kpy")
    consumer = kafka.KafkaConsumer(bootstrap_servers=endpoint.bootstrap,
                                   request_timeout_ms=15000)
    try:
        tb.wait_until(lambda: topic[0] in consumer.topics(), 30, f"{topic[0]} in metadata")
        cluster = consumer._client.cluster
        brokers = {b.nodeId: (b.host, b.port) for b in cluster.brokers()}
        partitions = {p: cluster.leader_for_partition(kafka.TopicPartition(topic[0], p))
                      for p in cluster.partitions_for_topic(topic[0])}
    finally:
        consumer.close()
    raw = json.dumps([{"host": h, "port": p} for h, p in brokers.values()],
                     separators=(",", ":"))
    check_metadata(endpoint, brokers, topic, partitions, raw)


def _node_metadata(lib, endpoint):
    topic = endpoint.create_topic(f"md-{lib}")
    lines = tb.node_client(lib, "metadata", endpoint.bootstrap, timeout_s=30, topic=topic[0])
    metadata = next(line for line in lines if line["type"] == "metadata")
    brokers = {b["id"]: (b["host"], b["port"]) for b in metadata["brokers"]}
    matching = [t for t in metadata["topics"] if t["name"] == topic[0]]
    assert matching, f"{topic[0]} missing from {metadata['topics']}"
    partitions = {p["id"]: p["leader"] for p in matching[0]["partitions"]}
    check_metadata(endpoint, brokers, topic, partitions,
                   json.dumps(metadata, separators=(",", ":")))
    return metadata


def test_node_rdkafka_metadata(endpoint):
    _node_metadata("rdkafka", endpoint)


def test_kafkajs_metadata(endpoint):
    metadata = _node_metadata("kafkajs", endpoint)
    if not endpoint.direct:
        assert metadata["controller_id"] in {b["id"] for b in metadata["brokers"]}, \
            f"kafkajs: controller id {metadata['controller_id']} is not a listed broker"
