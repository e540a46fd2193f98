"""Runs SQL with DuckDB over a topic's committed segments, found through the manifests alone.

usage: duckdb_sql.py TOPIC_DIR QUERIES_JSON
TOPIC_DIR holds one directory per partition. QUERIES_JSON is a list of SQL strings over a view
named `events`. Prints one JSON document: a list, per query, of its rows (lists of values).
This is the recipe docs/sql.md gives for reading a bucket with DuckDB.
"""
import json
import os
import sys

import duckdb

from plain import plain

from manifest import committed

topic_dir, queries_path = sys.argv[1], sys.argv[2]
files = []
starts = []
for part in sorted(os.listdir(topic_dir), key=int):
    pdir = os.path.join(topic_dir, part)
    start, segments = committed(pdir)
    files += [os.path.join(pdir, s["path"]) for s in segments]
    # Rows below the log start were deleted (a cut through the first segment).
    if segments and segments[0]["base_offset"] < start:
        starts.append(f"(partition = {int(part)} AND \"offset\" < {int(start)})")
assert files, f"no committed segments under {topic_dir}"

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
deleted = f" WHERE NOT ({' OR '.join(starts)})" if starts else ""
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet([{listed}]){deleted}")


out = []
for sql in json.load(open(queries_path)):
    rows = con.execute(sql).fetchall()
    out.append([[plain(v) for v in row] for row in rows])
print(json.dumps({"files": len(files), "results": out}))
