// Drives a tierlog node's Kafka listener with kafkajs, a pure JavaScript Kafka client (no
// librdkafka), with codecs for snappy (kafkajs-snappy), lz4 (kafkajs-lz4) and zstd
// (@mongodb-js/zstd); gzip is kafkajs's own.
//
// usage: node client.js admin BOOTSTRAP -            create a topic with settings, describe
//                                                    and alter them, add partitions, delete it
//        node client.js write BOOTSTRAP STATE_JSON   produce with every codec (keys, headers,
//                                                    idempotent, acks=all), read back from
//                                                    offset 0, offsets by timestamp; save what
//                                                    was produced
//        node client.js replay BOOTSTRAP STATE_JSON  after a restart without the hot tier: the
//                                                    same from the cold tier, more records
//        node client.js groups BOOTSTRAP -           three members of a group share a topic;
//                                                    one leaves, one joins; every record once
//        node client.js transactions BOOTSTRAP -     a transactional producer is refused
//                                                    quickly and says why
//        node client.js failover-write BOOTSTRAP STATE_JSON
//                                                    200 more acknowledged records, added to
//                                                    the state file (a leader may be dead)
//        node client.js failover-read BOOTSTRAP STATE_JSON
//                                                    read back exactly those records
// NODE_PATH names the node_modules holding kafkajs (localstack/install.sh kafkajs).
// Prints "kafka matrix ok" last on success; a failed check exits non-zero with its reason.
'use strict'

const fs = require('fs')
const {
  Kafka,
  CompressionTypes,
  CompressionCodecs,
  ConfigResourceTypes,
  Partitioners,
  logLevel,
} = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const LZ4Codec = require('kafkajs-lz4')
const zstd = require('@mongodb-js/zstd')

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  compress: async encoder => zstd.compress(encoder.buffer, 3),
  decompress: async buffer => zstd.decompress(buffer),
})

const VERSION = require('kafkajs/package.json').version
const CODECS = [
  ['none', CompressionTypes.None],
  ['gzip', CompressionTypes.GZIP],
  ['snappy', CompressionTypes.Snappy],
  ['lz4', CompressionTypes.LZ4],
  ['zstd', CompressionTypes.ZSTD],
]
const PER_CODEC = 300
const BASE_TS = 1767225600000

class CheckFailed extends Error {}

function check(cond, what) {
  if (!cond) throw new CheckFailed(what)
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// What kafkajs logged (errors only): some answers of the node reach the application only here.
const logged = []

function client(bootstrap, clientId, retries = 5) {
  return new Kafka({
    clientId,
    brokers: bootstrap.split(','),
    logLevel: logLevel.ERROR,
    // Errors go to stderr; stdout carries the result lines only.
    logCreator: () => ({ namespace, log }) => {
      logged.push(log)
      console.error(`[kafkajs ${namespace}] ${log.message} ${JSON.stringify(log)}`)
    },
    retry: { retries, initialRetryTime: 100, maxRetryTime: 2000 },
  })
}

/** `promise` must reject with a KafkaJS error of `type` (or one whose causes have it). */
async function refused(promise, type, what) {
  let error
  try {
    await promise
  } catch (e) {
    error = e
  }
  check(error, `${what}: expected ${type}, it succeeded`)
  const types = [error.type, ...(error.errors || []).map(e => e.type)]
  // A retriable error the client gave up on comes wrapped (KafkaJSNumberOfRetriesExceeded).
  for (const inner of [error.originalError, error.cause]) if (inner) types.push(inner.type)
  check(types.includes(type), `${what}: expected ${type}, got ${error.name}: ${error.message}`)
}

async function described(admin, topic) {
  const { resources } = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
    includeSynonyms: false,
  })
  check(resources.length === 1 && resources[0].errorCode === 0, `describe ${topic}`)
  const out = {}
  for (const e of resources[0].configEntries) out[e.configName] = [e.configValue, e.isDefault]
  return out
}

async function partitionsInMetadata(admin, topic) {
  const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
  return topics[0].partitions.map(p => p.partitionId).sort((a, b) => a - b)
}

async function admin(bootstrap) {
  const kafka = client(bootstrap, 'kafkajs-admin')
  const a = kafka.admin()
  await a.connect()
  const topic = 'kj-admin'
  const created = await a.createTopics({
    topics: [
      {
        topic,
        numPartitions: 2,
        configEntries: [
          { name: 'retention.ms', value: '-1' },
          { name: 'cleanup.policy', value: 'compact' },
          { name: 'max.message.bytes', value: '500000' },
        ],
      },
    ],
  })
  check(created === true, 'created')
  // kafkajs reports TOPIC_ALREADY_EXISTS as `false`.
  check((await a.createTopics({ topics: [{ topic, numPartitions: 1 }] })) === false,
    'creating an existing topic answers TOPIC_ALREADY_EXISTS')
  await refused(
    a.createTopics({
      topics: [{ topic: 'kj-bad', configEntries: [{ name: 'no.such.setting', value: '1' }] }],
    }),
    'INVALID_CONFIG',
    'an unknown setting'
  )
  const listed = await a.listTopics()
  check(listed.includes(topic) && !listed.includes('kj-bad'), `listed: ${listed}`)
  check(JSON.stringify(await partitionsInMetadata(a, topic)) === '[0,1]', 'two partitions')
  let d = await described(a, topic)
  check(d['retention.ms'][0] === '-1', `retention.ms: ${d['retention.ms']}`)
  check(d['cleanup.policy'][0] === 'compact' && !d['cleanup.policy'][1], `cleanup.policy: ${d['cleanup.policy']}`)
  check(d['max.message.bytes'][0] === '500000' && !d['max.message.bytes'][1], `max.message.bytes: ${d['max.message.bytes']}`)
  check(d['compression.type'][0] === 'producer', `compression.type: ${d['compression.type']}`)
  // AlterConfigs replaces the topic's settings: those not named go back to their defaults.
  await a.alterConfigs({
    validateOnly: false,
    resources: [
      {
        type: ConfigResourceTypes.TOPIC,
        name: topic,
        configEntries: [
          { name: 'retention.ms', value: '86400000' },
          { name: 'cleanup.policy', value: 'compact,delete' },
        ],
      },
    ],
  })
  d = await described(a, topic)
  check(d['retention.ms'][0] === '86400000' && !d['retention.ms'][1], `altered retention.ms: ${d['retention.ms']}`)
  check(d['cleanup.policy'][0] === 'compact,delete', `altered cleanup.policy: ${d['cleanup.policy']}`)
  check(d['max.message.bytes'][1] === true, `an unnamed setting back to its default: ${d['max.message.bytes']}`)
  await refused(
    a.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'cleanup.policy', value: 'shrink' }] }],
    }),
    'INVALID_CONFIG',
    'a value tierlog does not act on'
  )
  check(JSON.stringify(await described(a, topic)) === JSON.stringify(d), 'a refused change changes nothing')
  // Partitions: added and seen in metadata, never removed.
  await a.createPartitions({ topicPartitions: [{ topic, count: 4 }] })
  check(JSON.stringify(await partitionsInMetadata(a, topic)) === '[0,1,2,3]', 'four partitions after adding')
  await refused(a.createPartitions({ topicPartitions: [{ topic, count: 2 }] }), 'INVALID_PARTITIONS', 'fewer partitions')
  // Produced to and read from a new partition.
  const p = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  await p.connect()
  const [md] = await p.send({ topic, acks: -1, messages: [{ key: 'new', value: 'in partition 3', partition: 3 }] })
  check(md.partition === 3 && md.baseOffset === '0', `produced to partition 3: ${JSON.stringify(md)}`)
  await p.disconnect()
  const got = await readAll(kafka, topic, { 0: 0, 1: 0, 2: 0, 3: 1 }, 'kj-admin-reader')
  check(got.length === 1 && got[0].key === 'new' && got[0].value === 'in partition 3', `read ${JSON.stringify(got)}`)
  // Deleted: gone from the list and from metadata.
  await a.deleteTopics({ topics: [topic] })
  check(!(await a.listTopics()).includes(topic), 'deleted topic not listed')
  await refused(a.deleteTopics({ topics: [topic] }), 'UNKNOWN_TOPIC_OR_PARTITION', 'deleting it again')
  await a.disconnect()
}

function asRecord(partition, m) {
  const headers = Object.entries(m.headers || {})
    .map(([k, v]) => [k, v === null || v === undefined ? null : v.toString()])
    .sort()
  return {
    partition,
    offset: Number(m.offset),
    key: m.key === null ? null : m.key.toString(),
    value: m.value === null ? null : m.value.toString(),
    ts: Number(m.timestamp),
    headers,
  }
}

/** Every record of `topic` from offset 0 up to `ends` (partition -> end), as a member of a
 * fresh group (kafkajs reads only through a group), committing nothing. */
async function readAll(kafka, topic, ends, groupId) {
  const c = kafka.consumer({ groupId, maxWaitTimeInMs: 200 })
  await c.connect()
  await c.subscribe({ topics: [topic], fromBeginning: true })
  const got = []
  const reached = {}
  for (const p of Object.keys(ends)) reached[p] = 0
  const done = () => Object.keys(ends).every(p => reached[p] >= ends[p])
  await c.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        got.push(asRecord(batch.partition, m))
        reached[batch.partition] = Math.max(reached[batch.partition] || 0, Number(m.offset) + 1)
      }
    },
  })
  const deadline = Date.now() + 60000
  while (!done() && Date.now() < deadline) await sleep(100)
  await c.disconnect()
  check(done(), `read up to ${JSON.stringify(reached)}, expected ${JSON.stringify(ends)}`)
  return got
}

const byPosition = records => [...records].sort((a, b) => a.partition - b.partition || a.offset - b.offset)

function firstDifference(got, want) {
  got = byPosition(got)
  want = byPosition(want)
  if (got.length !== want.length) return `${got.length} records read, ${want.length} expected`
  for (let i = 0; i < got.length; i++) {
    if (JSON.stringify(got[i]) !== JSON.stringify(want[i])) {
      return `read ${JSON.stringify(got[i])}, expected ${JSON.stringify(want[i])}`
    }
  }
  return null
}

function endsOf(records, partitions) {
  const ends = {}
  for (let p = 0; p < partitions; p++) ends[p] = 0
  for (const r of records) ends[r.partition] = Math.max(ends[r.partition], r.offset + 1)
  return ends
}

function checkDense(records, partitions) {
  for (let p = 0; p < partitions; p++) {
    const offsets = records.filter(r => r.partition === p).map(r => r.offset).sort((a, b) => a - b)
    check(offsets.every((o, i) => o === i), `partition ${p}: offsets dense from 0`)
  }
}

/** `count` keyed records with headers from an idempotent acks=all producer compressing with
 * `codec`, in sends of 100; returns them as the node acknowledged them. Each record's partition
 * is the one kafkajs's default partitioner picks for its key, named explicitly so that the
 * acknowledged base offset of each partition places every record. */
async function produce(kafka, topic, partitions, [name, codec], start, count) {
  const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner })
  await p.connect()
  const partitioner = Partitioners.DefaultPartitioner()
  const partitionMetadata = [...Array(partitions).keys()].map(id => ({ partitionId: id, leader: 0 }))
  const acked = []
  for (let from = start; from < start + count; from += 100) {
    const batch = []
    for (let i = from; i < Math.min(from + 100, start + count); i++) {
      const key = `key-${i % 50}`
      const headers = { n: String(i), codec: name }
      if (i % 10 === 0) headers.empty = ''
      const message = { key, value: `value-${i}-${name}-` + 'x'.repeat(i % 40), headers, timestamp: String(BASE_TS + i) }
      message.partition = partitioner({ topic, partitionMetadata, message })
      batch.push(message)
    }
    const answers = await p.send({ topic, acks: -1, compression: codec, messages: batch })
    const base = {}
    for (const a of answers) {
      check(a.errorCode === 0, `send: ${JSON.stringify(a)}`)
      base[a.partition] = Number(a.baseOffset)
    }
    const next = {}
    for (const m of batch) {
      const offset = base[m.partition] + (next[m.partition] || 0)
      next[m.partition] = (next[m.partition] || 0) + 1
      acked.push({
        partition: m.partition,
        offset,
        key: m.key,
        value: m.value,
        ts: Number(m.timestamp),
        headers: Object.entries(m.headers).sort(),
      })
    }
  }
  await p.disconnect()
  return acked
}

/** ListOffsets by timestamp: for sampled records, every partition's first offset at or after
 * the record's time (the partition's end where none is). */
async function checkOffsetsByTimestamp(kafka, topic, partitions, produced) {
  const a = kafka.admin()
  await a.connect()
  const samples = byPosition(produced).filter((_, i) => i % 97 === 0)
  const ends = endsOf(produced, partitions)
  for (const r of samples) {
    const found = await a.fetchTopicOffsetsByTimestamp(topic, r.ts)
    for (const { partition, offset } of found) {
      const at = produced.filter(x => x.partition === partition && x.ts >= r.ts).map(x => x.offset)
      const want = at.length ? Math.min(...at) : ends[partition]
      check(Number(offset) === want, `offset for time ${r.ts} in ${partition}: ${offset}, expected ${want}`)
    }
  }
  const offsets = await a.fetchTopicOffsets(topic)
  for (const o of offsets) {
    check(Number(o.low) === 0 && Number(o.high) === ends[o.partition], `watermarks ${JSON.stringify(o)}`)
  }
  await a.disconnect()
  return samples.length
}

async function write(bootstrap, stateFile) {
  const topic = 'kj-events'
  const partitions = 3
  const kafka = client(bootstrap, 'kafkajs-write')
  const a = kafka.admin()
  await a.connect()
  await a.createTopics({ topics: [{ topic, numPartitions: partitions, configEntries: [{ name: 'retention.ms', value: '-1' }] }] })
  await a.disconnect()
  let produced = []
  for (let n = 0; n < CODECS.length; n++) {
    produced = produced.concat(await produce(kafka, topic, partitions, CODECS[n], n * PER_CODEC, PER_CODEC))
  }
  check(produced.length === CODECS.length * PER_CODEC, 'every record acknowledged')
  checkDense(produced, partitions)
  const got = await readAll(kafka, topic, endsOf(produced, partitions), 'kj-write-reader')
  const diff = firstDifference(got, produced)
  check(diff === null, `consumed exactly what was acknowledged: ${diff}`)
  const n = await checkOffsetsByTimestamp(kafka, topic, partitions, produced)
  console.log(`wrote ${produced.length} records with codecs ${CODECS.map(c => c[0])}; ${n} offsets by timestamp`)
  fs.writeFileSync(stateFile, JSON.stringify({ topic, partitions, produced }))
}

const FAILOVER_TOPIC = 'kj-failover'
const FAILOVER_PARTITIONS = 3

// Before a partition's leader is killed with SIGKILL and again after: the producer retries
// until another node has taken the partition over.
async function failoverWrite(bootstrap, stateFile) {
  const kafka = client(bootstrap, 'kafkajs-failover', 40)
  let produced = []
  if (fs.existsSync(stateFile)) produced = JSON.parse(fs.readFileSync(stateFile))
  produced = produced.concat(
    await produce(kafka, FAILOVER_TOPIC, FAILOVER_PARTITIONS, CODECS[3], produced.length, 200))
  checkDense(produced, FAILOVER_PARTITIONS)
  console.log(`${produced.length} records acknowledged`)
  fs.writeFileSync(stateFile, JSON.stringify(produced))
}

async function failoverRead(bootstrap, stateFile) {
  const kafka = client(bootstrap, 'kafkajs-failover', 40)
  const produced = JSON.parse(fs.readFileSync(stateFile))
  const got = await readAll(kafka, FAILOVER_TOPIC, endsOf(produced, FAILOVER_PARTITIONS), 'kj-failover-reader')
  const diff = firstDifference(got, produced)
  check(diff === null, `read what was acknowledged: ${diff}`)
  console.log(`read ${got.length} records after the takeover`)
}

async function replay(bootstrap, stateFile) {
  const { topic, partitions, produced } = JSON.parse(fs.readFileSync(stateFile))
  const kafka = client(bootstrap, 'kafkajs-replay')
  const ends = endsOf(produced, partitions)
  let got = await readAll(kafka, topic, ends, 'kj-replay-reader')
  let diff = firstDifference(got, produced)
  check(diff === null, `cold replay identical: ${diff}`)
  const n = await checkOffsetsByTimestamp(kafka, topic, partitions, produced)
  const more = await produce(kafka, topic, partitions, CODECS[4], 100000, 200)
  for (const r of more) check(r.offset >= ends[r.partition], 'offsets continue after the restart')
  const everything = produced.concat(more)
  checkDense(everything, partitions)
  got = await readAll(kafka, topic, endsOf(everything, partitions), 'kj-replay-reader-2')
  diff = firstDifference(got, everything)
  check(diff === null, `cold and hot read together: ${diff}`)
  console.log(`replayed ${produced.length} records from the cold tier; ${n} offsets by timestamp`)
}

/** A group member: records what it reads, commits each batch before the next, and keeps the
 * assignment its last join gave it. */
async function member(kafka, name, topic, groupId, seen) {
  const c = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 200 })
  const m = { name, consumer: c, assigned: [] }
  c.on(c.events.GROUP_JOIN, ({ payload }) => {
    m.assigned = [...(payload.memberAssignment[topic] || [])].sort((a, b) => a - b)
  })
  await c.connect()
  await c.subscribe({ topics: [topic], fromBeginning: true })
  await c.run({
    autoCommit: false,
    eachBatchAutoResolve: true,
    eachBatch: async ({ batch }) => {
      if (!batch.messages.length) return
      for (const msg of batch.messages) {
        const k = `${batch.partition}:${msg.offset}`
        ;(seen[k] = seen[k] || []).push(name)
      }
      const last = batch.messages[batch.messages.length - 1]
      await c.commitOffsets([{ topic, partition: batch.partition, offset: String(Number(last.offset) + 1) }])
    },
  })
  return m
}

async function groups(bootstrap) {
  const topic = 'kj-shared'
  const partitions = 6
  const groupId = 'kj-group'
  const kafka = client(bootstrap, 'kafkajs-groups')
  const a = kafka.admin()
  await a.connect()
  await a.createTopics({ topics: [{ topic, numPartitions: partitions }] })
  const p = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  await p.connect()
  const send = async (from, to) => {
    const messages = []
    for (let i = from; i < to; i++) messages.push({ key: `k${i}`, value: `v${i}` })
    await p.send({ topic, acks: -1, messages })
  }
  await send(0, 1200)
  const seen = {}
  const members = {}
  // The three join together (the group's first rebalance waits for more members).
  for (const [name, m] of await Promise.all(['a', 'b', 'c'].map(async n => [n, await member(kafka, n, topic, groupId, seen)]))) {
    members[name] = m
  }
  const settled = (names, count) => {
    const flat = names.flatMap(n => members[n].assigned).sort((x, y) => x - y)
    return Object.keys(seen).length >= count && names.every(n => members[n].assigned.length) &&
      JSON.stringify(flat) === JSON.stringify([...Array(partitions).keys()])
  }
  const wait = async (names, count, what) => {
    const deadline = Date.now() + 60000
    while (!settled(names, count) && Date.now() < deadline) await sleep(200)
    const held = Object.fromEntries(names.map(n => [n, members[n].assigned]))
    check(settled(names, count), `${what}: read ${Object.keys(seen).length} of ${count}, assignments ${JSON.stringify(held)}`)
    return held
  }
  const split = await wait(['a', 'b', 'c'], 1200, 'three members')
  let d = await a.describeGroups([groupId])
  check(d.groups[0].state === 'Stable' && d.groups[0].members.length === 3,
    `described: ${d.groups[0].state}, ${d.groups[0].members.length} members`)
  // c leaves (LeaveGroup on disconnect), d joins; more records arrive meanwhile.
  await members.c.consumer.disconnect()
  members.d = await member(kafka, 'd', topic, groupId, seen)
  await send(1200, 1800)
  const after = await wait(['a', 'b', 'd'], 1800, 'after c left and d joined')
  const twice = Object.entries(seen).filter(([, who]) => who.length > 1)
  check(Object.keys(seen).length === 1800, `read ${Object.keys(seen).length} distinct records of 1800`)
  check(!twice.length, `read more than once: ${JSON.stringify(twice.slice(0, 10))}`)
  check(Object.values(seen).some(who => who.includes('d')), 'the member that joined read records')
  const ends = {}
  for (const k of Object.keys(seen)) {
    const [q, off] = k.split(':').map(Number)
    ends[q] = Math.max(ends[q] || 0, off + 1)
  }
  // Every member committed its batch before the next; the last commit may still be on its way.
  const committed = async () => {
    const [t] = await a.fetchOffsets({ groupId, topics: [topic] })
    return Object.fromEntries(t.partitions.map(x => [x.partition, Number(x.offset)]))
  }
  let commits = await committed()
  const deadline = Date.now() + 10000
  while (JSON.stringify(commits) !== JSON.stringify(ends) && Date.now() < deadline) {
    await sleep(200)
    commits = await committed()
  }
  check(JSON.stringify(commits) === JSON.stringify(ends), `commits ${JSON.stringify(commits)} vs ends ${JSON.stringify(ends)}`)
  for (const n of ['a', 'b', 'd']) await members[n].consumer.disconnect()
  d = await a.describeGroups([groupId])
  check(d.groups[0].state === 'Empty', `after every member left: ${d.groups[0].state}`)
  await p.disconnect()
  await a.disconnect()
  console.log(`group split ${JSON.stringify(split)}, after the handover ${JSON.stringify(after)}`)
}

async function transactions(bootstrap) {
  const kafka = client(bootstrap, 'kafkajs-transactions')
  const start = Date.now()
  const p = kafka.producer({ transactionalId: 'kj-tx', idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner })
  let error
  try {
    // connect() asks for a producer id (FindCoordinator for the transactional id, then
    // InitProducerId); transaction() would begin one.
    await p.connect()
    await p.transaction()
  } catch (e) {
    error = e
  }
  const took = (Date.now() - start) / 1000
  check(error, 'a transaction began on a node without transactions')
  const text = `${error.name} (${error.type}): ${error.message}`
  console.log(`the transactional producer failed after ${took.toFixed(1)} s with ${text}`)
  // kafkajs does not retry the node's answer to FindCoordinator (key type 1, transaction), but
  // drops it: whatever the code, the application gets its own KafkaJSGroupCoordinatorNotFound
  // ("Failed to find group coordinator"), and only kafkajs's error log names the node's code
  // (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "Transactional Id authorization failed").
  check(error.name === 'KafkaJSGroupCoordinatorNotFound' || /transaction/i.test(text),
    `the error names the failed step: ${text}`)
  const answers = logged.filter(l => /^Response GroupCoordinator\(key: 10/.test(l.message))
  const answer = answers[0]
  check(answer && /Transactional Id authorization failed/.test(answer.error),
    `kafkajs logged the node's answer to FindCoordinator: ${JSON.stringify(answer)}`)
  // A fatal answer: asked once, not retried until kafkajs's retries run out.
  check(answers.length === 1, `FindCoordinator asked ${answers.length} times`)
  console.log(`kafkajs logged the node's answer: ${answer.error}`)
  await p.disconnect().catch(() => {})
  // The node still serves an idempotent producer.
  const a = kafka.admin()
  await a.connect()
  await a.createTopics({ topics: [{ topic: 'kj-after-tx', numPartitions: 1 }] })
  await a.disconnect()
  const q = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner })
  await q.connect()
  const [md] = await q.send({ topic: 'kj-after-tx', acks: -1, messages: [{ key: 'k', value: 'v' }] })
  check(md.partition === 0 && md.baseOffset === '0', `an idempotent producer afterwards: ${JSON.stringify(md)}`)
  await q.disconnect()
}

async function main() {
  const [mode, bootstrap, state] = process.argv.slice(2)
  const modes = {
    admin, write, replay, groups, transactions,
    'failover-write': failoverWrite, 'failover-read': failoverRead,
  }
  if (!modes[mode] || !bootstrap) {
    console.error(`usage: node client.js ${Object.keys(modes).join('|')} BOOTSTRAP STATE`)
    process.exit(2)
  }
  console.log(`kafkajs ${VERSION}, ${mode}`)
  try {
    await modes[mode](bootstrap, state)
  } catch (e) {
    const what = e instanceof CheckFailed ? 'check failed' : `${e.name} (${e.type || 'no type'})`
    console.error(`kafkajs ${mode}: ${what}: ${e.message}\n${e.stack}`)
    process.exit(1)
  }
  console.log('kafka matrix ok')
  process.exit(0)
}

main()
