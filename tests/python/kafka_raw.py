"""Kafka requests built with kafka-python's own protocol classes and sent as they are, to one
node: for checking a protocol corner no client API reaches."""
import contextlib
import time

from kafka import KafkaClient


@contextlib.contextmanager
def raw_node(bootstrap):
    """Yields `send(request)`: the request's future, answered or failed within 10 s."""
    client = KafkaClient(bootstrap_servers=bootstrap, api_version=(2, 8))
    try:
        node = client.least_loaded_node()
        deadline = time.time() + 30
        while not client.ready(node) and time.time() < deadline:
            client.poll(timeout_ms=100)

        def send(request):
            fut = client.send(node, request)
            client.poll(future=fut, timeout_ms=10_000)
            return fut

        yield send
    finally:
        client.close()
