"""Checks tierlog's cold segments with independent Parquet readers: pyarrow and DuckDB.

usage: check_parquet.py TOPIC_DIR EXPECTED_JSON
TOPIC_DIR holds one directory per partition; EXPECTED_JSON maps partition -> {count, samples}.
"""
import json
import os
import sys

import duckdb
import pyarrow.parquet as pq

from manifest import committed_segments

topic_dir, spec_path = sys.argv[1], sys.argv[2]
expected = json.load(open(spec_path))
COLUMNS = ["partition", "offset", "timestamp", "key", "value", "headers",
           "producer_id", "producer_epoch", "sequence", "transactional"]

all_files = []
for part, want in expected.items():
    pdir = os.path.join(topic_dir, part)
    segs = committed_segments(pdir)
    files = [os.path.join(pdir, s["path"]) for s in segs]
    assert len(files) > 1, f"expected several segments in partition {part}"
    all_files += files
    table = pq.read_table(files)
    assert table.column_names == COLUMNS, table.column_names
    assert table.num_rows == want["count"], (table.num_rows, want["count"])
    offsets = table.column("offset").to_pylist()
    assert offsets == list(range(want["count"])), "offsets are dense and ordered"
    assert set(table.column("partition").to_pylist()) == {int(part)}
    meta = pq.read_metadata(files[0]).metadata
    assert meta[b"tierlog.topic"] == b"events" and meta[b"tierlog.partition"] == part.encode()
    # Statistics on offset and timestamp let readers prune.
    rg = pq.ParquetFile(files[0]).metadata.row_group(0)
    assert rg.column(1).statistics.has_min_max and rg.column(1).statistics.min == segs[0]["base_offset"]
    assert rg.column(1).compression == "ZSTD"
    for s in want["samples"]:
        row = table.slice(s["offset"], 1).to_pylist()[0]
        assert row["offset"] == s["offset"]
        ts_ms = int(row["timestamp"].timestamp() * 1000)
        assert ts_ms == s["timestamp"], (ts_ms, s["timestamp"])
        key = row["key"].decode() if row["key"] is not None else None
        assert key == s["key"], (key, s["key"])
        assert row["value"].decode() == s["value"]
        headers = [[h["key"], h["value"].decode() if h["value"] is not None else None] for h in row["headers"]]
        assert headers == s["headers"], (headers, s["headers"])
        assert row["producer_id"] is None and row["transactional"] is False
print("pyarrow ok")

con = duckdb.connect()
files_sql = "[" + ",".join("'" + f.replace("'", "''") + "'" for f in all_files) + "]"
rows = con.execute(
    f"""SELECT partition, count(*), min("offset"), max("offset"), count(DISTINCT "offset")
        FROM read_parquet({files_sql}) GROUP BY partition ORDER BY partition"""
).fetchall()
assert len(rows) == len(expected), rows
for part, n, lo, hi, distinct in rows:
    want = expected[str(part)]["count"]
    assert (n, lo, hi, distinct) == (want, 0, want - 1, want), (part, n, lo, hi, distinct)
for part, want in expected.items():
    for s in want["samples"]:
        (value, ts) = con.execute(
            f"""SELECT decode(value), epoch_ms(timestamp) FROM read_parquet({files_sql})
                WHERE partition = ? AND "offset" = ?""", [int(part), s["offset"]]).fetchone()
        assert value == s["value"] and ts == s["timestamp"], (value, ts, s)
print("duckdb ok")
