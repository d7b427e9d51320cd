#!/usr/bin/env node
// Node group consumers that commit and resume, for the committed-offset end-to-end tests
// (tests/e2e/test_offsets_node.py): node-rdkafka (librdkafka 2.12) and kafkajs. Every output
// line is one JSON object; the last one has "type": "done".
//
// Usage: node offsets_client.js LIB group --bootstrap HOST:PORT[,...] --topic T --group G
//          --partitions LIST --want K[,K...] [--commit 0|1] [--drain-ms MS] [--timeout-ms MS]
//   LIB: rdkafka | kafkajs
//   Subscribes to T as a member of group G (auto.offset.reset earliest, no auto commit) and
//   reads until every partition of LIST delivered at least its K records (one K for all, or
//   one per entry of LIST). With --commit 1 it then commits, for each partition of LIST, the
//   offset after its K-th record (kafkajs with metadata "kjs-<partition>"), synchronously,
//   while still a member of the group. It reads --drain-ms more (to catch extra records),
//   reads the group's committed offsets of LIST back (node-rdkafka: committed(); kafkajs:
//   admin fetchOffsets()) and leaves the group.
//   -> {"type":"record","partition","offset","value"} per record
//      {"type":"commit","offsets":{p: offset},"error": null | text}      (with --commit 1)
//      {"type":"committed","offsets":{p: offset},"metadata":{p: text},"error": null | text}
//   --timeout-ms MS  overall deadline (default 60000); on expiry prints "done" with
//                    "timed_out": true and what each partition received, and exits 3.
// LIST: comma-separated partitions and ranges, e.g. "0,4,8" or "0-39".
// Needs NODE_PATH=<node cache>/node_modules (tools/setup.sh --print-node-dir).
'use strict';

const {fail, parse_list, emit, kafkajs_client: make_kafkajs_client} = require('./client_common');

function kafkajs_client(args) {
  return make_kafkajs_client(args, {clientId: 'kpp-e2e-offsets', requestTimeout: 15000, retries: 5});
}

const numeric_options = new Set(['timeout_ms', 'commit', 'drain_ms']);

function parse_args(argv) {
  if (argv.length < 2) fail('usage: offsets_client.js LIB group --bootstrap B [options]');
  const args = {lib: argv[0], op: argv[1], bootstrap: '', topic: '', group: '', partitions: '',
                want: '1', commit: 0, drain_ms: 0, timeout_ms: 60000};
  for (let i = 2; i < argv.length; ++i) {
    const key = argv[i].replace(/^--/, '').replace(/-/g, '_');
    if (!(key in args) || i + 1 >= argv.length) fail(`bad argument ${argv[i]}`);
    const value = argv[++i];
    args[key] = numeric_options.has(key) ? Number(value) : value;
    if (numeric_options.has(key) && !Number.isFinite(args[key])) fail(`bad number ${value}`);
  }
  if (args.op !== 'group') fail(`unknown op ${args.op}`);
  for (const required of ['bootstrap', 'topic', 'group', 'partitions']) {
    if (!args[required]) fail(`--${required} is required`);
  }
  args.partition_list = parse_list(args.partitions);
  const want = parse_list(args.want);
  if (want.length === 1) {
    args.want_of = new Map(args.partition_list.map((p) => [p, want[0]]));
  } else if (want.length === args.partition_list.length) {
    args.want_of = new Map(args.partition_list.map((p, i) => [p, want[i]]));
  } else {
    fail('--want wants one number or one per partition');
  }
  return args;
}

// What each partition delivered: offsets in order (records are emitted as they come).
class Received {
  constructor(args) {
    this.args = args;
    this.offsets = new Map(args.partition_list.map((p) => [p, []]));
    this.stray = 0;
  }

  add(topic, partition, offset, value) {
    emit({type: 'record', partition, offset, value});
    const list = topic === this.args.topic ? this.offsets.get(partition) : undefined;
    if (list === undefined) ++this.stray;
    else list.push(offset);
  }

  complete() {
    for (const [partition, want] of this.args.want_of) {
      if (this.offsets.get(partition).length < want) return false;
    }
    return true;
  }

  // The offset after each partition's K-th record.
  commit_points() {
    const points = {};
    for (const [partition, want] of this.args.want_of) {
      if (want > 0) points[partition] = this.offsets.get(partition)[want - 1] + 1;
    }
    return points;
  }

  counts() {
    const counts = {};
    for (const [partition, offsets] of this.offsets) counts[partition] = offsets.length;
    return counts;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- node-rdkafka ----

async function rdkafka_group(args, received) {
  const Kafka = require('node-rdkafka');
  const consumer = new Kafka.KafkaConsumer({
    'bootstrap.servers': args.bootstrap,
    'group.id': args.group,
    'enable.auto.commit': false,
    'session.timeout.ms': 6000,
    'heartbeat.interval.ms': 500,
    'fetch.wait.max.ms': 100,
    'log_level': 3,
  }, {'auto.offset.reset': 'earliest'});
  consumer.on('event.error', (error) => emit({type: 'log', error: String(error)}));
  await new Promise((resolve, reject) => consumer.connect({timeout: args.timeout_ms},
                                                          (error) => error ? reject(error) : resolve()));
  const result = {};
  try {
    consumer.setDefaultConsumeTimeout(100);
    consumer.subscribe([args.topic]);
    const consume = () => new Promise((resolve) => consumer.consume(1000, (error, messages) => {
      if (error) emit({type: 'log', error: String(error)});
      for (const m of messages || []) {
        received.add(m.topic, m.partition, m.offset, m.value === null ? null : m.value.toString());
      }
      resolve();
    }));
    while (!received.complete()) await consume();
    if (args.commit !== 0) {
      const offsets = received.commit_points();
      let error = null;
      try {
        consumer.commitSync(Object.entries(offsets).map(([partition, offset]) => ({
          topic: args.topic, partition: Number(partition), offset})));
      } catch (commit_error) {
        error = String(commit_error);
      }
      emit({type: 'commit', offsets, error});
    }
    const drain_until = Date.now() + args.drain_ms;
    while (Date.now() < drain_until) await consume();
    const committed = await new Promise((resolve) => consumer.committed(
        args.partition_list.map((partition) => ({topic: args.topic, partition})), 15000,
        (error, partitions) => resolve({error, partitions})));
    const offsets = {};
    for (const tp of committed.partitions || []) {
      offsets[tp.partition] = tp.error ? `error: ${tp.error}` : tp.offset;
    }
    emit({type: 'committed', offsets, metadata: {},
          error: committed.error ? String(committed.error) : null});
  } finally {
    await new Promise((resolve) => consumer.disconnect(() => resolve()));
  }
  result.stray = received.stray;
  return result;
}

// ---- kafkajs ----

async function kafkajs_group(args, received) {
  const kafka = kafkajs_client(args);
  const consumer = kafka.consumer({groupId: args.group, sessionTimeout: 10000,
                                   heartbeatInterval: 1000, maxWaitTimeInMs: 200});
  consumer.on(consumer.events.CRASH, ({payload}) => emit({type: 'log', crash: String(payload.error),
                                                          restart: payload.restart}));
  await consumer.connect();
  try {
    await consumer.subscribe({topic: args.topic, fromBeginning: true});
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({topic, partition, message}) => {
        received.add(topic, partition, Number(message.offset),
                     message.value === null ? null : message.value.toString());
      },
    });
    while (!received.complete()) await sleep(50);
    if (args.commit !== 0) {
      const offsets = received.commit_points();
      let error = null;
      try {
        await consumer.commitOffsets(Object.entries(offsets).map(([partition, offset]) => ({
          topic: args.topic, partition: Number(partition), offset: String(offset),
          metadata: `kjs-${partition}`})));
      } catch (commit_error) {
        error = String(commit_error && commit_error.stack || commit_error);
      }
      emit({type: 'commit', offsets, error});
    }
    await sleep(args.drain_ms);
  } finally {
    await consumer.disconnect();
  }
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = {};
    const metadata = {};
    let error = null;
    try {
      const answer = await admin.fetchOffsets({groupId: args.group, topics: [args.topic]});
      for (const topic of answer) {
        if (topic.topic !== args.topic) continue;
        for (const p of topic.partitions) {
          offsets[p.partition] = Number(p.offset);
          metadata[p.partition] = p.metadata;
        }
      }
    } catch (fetch_error) {
      error = String(fetch_error && fetch_error.stack || fetch_error);
    }
    emit({type: 'committed', offsets, metadata, error});
  } finally {
    await admin.disconnect();
  }
  return {stray: received.stray};
}

function main() {
  const args = parse_args(process.argv.slice(2));
  const received = new Received(args);
  let finished = false;
  const done = (extra) => {
    if (finished) return;
    finished = true;
    emit({type: 'done', received: received.counts(), ...extra});
    process.exit(extra.error ? 1 : extra.timed_out ? 3 : 0);
  };
  setTimeout(() => done({timed_out: true}), args.timeout_ms).unref();
  const ops = {rdkafka: rdkafka_group, kafkajs: kafkajs_group};
  if (!ops[args.lib]) fail(`unknown LIB ${args.lib}`);
  ops[args.lib](args, received).then(done, (error) => done({
    error: String(error && error.stack || error)}));
}

main();
