"""Reads a compacted partition of a node's real bucket with no tierlog code: the committed
segments through the manifest (pyarrow's S3 file system), their rows with pyarrow, and the
newest value of each key with DuckDB over httpfs.

usage: compacted_bucket.py ENDPOINT PARTITION_PREFIX
PARTITION_PREFIX is bucket/prefix/topics/<topic>/<partition>. Prints a JSON summary: objects,
rows, whether offsets only increase, and each key's newest value (null for a tombstone) as
pyarrow and as DuckDB read them.
"""
import glob
import json
import os
import sys

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from manifest import committed_segments

endpoint, pdir = sys.argv[1], sys.argv[2]
host = endpoint.split("://", 1)[1]
s3 = pafs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                       endpoint_override=endpoint, scheme="http")

segs = committed_segments(pdir, fs=s3)
files = [f"{pdir}/{s['path']}" for s in segs]
table = pq.read_table(files, filesystem=s3, columns=["offset", "key", "value"])
offsets = table.column("offset").to_pylist()
increasing = all(a < b for a, b in zip(offsets, offsets[1:]))
newest = {}
for k, v in zip(table.column("key").to_pylist(), table.column("value").to_pylist()):
    newest[k.decode()] = None if v is None else v.decode()

# DuckDB: each key's value at its highest offset, over the same objects.
import duckdb_extension_httpfs  # noqa: E402

ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions",
                             "*", "httpfs.duckdb_extension"))
assert ext, "the httpfs extension file is missing from duckdb-extension-httpfs"
con = duckdb.connect()
con.execute(f"LOAD '{ext[0]}'")
con.execute(f"""CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', ENDPOINT '{host}',
                URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')""")
urls = ", ".join(f"'s3://{f}'" for f in files)
rows = con.execute(
    f"""SELECT decode(key), decode(value) FROM (
          SELECT key, value, row_number() OVER (PARTITION BY key ORDER BY "offset" DESC) AS n
          FROM read_parquet([{urls}])) WHERE n = 1"""
).fetchall()
duck = {k: v for k, v in rows}
print(json.dumps({"objects": len(files), "rows": table.num_rows, "increasing": increasing,
                  "newest": newest, "duckdb_newest": duck}))
