"""The DuckDB side of `tierlog bench sql`: the same queries over the same Parquet files.

usage: python bench_duckdb.py SPEC_JSON   (files, queries, repeat)
Prints JSON: per query, the run times in seconds and the first row of the answer.
"""
import json
import sys
import time

import duckdb

spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
listed = ", ".join("'" + f.replace("'", "''") + "'" for f in spec["files"])
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet([{listed}])")
out = []
for sql in spec["queries"]:
    con.execute(sql).fetchall()  # warm-up: footers and page cache
    times, first = [], None
    for _ in range(spec["repeat"]):
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append(time.perf_counter() - t)
        first = [str(v) for v in rows[0]] if rows else []
    out.append({"times": times, "first": first, "rows": len(rows)})
print(json.dumps(out))
