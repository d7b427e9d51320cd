// What the Node test clients (kpp_client.js, vp_client.js, offsets_client.js) share: argument
// lists, output lines, the kafkajs client settings and the metadata operation of both libraries.
'use strict';

const path = require('path');

// Stops the script with exit code 2 (bad arguments), naming the script.
function fail(message) {
  process.stderr.write(`${path.basename(process.argv[1])}: ${message}\n`);
  process.exit(2);
}

// "0,2,5-7" -> [0, 2, 5, 6, 7]
function parse_list(text) {
  const values = [];
  for (const part of String(text).split(',').filter((entry) => entry.length > 0)) {
    const range = part.match(/^(\d+)-(\d+)$/);
    if (range) {
      for (let v = Number(range[1]); v <= Number(range[2]); ++v) values.push(v);
    } else if (/^\d+$/.test(part)) {
      values.push(Number(part));
    } else {
      fail(`bad list entry ${part}`);
    }
  }
  return values;
}

// One JSON object per output line.
function emit(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

function text(buffer) {
  return buffer === null || buffer === undefined ? null : buffer.toString();
}

// `security` (optional): kafkajs's ssl and sasl settings.
function kafkajs_client(args, {clientId, requestTimeout, retries, security = {}}) {
  const {Kafka, logLevel} = require('kafkajs');
  return new Kafka({
    clientId,
    brokers: args.bootstrap.split(','),
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    requestTimeout,
    retry: {retries, initialRetryTime: 200},
    ...security,
  });
}

// metadata [--topic T]: the brokers, and the topic (all topics with no --topic for rdkafka).
// `security` (optional): {config: librdkafka settings, oauth_token: an OAUTHBEARER token}.
function rdkafka_metadata(Kafka, args, done, security = {}) {
  const client = new Kafka.Producer({'bootstrap.servers': args.bootstrap, 'log_level': 3,
                                     ...(security.config || {})});
  if (security.oauth_token) client.setOauthBearerToken(security.oauth_token);
  const query = args.topic ? {topic: args.topic, allTopics: false} : {allTopics: true};
  client.connect({...query, timeout: args.timeout_ms}, (error, md) => {
    if (error) return done({error: String(error)});
    emit({
      type: 'metadata',
      orig_broker_id: md.orig_broker_id,
      orig_broker_name: md.orig_broker_name,
      brokers: md.brokers.map((b) => ({id: b.id, host: b.host, port: b.port})),
      topics: md.topics.map((t) => ({
        name: t.name,
        partitions: t.partitions.map((p) => ({id: p.id, leader: p.leader, replicas: p.replicas,
                                              isrs: p.isrs})),
      })),
    });
    client.disconnect(() => done({}));
  });
}

async function kafkajs_metadata(kafka, args) {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const cluster = await admin.describeCluster();
    const topics = args.topic ? (await admin.fetchTopicMetadata({topics: [args.topic]})).topics
                              : [];
    emit({
      type: 'metadata',
      controller_id: cluster.controller,
      brokers: cluster.brokers.map((b) => ({id: b.nodeId, host: b.host, port: b.port})),
      topics: topics.map((t) => ({
        name: t.name,
        partitions: t.partitions.map((p) => ({id: p.partitionId, leader: p.leader,
                                              replicas: p.replicas, isrs: p.isr})),
      })),
    });
  } finally {
    await admin.disconnect();
  }
  return {};
}

module.exports = {fail, parse_list, emit, text, kafkajs_client, rdkafka_metadata, kafkajs_metadata};
