"""Drives a tierlog node's Kafka listener with kafka-python, a pure Python Kafka client (no
librdkafka), with its codecs from python-snappy, lz4 and zstandard.

usage: kafka_python_client.py admin BOOTSTRAP -            create a topic with settings,
                                                            describe and alter them, add
                                                            partitions, delete the topic
       kafka_python_client.py write BOOTSTRAP STATE_JSON   produce with every codec (keys,
                                                            headers, idempotent, acks=all),
                                                            read back from offset 0, offsets
                                                            for times; save what was produced
       kafka_python_client.py replay BOOTSTRAP STATE_JSON  after a restart without the hot
                                                            tier: the same from the cold tier,
                                                            offsets for times, more records
       kafka_python_client.py groups BOOTSTRAP -           three members of a classic group
                                                            share a topic; one leaves, one
                                                            joins; every record read once
       kafka_python_client.py transactions BOOTSTRAP -     a transactional producer is
                                                            refused quickly and says why
       kafka_python_client.py sessions BOOTSTRAP -         fetch sessions (KIP-227) with the
                                                            client's own request classes
       kafka_python_client.py failover-write BOOTSTRAP STATE_JSON
                                                            200 more acknowledged records,
                                                            added to the state file
       kafka_python_client.py failover-read BOOTSTRAP STATE_JSON
                                                            read back exactly those records
Prints "kafka matrix ok" last on success; a failed check exits non-zero with its reason.
"""
import contextlib
import json
import logging
import sys
import threading
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as Errors
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.structs import OffsetAndMetadata

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 300
BASE_TS = 1_767_225_600_000


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def admin_client(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kafka-python-matrix",
                            request_timeout_ms=30000)


def refused(call, error, what):
    """`call` must raise kafka-python's `error`."""
    try:
        call()
    except error:
        return
    except Exception as e:  # noqa: BLE001 - any other outcome is the failure reported
        raise CheckFailed(f"{what}: expected {error.__name__}, got {type(e).__name__}: {e}")
    raise CheckFailed(f"{what}: expected {error.__name__}, it succeeded")


def described(admin, topic):
    """The topic's settings as DescribeConfigs returns them: name -> (value, source)."""
    responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    out = {}
    for response in responses:
        for error_code, message, _rtype, name, entries in response.resources:
            check(error_code == 0 and name == topic, f"describe {topic}: {error_code} {message}")
            for entry in entries:
                # v1+: name, value, read_only, source, is_sensitive, synonyms
                out[entry[0]] = (entry[1], entry[3])
    return out


def partitions_in_metadata(admin, topic):
    (t,) = admin.describe_topics([topic])
    check(t["error_code"] == 0, f"metadata of {topic}: error {t['error_code']}")
    return sorted(p["partition"] for p in t["partitions"])


def admin(bootstrap, _state):
    a = admin_client(bootstrap)
    topic = "kp-admin"
    a.create_topics([NewTopic(topic, 2, 1, topic_configs={
        "retention.ms": "-1", "cleanup.policy": "compact", "max.message.bytes": "500000"})])
    refused(lambda: a.create_topics([NewTopic(topic, 1, 1)]), Errors.TopicAlreadyExistsError,
            "creating an existing topic")
    refused(lambda: a.create_topics([NewTopic("kp-bad", 1, 1,
                                              topic_configs={"no.such.setting": "1"})]),
            Errors.InvalidConfigurationError, "an unknown setting")
    check("kp-bad" not in a.list_topics(), "a refused topic does not exist")
    check(topic in a.list_topics(), "the topic is listed")
    check(partitions_in_metadata(a, topic) == [0, 1], "two partitions")
    d = described(a, topic)
    # Sources: 1 = set on the topic (DYNAMIC_TOPIC_CONFIG), 5 = DEFAULT_CONFIG. A setting
    # given its default value (retention.ms=-1) is described as the default.
    check(d["retention.ms"][0] == "-1", f"retention.ms: {d.get('retention.ms')}")
    check(d["cleanup.policy"] == ("compact", 1), f"cleanup.policy: {d.get('cleanup.policy')}")
    check(d["max.message.bytes"] == ("500000", 1), f"max.message.bytes: {d}")
    check(d["compression.type"][0] == "producer", f"compression.type: {d}")
    # AlterConfigs replaces the topic's settings: those not named go back to their defaults.
    r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={
        "retention.ms": "86400000", "cleanup.policy": "compact,delete"})])
    check(all(res[0] == 0 for res in r.resources), f"alter: {r}")
    d = described(a, topic)
    check(d["retention.ms"] == ("86400000", 1), f"altered retention.ms: {d.get('retention.ms')}")
    check(d["cleanup.policy"] == ("compact,delete", 1), f"altered cleanup.policy: {d}")
    check(d["max.message.bytes"][1] == 5, f"an unnamed setting back to its default: {d}")
    # A value tierlog does not act on is refused (INVALID_CONFIG), and nothing changes.
    r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                        configs={"cleanup.policy": "shrink"})])
    check(r.resources[0][0] == Errors.InvalidConfigurationError.errno, f"bad value: {r}")
    check(described(a, topic) == d, "a refused change changes nothing")
    # Partitions: added and seen in metadata (by a fresh client too), never removed.
    a.create_partitions({topic: NewPartitions(4)})
    check(partitions_in_metadata(a, topic) == [0, 1, 2, 3], "four partitions after adding")
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    check(c.partitions_for_topic(topic) == {0, 1, 2, 3}, "a consumer sees four partitions")
    c.close()
    refused(lambda: a.create_partitions({topic: NewPartitions(2)}),
            Errors.InvalidPartitionsError, "fewer partitions")
    # Produced to and read from a new partition.
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    md = p.send(topic, key=b"new", value=b"in partition 3", partition=3).get(timeout=30)
    check((md.partition, md.offset) == (3, 0), f"produced to partition 3: {md}")
    p.close()
    records = read_partitions(bootstrap, topic, {3: 1})
    check([(r["key"], r["value"]) for r in records] == [("new", "in partition 3")], f"{records}")
    # Deleted: gone from the list and from metadata.
    a.delete_topics([topic])
    check(topic not in a.list_topics(), "deleted topic not listed")
    (t,) = a.describe_topics([topic])
    check(t["error_code"] == Errors.UnknownTopicOrPartitionError.errno,
          f"deleted topic's metadata: {t}")
    refused(lambda: a.delete_topics([topic]), Errors.UnknownTopicOrPartitionError,
            "deleting it again")
    a.close()


def as_record(m):
    return {
        "partition": m.partition, "offset": m.offset,
        "key": m.key.decode() if m.key is not None else None,
        "value": m.value.decode() if m.value is not None else None,
        "ts": m.timestamp,
        "headers": [[k, v.decode() if v is not None else None] for k, v in (m.headers or [])],
    }


def read_partitions(bootstrap, topic, ends):
    """Every record of the partitions in `ends` (partition -> end offset) from offset 0."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=200)
    tps = [TopicPartition(topic, p) for p in ends]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = []
    # Where each partition's reading got to. (position() is not asked before the first poll:
    # in kafka-python 2.2.15 it spins without network I/O until a poll fetched metadata.)
    reached = {p: 0 for p in ends}
    deadline = time.time() + 60
    while time.time() < deadline and any(reached[p] < ends[p] for p in ends):
        for records in c.poll(timeout_ms=500).values():
            got += [as_record(m) for m in records]
            for m in records:
                reached[m.partition] = max(reached[m.partition], m.offset + 1)
    c.poll(timeout_ms=300)  # nothing more: the ends were the ends
    positions = {tp.partition: c.position(tp, timeout_ms=10000) for tp in tps}
    c.close()
    check(positions == ends, f"read up to {positions}, expected {ends}")
    return got


def by_position(records):
    return sorted(records, key=lambda r: (r["partition"], r["offset"]))


def ends_of(records, partitions):
    ends = {p: 0 for p in range(partitions)}
    for r in records:
        ends[r["partition"]] = max(ends[r["partition"]], r["offset"] + 1)
    return ends


def check_dense(records, partitions):
    for p in range(partitions):
        offsets = sorted(r["offset"] for r in records if r["partition"] == p)
        check(offsets == list(range(len(offsets))), f"partition {p}: offsets dense from 0")


def produce(bootstrap, topic, codec, start, count, retries=5):
    """`count` keyed records with headers from an idempotent acks=all producer compressing
    with `codec`; returns them as the node acknowledged them."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                      compression_type=codec, linger_ms=5, retries=retries,
                      retry_backoff_ms=200)
    name = codec or "none"
    sent = []
    for i in range(start, start + count):
        headers = [("n", str(i).encode()), ("codec", name.encode())]
        if i % 10 == 0:
            headers.append(("empty", b""))
        key, value = f"key-{i % 50}", f"value-{i}-{name}-" + "x" * (i % 40)
        future = p.send(topic, key=key.encode(), value=value.encode(), headers=headers,
                        timestamp_ms=BASE_TS + i)
        sent.append((future, key, value, headers, BASE_TS + i))
    p.flush(timeout=60)
    acked = []
    for future, key, value, headers, ts in sent:
        md = future.get(timeout=60)
        acked.append({"partition": md.partition, "offset": md.offset, "key": key,
                      "value": value, "ts": ts,
                      "headers": [[k, v.decode()] for k, v in headers]})
    p.close()
    return acked


def check_offsets_for_times(bootstrap, topic, produced):
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    samples = by_position(produced)[::53]
    query = {}
    for r in samples:
        # One query per partition at a time: the dict is keyed by partition.
        query = {TopicPartition(topic, r["partition"]): r["ts"]}
        found = c.offsets_for_times(query)[TopicPartition(topic, r["partition"])]
        first = min(x["offset"] for x in produced
                    if x["partition"] == r["partition"] and x["ts"] >= r["ts"])
        check(found is not None and found.offset == first,
              f"offset for time {r['ts']} in {r['partition']}: {found}, expected {first}")
    latest = max(r["ts"] for r in produced) + 1
    after = c.offsets_for_times({TopicPartition(topic, 0): latest})[TopicPartition(topic, 0)]
    check(after is None, f"no record at or after {latest}: {after}")
    c.close()
    return len(samples)


def write(bootstrap, state_file):
    topic, parts = "kp-events", 3
    a = admin_client(bootstrap)
    a.create_topics([NewTopic(topic, parts, 1, topic_configs={"retention.ms": "-1"})])
    a.close()
    produced = []
    for n, codec in enumerate(CODECS):
        produced += produce(bootstrap, topic, codec, n * PER_CODEC, PER_CODEC)
    check(len(produced) == len(CODECS) * PER_CODEC, "every record acknowledged")
    check_dense(produced, parts)
    home = {}
    for r in produced:
        check(home.setdefault(r["key"], r["partition"]) == r["partition"], "key -> partition")
    ends = ends_of(produced, parts)
    got = read_partitions(bootstrap, topic, ends)
    check(by_position(got) == by_position(produced),
          "consumed exactly what was acknowledged: " + first_difference(got, produced))
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    tps = [TopicPartition(topic, p) for p in range(parts)]
    check({tp.partition: o for tp, o in c.end_offsets(tps).items()} == ends, "end offsets")
    check(set(c.beginning_offsets(tps).values()) == {0}, "beginning offsets")
    c.close()
    n = check_offsets_for_times(bootstrap, topic, produced)
    print(f"wrote {len(produced)} records with codecs {CODECS}; {n} offsets for times")
    with open(state_file, "w") as f:
        json.dump({"topic": topic, "partitions": parts, "produced": produced}, f)


def first_difference(got, want):
    got, want = by_position(got), by_position(want)
    if len(got) != len(want):
        return f"{len(got)} records read, {len(want)} expected"
    for g, w in zip(got, want):
        if g != w:
            return f"read {g}, expected {w}"
    return "none"


def replay(bootstrap, state_file):
    with open(state_file) as f:
        state = json.load(f)
    topic, parts, produced = state["topic"], state["partitions"], state["produced"]
    ends = ends_of(produced, parts)
    got = read_partitions(bootstrap, topic, ends)
    check(by_position(got) == by_position(produced),
          "cold replay identical: " + first_difference(got, produced))
    n = check_offsets_for_times(bootstrap, topic, produced)
    more = produce(bootstrap, topic, "zstd", 100_000, 200)
    for r in more:
        check(r["offset"] >= ends[r["partition"]], "offsets continue after the restart")
    everything = produced + more
    check_dense(everything, parts)
    got = read_partitions(bootstrap, topic, ends_of(everything, parts))
    check(by_position(got) == by_position(everything),
          "cold and hot read together: " + first_difference(got, everything))
    print(f"replayed {len(produced)} records from the cold tier; {n} offsets for times")


FAILOVER_TOPIC, FAILOVER_PARTITIONS = "kp-failover", 3


def failover_write(bootstrap, state_file):
    """Appends 200 acknowledged records to the state file: run before a partition's leader is
    killed with SIGKILL and again after, while another node takes the partition over (the
    producer retries until it finds the new leader)."""
    try:
        with open(state_file) as f:
            produced = json.load(f)
    except FileNotFoundError:
        produced = []
    produced += produce(bootstrap, FAILOVER_TOPIC, "lz4", len(produced), 200, retries=1000)
    check_dense(produced, FAILOVER_PARTITIONS)
    print(f"{len(produced)} records acknowledged")
    with open(state_file, "w") as f:
        json.dump(produced, f)


def failover_read(bootstrap, state_file):
    """Reads the topic from offset 0: exactly what was acknowledged, before and after."""
    with open(state_file) as f:
        produced = json.load(f)
    got = read_partitions(bootstrap, FAILOVER_TOPIC, ends_of(produced, FAILOVER_PARTITIONS))
    check(by_position(got) == by_position(produced),
          "read what was acknowledged: " + first_difference(got, produced))
    print(f"read {len(got)} records after the takeover")


def sessions(bootstrap, _state):
    """Fetch sessions (KIP-227) through kafka-python's own FetchRequest v7 classes, sent as
    they are: a full fetch opens a session and answers every partition; an incremental fetch
    that names nothing answers nothing until a partition has news, then only that partition;
    a forgotten partition is not answered again; wrong epochs and unknown sessions are refused
    with Kafka's codes, and epoch 0 with the id opens a fresh session."""
    from kafka.protocol.fetch import FetchRequest
    from kafka_raw import raw_node
    topic = "kp-sessions"
    a = admin_client(bootstrap)
    a.create_topics([NewTopic(topic, 3, 1)])
    a.close()
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for part in range(3):
        p.send(topic, value=f"first-{part}".encode(), partition=part).get(timeout=30)
    with raw_node(bootstrap) as send, contextlib.closing(p):

        def fetch(session_id, epoch, parts, forgotten=(), wait_ms=300):
            req = FetchRequest[7](-1, wait_ms, 1, 1 << 20, 0, session_id, epoch,
                                  [(topic, [(q, off, -1, 1 << 20) for q, off in parts])] if parts else [],
                                  [(topic, list(forgotten))] if forgotten else [])
            fut = send(req)
            check(fut.succeeded(), f"Fetch answered: {fut.exception}")
            r = fut.value
            answered = {q: (err, hw, len(records or b"")) for t, ps in r.topics
                        for (q, err, hw, _, _, _, records) in ps}
            return r.error_code, r.session_id, answered

        err, sid, got = fetch(0, 0, [(0, 0), (1, 0), (2, 0)])
        check(err == 0 and sid != 0, f"a full fetch opens a session: {err} {sid}")
        check(sorted(got) == [0, 1, 2] and all(n > 0 for _, _, n in got.values()),
              f"a full fetch answers every partition: {got}")
        # Each partition read to 1 (the new offsets named): nothing new anywhere, so, as
        # Kafka, nothing is answered.
        err, sid2, got = fetch(sid, 1, [(0, 1), (1, 1), (2, 1)])
        check(err == 0 and sid2 == sid and got == {}, f"epoch 1: {err} {sid2} {got}")
        err, _, got = fetch(sid, 2, [])
        check(err == 0 and got == {}, f"nothing changed, nothing answered: {got}")
        p.send(topic, value=b"second-1", partition=1).get(timeout=30)
        err, _, got = fetch(sid, 3, [])
        check(err == 0 and list(got) == [1] and got[1][1] == 2 and got[1][2] > 0,
              f"only the partition with a new record: {got}")
        # Partition 2 is forgotten: a record there is no longer answered.
        err, _, got = fetch(sid, 4, [(1, 2)], forgotten=[2])
        p.send(topic, value=b"second-2", partition=2).get(timeout=30)
        err, _, got = fetch(sid, 5, [])
        check(err == 0 and got == {}, f"a forgotten partition is not answered: {got}")
        err, _, got = fetch(sid, 9, [])
        check(err == 71, f"a wrong epoch: INVALID_FETCH_SESSION_EPOCH, got {err}")
        err, _, got = fetch(sid + 1 if sid < 2**31 - 1 else 1, 1, [])
        check(err == 70, f"an unknown session: FETCH_SESSION_ID_NOT_FOUND, got {err}")
        # What a client sends after a refusal: epoch 0 with its id, a full fetch.
        err, fresh, got = fetch(sid, 0, [(2, 0)])
        check(err == 0 and fresh not in (0, sid) and list(got) == [2] and got[2][2] > 0,
              f"epoch 0 with the id opens a fresh session: {err} {fresh} {got}")
        err, _, got = fetch(sid, 6, [])
        check(err == 70, f"the old session is closed: {err}")
        err, closed, got = fetch(fresh, -1, [(0, 0)])
        check(err == 0 and closed == 0 and list(got) == [0],
              f"epoch -1 closes it and fetches without a session: {err} {closed} {got}")
        print("fetch sessions answered as Kafka's")


class Member(threading.Thread):
    """A group member in a thread of its own: polls, records what it read, commits it
    synchronously before its next poll, and closes (LeaveGroup) when told to stop."""

    def __init__(self, name, bootstrap, topic, group, seen, lock):
        super().__init__(name=name, daemon=True)
        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, client_id=name,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=10000, heartbeat_interval_ms=1000, fetch_max_wait_ms=200)
        self.seen, self.lock = seen, lock
        self.assigned = []
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stopping.is_set():
                batches = self.consumer.poll(timeout_ms=200)
                offsets = {}
                for tp, records in batches.items():
                    with self.lock:
                        for m in records:
                            self.seen.setdefault((m.partition, m.offset), []).append(self.name)
                    offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
                if offsets:
                    self.consumer.commit(offsets)
                self.assigned = sorted(tp.partition for tp in self.consumer.assignment())
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = f"{self.name}: {type(e).__name__}: {e}"
        finally:
            self.consumer.close()


def groups(bootstrap, _state):
    topic, parts, group = "kp-shared", 6, "kp-group"
    a = admin_client(bootstrap)
    a.create_topics([NewTopic(topic, parts, 1)])
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(1200):
        p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    p.flush(timeout=60)
    seen, lock = {}, threading.Lock()
    members = {n: Member(n, bootstrap, topic, group, seen, lock) for n in ["a", "b", "c"]}
    for m in members.values():
        m.start()

    def settled(names, count):
        """Every record read and the partitions split among `names`, each partition owned by
        exactly one of them."""
        held = [members[n].assigned for n in names]
        flat = sorted(q for h in held for q in h)
        with lock:
            n = len(seen)
        return n >= count and all(held) and flat == list(range(parts))

    def wait(names, count, what):
        deadline = time.time() + 60
        while time.time() < deadline and not settled(names, count):
            errors = [m.error for m in members.values() if m.error]
            check(not errors, f"{what}: member failed: {errors}")
            time.sleep(0.2)
        with lock:
            n = len(seen)
        check(settled(names, count), f"{what}: read {n} of {count}, assignments "
              f"{ {k: members[k].assigned for k in names} }")

    wait(["a", "b", "c"], 1200, "three members")
    split = {n: members[n].assigned for n in "abc"}
    described = a.describe_consumer_groups([group])[0]
    check(described.state == "Stable" and len(described.members) == 3,
          f"described: {described.state}, {len(described.members)} members")
    # c leaves (LeaveGroup on close), d joins; more records arrive meanwhile.
    members["c"].stopping.set()
    members["c"].join(30)
    members["d"] = Member("d", bootstrap, topic, group, seen, lock)
    members["d"].start()
    for i in range(1200, 1800):
        p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    p.flush(timeout=60)
    p.close()
    wait(["a", "b", "d"], 1800, "after c left and d joined")
    after = {n: members[n].assigned for n in "abd"}
    with lock:
        twice = sorted(k for k, who in seen.items() if len(who) > 1)
        total = len(seen)
        by_d = sum(1 for who in seen.values() if "d" in who)
    check(total == 1800, f"read {total} distinct records of 1800")
    check(not twice, f"read more than once: {[(k, seen[k]) for k in twice[:10]]}")
    check(by_d > 0, "the member that joined read records")
    ends = {}
    for (q, off) in seen:
        ends[q] = max(ends.get(q, 0), off + 1)
    committed = a.list_consumer_group_offsets(group)
    check({tp.partition: om.offset for tp, om in committed.items()} == ends,
          f"commits {committed} vs ends {ends}")
    for m in members.values():
        m.stopping.set()
    for m in members.values():
        m.join(30)
    errors = [m.error for m in members.values() if m.error]
    check(not errors, f"members failed: {errors}")
    described = a.describe_consumer_groups([group])[0]
    check(described.state == "Empty", f"after every member left: {described.state}")
    a.close()
    print(f"group split {split}, after the handover {after}")


def transactions(bootstrap, _state):
    # max_block_ms bounds init_transactions(): a client that retried would time out.
    start = time.time()
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-tx", max_block_ms=60000)
    try:
        p.init_transactions()
        raise CheckFailed("init_transactions() succeeded on a node without transactions")
    except CheckFailed:
        raise
    except Errors.KafkaTimeoutError as e:
        raise CheckFailed(f"init_transactions() timed out after {time.time() - start:.1f} s "
                          f"instead of failing: {e}")
    except Exception as e:  # noqa: BLE001 - what it raised is what is checked
        took = time.time() - start
        text = f"{type(e).__name__}: {e}"
        print(f"init_transactions() failed after {took:.1f} s with {text}")
        # Not a timeout (the branch above): the client stopped at the node's fatal answer.
        check(isinstance(e, Errors.TransactionalIdAuthorizationFailedError),
              f"the error names the cause: {text}")
    finally:
        p.close(timeout=5)
    # The node still serves an idempotent producer.
    a = admin_client(bootstrap)
    a.create_topics([NewTopic("kp-after-tx", 1, 1)])
    a.close()
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    md = p.send("kp-after-tx", key=b"k", value=b"v").get(timeout=30)
    check((md.partition, md.offset) == (0, 0), f"an idempotent producer afterwards: {md}")
    p.close()


def main():
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    mode, bootstrap, state = sys.argv[1:4]
    modes = {"admin": admin, "write": write, "replay": replay, "groups": groups,
             "transactions": transactions, "sessions": sessions,
             "failover-write": failover_write,
             "failover-read": failover_read}
    print(f"kafka-python {kafka.__version__}, {mode}", flush=True)
    try:
        modes[mode](bootstrap, state)
    except CheckFailed as e:
        print(f"kafka-python {mode}: check failed: {e}", file=sys.stderr)
        sys.exit(1)
    print("kafka matrix ok")


if __name__ == "__main__":
    main()
