// Reads central's Kafka listener with KafkaJS, for sync/central/kafkajs_test.go. KafkaJS is
// pure JavaScript: its own protocol code and consumer-group code, no librdkafka.
//
//   node consume.js read   BROKER TOPIC GROUP [--sasl=MECHANISM --user=U --password=P --ca=FILE]
//   node consume.js split  BROKER TOPIC GROUP COUNT
//   node consume.js resume BROKER TOPIC GROUP
//
// read:   one consumer in the new group GROUP reads TOPIC from the beginning up to the end
//         offsets it listed first, then leaves.
// split:  two consumers join GROUP and must split the partitions; the second leaves and the
//         first must take over every partition; it then reads on until COUNT records were read
//         in all, and leaves (KafkaJS commits what it processed after every batch).
// resume: one consumer in GROUP reads from the group's committed offsets up to the end offsets
//         it listed first.
//
// Every record read is printed as a JSON line {"c":consumer,"p":..,"o":..,"k":..,"v":..,"h":{..}};
// facts the Go test checks are printed as {"event":..}. KafkaJS's own log goes to stderr. An error
// prints {"event":"error","name":..,"type":..,"message":..} and exits 2; the script gives up
// after 60 s.
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flags = Object.fromEntries(process.argv.slice(2).filter((a) => a.startsWith('--'))
  .map((a) => { const i = a.indexOf('='); return [a.slice(2, i), a.slice(i + 1)]; }));
const [mode, broker, topic, groupId, countArg] = positional;

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

function fail(err) {
  out({ event: 'error', name: err.name, type: err.type, message: err.message });
  process.exit(2);
}

setTimeout(() => fail(new Error(`${mode} not done within 60s`)), 60000).unref();

const kafka = new Kafka({
  clientId: `kafkajs-${mode}`,
  brokers: [broker],
  ssl: flags.ca ? { ca: [fs.readFileSync(flags.ca)] } : undefined,
  sasl: flags.sasl ? { mechanism: flags.sasl, username: flags.user, password: flags.password } : undefined,
  connectionTimeout: 5000,
  requestTimeout: 10000,
  retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 },
  logLevel: logLevel.WARN,
  logCreator: () => ({ namespace, level, log }) => {
    process.stderr.write(`kafkajs ${mode} ${namespace}: ${log.message} ${log.error || ''}\n`);
  },
});

function consumer() {
  return kafka.consumer({
    groupId, sessionTimeout: 6000, rebalanceTimeout: 10000, heartbeatInterval: 500,
    maxWaitTimeInMs: 250, maxBytesPerPartition: 16384, retry: { retries: 3 },
  });
}

function record(name, partition, message) {
  const h = {};
  for (const [k, v] of Object.entries(message.headers || {})) h[k] = v.toString();
  out({ c: name, p: partition, o: Number(message.offset), k: message.key.toString(), v: message.value.toString(), h });
}

// ends lists TOPIC's offsets: {partition: {low, high}}.
async function ends() {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offs = await admin.fetchTopicOffsets(topic);
    return Object.fromEntries(offs.map((o) => [o.partition, { low: Number(o.low), high: Number(o.high) }]));
  } finally {
    await admin.disconnect();
  }
}

// committedOffsets is GROUP's committed offset of each partition of TOPIC, -1 where none.
async function committedOffsets() {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [{ partitions }] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return Object.fromEntries(partitions.map((p) => [p.partition, Number(p.offset)]));
  } finally {
    await admin.disconnect();
  }
}

// untilEnd consumes with one consumer from where the group stands (the beginning for a new
// group) up to the end offsets listed first, then leaves.
async function untilEnd(name) {
  const end = await ends();
  const next = {}; // partition → next offset to read
  for (const [p, { low }] of Object.entries(end)) next[p] = low;
  if (mode === 'resume') {
    const committed = await committedOffsets();
    out({ event: 'committed', offsets: committed });
    for (const [p, o] of Object.entries(committed)) next[p] = Math.max(next[p], o);
  }
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  const check = () => {
    if (Object.entries(end).every(([p, { high }]) => next[p] >= high)) done();
  };
  const c = consumer();
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({
    eachMessage: async ({ partition, message }) => {
      record(name, partition, message);
      next[partition] = Number(message.offset) + 1;
      check();
    },
  });
  check();
  await finished;
  await c.disconnect();
  out({ event: 'end' });
}

function assigned(a) {
  return (a && a[topic] ? [...a[topic]] : []).sort((x, y) => x - y);
}

async function split() {
  const count = Number(countArg);
  const partitions = Object.keys(await ends()).length;
  const c1 = consumer(), c2 = consumer();
  const got = { c1: [], c2: [] };
  c1.on(c1.events.GROUP_JOIN, (e) => { got.c1 = assigned(e.payload.memberAssignment); });
  c2.on(c2.events.GROUP_JOIN, (e) => { got.c2 = assigned(e.payload.memberAssignment); });
  let read = 0;
  let phase = 'split';
  let stopped;
  const stopping = new Promise((resolve) => { stopped = resolve; });
  const handler = (name, c) => async ({ partition, message, heartbeat }) => {
    record(name, partition, message);
    read++;
    if (phase !== 'read') {
      // Slow enough that the records last until the group has settled twice; heartbeats
      // let the coordinator's rebalances reach the consumer while it reads.
      await new Promise((r) => setTimeout(r, 2));
      await heartbeat();
    } else if (read >= count) {
      // Stop before the next record: KafkaJS commits the offsets processed so far and leaves.
      phase = 'stopping';
      stopped(c.disconnect());
    }
  };
  for (const [name, c] of [['c1', c1], ['c2', c2]]) {
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({ eachMessage: handler(name, c) });
  }
  const settled = (pred, what) => new Promise((resolve, reject) => {
    const deadline = Date.now() + 30000;
    const tick = setInterval(() => {
      if (pred()) { clearInterval(tick); resolve(); }
      else if (Date.now() > deadline) { clearInterval(tick); reject(new Error(`${what} within 30s: c1 ${got.c1}, c2 ${got.c2}`)); }
    }, 20);
  });
  await settled(() => {
    const both = [...got.c1, ...got.c2];
    return got.c1.length > 0 && got.c2.length > 0 && new Set(both).size === partitions && both.length === partitions;
  }, 'no split');
  out({ event: 'split', c1: got.c1, c2: got.c2, read });
  await c2.disconnect();
  await settled(() => got.c1.length === partitions, 'c1 did not take over');
  out({ event: 'takeover', c1: got.c1, read });
  phase = 'read';
  await settled(() => phase === 'stopping', `only ${read} of ${count} records read`);
  await stopping;
  out({ event: 'left', read });
}

const run = { read: () => untilEnd('c'), resume: () => untilEnd('c3'), split }[mode];
if (!run) fail(new Error(`unknown mode ${mode}`));
run().then(() => process.exit(0), fail);
