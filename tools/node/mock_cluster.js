#!/usr/bin/env node
// Starts librdkafka 2.12's mock cluster inside this process (node-rdkafka's
// 'test.mock.num.brokers'), prints one line "BOOTSTRAP host:port,..." and serves commands
// from stdin until EOF, "quit", SIGTERM or SIGINT (DESIGN.md section 5).
//
// Usage: node mock_cluster.js [--brokers N] [--topic NAME]...
// Commands (one per line, each answered by one line "OK ..." or "ERR ..."):
//   topic NAME   create NAME by a metadata request (the 2.12 mock auto-creates topics with
//                4 partitions; it does not implement CreateTopics); answers "OK NAME <count>"
//   bootstrap    answers "OK host:port,..."
//   quit
// Needs NODE_PATH=<node cache>/node_modules (tools/setup.sh --print-node-dir).
'use strict';

const Kafka = require('node-rdkafka');
const readline = require('readline');

const timeout_ms = 10000;

function parse_args(argv) {
  const options = {brokers: 3, topics: []};
  for (let i = 0; i < argv.length; ++i) {
    const next = () => {
      if (i + 1 >= argv.length) fail(`missing value after ${argv[i]}`);
      return argv[++i];
    };
    if (argv[i] === '--brokers') options.brokers = Number(next());
    else if (argv[i] === '--topic') options.topics.push(next());
    else fail(`unknown argument ${argv[i]}`);
  }
  if (!Number.isInteger(options.brokers) || options.brokers < 1) fail('--brokers wants N >= 1');
  return options;
}

function fail(message) {
  process.stderr.write(`mock_cluster.js: ${message}\n`);
  process.exit(2);
}

const options = parse_args(process.argv.slice(2));
// The client owns the mock cluster: the cluster lives exactly as long as this client.
const host_client = new Kafka.Producer({
  'bootstrap.servers': 'unused:9092',
  'test.mock.num.brokers': options.brokers,
  'allow.auto.create.topics': true,
  'log_level': 3,
});

let bootstrap = '';
let stopping = false;

function stop(code) {
  if (stopping) return;
  stopping = true;
  // disconnect() can stall while the mock tears down: never let it keep us alive.
  setTimeout(() => process.exit(code), 2000).unref();
  try {
    host_client.disconnect(() => process.exit(code));
  } catch (error) {
    process.exit(code);
  }
}

function metadata(query) {
  return new Promise((resolve, reject) => {
    host_client.getMetadata({...query, timeout: timeout_ms}, (error, result) => {
      if (error) reject(error);
      else resolve(result);
    });
  });
}

async function create_topic(name) {
  const result = await metadata({topic: name, allTopics: false});
  const topic = result.topics.find((entry) => entry.name === name);
  if (!topic || topic.partitions.length === 0) throw new Error(`topic ${name} not created`);
  return topic.partitions.length;
}

async function run_command(line) {
  const words = line.trim().split(/\s+/).filter((word) => word.length > 0);
  if (words.length === 0) return;
  if (words[0] === 'quit' || words[0] === 'exit') {
    process.stdout.write('OK quit\n');
    stop(0);
  } else if (words[0] === 'bootstrap') {
    process.stdout.write(`OK ${bootstrap}\n`);
  } else if (words[0] === 'topic' && words.length >= 2) {
    try {
      const partitions = await create_topic(words[1]);
      process.stdout.write(`OK ${words[1]} ${partitions}\n`);
    } catch (error) {
      process.stdout.write(`ERR topic ${words[1]}: ${error.message}\n`);
    }
  } else {
    process.stdout.write(`ERR unknown or malformed command: ${line.trim()}\n`);
  }
}

process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
host_client.on('event.error', (error) => process.stderr.write(`mock_cluster.js: ${error}\n`));

host_client.connect({allTopics: true, timeout: timeout_ms}, async (error, result) => {
  if (error) {
    process.stderr.write(`mock_cluster.js: connect: ${error}\n`);
    process.exit(1);
  }
  try {
    bootstrap = [...result.brokers]
      .sort((a, b) => a.id - b.id)
      .map((broker) => `${broker.host}:${broker.port}`)
      .join(',');
    for (const name of options.topics) await create_topic(name);
  } catch (setup_error) {
    process.stderr.write(`mock_cluster.js: ${setup_error.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`BOOTSTRAP ${bootstrap}\n`);
  // Commands run one at a time, in order.
  let queue = Promise.resolve();
  const input = readline.createInterface({input: process.stdin});
  input.on('line', (line) => {
    queue = queue.then(() => run_command(line));
  });
  input.on('close', () => queue.then(() => stop(0)));
});
