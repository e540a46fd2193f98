"""Scrapes a tierlog node's /metrics with the prometheus_client package's OpenMetrics parser
(a parser tierlog did not write) and prints what it read as JSON:
{"content_type": ..., "bytes": N, "families": {name: type}, "samples": [[name, labels, value]]}.

  scrape.py URL [KAFKA_BOOTSTRAP TOPIC N]

With a Kafka bootstrap address it first produces N records to TOPIC with confluent-kafka (so
the node has Kafka requests to count) and asks for the metadata of a topic that does not exist
(so it has a Kafka error code to count: UNKNOWN_TOPIC_OR_PARTITION). A text the parser refuses fails the script.
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def produce(bootstrap, topic, n):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    left = p.flush(30)
    if left:
        sys.exit(f"{left} Kafka records not acknowledged")
    md = p.list_topics(topic="no-such-topic-for-metrics", timeout=30)
    err = md.topics["no-such-topic-for-metrics"].error
    if err is None or err.name() != "UNKNOWN_TOPIC_OR_PART":
        sys.exit(f"metadata of a missing topic answered {err!r}")


def main():
    url = sys.argv[1]
    if len(sys.argv) == 5:
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    with urllib.request.urlopen(url, timeout=30) as r:
        content_type = r.headers.get("Content-Type")
        text = r.read().decode("utf-8")
    families = {}
    samples = []
    for f in text_string_to_metric_families(text):
        families[f.name] = f.type
        for s in f.samples:
            samples.append([s.name, s.labels, s.value])
    json.dump(
        {
            "content_type": content_type,
            "bytes": len(text.encode("utf-8")),
            "families": families,
            "samples": samples,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
