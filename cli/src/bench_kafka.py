"""`tierlog bench kafka`'s Kafka client side: librdkafka (confluent-kafka) produces and then
consumes through a node's Kafka listener. Written to the bench directory and run by the bench.

usage: bench_kafka.py SPEC_JSON [--replay-only]
SPEC: {"bootstrap", "topic", "partitions", "records", "record_bytes", "acks", "linger_ms",
       "batch_bytes"}
Prints one JSON object: produce seconds and send→ack latencies (ms quantiles), consume seconds,
bytes and records, so the bench prints them next to its baselines.
"""
import json
import random
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


def quantiles(xs):
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0
    return {"p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999)}


def main():
    spec = json.load(open(sys.argv[1]))
    n, size, parts = spec["records"], spec["record_bytes"], spec["partitions"]
    if "--replay-only" in sys.argv[2:]:
        consume_s, got, got_bytes = replay(spec, n, parts)
        print(json.dumps({"consume_s": consume_s, "consumed": got, "consumed_bytes": got_bytes}))
        return
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randrange(3, 10)))
             for _ in range(4096)]
    corpus = " ".join(rng.choice(words) for _ in range(400_000)).encode()
    p = Producer({"bootstrap.servers": spec["bootstrap"], "acks": spec["acks"],
                  "enable.idempotence": spec["acks"] == "all",
                  "linger.ms": spec["linger_ms"], "batch.size": spec["batch_bytes"],
                  "queue.buffering.max.kbytes": 1 << 20, "compression.type": "none"})
    lat = []
    errors = []
    sent_bytes = 0

    def report(err, msg, t0):
        if err is not None:
            errors.append(err)
        else:
            lat.append((time.perf_counter() - t0) * 1000.0)

    start = time.perf_counter()
    for i in range(n):
        head = f'{{"seq":{i},"user":"user-{i % 10007}","kind":"click","text":"'.encode()
        off = (i * 7919) % (len(corpus) - size)
        value = (head + corpus[off:off + max(0, size - len(head) - 2)] + b'"}')[:size]
        key = f"user-{i % 10007}".encode()
        sent_bytes += len(value) + len(key)
        t0 = time.perf_counter()
        while True:
            try:
                p.produce(spec["topic"], key=key, value=value, partition=i % parts,
                          on_delivery=lambda err, msg, t0=t0: report(err, msg, t0))
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    left = p.flush(300)
    produce_s = time.perf_counter() - start
    if left or errors:
        raise SystemExit(f"{left} records unacknowledged, {len(errors)} failed: {errors[:3]}")

    consume_s, got, got_bytes = replay(spec, n, parts)
    print(json.dumps({"produce_s": produce_s, "bytes": sent_bytes, "records": n,
                      "ack_ms": quantiles(lat), "consume_s": consume_s,
                      "consumed": got, "consumed_bytes": got_bytes}))


def replay(spec, n, parts):
    """Reads the topic from offset 0 to its `n` records: seconds, records, bytes."""
    c = Consumer({"bootstrap.servers": spec["bootstrap"], "group.id": "bench-kafka-replay",
                  "enable.auto.commit": False,
                  "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 8 << 20})
    c.assign([TopicPartition(spec["topic"], q, OFFSET_BEGINNING) for q in range(parts)])
    got, got_bytes = 0, 0
    start = time.perf_counter()
    while got < n:
        for m in c.consume(1000, 0.05):
            if m.error():
                raise SystemExit(f"consume: {m.error()}")
            got += 1
            got_bytes += len(m.value()) + len(m.key() or b"")
        if time.perf_counter() - start > 600:
            raise SystemExit(f"consumed {got} of {n} in 600 s")
    consume_s = time.perf_counter() - start
    c.close()
    return consume_s, got, got_bytes


if __name__ == "__main__":
    main()
