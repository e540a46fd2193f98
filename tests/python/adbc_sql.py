"""Queries a tierlog node over Arrow Flight SQL with the ADBC driver (no tierlog code).

usage: adbc_sql.py HOST:PORT QUERIES_JSON
QUERIES_JSON is a list of SQL strings. Prints one JSON document: per query either
{"rows": [[...], ...], "columns": [...]} or {"error": "..."}; and the tables the driver lists.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql

from plain import plain

addr, queries_path = sys.argv[1], sys.argv[2]
out = {"results": []}
with flight_sql.connect(f"grpc://{addr}") as conn:
    for sql in json.load(open(queries_path)):
        with conn.cursor() as cur:
            try:
                cur.execute(sql)
                table = cur.fetch_arrow_table()
                rows = [list(r.values()) for r in table.to_pylist()]
                out["results"].append({"columns": table.column_names, "rows": rows})
            except Exception as e:  # the driver's error, as a user sees it
                out["results"].append({"error": str(e)})
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    out["tables"] = sorted(
        f"{c['catalog_name']}.{s['db_schema_name']}.{t['table_name']}"
        for c in objects
        for s in (c["catalog_db_schemas"] or [])
        for t in (s["db_schema_tables"] or [])
    )
    out["schema"] = conn.adbc_get_table_schema("events", db_schema_filter="public").names


for r in out["results"]:
    if "rows" in r:
        r["rows"] = [[plain(v) for v in row] for row in r["rows"]]
print(json.dumps(out))
