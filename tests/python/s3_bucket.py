"""Reads a node's real bucket on an S3-compatible server with no tierlog code: the committed
segments of every partition of a topic through the manifests (pyarrow's S3 file system), their
records with pyarrow, and a count and sum with DuckDB over httpfs.

usage: s3_bucket.py ENDPOINT TOPIC_PREFIX EXPECTED_JSON
ENDPOINT is http://host:port; TOPIC_PREFIX is bucket/prefix/topics/<topic>.<id>; EXPECTED_JSON maps
partition -> {"count": N, "values": [first values in offset order]}. Prints a JSON summary.
"""
import glob
import json
import os
import sys

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from manifest import committed_segments

endpoint, topic_prefix, spec_path = sys.argv[1], sys.argv[2], sys.argv[3]
expected = json.load(open(spec_path))
host = endpoint.split("://", 1)[1]
s3 = pafs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                       endpoint_override=endpoint, scheme="http")

files = {}
for part in sorted(expected, key=int):
    pdir = f"{topic_prefix}/{part}"
    segs = committed_segments(pdir, fs=s3)
    assert segs, f"no committed segments in partition {part}"
    files[part] = [f"{pdir}/{s['path']}" for s in segs]
    table = pq.read_table(files[part], filesystem=s3)
    want = expected[part]
    assert table.num_rows == want["count"], (part, table.num_rows, want["count"])
    offsets = table.column("offset").to_pylist()
    assert offsets == list(range(want["count"])), f"partition {part}: offsets not dense from 0"
    values = [v.decode() for v in table.column("value").to_pylist()[: len(want["values"])]]
    assert values == want["values"], (part, values[:3], want["values"][:3])

# DuckDB reads the same objects over HTTP with its httpfs extension (shipped as a Python
# package: no download at run time).
import duckdb_extension_httpfs  # noqa: E402

ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions",
                             "*", "httpfs.duckdb_extension"))
assert ext, "the httpfs extension file is missing from duckdb-extension-httpfs"
con = duckdb.connect()
con.execute(f"LOAD '{ext[0]}'")
con.execute(f"""CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', ENDPOINT '{host}',
                URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')""")
urls = ", ".join(f"'s3://{f}'" for fs in files.values() for f in fs)
rows, parts, offsets = con.execute(
    f"SELECT COUNT(*), COUNT(DISTINCT partition), SUM(\"offset\") FROM read_parquet([{urls}])"
).fetchone()
want_rows = sum(w["count"] for w in expected.values())
want_offsets = sum(w["count"] * (w["count"] - 1) // 2 for w in expected.values())
assert (rows, parts, offsets) == (want_rows, len(expected), want_offsets), (rows, parts, offsets)
print(json.dumps({"objects": sum(len(f) for f in files.values()), "rows": rows}))
