"""Decodes a tierlog record batch with kafka-python's own v2 implementation.

usage: check_kafka_batch.py HEX EXPECTED_JSON  (EXPECTED: [[offset, timestamp, key, value], ...])
"""
import json
import sys

from kafka.record.default_records import DefaultRecordBatch

data = bytes.fromhex(sys.argv[1])
expected = json.loads(sys.argv[2])
batch = DefaultRecordBatch(data)
assert batch.validate_crc(), "CRC-32C mismatch"
assert batch.magic == 2 and batch.base_offset == expected[0][0], (batch.magic, batch.base_offset)
got = [[r.offset, r.timestamp, r.key.decode() if r.key is not None else None, r.value.decode()] for r in batch]
assert got == expected, (got[:2], expected[:2])
print("kafka-python ok")
