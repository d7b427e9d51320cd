#!/usr/bin/env node
// Node clients for the virtual-partition end-to-end tests (tests/e2e/test_virtual_node.py):
// node-rdkafka (librdkafka 2.12) and kafkajs, with explicit partition lists, headers,
// compression and end-of-partition events. Every output line is one JSON object; the last
// one has "type": "done".
//
// Usage: node vp_client.js LIB OP --bootstrap HOST:PORT[,...] [options]
//   LIB: rdkafka | kafkajs
//   OP:  metadata --topic T
//          -> {"type":"metadata","brokers":[{"id","host","port"}],
//              "topics":[{"name","partitions":[{"id","leader","replicas","isrs"}]}]}
//        produce --topic T --partitions LIST --count K [--prefix P] [--order O]
//                [--linger-ms MS] [--compression CODEC] [--batch-num-messages N]
//                [--emit-deliveries 0|1] [--idempotent 0|1]
//                [--transactional-id ID --transactions N [--abort-every M]]
//          value "<P>-<partition>-<i>", key "k-<i>", i in 0..K-1, to each partition of LIST.
//          --order partition: all of one partition, then the next (default);
//          --order round: record i of every partition, then i+1 (interleaved).
//          rdkafka: one producer, all records handed over before any ack is awaited (a
//          produce() that throws, e.g. "Local: Unknown partition", counts as a failure);
//          kafkajs: one send() with every record (one Produce request per broker; codecs
//          none and gzip only); --batch-num-messages: rdkafka's cap on records per batch.
//          --idempotent 1: an idempotent producer (rdkafka: enable.idempotence; kafkajs:
//          idempotent with maxInFlightRequests 1, as kafkajs wants for ordering).
//          --transactional-id ID: a transactional producer (implies idempotence); the
//          records, in --order, are cut into --transactions N consecutive runs of near-equal
//          size, one transaction each, in turn; transaction t (0-based) is aborted when
//          --abort-every M > 0 and (t + 1) % M == 0 (M = 3: the third, sixth, ...), else
//          committed. rdkafka: init/begin/commit/abortTransaction, each transaction's records
//          all acknowledged before it ends; kafkajs: producer.transaction(), one send().
//          -> {"type":"delivery","partition","offset","value"} per record (unless
//             --emit-deliveries 0), with "transaction": t and "committed": true|false when
//             transactional; {"type":"transaction","index","outcome":"committed"|"aborted",
//             "records","ms"} per transaction; done has "by_partition": {p: {count, first,
//             last}} (acknowledged records, aborted ones included), "committed" and
//             "aborted" (transaction counts).
//        consume --topic T --partitions LIST [--expect K[,K...]] [--mode M] [--eof 0|1]
//                [--drain-ms MS] [--partition-timeout-ms MS] [--group G] [--emit-records 0|1]
//                [--fetch-max-bytes B] [--fail-on-crash 0|1]
//                [--isolation read_committed|read_uncommitted]
//          --expect: records wanted per partition (one number for all, or one per entry
//          of LIST) or, for --mode group, in total.
//          rdkafka --mode each (default): one consumer reads each partition of LIST alone,
//            in turn: assign [that partition] from the beginning, read until it is done,
//            unassign. A partition is done when (with --eof 1) an end-of-partition event
//            came after at least K records, or (with --eof 0) K records came; then
//            --drain-ms more (to catch extras); or when --partition-timeout-ms passed.
//          kafkajs --mode group: subscribes as group G (fresh if not given) with the
//            round-robin assignor, reads until the total expected arrived, then drains.
//          kafkajs --mode each: for each partition of LIST, a fresh group whose assignor
//            gives the single member exactly that partition; reads it from the beginning
//            until K records came, then drains.
//          --fetch-max-bytes (rdkafka): caps the bytes one fetch asks for, per partition and
//            in all, so a long partition takes many fetches.
//          --fail-on-crash 1 (kafkajs): end with an error at the consumer's first crash
//            instead of letting kafkajs restart it.
//          --isolation: rdkafka isolation.level, kafkajs readUncommitted; both libraries
//            read committed by default.
//          -> {"type":"record","partition","offset","key","value","headers":[{"key","hex"}]}
//             {"type":"eof","partition","offset","after_ms"}  (rdkafka, --eof 1)
//             {"type":"partition_done","partition","received","eof","timed_out","ms"}
//   --timeout-ms MS  overall deadline (default 60000); on expiry prints "done" with
//                    "timed_out": true and exits 3.
// LIST: comma-separated partitions and ranges, e.g. "0,4,8" or "0-39".
// Needs NODE_PATH=<node cache>/node_modules (tools/setup.sh --print-node-dir).
'use strict';

const {fail, parse_list, emit, text, kafkajs_client: make_kafkajs_client, rdkafka_metadata,
       kafkajs_metadata: describe_with} = require('./client_common');

function kafkajs_client(args) {
  return make_kafkajs_client(args, {clientId: 'kpp-e2e-vp', requestTimeout: 15000, retries: 8});
}

function kafkajs_metadata(args) {
  return describe_with(kafkajs_client(args), args);
}

const numeric_options = new Set(['timeout_ms', 'count', 'linger_ms', 'emit_deliveries', 'eof',
                                 'drain_ms', 'partition_timeout_ms', 'emit_records',
                                 'batch_num_messages', 'fetch_max_bytes', 'fail_on_crash',
                                 'idempotent', 'transactions', 'abort_every']);

function parse_args(argv) {
  if (argv.length < 2) fail('usage: vp_client.js LIB OP --bootstrap B [options]');
  const args = {lib: argv[0], op: argv[1], bootstrap: '', topic: '', partitions: '0',
                count: 1, prefix: 'v', order: 'partition', linger_ms: 5, compression: 'none',
                emit_deliveries: 1, expect: '0', mode: '', eof: 0, drain_ms: 500,
                partition_timeout_ms: 20000, group: '', emit_records: 1, timeout_ms: 60000,
                batch_num_messages: 10000, fetch_max_bytes: 0, fail_on_crash: 0,
                idempotent: 0, transactional_id: '', transactions: 1, abort_every: 0,
                isolation: ''};
  for (let i = 2; i < argv.length; ++i) {
    const key = argv[i].replace(/^--/, '').replace(/-/g, '_');
    if (!(key in args) || i + 1 >= argv.length) fail(`bad argument ${argv[i]}`);
    const value = argv[++i];
    args[key] = numeric_options.has(key) ? Number(value) : value;
    if (numeric_options.has(key) && !Number.isFinite(args[key])) fail(`bad number ${value}`);
  }
  if (!args.bootstrap) fail('--bootstrap is required');
  if (args.transactions < 1) fail('--transactions wants at least 1');
  if (!['', 'read_committed', 'read_uncommitted'].includes(args.isolation)) {
    fail(`unknown --isolation ${args.isolation}`);
  }
  args.partition_list = parse_list(args.partitions);
  const expect = parse_list(args.expect);
  args.expect_total = expect.reduce((sum, value) => sum + value, 0);
  if (expect.length === 1) {
    args.expect_each = args.partition_list.map(() => expect[0]);
  } else if (expect.length === args.partition_list.length) {
    args.expect_each = expect;
  } else {
    fail('--expect wants one number or one per partition');
  }
  return args;
}

function hex(value) {
  if (value === null || value === undefined) return null;
  return Buffer.from(value).toString('hex');
}

// The records to produce, in the order they are handed to the client.
function planned_records(args) {
  const records = [];
  const push = (partition, i) => records.push({partition, key: `k-${i}`,
                                               value: `${args.prefix}-${partition}-${i}`});
  if (args.order === 'round') {
    for (let i = 0; i < args.count; ++i) for (const p of args.partition_list) push(p, i);
  } else if (args.order === 'partition') {
    for (const p of args.partition_list) for (let i = 0; i < args.count; ++i) push(p, i);
  } else {
    fail(`unknown --order ${args.order}`);
  }
  return records;
}

// The records cut into args.transactions consecutive runs of near-equal size; each run is
// {index, abort, records}.
function planned_transactions(args, records) {
  const runs = [];
  const count = args.transactions;
  for (let t = 0; t < count; ++t) {
    const begin = Math.floor(records.length * t / count);
    const end = Math.floor(records.length * (t + 1) / count);
    runs.push({index: t, abort: args.abort_every > 0 && (t + 1) % args.abort_every === 0,
               records: records.slice(begin, end)});
  }
  return runs;
}

// Tracks acknowledged records: per partition count and first/last offset.
class DeliveryLog {
  constructor(emit_each) {
    this.emit_each = emit_each;
    this.by_partition = {};
    this.delivered = 0;
    this.errors = [];
  }

  acked(partition, offset, value, transaction) {
    ++this.delivered;
    if (this.emit_each) emit({type: 'delivery', partition, offset, value, ...transaction});
    const entry = this.by_partition[partition] ||
        (this.by_partition[partition] = {count: 0, first: offset, last: offset});
    ++entry.count;
    entry.first = Math.min(entry.first, offset);
    entry.last = Math.max(entry.last, offset);
  }

  failed(partition, value, error) {
    this.errors.push({partition, value, error: String(error)});
  }

  summary() {
    return {delivered: this.delivered, errors: this.errors.slice(0, 20),
            error_count: this.errors.length, by_partition: this.by_partition,
            committed: this.committed || 0, aborted: this.aborted || 0};
  }

  // One line per finished transaction.
  transaction_ended(run, started) {
    const outcome = run.abort ? 'aborted' : 'committed';
    this[outcome] = (this[outcome] || 0) + 1;
    emit({type: 'transaction', index: run.index, outcome, records: run.records.length,
          ms: Date.now() - started});
  }
}

// ---- node-rdkafka ----

function rdkafka_produce(Kafka, args, done) {
  const transactional = args.transactional_id !== '';
  const producer = new Kafka.Producer({
    'bootstrap.servers': args.bootstrap,
    'dr_msg_cb': true,
    'acks': 'all',
    'linger.ms': args.linger_ms,
    'compression.codec': args.compression,
    'message.timeout.ms': Math.max(5000, args.timeout_ms - 5000),
    'queue.buffering.max.messages': 1000000,
    'batch.num.messages': args.batch_num_messages,
    'log_level': 3,
    ...(args.idempotent !== 0 || transactional ? {'enable.idempotence': true} : {}),
    ...(transactional ? {'transactional.id': args.transactional_id,
                         'transaction.timeout.ms': Math.max(10000, args.timeout_ms)} : {}),
  });
  const records = planned_records(args);
  const runs = transactional ? planned_transactions(args, records)
                             : [{index: null, abort: false, records}];
  const log = new DeliveryLog(args.emit_deliveries !== 0);
  const end_timeout_ms = Math.max(5000, args.timeout_ms - 5000);
  let current = null;  // {run, reported, started, resolve}
  const finish = (extra) => producer.disconnect(() => done({...log.summary(), ...extra}));
  producer.on('delivery-report', (error, report) => {
    const tag = current.run.index === null ? {}
        : {transaction: current.run.index, committed: !current.run.abort};
    if (error) log.failed(report.partition, text(report.value), error);
    else log.acked(report.partition, report.offset, text(report.value), tag);
    if (++current.reported === current.run.records.length) current.resolve();
  });
  producer.on('event.error', (error) => emit({type: 'log', error: String(error)}));

  const promised = (call) => new Promise((resolve, reject) =>
    call((error) => (error ? reject(error) : resolve())));
  // Hands over a run's records and resolves when every one of them is reported.
  const send_run = (run) => new Promise((resolve) => {
    current = {run, reported: 0, started: Date.now(), resolve};
    for (const record of run.records) {
      try {
        producer.produce(args.topic, record.partition, Buffer.from(record.value),
                         Buffer.from(record.key));
      } catch (produce_error) {
        // E.g. "Local: Unknown partition" when metadata does not list the partition.
        log.failed(record.partition, record.value, produce_error);
        ++current.reported;
      }
    }
    if (current.reported === run.records.length) resolve();
  });
  const run_all = async () => {
    if (transactional) await promised((cb) => producer.initTransactions(end_timeout_ms, cb));
    for (const run of runs) {
      const started = Date.now();
      if (transactional) await promised((cb) => producer.beginTransaction(cb));
      await send_run(run);
      if (!transactional) continue;
      if (run.abort) await promised((cb) => producer.abortTransaction(end_timeout_ms, cb));
      else await promised((cb) => producer.commitTransaction(end_timeout_ms, cb));
      log.transaction_ended(run, started);
    }
  };
  producer.connect({timeout: args.timeout_ms}, (error) => {
    if (error) return done({error: String(error)});
    producer.setPollInterval(20);
    run_all().then(() => finish({}), (run_error) => finish({error: String(run_error)}));
  });
}

function rdkafka_message_line(message) {
  return {type: 'record', partition: message.partition, offset: message.offset,
          key: text(message.key), value: text(message.value),
          headers: (message.headers || []).flatMap((header) => Object.entries(header).map(
              ([key, value]) => ({key, hex: hex(value)})))};
}

function rdkafka_consume(Kafka, args, done) {
  const mode = args.mode || 'each';
  if (mode !== 'each') fail(`rdkafka consume: unknown --mode ${mode}`);
  const consumer = new Kafka.KafkaConsumer({
    'bootstrap.servers': args.bootstrap,
    'group.id': args.group || `kpp-vp-${process.pid}-${Date.now()}`,
    'enable.auto.commit': false,
    'enable.partition.eof': args.eof !== 0,
    'fetch.wait.max.ms': 100,
    'log_level': 3,
    ...(args.isolation ? {'isolation.level': args.isolation} : {}),
    ...(args.fetch_max_bytes > 0 ? {'fetch.max.bytes': args.fetch_max_bytes,
                                    'max.partition.fetch.bytes': args.fetch_max_bytes,
                                    'message.max.bytes': args.fetch_max_bytes} : {}),
  }, {'auto.offset.reset': 'earliest'});
  // The partitions being read now: partition -> {received, expect, eof, started, ...}.
  let current = new Map();
  let total_received = 0;
  let stray = 0;
  let finished = false;
  const finish = (extra) => {
    if (finished) return;
    finished = true;
    consumer.disconnect(() => done({received: total_received, stray, ...extra}));
  };
  consumer.on('event.error', (error) => emit({type: 'log', error: String(error)}));
  consumer.on('data', (message) => {
    const state = current.get(message.partition);
    const line = rdkafka_message_line(message);
    if (!state || message.topic !== args.topic) {
      // A record of a partition not being read now: reported, counted, never expected.
      ++stray;
      emit({...line, type: 'stray_record', topic: message.topic});
      return;
    }
    ++state.received;
    ++total_received;
    if (args.emit_records !== 0) emit(line);
    if (state.received >= state.expect && state.full_at === null) state.full_at = Date.now();
  });
  consumer.on('partition.eof', (event) => {
    const state = current.get(event.partition);
    if (!state) return;
    emit({type: 'eof', partition: event.partition, offset: event.offset,
          after_ms: Date.now() - state.started, received: state.received});
    if (state.received >= state.expect && !state.eof) {
      state.eof = true;
      state.eof_at = Date.now();
    }
  });

  const begin = (partitions) => {
    const now = Date.now();
    current = new Map(partitions.map(({partition, expect}) => [partition, {
      received: 0, expect, eof: false, eof_at: null, started: now, full_at: expect === 0 ? now : null}]));
    consumer.assign(partitions.map(({partition}) => ({
      topic: args.topic, partition, offset: Kafka.Topic.OFFSET_BEGINNING})));
  };
  const partition_finished = (state, now) => {
    if (args.eof !== 0) return state.eof && now - state.eof_at >= args.drain_ms;
    return state.full_at !== null && now - state.full_at >= args.drain_ms;
  };
  const report = (partition, state, timed_out) => emit({
    type: 'partition_done', partition, received: state.received, eof: state.eof, timed_out,
    ms: Date.now() - state.started});

  const plan = args.partition_list.map((partition, i) => ({partition,
                                                           expect: args.expect_each[i]}));
  let next = 0;
  let any_timed_out = false;
  const start_next = () => {
    if (next >= plan.length) return false;
    begin([plan[next++]]);
    return true;
  };
  const loop = () => {
    if (finished) return;
    consumer.consume(1000, (consume_error) => {
      if (consume_error) emit({type: 'log', error: String(consume_error)});
      const now = Date.now();
      let all_done = true;
      let timed_out = false;
      for (const state of current.values()) {
        if (!partition_finished(state, now)) all_done = false;
        if (now - state.started >= args.partition_timeout_ms) timed_out = true;
      }
      if (all_done || timed_out) {
        for (const [partition, state] of current) report(partition, state, timed_out);
        any_timed_out = any_timed_out || timed_out;
        consumer.unassign();
        current = new Map();
        if (!start_next()) return finish({partition_timed_out: any_timed_out});
      }
      setImmediate(loop);
    });
  };
  consumer.connect({timeout: args.timeout_ms}, (error) => {
    if (error) return done({error: String(error)});
    // consume(n, cb) waits up to this long for n records: keep the loop responsive.
    consumer.setDefaultConsumeTimeout(100);
    if (!start_next()) return finish({});
    loop();
  });
}

// ---- kafkajs ----

function kafkajs_module() {
  return require('kafkajs');
}

async function kafkajs_produce(args) {
  const {CompressionTypes} = kafkajs_module();
  const codecs = {none: CompressionTypes.None, gzip: CompressionTypes.GZIP};
  if (!(args.compression in codecs)) fail(`kafkajs: unsupported --compression ${args.compression}`);
  const transactional = args.transactional_id !== '';
  const producer = kafkajs_client(args).producer({
    allowAutoTopicCreation: false,
    ...(args.idempotent !== 0 || transactional ? {idempotent: true, maxInFlightRequests: 1} : {}),
    ...(transactional ? {transactionalId: args.transactional_id,
                         transactionTimeout: Math.max(10000, args.timeout_ms)} : {}),
  });
  await producer.connect();
  const log = new DeliveryLog(args.emit_deliveries !== 0);
  try {
    const records = planned_records(args);
    const runs = transactional ? planned_transactions(args, records)
                               : [{index: null, abort: false, records}];
    for (const run of runs) {
      const started = Date.now();
      const sender = transactional ? await producer.transaction() : producer;
      try {
        const result = await sender.send({
          topic: args.topic, acks: -1, compression: codecs[args.compression],
          messages: run.records.map((record) => ({partition: record.partition, key: record.key,
                                                  value: record.value}))});
        log_kafkajs_result(log, run, result);
      } catch (send_error) {
        if (transactional) await sender.abort().catch(() => {});
        throw send_error;
      }
      if (!transactional) continue;
      if (run.abort) await sender.abort();
      else await sender.commit();
      log.transaction_ended(run, started);
    }
  } finally {
    await producer.disconnect();
  }
  return log.summary();
}

// kafkajs answers one base offset per partition; its records of that partition were sent in
// order, so record n of partition p lies at base + n.
function log_kafkajs_result(log, run, result) {
  const tag = run.index === null ? {} : {transaction: run.index, committed: !run.abort};
  const base = new Map();
  for (const entry of result) {
    if (entry.errorCode !== 0) log.failed(entry.partition, null, `error ${entry.errorCode}`);
    base.set(entry.partition, Number(entry.baseOffset));
  }
  const index = new Map();
  for (const record of run.records) {
    const n = index.get(record.partition) || 0;
    index.set(record.partition, n + 1);
    if (!base.has(record.partition)) {
      log.failed(record.partition, record.value, 'no produce result for the partition');
    } else {
      log.acked(record.partition, base.get(record.partition) + n, record.value, tag);
    }
  }
}

function kafkajs_record_line(partition, message) {
  return {type: 'record', partition, offset: Number(message.offset), key: text(message.key),
          value: text(message.value),
          headers: Object.entries(message.headers || {}).flatMap(([key, value]) =>
              (Array.isArray(value) ? value : [value]).map((one) => ({key, hex: hex(one)})))};
}

// An assignor that gives the group's first member exactly the given partitions of the topic.
function fixed_assigner(topic, partitions) {
  const {AssignerProtocol} = kafkajs_module();
  return () => ({
    name: 'KppFixedAssigner',
    version: 1,
    async assign({members}) {
      return members.map((member, i) => ({
        memberId: member.memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({
          version: 1, assignment: i === 0 ? {[topic]: partitions} : {}, userData: Buffer.alloc(0)}),
      }));
    },
    protocol({topics}) {
      return {name: 'KppFixedAssigner',
              metadata: AssignerProtocol.MemberMetadata.encode({
                version: 1, topics, userData: Buffer.alloc(0)})};
    },
  });
}

// Reads with one kafkajs consumer until `expect` records came, then drains; returns the count.
async function kafkajs_read(args, group, assigners, expect, on_record) {
  const consumer = kafkajs_client(args).consumer({
    groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000,
    maxWaitTimeInMs: 200,
    ...(args.isolation ? {readUncommitted: args.isolation === 'read_uncommitted'} : {}),
    ...(assigners ? {partitionAssigners: assigners} : {})});
  await consumer.connect();
  let received = 0;
  let full_resolve;
  let crash_reject;
  const full = new Promise((resolve, reject) => {
    full_resolve = resolve;
    crash_reject = reject;
  });
  // kafkajs restarts a consumer that crashed on a retriable error, forever: report each
  // crash, and with --fail-on-crash 1 give up at the first one (a fresh group with one
  // member has no reason to crash).
  consumer.on(consumer.events.CRASH, ({payload}) => {
    emit({type: 'log', crash: String(payload.error), restart: payload.restart});
    if (args.fail_on_crash !== 0) crash_reject(payload.error);
  });
  try {
    await consumer.subscribe({topic: args.topic, fromBeginning: true});
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({topic, partition, message}) => {
        if (topic !== args.topic) return;
        on_record(partition, message);
        if (++received >= expect) full_resolve();
      },
    });
    if (expect <= 0) full_resolve();
    await full;
    await new Promise((resolve) => setTimeout(resolve, args.drain_ms));
  } finally {
    await consumer.disconnect();
  }
  return received;
}

async function kafkajs_consume(args) {
  const mode = args.mode || 'group';
  let received = 0;
  if (mode === 'group') {
    const wanted = new Set(args.partition_list);
    let stray = 0;
    received = await kafkajs_read(args, args.group || `kpp-vp-kjs-${process.pid}-${Date.now()}`,
                                  null, args.expect_total, (partition, message) => {
      const line = kafkajs_record_line(partition, message);
      if (!wanted.has(partition)) ++stray;
      if (args.emit_records !== 0) emit(line);
    });
    return {received, stray};
  }
  if (mode !== 'each') fail(`kafkajs consume: unknown --mode ${mode}`);
  let stray = 0;
  for (let i = 0; i < args.partition_list.length; ++i) {
    const partition = args.partition_list[i];
    const started = Date.now();
    const group = `${args.group || `kpp-vp-kjs-${process.pid}-${Date.now()}`}-p${partition}`;
    const count = await kafkajs_read(args, group, [fixed_assigner(args.topic, [partition])],
                                     args.expect_each[i], (got_partition, message) => {
      const line = kafkajs_record_line(got_partition, message);
      if (got_partition !== partition) {
        ++stray;
        emit({...line, type: 'stray_record'});
      } else if (args.emit_records !== 0) {
        emit(line);
      }
    });
    received += count;
    emit({type: 'partition_done', partition, received: count, eof: false, timed_out: false,
          ms: Date.now() - started});
  }
  return {received, stray};
}

// kafkajs protocol errors name the broker's error code (type, e.g. "INVALID_PARTITIONS", and
// number); retries wrap the last one in originalError, some errors in cause.
function kafkajs_error_cause(error) {
  for (let at = error, depth = 0; at && depth < 8; at = at.originalError || at.cause, ++depth) {
    if (at.type !== undefined || at.code !== undefined) {
      return {error_type: at.type, error_code: at.code};
    }
  }
  return {};
}

function main() {
  const args = parse_args(process.argv.slice(2));
  let finished = false;
  const done = (extra) => {
    if (finished) return;
    finished = true;
    emit({type: 'done', ...extra});
    process.exit(extra.error ? 1 : 0);
  };
  setTimeout(() => {
    emit({type: 'done', timed_out: true});
    process.exit(3);
  }, args.timeout_ms).unref();
  if (args.lib === 'rdkafka') {
    const Kafka = require('node-rdkafka');
    const ops = {metadata: rdkafka_metadata, produce: rdkafka_produce, consume: rdkafka_consume};
    if (!ops[args.op]) fail(`unknown op ${args.op}`);
    ops[args.op](Kafka, args, done);
  } else if (args.lib === 'kafkajs') {
    const ops = {metadata: kafkajs_metadata, produce: kafkajs_produce, consume: kafkajs_consume};
    if (!ops[args.op]) fail(`unknown op ${args.op}`);
    ops[args.op](args).then(done, (error) => done({
      error: String(error && error.stack || error), ...kafkajs_error_cause(error)}));
  } else {
    fail(`unknown LIB ${args.lib}`);
  }
}

main();
