"""Drives a tierlog node's Kafka listener with confluent-kafka (librdkafka), a client nobody
here wrote.

usage: kafka_clients.py write BOOTSTRAP STATE_JSON   create topics, produce with every codec,
                                                     consume, commit; save what was produced
       kafka_clients.py replay BOOTSTRAP STATE_JSON  after a restart without the hot tier:
                                                     read everything back from offset 0, check
                                                     commits and times, produce more, clean up
       kafka_clients.py groups BOOTSTRAP -           three members of a group with the new
                                                     protocol (KIP-848) share a topic; one
                                                     leaves, another joins
       kafka_clients.py classic BOOTSTRAP -          the same with the classic protocol
                                                     (JoinGroup/SyncGroup, the client's own
                                                     assignors), then the group admin calls
       kafka_clients.py configs BOOTSTRAP -          topic settings described and changed
                                                     (both alter APIs), partitions added;
                                                     a transactional producer refused
       kafka_clients.py failover BOOTSTRAP SECONDS   two idempotent acks=all producers and
                                                     a classic group of two run for SECONDS
                                                     while the test kills and restarts nodes;
                                                     then every acknowledged record is read
                                                     back once, at its acknowledged offset
       kafka_clients.py epochs-first BOOTSTRAP STATE_JSON, then (after a restart without
       the hot tier) epochs-second: leader epochs on fetched records (KIP-320) and
       OffsetForLeaderEpoch
       kafka_clients.py delete-records BOOTSTRAP STATE_JSON   DeleteRecords, then reads
Prints "kafka clients ok" on success; any failed check raises.
"""
import json
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, ConsumerGroupState,
                             ConsumerGroupTopicPartitions, Consumer, KafkaError, KafkaException,
                             Producer, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  ConfigSource, NewPartitions, NewTopic, OffsetSpec,
                                  ResourceType)

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


def read_all(bootstrap, group, expected_ends, topic=TOPIC, parts=PARTITIONS):
    """Reads every partition from offset 0 up to `expected_ends` with assign()."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
    got = []
    done = set()
    deadline = time.time() + 60
    while len(done) < parts and time.time() < deadline:
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
    check(len(done) == parts, f"reached the end of every partition (done: {done})")
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
    admin = AdminClient({"bootstrap.servers": bootstrap})
    check_max_timestamps(admin, produced)
    # Records with older times appended after a restart (hot) leave the answer in the cold tier.
    late = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    delivered = []
    for p in range(PARTITIONS):
        late.produce(TOPIC, key=f"late-{p}", value=b"late", partition=p, timestamp=BASE_TS + 1,
                     on_delivery=lambda err, msg: delivered.append((err, msg.partition(),
                                                                    msg.offset())))
    check(late.flush(30) == 0 and all(e is None for e, _, _ in delivered), f"late: {delivered}")
    ends = {p: o + 1 for _, p, o in delivered}
    produced += [{"partition": p, "offset": o, "key": f"late-{p}", "value": "late",
                  "ts": BASE_TS + 1, "headers": []} for _, p, o in delivered]
    check_max_timestamps(admin, produced)
    # New records continue the offsets; a consumer sees old (cold) and new (hot) in one read.
    more = produce(bootstrap, "zstd", 10_000, 300)
    for r in more:
        check(r["offset"] >= ends[r["partition"]], "offsets continue after the restart")
    all_records = produced + more
    c, got = read_all(bootstrap, "kafka-replay-2", ends_of(all_records))
    check(by_position(got) == by_position(all_records), "cold and hot read together")
    c.close()
    check_max_timestamps(admin, all_records)
    admin.delete_topics([TOPIC])[TOPIC].result(30)
    check(TOPIC not in admin.list_topics(timeout=10).topics, "deleted")


def check_max_timestamps(admin, records):
    """ListOffsets v7 (MAX_TIMESTAMP): per partition, the record with the highest timestamp
    (the first of equals)."""
    want = {}
    for r in sorted(records, key=lambda r: r["offset"]):
        best = want.get(r["partition"])
        if best is None or r["ts"] > best[1]:
            want[r["partition"]] = (r["offset"], r["ts"])
    asked = {TopicPartition(TOPIC, p): OffsetSpec.max_timestamp() for p in want}
    for tp, f in admin.list_offsets(asked).items():
        got = f.result(30)
        check((got.offset, got.timestamp) == want[tp.partition],
              f"max timestamp of {tp.partition}: {(got.offset, got.timestamp)}, "
              f"want {want[tp.partition]}")


def member(bootstrap, group):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "group.protocol": "consumer", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})


def share(bootstrap, topic, parts, group, make_member, produced):
    """Three members of `group` (a, b, c) share `topic`; b leaves and d joins, and a, c and d
    share it again; every record is read once, each member committing what it was handed
    before its next poll. Yields (members, split) once settled, then (members, None) at the
    end with a, c and d still open."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(produced):
        p.produce(topic, key=f"k{i}", value=f"v{i}")
    check(p.flush(60) == 0, "produced")
    members = {n: make_member(bootstrap, group) for n in "abc"}
    for c in members.values():
        c.subscribe([topic])
    seen = {}      # (partition, offset) -> how many times read
    readers = {}   # partition -> members that read it

    def poll_all(names, until):
        while time.time() < until:
            for name in names:
                got = [m for m in members[name].consume(200, 0.1) if not m.error()]
                for m in got:
                    key = (m.partition(), m.offset())
                    seen[key] = seen.get(key, 0) + 1
                    readers.setdefault(m.partition(), set()).add(name)
                if got:
                    # The positions: everything this member was handed.
                    members[name].commit(asynchronous=False)
            yield

    def assignments(names):
        return {n: sorted(tp.partition for tp in members[n].assignment()) for n in names}

    def split(names):
        """Each member holds some partitions, none twice, all of them between them."""
        a = assignments(names)
        held = [q for n in names for q in a[n]]
        return all(a.values()) and sorted(held) == list(range(parts)), a

    # The members settle on a split of the partitions, and read everything between them.
    for _ in poll_all("abc", time.time() + 90):
        if len(seen) >= produced and split("abc")[0]:
            break
    ok, a = split("abc")
    check(len(seen) == produced, f"read {len(seen)} of {produced}")
    check(ok, f"a split of the partitions: {a}")
    yield members, a
    # b leaves and d joins; a, c and d split the partitions again.
    members["b"].close()
    members["d"] = make_member(bootstrap, group)
    members["d"].subscribe([topic])
    for _ in poll_all("acd", time.time() + 90):
        if split("acd")[0]:
            break
    ok, a = split("acd")
    check(ok, f"a, c and d split the partitions: {a}")
    for i in range(200):
        p.produce(topic, key=f"more{i}", value=f"more{i}")
    check(p.flush(60) == 0, "produced more")
    for _ in poll_all("acd", time.time() + 60):
        if len(seen) >= produced + 200:
            break
    check(len(seen) == produced + 200, f"read {len(seen)} of {produced + 200} after the hand-over")
    # A partition moves only after its holder committed what it was handed: nothing is read
    # twice.
    twice = sorted(k for k, n in seen.items() if n > 1)
    check(not twice, f"read twice: {twice[:10]}")
    ends = {}
    for (part, off) in seen:
        ends[part] = max(ends.get(part, 0), off + 1)
    back = members["a"].committed([TopicPartition(topic, q) for q in range(parts)], timeout=10)
    check({t.partition: t.offset for t in back} == ends, f"commits {back} vs ends {ends}")
    print(f"{group}: partitions read by more than one member: "
          f"{sorted(q for q, r in readers.items() if len(r) > 1)}")
    yield members, None


def close_all(members):
    for n in "acd":
        members[n].close()


def groups(bootstrap, _state):
    topic, parts = "shared", 4
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, parts)])[topic].result(30)
    steps = share(bootstrap, topic, parts, "kip848", member, 2000)
    next(steps)
    members, _ = next(steps)
    close_all(members)


def classic_member(strategy):
    def make(bootstrap, group):
        return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "partition.assignment.strategy": strategy,
                         "session.timeout.ms": 10000, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    return make


def classic(bootstrap, _state):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # The eager protocol (range: every member gives everything up at a rebalance) and the
    # cooperative one (only what moves is given up), each computed by the client's leader.
    for strategy, topic in [("range", "classic-range"), ("cooperative-sticky", "classic-coop")]:
        parts, group = 4, f"g-{topic}"
        admin.create_topics([NewTopic(topic, parts)])[topic].result(30)
        steps = share(bootstrap, topic, parts, group, classic_member(strategy), 1000)
        members, split = next(steps)
        # The group as admin clients see it: its members and what each was assigned.
        listed = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(30)
        check(group in [g.group_id for g in listed.valid], f"{group} listed as stable: {listed.valid}")
        d = admin.describe_consumer_groups([group])[group].result(30)
        check(d.state == ConsumerGroupState.STABLE, f"state {d.state}")
        check(not d.is_simple_consumer_group and len(d.members) == 3, f"members {d.members}")
        described = sorted(sorted(tp.partition for tp in m.assignment.topic_partitions)
                           for m in d.members)
        check(described == sorted(split.values()), f"described {described} vs held {split}")
        # A group with members is not deleted.
        try:
            admin.delete_consumer_groups([group])[group].result(30)
            check(False, "deleting a group with members must fail")
        except KafkaException as e:
            check(e.args[0].code() == KafkaError.NON_EMPTY_GROUP, f"delete: {e}")
        members, _ = next(steps)
        close_all(members)
        # Empty now: its offsets are listed, altered and then the group deleted.
        d = admin.describe_consumer_groups([group])[group].result(30)
        check(d.state == ConsumerGroupState.EMPTY and not d.members, f"after close: {d.state}")
        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, q) for q in range(parts)])
        got = admin.list_consumer_group_offsets([req])[group].result(30)
        check(all(tp.offset > 0 for tp in got.topic_partitions), f"offsets {got}")
        alter = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 0)])
        admin.alter_consumer_group_offsets([alter])[group].result(30)
        got = admin.list_consumer_group_offsets([req])[group].result(30)
        check(got.topic_partitions[0].offset == 0, f"altered {got.topic_partitions[0]}")
        admin.delete_consumer_groups([group])[group].result(30)
        listed = admin.list_consumer_groups().result(30)
        check(group not in [g.group_id for g in listed.valid], "deleted")
        fresh = classic_member(strategy)(bootstrap, group)
        got = fresh.committed([TopicPartition(topic, q) for q in range(parts)], timeout=10)
        check(all(tp.offset < 0 for tp in got), f"a deleted group has no commits: {got}")
        fresh.close()


def configs(bootstrap, _state):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "settings"
    admin.create_topics([NewTopic(topic, 2, config={"retention.ms": "-1"})])[topic].result(30)
    res = ConfigResource(ResourceType.TOPIC, topic)

    def described():
        entries = admin.describe_configs([res])[res].result(30)
        return {k: (e.value, e.source) for k, e in entries.items()}

    d = described()
    check(d["retention.ms"][0] == "-1" and d["cleanup.policy"][0] == "delete", f"described {d}")
    check(d["max.message.bytes"] == (str(1 << 20), ConfigSource.DEFAULT_CONFIG.value), f"{d}")
    check(d["compression.type"][0] == "producer", f"{d}")
    # Incremental: only the settings named change.
    inc = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "1000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([inc])[inc].result(30)
    d = described()
    check(d["retention.ms"] == ("86400000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), f"{d}")
    check(d["max.message.bytes"][0] == "1000", f"{d}")
    # The topic's own record limit applies to producers at once.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    outcome = []
    p.produce(topic, value=b"x" * 2000, partition=0,
              on_delivery=lambda err, msg: outcome.append(err))
    p.flush(30)
    p.produce(topic, value=b"y" * 500, partition=0,
              on_delivery=lambda err, msg: outcome.append(err))
    p.flush(30)
    check(outcome[0] is not None and outcome[0].code() == KafkaError.MSG_SIZE_TOO_LARGE,
          f"a 2000-byte record over a 1000-byte limit: {outcome}")
    check(outcome[1] is None, f"a 500-byte record: {outcome}")
    dele = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([dele])[dele].result(30)
    outcome.clear()
    p.produce(topic, value=b"z" * 2000, partition=0,
              on_delivery=lambda err, msg: outcome.append(err))
    p.flush(30)
    check(outcome == [None], f"the limit is gone: {outcome}")
    # Non-incremental: every setting not named goes back to its default.
    full = ConfigResource(ResourceType.TOPIC, topic, set_config={"cleanup.policy": "delete"})
    admin.alter_configs([full])[full].result(30)
    d = described()
    check(d["retention.ms"] == ("-1", ConfigSource.DEFAULT_CONFIG.value), f"replaced: {d}")
    # Settings tierlog does not act on are refused, and nothing changes.
    for name, value in [("cleanup.policy", "shrink"), ("compression.type", "gzip"),
                        ("segment.bytes", "1000"), ("retention.ms", "soon")]:
        bad = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        try:
            admin.incremental_alter_configs([bad])[bad].result(30)
            check(False, f"{name}={value} must be refused")
        except KafkaException as e:
            check(e.args[0].code() == KafkaError.INVALID_CONFIG, f"{name}={value}: {e}")
    check(described() == d, "refused changes change nothing")
    broker = ConfigResource(ResourceType.BROKER, "1")
    admin.describe_configs([broker])[broker].result(30)
    # Partitions: added, led, produced to and read; never removed.
    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
    md = admin.list_topics(topic, timeout=10).topics[topic]
    check(sorted(md.partitions) == [0, 1, 2, 3], f"partitions {sorted(md.partitions)}")
    outcome.clear()
    # A new producer: an existing one learns of new partitions at its next metadata refresh.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    p.produce(topic, key=b"new", value=b"in partition 3", partition=3,
              on_delivery=lambda err, msg: outcome.append((err, msg.offset())))
    p.flush(30)
    check(outcome == [(None, 0)], f"produced to a new partition: {outcome}")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "settings-reader",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 3, OFFSET_BEGINNING)])
    m = None
    deadline = time.time() + 30
    while m is None and time.time() < deadline:
        m = c.poll(0.5)
    check(m is not None and not m.error() and m.value() == b"in partition 3", f"read {m}")
    c.close()
    try:
        admin.create_partitions([NewPartitions(topic, 2)])[topic].result(30)
        check(False, "shrinking must be refused")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.INVALID_PARTITIONS, f"shrink: {e}")
    # A compacted topic: described as such, and a record without a key is INVALID_RECORD.
    kv = "settings-compacted"
    admin.create_topics([NewTopic(kv, 1, config={"cleanup.policy": "compact",
                                                 "delete.retention.ms": "60000"})])[kv].result(30)
    res = ConfigResource(ResourceType.TOPIC, kv)
    entries = admin.describe_configs([res])[res].result(30)
    check(entries["cleanup.policy"].value == "compact", f"{entries['cleanup.policy']}")
    check(entries["delete.retention.ms"].value == "60000", f"{entries['delete.retention.ms']}")
    check(entries["min.compaction.lag.ms"].value == "0", f"{entries['min.compaction.lag.ms']}")
    outcome = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    p.produce(kv, value=b"no key", partition=0, on_delivery=lambda err, msg: outcome.append(err))
    p.flush(30)
    p.produce(kv, key=b"k", value=b"v", partition=0,
              on_delivery=lambda err, msg: outcome.append(err))
    p.flush(30)
    check(outcome[0] is not None and outcome[0].code() == KafkaError.INVALID_RECORD,
          f"a record without a key on a compacted topic: {outcome}")
    check(outcome[1] is None, f"a keyed record: {outcome}")
    transactions_are_refused(bootstrap)


def transactions_are_refused(bootstrap):
    """Until transactions exist, a transactional producer stops at once with a fatal error
    that says why, instead of retrying until its timeout."""
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-refused"})
    try:
        p.init_transactions(60)
        check(False, "init_transactions must be refused")
    except KafkaException as e:
        # A client that retried would end in _TIMED_OUT after the call's 60 s instead.
        err = e.args[0]
        check(err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED and err.fatal()
              and not err.retriable(), f"a transactional producer is told: {err}")
        check("transactions are not supported" in err.str(), f"the error says why: {err.str()}")


EPOCHS = "epochs"


def consume_epochs(bootstrap, end):
    """(offset, value, leader epoch) of every record of EPOCHS below `end`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "epochs-reader",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(EPOCHS, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.time() + 60
    while len(got) < end and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append((m.offset(), m.value().decode(), m.leader_epoch()))
    c.close()
    check([o for o, _, _ in got] == list(range(end)), f"read offsets {[o for o, _, _ in got]}")
    return got


def produce_epochs(bootstrap, start, count):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    acked = []
    for i in range(start, start + count):
        p.produce(EPOCHS, value=f"v{i}".encode(), partition=0,
                  on_delivery=lambda err, msg: acked.append((err, msg.offset())))
    check(p.flush(30) == 0, "delivered")
    check(all(e is None for e, _ in acked), f"acknowledged: {acked}")
    check(sorted(o for _, o in acked) == list(range(start, start + count)), f"offsets {acked}")


def epochs_first(bootstrap, state_file):
    """Before a restart: records are stamped with the leader's epoch."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(EPOCHS, 1)])[EPOCHS].result(30)
    produce_epochs(bootstrap, 0, 10)
    got = consume_epochs(bootstrap, 10)
    first = {e for _, _, e in got}
    check(len(first) == 1 and min(first) >= 0, f"one leader epoch: {first}")
    with open(state_file, "w") as f:
        json.dump({"epoch": first.pop()}, f)


def leader_epoch_ends(bootstrap, asks):
    """OffsetForLeaderEpoch v2 (kafka-python's protocol classes, sent as they are) for
    partition 0 of EPOCHS: [(error, leader epoch, end offset)] per (current, asked)."""
    from kafka.protocol.offset_for_leader_epoch import OffsetForLeaderEpochRequest
    from kafka_raw import raw_node
    with raw_node(bootstrap) as send:
        out = []
        for current, asked in asks:
            fut = send(OffsetForLeaderEpochRequest[2]([(EPOCHS, [(0, current, asked)])]))
            check(fut.succeeded(), f"OffsetForLeaderEpoch answered: {fut.exception}")
            [(_, [(err, _, epoch, end)])] = fut.value.topics
            out.append((err, epoch, end))
        return out


def epochs_second(bootstrap, state_file):
    """After a restart without the hot tier: a new epoch; records read back from the cold tier
    keep the epoch that appended them, and OffsetForLeaderEpoch says where each epoch ends."""
    with open(state_file) as f:
        before = json.load(f)["epoch"]
    produce_epochs(bootstrap, 10, 10)
    got = consume_epochs(bootstrap, 20)
    check({e for o, _, e in got if o < 10} == {before}, f"cold records keep their epoch: {got}")
    after = {e for o, _, e in got if o >= 10}
    check(len(after) == 1 and after.pop() > before, f"a new leader epoch after it: {got}")
    now = got[-1][2]
    answers = leader_epoch_ends(bootstrap, [
        (now, before),      # the old epoch ends where the new one began
        (now, now),         # the current one at the high watermark
        (now, before - 1 if before > 0 else before),
        (now, now + 1),     # after the current epoch: undefined
        (before, before) if before < now else (now, now),
        (-1, before),       # no current epoch given: not checked
    ])
    check(answers[0] == (0, before, 10), f"epoch {before} ends at 10: {answers[0]}")
    check(answers[1] == (0, now, 20), f"epoch {now} ends at the high watermark: {answers[1]}")
    if before > 0:
        check(answers[2] == (0, before - 1, 0), f"before the history: {answers[2]}")
    check(answers[3] == (0, -1, -1), f"a future epoch is undefined: {answers[3]}")
    check(answers[4][0] == KafkaError.FENCED_LEADER_EPOCH, f"a stale leader epoch: {answers[4]}")
    check(answers[5] == (0, before, 10), f"unchecked current epoch: {answers[5]}")


DELREC = "delrec"


def delete_records(bootstrap, state_file):
    """DeleteRecords moves each partition's log start: to an offset inside the log, to the high
    watermark (-1); never back; past the high watermark is OFFSET_OUT_OF_RANGE. Readers start
    at the new start and nothing below it is read."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(DELREC, 3, config={"retention.ms": "-1"})])[DELREC].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for part in range(3):
        for i in range(100):
            p.produce(DELREC, key=f"k{i}", value=f"{part}-{i}".encode(), partition=part)
    check(p.flush(30) == 0, "delivered")

    def cut(offsets):
        asked = [TopicPartition(DELREC, part, o) for part, o in offsets.items()]
        return {tp.partition: f.result(30)
                for tp, f in admin.delete_records(asked, operation_timeout=30).items()}

    done = cut({0: 37, 1: OFFSET_END})
    check(done[0].low_watermark == 37, f"partition 0 starts at 37: {done[0]}")
    check(done[1].low_watermark == 100, f"partition 1 starts at its end: {done[1]}")
    # Never back, and never past the high watermark.
    check(cut({0: 10})[0].low_watermark == 37, "the log start does not move back")
    try:
        cut({2: 500})
        check(False, "deleting past the high watermark must be refused")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, f"past the end: {e}")
    earliest = {tp.partition: f.result(30).offset for tp, f in admin.list_offsets(
        {TopicPartition(DELREC, part): OffsetSpec.earliest() for part in range(3)}).items()}
    check(earliest == {0: 37, 1: 100, 2: 0}, f"earliest offsets: {earliest}")
    # A reader from the beginning starts at the log start.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "delrec-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(DELREC, part, OFFSET_BEGINNING) for part in range(3)])
    got = {0: [], 1: [], 2: []}
    deadline = time.time() + 60
    while (len(got[0]) < 63 or len(got[2]) < 100) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got[m.partition()].append(m.offset())
    c.close()
    check(got == {0: list(range(37, 100)), 1: [], 2: list(range(100))}, f"read {got}")
    with open(state_file, "w") as f:
        json.dump({"starts": {"0": 37, "1": 100, "2": 0}}, f)


def failover(bootstrap, seconds):
    """Clients that only know Kafka (two idempotent acks=all producers, a group of two
    members) follow partition leaders through the faults the test causes meanwhile (kills,
    pauses, outages); every record a member reads is logged as it is read, and each must be
    the one its offset holds at the end."""
    seconds = float(seconds)
    topic, parts = "moving", 6
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, parts)])[topic].result(60)
    acked = {}   # key -> (partition, offset)
    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(err)
        else:
            acked[msg.key()] = (msg.partition(), msg.offset())

    # Two idempotent producers, and a group of two members.
    producers = [Producer({"bootstrap.servers": bootstrap, "acks": "all",
                           "enable.idempotence": True, "linger.ms": 5,
                           "message.timeout.ms": 120000}) for _ in range(2)]
    members = [Consumer({"bootstrap.servers": bootstrap, "group.id": "movers",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 30000}) for _ in range(2)]
    for c in members:
        c.subscribe([topic])
    consumed = {}   # (partition, offset) -> key
    seen = []       # every (partition, offset, key) a member was handed, as it was handed

    def take(m):
        if m is not None and not m.error():
            consumed[(m.partition(), m.offset())] = m.key()
            seen.append((m.partition(), m.offset(), m.key()))
            return True
        return False

    print("ready", flush=True)
    # 200 records a second, the members reading and committing in between.
    i, start = 0, time.time()
    end = start + seconds
    while time.time() < end:
        for _ in range(20):
            producers[i % 2].produce(topic, key=f"k{i:07}".encode(), value=f"v{i}".encode(),
                                     on_delivery=report)
            i += 1
        for p in producers:
            p.poll(0)
        next_batch = start + i / 200
        while time.time() < next_batch:
            for c in members:
                m = c.poll(max(0.0, min(0.025, next_batch - time.time())))
                if take(m):
                    c.commit(message=m, asynchronous=True)
    for p in producers:
        check(p.flush(180) == 0, "every record was acknowledged or failed")
    check(not failed, f"{len(failed)} records failed, first: {failed[:3]}")
    check(len(acked) == i, f"acknowledged {len(acked)} of {i}")
    print(f"produced {i} records through the failover", flush=True)
    # The members read on to the end, through the same leader changes.
    want = {v: k for k, v in acked.items()}
    deadline = time.time() + 120
    while len(consumed) < len(want) and time.time() < deadline:
        for c in members:
            take(c.poll(0.25))
    for c in members:
        c.close()
    # No value was shown at an offset that later holds another.
    taken_back = [(q, o, k) for (q, o, k) in seen if want.get((q, o)) != k]
    check(not taken_back, f"{len(taken_back)} records read during the faults are not in the "
          f"log at their offsets: {taken_back[:5]}")
    print(f"the members read {len(seen)} records ({len(seen) - len(consumed)} again after a "
          f"rebalance), each where the log holds it", flush=True)
    # Acknowledged offsets are the log: dense per partition, each record where it was acked.
    check(consumed == want, f"consumed {len(consumed)} of {len(want)} acknowledged; "
          f"missing {sorted(set(want) - set(consumed))[:5]}, "
          f"unexpected {sorted(set(consumed) - set(want))[:5]}")
    for q in range(parts):
        offs = sorted(o for (pp, o) in want if pp == q)
        check(offs == list(range(len(offs))), f"partition {q} offsets dense from 0")
    # A fresh reader from offset 0 sees the same.
    fresh, got = read_all(bootstrap, "movers-check",
                          {q: len([1 for (pp, _) in want if pp == q]) for q in range(parts)},
                          topic, parts)
    fresh.close()
    check({(r["partition"], r["offset"]): r["key"].encode() for r in got} == want,
          "a fresh reader sees every acknowledged record at its offset")


def main():
    mode, bootstrap, state = sys.argv[1:4]
    {"write": write, "replay": replay, "groups": groups, "classic": classic,
     "configs": configs, "failover": failover, "epochs-first": epochs_first,
     "epochs-second": epochs_second, "delete-records": delete_records}[mode](bootstrap, state)
    print("kafka clients ok")


if __name__ == "__main__":
    main()
