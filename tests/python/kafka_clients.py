"""Drives a tierlog node's Kafka listener with confluent-kafka (librdkafka), a client nobody
here wrote.

usage: kafka_clients.py write BOOTSTRAP STATE_JSON   create topics, produce with every codec,
                                                     consume, commit; save what was produced
       kafka_clients.py replay BOOTSTRAP STATE_JSON  after a restart without the hot tier:
                                                     read everything back from offset 0, check
                                                     commits and times, produce more, clean up
       kafka_clients.py groups BOOTSTRAP -           two members of a group with the new
                                                     protocol (KIP-848) share a topic; one
                                                     leaves and the other takes over
Prints "kafka clients ok" on success; any failed check raises.
"""
import json
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "events"
PARTITIONS = 3
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 400
BASE_TS = 1_767_225_600_000


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def produce(bootstrap, codec, start, count):
    """Produces `count` keyed records with headers; returns what the broker acknowledged."""
    acked = []
    errors = []

    def report(err, msg, headers):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append({
                "partition": msg.partition(), "offset": msg.offset(), "key": msg.key().decode(),
                "value": msg.value().decode(), "ts": msg.timestamp()[1],
                "headers": [[k, v.decode()] for k, v in headers],
            })

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": codec,
        "linger.ms": 5,
    })
    for i in range(start, start + count):
        headers = [("n", str(i).encode()), ("codec", codec.encode())]
        p.produce(TOPIC, key=f"key-{i % 50}", value=f"value-{i}-{codec}-" + "x" * (i % 40),
                  headers=headers, timestamp=BASE_TS + i,
                  on_delivery=lambda err, msg, h=headers: report(err, msg, h))
        p.poll(0)
    check(p.flush(60) == 0, "every record delivered within 60 s")
    check(not errors, f"delivery errors: {errors[:3]}")
    return acked


def read_all(bootstrap, group, expected_ends):
    """Reads every partition from offset 0 up to `expected_ends` with assign()."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = []
    done = set()
    deadline = time.time() + 60
    while len(done) < PARTITIONS and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                if m.offset() >= expected_ends[m.partition()]:
                    done.add(m.partition())
                continue
            raise KafkaException(m.error())
        got.append({
            "partition": m.partition(), "offset": m.offset(), "key": m.key().decode(),
            "value": m.value().decode(), "ts": m.timestamp()[1],
            "headers": [[k, v.decode()] for k, v in (m.headers() or [])],
        })
    check(len(done) == PARTITIONS, f"reached the end of every partition (done: {done})")
    return c, got


def by_position(records):
    return sorted(records, key=lambda r: (r["partition"], r["offset"]))


def check_dense(records):
    for p in range(PARTITIONS):
        offsets = [r["offset"] for r in records if r["partition"] == p]
        check(offsets == list(range(len(offsets))), f"partition {p}: offsets dense from 0")


def ends_of(records):
    ends = [0] * PARTITIONS
    for r in records:
        ends[r["partition"]] = max(ends[r["partition"]], r["offset"] + 1)
    return ends


def write(bootstrap, state_file):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(TOPIC, PARTITIONS, config={"retention.ms": "-1"})])
    futures[TOPIC].result(30)
    # The same name again is refused with Kafka's TOPIC_ALREADY_EXISTS.
    again = admin.create_topics([NewTopic(TOPIC, 1)])[TOPIC]
    try:
        again.result(30)
        raise AssertionError("creating an existing topic succeeded")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, f"exists: {e}")
    # An unknown setting is refused and names itself.
    bad = admin.create_topics([NewTopic("bad-config", 1, config={"no.such.setting": "1"})])
    try:
        bad["bad-config"].result(30)
        raise AssertionError("an unknown setting was accepted")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.INVALID_CONFIG, f"invalid config: {e}")
    md = admin.list_topics(timeout=10)
    check(TOPIC in md.topics and len(md.topics[TOPIC].partitions) == PARTITIONS, "metadata")
    check("bad-config" not in md.topics, "a refused topic does not exist")

    produced = []
    for n, codec in enumerate(CODECS):
        produced += produce(bootstrap, codec, n * PER_CODEC, PER_CODEC)
    check(len(produced) == len(CODECS) * PER_CODEC, "every record acknowledged")
    check_dense(produced)
    # The same key always lands on the same partition.
    home = {}
    for r in produced:
        check(home.setdefault(r["key"], r["partition"]) == r["partition"], "key → partition")

    ends = ends_of(produced)
    c, got = read_all(bootstrap, "kafka-test", ends)
    check(by_position(got) == by_position(produced), "consumed exactly what was acknowledged")
    for p in range(PARTITIONS):
        low, high = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
        check((low, high) == (0, ends[p]), f"watermarks of {p}: {(low, high)} vs {ends[p]}")
    # Commit a position per partition and read it back, with its metadata.
    commits = [TopicPartition(TOPIC, p, ends[p] // 2, metadata=f"half-{p}")
               for p in range(PARTITIONS)]
    c.commit(offsets=commits, asynchronous=False)
    back = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
    check([(t.partition, t.offset) for t in back] == [(p, ends[p] // 2) for p in range(PARTITIONS)],
          f"committed offsets: {back}")
    check([t.metadata for t in back] == [f"half-{p}" for p in range(PARTITIONS)], "metadata")
    c.close()

    # A record larger than the node's limit is refused with MSG_SIZE_TOO_LARGE, and nothing
    # of its batch is appended.
    big = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000,
                    "acks": "all", "linger.ms": 50})
    outcome = []
    big.produce(TOPIC, key="big", value=b"x" * 2_000_000, partition=0,
                on_delivery=lambda err, m: outcome.append(err))
    check(big.flush(30) == 0, "the oversized record got an answer")
    check(outcome and outcome[0] is not None
          and outcome[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, f"oversized: {outcome}")
    # A topic that does not exist: UNKNOWN_TOPIC_OR_PARTITION (auto-creation is off).
    missing = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 5000})
    outcome = []
    missing.produce("no-such-topic", value=b"v", on_delivery=lambda err, m: outcome.append(err))
    missing.flush(30)
    check(outcome and outcome[0] is not None and outcome[0].code() in (
        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._MSG_TIMED_OUT),
        f"unknown topic: {outcome}")
    check("no-such-topic" not in admin.list_topics(timeout=10).topics, "not auto-created")

    with open(state_file, "w") as f:
        json.dump({"produced": produced, "ends": ends}, f)


def replay(bootstrap, state_file):
    with open(state_file) as f:
        state = json.load(f)
    produced, ends = state["produced"], state["ends"]
    # Everything is in the cold tier only now: read back from offset 0, identical.
    c, got = read_all(bootstrap, "kafka-replay", ends)
    check(by_position(got) == by_position(produced), "cold replay identical")
    c.close()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafka-test"})
    back = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
    check([t.offset for t in back] == [e // 2 for e in ends], "commits survive a restart")
    # Seek by time: the first record at or after a timestamp, per partition.
    for r in produced[::97]:
        tp = c.offsets_for_times([TopicPartition(TOPIC, r["partition"], r["ts"])], timeout=10)[0]
        first = min((x for x in produced
                     if x["partition"] == r["partition"] and x["ts"] >= r["ts"]),
                    key=lambda x: x["offset"])
        check(tp.offset == first["offset"], f"offset for time {r['ts']}: {tp.offset}")
    c.close()
    # New records continue the offsets; a consumer sees old (cold) and new (hot) in one read.
    more = produce(bootstrap, "zstd", 10_000, 300)
    for r in more:
        check(r["offset"] >= ends[r["partition"]], "offsets continue after the restart")
    all_records = produced + more
    c, got = read_all(bootstrap, "kafka-replay-2", ends_of(all_records))
    check(by_position(got) == by_position(all_records), "cold and hot read together")
    c.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([TOPIC])[TOPIC].result(30)
    check(TOPIC not in admin.list_topics(timeout=10).topics, "deleted")


def member(bootstrap, group):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "group.protocol": "consumer", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})


def groups(bootstrap, _state):
    topic, parts = "shared", 4
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, parts)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(2000):
        p.produce(topic, key=f"k{i}", value=f"v{i}")
    check(p.flush(60) == 0, "produced")
    members = {"a": member(bootstrap, "kip848"), "b": member(bootstrap, "kip848")}
    for c in members.values():
        c.subscribe([topic])
    seen = {}      # (partition, offset) -> how many times read
    readers = {}   # partition -> members that read it

    def poll_all(names, until):
        while time.time() < until:
            for name in names:
                m = members[name].poll(0.2)
                if m is None or m.error():
                    continue
                key = (m.partition(), m.offset())
                seen[key] = seen.get(key, 0) + 1
                readers.setdefault(m.partition(), set()).add(name)
                members[name].commit(message=m, asynchronous=False)
            yield

    def assignments(names):
        return {n: sorted(tp.partition for tp in members[n].assignment()) for n in names}

    # Both members settle on a split of the partitions, and read everything between them.
    deadline = time.time() + 90
    for _ in poll_all(["a", "b"], deadline):
        a = assignments(["a", "b"])
        if len(seen) >= 2000 and a["a"] and a["b"]:
            break
    a = assignments(["a", "b"])
    check(len(seen) == 2000, f"read {len(seen)} of 2000")
    check(a["a"] and a["b"] and not set(a["a"]) & set(a["b"])
          and sorted(a["a"] + a["b"]) == list(range(parts)), f"a split of the partitions: {a}")
    # b leaves (a heartbeat with epoch -1); a takes over everything.
    members["b"].close()
    deadline = time.time() + 60
    for _ in poll_all(["a"], deadline):
        if assignments(["a"])["a"] == list(range(parts)):
            break
    check(assignments(["a"])["a"] == list(range(parts)), f"a holds all: {assignments(['a'])}")
    for i in range(200):
        p.produce(topic, key=f"more{i}", value=f"more{i}")
    check(p.flush(60) == 0, "produced more")
    for _ in poll_all(["a"], time.time() + 60):
        if len(seen) >= 2200:
            break
    check(len(seen) == 2200, f"read {len(seen)} of 2200 after the takeover")
    # Each member commits every record it is handed before the next poll, and a partition
    # moves only after its holder gave it up: nothing is read twice.
    twice = sorted(k for k, n in seen.items() if n > 1)
    check(not twice, f"read twice: {twice[:10]}")
    ends = {}
    for (part, off) in seen:
        ends[part] = max(ends.get(part, 0), off + 1)
    back = members["a"].committed([TopicPartition(topic, q) for q in range(parts)], timeout=10)
    check({t.partition: t.offset for t in back} == ends, f"commits {back} vs ends {ends}")
    members["a"].close()
    print(f"partitions read by more than one member: {sorted(q for q, r in readers.items() if len(r) > 1)}")


def main():
    mode, bootstrap, state = sys.argv[1:4]
    {"write": write, "replay": replay, "groups": groups}[mode](bootstrap, state)
    print("kafka clients ok")


if __name__ == "__main__":
    main()
