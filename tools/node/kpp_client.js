#!/usr/bin/env node
// Small Kafka clients for the end-to-end tests: node-rdkafka (librdkafka 2.12) and kafkajs.
// Every output line is one JSON object; the last one has "type": "done".
//
// Usage: node kpp_client.js LIB OP --bootstrap HOST:PORT[,...] [options]
//   LIB: rdkafka | kafkajs
//   OP:  metadata [--topic T]
//          -> {"type":"metadata","brokers":[{"id","host","port"}],"controller_id",
//              "topics":[{"name","error","partitions":[{"id","leader","replicas","isrs"}]}]}
//        produce --topic T --partitions N --count K [--prefix P]
//          value "<P>-<partition>-<i>", key "k-<i>", i in 0..K-1, to each partition in order
//          -> {"type":"delivery","partition","offset","value"} per record
//          --interval-ms MS (rdkafka): one record every MS ms, record i of every partition
//          before record i+1 of any (default 0: all at once, partition after partition)
//        consume --topic T --partitions N --expect K [--group G]
//          rdkafka: assigns partitions 0..N-1 from the beginning; kafkajs: subscribes as G
//          -> {"type":"record","partition","offset","key","value"} per record
//   --timeout-ms MS  overall deadline (default 30000); on expiry prints "done" with
//                    "timed_out": true and exits 3.
// Security (both libraries; none by default):
//   --security-protocol SSL|SASL_SSL|SASL_PLAINTEXT  --ca FILE (PEM of the CA to trust)
//   --sasl-mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512|OAUTHBEARER
//   --username U --password P (PLAIN, SCRAM)   --oauth-token JWT (OAUTHBEARER, never refreshed)
//   --debug CONTEXTS (rdkafka): librdkafka's debug, e.g. "security"; each log line becomes
//                    {"type":"debug","fac","message"}
// Needs NODE_PATH=<node cache>/node_modules (tools/setup.sh --print-node-dir).
'use strict';

const fs = require('fs');
const {fail, emit, text, kafkajs_client: make_kafkajs_client, rdkafka_metadata: describe_cluster,
       kafkajs_metadata: describe_with} = require('./client_common');

function kafkajs_client(args) {
  return make_kafkajs_client(args, {clientId: 'kpp-e2e', requestTimeout: 10000, retries: 8,
                                    security: kafkajs_security(args)});
}

function kafkajs_metadata(args) {
  return describe_with(kafkajs_client(args), args);
}

function rdkafka_metadata(Kafka, args, done) {
  describe_cluster(Kafka, args, done, {config: rdkafka_security(args),
                                       oauth_token: args.oauth_token});
}

function parse_args(argv) {
  if (argv.length < 2) fail('usage: kpp_client.js LIB OP --bootstrap B [options]');
  const args = {lib: argv[0], op: argv[1], timeout_ms: 30000, prefix: 'v', partitions: 1,
                count: 1, expect: 0, topic: '', group: '', bootstrap: '', interval_ms: 0,
                security_protocol: '', ca: '', sasl_mechanism: '', username: '', password: '',
                oauth_token: '', debug: ''};
  for (let i = 2; i < argv.length; ++i) {
    const key = argv[i].replace(/^--/, '').replace(/-/g, '_');
    if (!(key in args) || i + 1 >= argv.length) fail(`bad argument ${argv[i]}`);
    const value = argv[++i];
    args[key] = typeof args[key] === 'number' ? Number(value) : value;
  }
  if (!args.bootstrap) fail('--bootstrap is required');
  const protocol = args.security_protocol.toUpperCase();
  if (!['', 'PLAINTEXT', 'SSL', 'SASL_SSL', 'SASL_PLAINTEXT'].includes(protocol)) {
    fail(`unknown --security-protocol ${args.security_protocol}`);
  }
  if (protocol.startsWith('SASL_') && !args.sasl_mechanism) {
    fail(`--security-protocol ${protocol} needs --sasl-mechanism`);
  }
  if (args.sasl_mechanism.toUpperCase() === 'OAUTHBEARER' && !args.oauth_token) {
    fail('--sasl-mechanism OAUTHBEARER needs --oauth-token');
  }
  return args;
}

// ---- security settings ----

// librdkafka's settings for the security options (none without them).
function rdkafka_security(args) {
  const config = {};
  if (args.security_protocol) config['security.protocol'] = args.security_protocol.toLowerCase();
  if (args.ca) config['ssl.ca.location'] = args.ca;
  if (args.sasl_mechanism) config['sasl.mechanisms'] = args.sasl_mechanism.toUpperCase();
  if (args.username) config['sasl.username'] = args.username;
  if (args.password) config['sasl.password'] = args.password;
  if (args.debug) config.debug = args.debug;
  return config;
}

// A node-rdkafka client with the security options: the OAUTHBEARER token (node-rdkafka hands
// it to librdkafka with an expiry that never comes, so librdkafka does not ask for another)
// and the debug log lines.
function rdkafka_client(Kind, args, config, topic_config) {
  const client = new Kind({...config, ...rdkafka_security(args)}, topic_config);
  if (args.oauth_token) client.setOauthBearerToken(args.oauth_token);
  if (args.debug) {
    client.on('event.log', (log) => emit({type: 'debug', fac: log.fac, message: log.message}));
  }
  return client;
}

// kafkajs's ssl and sasl settings for the security options.
function kafkajs_security(args) {
  const protocol = (args.security_protocol || 'PLAINTEXT').toUpperCase();
  const security = {};
  if (protocol === 'SSL' || protocol === 'SASL_SSL') {
    security.ssl = args.ca ? {ca: [fs.readFileSync(args.ca, 'utf8')]} : true;
  }
  if (protocol.startsWith('SASL_')) {
    const mechanism = args.sasl_mechanism.toLowerCase();
    security.sasl = mechanism === 'oauthbearer'
      ? {mechanism, oauthBearerProvider: async () => ({value: args.oauth_token})}
      : {mechanism, username: args.username, password: args.password};
  }
  return security;
}

function deadline_after(ms, on_expiry) {
  const timer = setTimeout(on_expiry, ms);
  timer.unref();
  return timer;
}

// ---- node-rdkafka ----

function rdkafka_produce(Kafka, args, done) {
  const producer = rdkafka_client(Kafka.Producer, args, {
    'bootstrap.servers': args.bootstrap,
    'dr_msg_cb': true,
    'acks': 'all',
    'linger.ms': 5,
    'log_level': args.debug ? 7 : 3,
  });
  const total = args.partitions * args.count;
  let delivered = 0;
  const errors = [];
  producer.on('delivery-report', (error, report) => {
    if (error) errors.push(String(error));
    else emit({type: 'delivery', partition: report.partition, offset: report.offset,
               value: text(report.value)});
    if (++delivered === total) producer.disconnect(() => done({delivered, errors}));
  });
  producer.on('event.error', (error) => emit({type: 'log', error: String(error)}));
  producer.connect({timeout: args.timeout_ms}, (error) => {
    if (error) return done({error: String(error)});
    producer.setPollInterval(20);
    const produce = ([p, i]) => producer.produce(
        args.topic, p, Buffer.from(`${args.prefix}-${p}-${i}`), Buffer.from(`k-${i}`));
    const order = [];
    if (args.interval_ms > 0) {
      // Paced: every partition stays busy for the whole run.
      for (let i = 0; i < args.count; ++i) {
        for (let p = 0; p < args.partitions; ++p) order.push([p, i]);
      }
      let next = 0;
      const timer = setInterval(() => {
        if (next < order.length) produce(order[next++]);
        if (next >= order.length) clearInterval(timer);
      }, args.interval_ms);
    } else {
      for (let p = 0; p < args.partitions; ++p) {
        for (let i = 0; i < args.count; ++i) order.push([p, i]);
      }
      order.forEach(produce);
    }
    if (total === 0) producer.disconnect(() => done({delivered, errors}));
  });
}

function rdkafka_consume(Kafka, args, done) {
  const consumer = rdkafka_client(Kafka.KafkaConsumer, args, {
    'bootstrap.servers': args.bootstrap,
    'group.id': args.group || `kpp-node-${process.pid}-${Date.now()}`,
    'enable.auto.commit': false,
    'log_level': args.debug ? 7 : 3,
  }, {'auto.offset.reset': 'earliest'});
  let received = 0;
  let finished = false;
  const finish = (extra) => {
    if (finished) return;
    finished = true;
    consumer.disconnect(() => done({received, ...extra}));
  };
  consumer.on('event.error', (error) => emit({type: 'log', error: String(error)}));
  consumer.connect({timeout: args.timeout_ms}, (error) => {
    if (error) return done({error: String(error)});
    const assignment = [];
    for (let p = 0; p < args.partitions; ++p) {
      assignment.push({topic: args.topic, partition: p, offset: Kafka.Topic.OFFSET_BEGINNING});
    }
    consumer.assign(assignment);
    const loop = () => {
      if (finished) return;
      consumer.consume(500, (consume_error, messages) => {
        if (consume_error) emit({type: 'log', error: String(consume_error)});
        for (const m of messages || []) {
          emit({type: 'record', partition: m.partition, offset: m.offset, key: text(m.key),
                value: text(m.value)});
          ++received;
        }
        if (received >= args.expect) finish({});
        else setImmediate(loop);
      });
    };
    loop();
  });
}

// ---- kafkajs ----

async function kafkajs_produce(args) {
  const producer = kafkajs_client(args).producer({allowAutoTopicCreation: true});
  await producer.connect();
  let delivered = 0;
  try {
    for (let p = 0; p < args.partitions; ++p) {
      const messages = [];
      for (let i = 0; i < args.count; ++i) {
        messages.push({partition: p, key: `k-${i}`, value: `${args.prefix}-${p}-${i}`});
      }
      const result = await producer.send({topic: args.topic, acks: -1, messages});
      const base = Number(result.find((r) => r.partition === p).baseOffset);
      messages.forEach((m, i) => emit({type: 'delivery', partition: p, offset: base + i,
                                       value: m.value}));
      delivered += messages.length;
    }
  } finally {
    await producer.disconnect();
  }
  return {delivered, errors: []};
}

async function kafkajs_consume(args) {
  const consumer = kafkajs_client(args).consumer({
    groupId: args.group || `kpp-kafkajs-${process.pid}-${Date.now()}`,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
  });
  await consumer.connect();
  let received = 0;
  let resolve_done;
  const all_received = new Promise((resolve) => { resolve_done = resolve; });
  await consumer.subscribe({topic: args.topic, fromBeginning: true});
  await consumer.run({
    autoCommit: true,
    eachMessage: async ({partition, message}) => {
      emit({type: 'record', partition, offset: Number(message.offset), key: text(message.key),
            value: text(message.value)});
      if (++received >= args.expect) resolve_done();
    },
  });
  if (args.expect <= 0) resolve_done();
  await all_received;
  await consumer.disconnect();
  return {received};
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
  deadline_after(args.timeout_ms, () => {
    emit({type: 'done', timed_out: true});
    process.exit(3);
  });
  if (args.lib === 'rdkafka') {
    const Kafka = require('node-rdkafka');
    const ops = {metadata: rdkafka_metadata, produce: rdkafka_produce, consume: rdkafka_consume};
    if (!ops[args.op]) fail(`unknown op ${args.op}`);
    ops[args.op](Kafka, args, done);
  } else if (args.lib === 'kafkajs') {
    const ops = {metadata: kafkajs_metadata, produce: kafkajs_produce, consume: kafkajs_consume};
    if (!ops[args.op]) fail(`unknown op ${args.op}`);
    ops[args.op](args).then(done, (error) => done({error: String(error && error.stack || error)}));
  } else {
    fail(`unknown LIB ${args.lib}`);
  }
}

main();
