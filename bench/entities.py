"""Benchmark: entity list queries on Postgres, ours (the selector) side by side with hand-written SQL.

    .venv/bin/python bench/entities.py          # not part of `make test`; needs Postgres; ~3-6 min

A throwaway database `backflow_bench` is created next to DATABASE_URL's (default
postgres://postgres@127.0.0.1:5432/test), migrated, filled and dropped at the end
(BENCH_KEEP_DB=1 keeps it for a look with psql). One collection holds 100k entities
({name, status, price, tags}; 60% active, price 0-100), inserted with bulk_create in batches.

Measured, p50/p95 over interleaved runs in one process:
- `selectors.entity_page(filters={"status": "active", "price": {"gte": 10}}, sort="-price", limit=50)`
  for page 1 and for page 1000 (the cursor got by walking 999 pages once), against the same
  query written directly in SQL (same WHERE, ORDER BY, LIMIT 51; keyset condition for the deep
  page) run with psycopg on its own connection;
- the same with sort="-createdAt" (the default order);
- a second pass of the -price list with the expression index that would serve it (SUGGESTED_INDEX),
  created in the throwaway database only (the migrations do not have it: data fields are the
  tenants' own, so such indexes would be made per collection and field).
Ratios: ours/raw, and deep/first page. Targets (issue): p50 <= 25 ms, ours within 2x of raw SQL,
a deep page as fast as the first. EXPLAIN ANALYZE of each raw query is summarised after the table.
`main()` prints the table and returns the numbers as a dict.
"""

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
BENCH_DB = "backflow_bench"
ENTITIES = 100_000
BATCH = 5_000
LIMIT = 50
DEEP_PAGE = 1000
WARMUP = 10
SAMPLES = 150
FILTERS = {"status": "active", "price": {"gte": 10}}
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "status": {"type": "string", "enum": ["active", "paused", "gone"]},
        "price": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "status"],
}
COLUMNS = '"tenant_id", "id", "collection_id", "data", "version", "created_at", "updated_at"'

# The same queries written directly in SQL, with the same semantics as ours: "price >= 10" only
# matches numbers, missing or null prices sort last, ties are broken by the id. %(t)s tenant id,
# %(c)s collection id; the deep page continues after (%(v)s, %(id)s) by keyset. The filters
# exclude missing prices, so the deep -price page needs no "or missing" branch.
WHERE = """tenant_id = %(t)s AND collection_id = %(c)s AND data @> '{"status": "active"}'
              AND (CASE WHEN jsonb_typeof(data -> 'price') = 'number' THEN data -> 'price' >= '10' END)"""
PRICE = "NULLIF(data -> 'price', 'null'::jsonb)"
RAW = {
    "-price": {
        "first": f"SELECT {COLUMNS} FROM entities_app_entity WHERE {WHERE} ORDER BY {PRICE} DESC NULLS LAST, id LIMIT {LIMIT + 1}",
        "deep": f"""SELECT {COLUMNS} FROM entities_app_entity WHERE {WHERE}
              AND ({PRICE} < %(v)s::jsonb OR ({PRICE} = %(v)s::jsonb AND id > %(id)s))
            ORDER BY {PRICE} DESC NULLS LAST, id LIMIT {LIMIT + 1}""",
    },
    "-createdAt": {
        "first": f"SELECT {COLUMNS} FROM entities_app_entity WHERE {WHERE} ORDER BY created_at DESC, id LIMIT {LIMIT + 1}",
        "deep": f"""SELECT {COLUMNS} FROM entities_app_entity WHERE {WHERE}
              AND created_at <= %(v)s AND (created_at < %(v)s OR (created_at = %(v)s AND id > %(id)s))
            ORDER BY created_at DESC, id LIMIT {LIMIT + 1}""",
    },
}
# What would serve a "-price" list (a per-collection, per-field expression index; not in the
# migrations: fields are the tenants' own). Measured in a second pass, then dropped with the database.
SUGGESTED_INDEX = f"CREATE INDEX entity_price_desc ON entities_app_entity (collection_id, ({PRICE}) DESC NULLS LAST, id)"


def with_db(url, name):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def psycopg_dsn(url):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def recreate_database():
    with psycopg.connect(psycopg_dsn(BASE_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')


def drop_database():
    with psycopg.connect(psycopg_dsn(BASE_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def setup_django(url):
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)  # not needed here
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backflow.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def fill(n):
    from django.db import connection

    from entities_app import services
    from entities_app.models import Entity
    from tenants import services as tenant_services
    from tenants.principals import Principal

    tenant = tenant_services.tenant_create(slug="bench", name="Bench")
    actor = Principal.system(tenant, "bench")
    collection = services.collection_create(tenant=tenant, actor=actor, document={"name": "products", "schema": SCHEMA})
    # Another tenant's rows in the same table, so the tenant and collection filters do some work.
    other = tenant_services.tenant_create(slug="other", name="Other")
    other_collection = services.collection_create(tenant=other, actor=Principal.system(other, "bench"), document={"name": "products"})
    rng = random.Random(20261124)
    tags = ["yoga", "spin", "pilates", "boxing", "swim", "run"]
    started = time.perf_counter()
    for owner, coll, count in ((tenant, collection, n), (other, other_collection, n // 10)):
        for start in range(0, count, BATCH):
            batch = []
            for i in range(start, min(count, start + BATCH)):
                roll = rng.random()
                status = "active" if roll < 0.6 else ("paused" if roll < 0.85 else "gone")
                data = {"name": f"item {i:06d}", "status": status, "price": round(rng.uniform(0, 100), 2),
                        "tags": rng.sample(tags, rng.randint(0, 3))}
                batch.append(Entity(tenant=owner, collection=coll, data=data))
            Entity.objects.bulk_create(batch)
    insert_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE entities_app_entity")
    return tenant, collection, insert_seconds


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def summary(samples):
    return {"p50": round(statistics.median(samples) * 1000, 2), "p95": round(percentile(samples, 95) * 1000, 2), "n": len(samples)}


def walk_to(tenant, collection, sort, page_number):
    """The cursor of page `page_number` (walking every page before it once) and the ids seen."""
    from entities_app import selectors

    cursor, seen = None, []
    for _ in range(page_number - 1):
        rows, cursor = selectors.entity_page(tenant=tenant, collection=collection, filters=FILTERS, sort=sort, limit=LIMIT, cursor=cursor)
        seen += [r.id for r in rows]
        assert cursor, f"fewer than {page_number} pages"
    assert len(seen) == len(set(seen)) == LIMIT * (page_number - 1), "the walk repeated or lost entities"
    return cursor


def raw_params(tenant, collection, sort, cursor):
    from entities_app.documents import parse_sort
    from entities_app.query import decode_cursor

    params = {"t": tenant.pk, "c": collection.pk}
    if cursor:
        values, last_id = decode_cursor(cursor, parse_sort(sort, None), FILTERS)
        value = values[0]
        params.update(v=json.dumps(value) if sort == "-price" else value, id=last_id)
    return params


def measure(tenant, collection, raw_conn, sort, cursor, raw_sql):
    from entities_app import selectors

    params = raw_params(tenant, collection, sort, cursor)
    ours_rows, _ = selectors.entity_page(tenant=tenant, collection=collection, filters=FILTERS, sort=sort, limit=LIMIT, cursor=cursor)
    raw_rows = raw_conn.execute(raw_sql, params).fetchall()
    assert [str(r.id) for r in ours_rows] == [str(r[1]) for r in raw_rows[:LIMIT]], f"{sort}: ours and raw SQL disagree"
    ours, raw = [], []
    for i in range(WARMUP + SAMPLES):
        t0 = time.perf_counter()
        selectors.entity_page(tenant=tenant, collection=collection, filters=FILTERS, sort=sort, limit=LIMIT, cursor=cursor)
        t1 = time.perf_counter()
        raw_conn.execute(raw_sql, params).fetchall()
        t2 = time.perf_counter()
        if i >= WARMUP:
            ours.append(t1 - t0)
            raw.append(t2 - t1)
    return summary(ours), summary(raw), params


def explain(raw_conn, sql, params):
    plan = raw_conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()[0][0]

    def nodes(node, depth=0):
        label = node["Node Type"]
        if node.get("Scan Direction") == "Backward":
            label += " Backward"
        if node.get("Index Name"):
            label += f" using {node['Index Name']}"
        if node.get("Sort Method"):
            label += f" ({node['Sort Method']})"
        extra = f" removed-by-filter={node['Rows Removed by Filter']}" if node.get("Rows Removed by Filter") else ""
        yield f"{'  ' * depth}{label}: rows={node.get('Actual Rows')}{extra} time={node.get('Actual Total Time')} ms"
        for child in node.get("Plans", []):
            yield from nodes(child, depth + 1)

    return {"executionMs": round(plan["Execution Time"], 2), "plan": list(nodes(plan["Plan"]))}


def ours_sql(tenant, collection, sort, cursor):
    from entities_app import query, selectors

    queryset, parsed = selectors.entity_query(tenant=tenant, collection=collection, filters=FILTERS, sort=sort)
    queryset = query.order(queryset, parsed)
    if cursor:
        values, last_id = query.decode_cursor(cursor, parsed, FILTERS)
        queryset = query.after(queryset, parsed, values, last_id)
    return queryset[: LIMIT + 1].query.sql_with_params()


def run():
    from django.db import connection

    tenant, collection, insert_seconds = fill(ENTITIES)
    progress(f"inserted {ENTITIES:,} entities in {insert_seconds:.1f} s")
    results = {"entities": ENTITIES, "insertSeconds": round(insert_seconds, 1), "queries": {}, "explain": {}}
    # prepare_threshold=None: no server-side prepared statements, like Django's own connection.
    with psycopg.connect(psycopg_dsn(connection_url()), prepare_threshold=None) as raw_conn:
        raw_conn.autocommit = True
        cursors = {}
        for sort in ("-price", "-createdAt"):
            started = time.perf_counter()
            deep_cursor = walk_to(tenant, collection, sort, DEEP_PAGE)
            walk_seconds = time.perf_counter() - started
            progress(f"walked {DEEP_PAGE - 1} pages of sort={sort} in {walk_seconds:.1f} s")
            for page, cursor in (("first", None), ("deep", deep_cursor)):
                ours, raw, params = measure(tenant, collection, raw_conn, sort, cursor, RAW[sort][page])
                key = f"sort={sort} page={'1' if page == 'first' else DEEP_PAGE}"
                results["queries"][key] = {"ours": ours, "raw": raw, "ratio": round(ours["p50"] / raw["p50"], 2)}
                results["explain"][key] = {"raw": explain(raw_conn, RAW[sort][page], params)}
                sql, sql_params = ours_sql(tenant, collection, sort, cursor)
                with connection.cursor() as cursor_:
                    cursor_.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, sql_params)
                    plan = cursor_.fetchone()[0]
                    plan = json.loads(plan) if isinstance(plan, str) else plan
                results["explain"][key]["oursExecutionMs"] = round(plan[0]["Execution Time"], 2)
            results["queries"][f"sort={sort} page=1"]["walkTo1000Seconds"] = round(walk_seconds, 1)
            cursors[sort] = deep_cursor
        # Second pass: the -price list with the suggested expression index.
        raw_conn.execute(SUGGESTED_INDEX)
        raw_conn.execute("ANALYZE entities_app_entity")
        for page, cursor in (("first", None), ("deep", cursors["-price"])):
            ours, raw, params = measure(tenant, collection, raw_conn, "-price", cursor, RAW["-price"][page])
            key = f"sort=-price page={'1' if page == 'first' else DEEP_PAGE} +index"
            results["queries"][key] = {"ours": ours, "raw": raw, "ratio": round(ours["p50"] / raw["p50"], 2)}
            results["explain"][key] = {"raw": explain(raw_conn, RAW["-price"][page], params)}
            sql, sql_params = ours_sql(tenant, collection, "-price", cursor)
            with connection.cursor() as cursor_:
                cursor_.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, sql_params)
                plan = cursor_.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
            results["explain"][key]["oursExecutionMs"] = round(plan[0]["Execution Time"], 2)
    return results


def progress(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def connection_url():
    return with_db(BASE_URL, BENCH_DB)


def report(results):
    print(f"\nEntities: {results['entities']:,} in one collection (+10% in another tenant); bulk insert {results['insertSeconds']} s")
    print(f"Filters {json.dumps(FILTERS)}, limit {LIMIT}; ms over {SAMPLES} interleaved runs\n")
    print(f"{'query':<34} {'ours p50':>9} {'ours p95':>9} {'raw p50':>9} {'raw p95':>9} {'ours/raw':>9}")
    for key, row in results["queries"].items():
        print(f"{key:<34} {row['ours']['p50']:>9} {row['ours']['p95']:>9} {row['raw']['p50']:>9} {row['raw']['p95']:>9} {row['ratio']:>9}")
    print(f"(+index: with {SUGGESTED_INDEX.split(' ON ')[1]})")
    print()
    for sort in ("-price", "-createdAt"):
        first, deep = results["queries"][f"sort={sort} page=1"], results["queries"][f"sort={sort} page={DEEP_PAGE}"]
        results.setdefault("deepOverFirst", {})[sort] = {
            "ours": round(deep["ours"]["p50"] / first["ours"]["p50"], 2), "raw": round(deep["raw"]["p50"] / first["raw"]["p50"], 2)}
        print(f"deep/first p50 (sort={sort}): ours {results['deepOverFirst'][sort]['ours']}, raw {results['deepOverFirst'][sort]['raw']}")
    plain = {k: v for k, v in results["queries"].items() if not k.endswith("+index")}
    targets = {
        "p50 <= 25 ms": all(r["ours"]["p50"] <= 25 for r in plain.values()),
        "ours within 2x raw": all(r["ratio"] <= 2 for r in plain.values()),
        "deep page as fast as first (p50 within 25% or 1 ms)": all(
            results["queries"][f"sort={sort} page={DEEP_PAGE}"]["ours"]["p50"]
            <= max(1.25 * results["queries"][f"sort={sort} page=1"]["ours"]["p50"], results["queries"][f"sort={sort} page=1"]["ours"]["p50"] + 1)
            for sort in results["deepOverFirst"]),
    }
    results["targetsPerQuery"] = {k: {"p50<=25ms": r["ours"]["p50"] <= 25, "within2x": r["ratio"] <= 2} for k, r in results["queries"].items()}
    results["targets"] = targets
    print("\nTargets: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets.items()))
    print("\nEXPLAIN ANALYZE (raw SQL; server execution time of ours alongside):")
    for key, info in results["explain"].items():
        print(f"  {key}: raw {info['raw']['executionMs']} ms, ours {info['oursExecutionMs']} ms")
        for line in info["raw"]["plan"]:
            print(f"      {line}")


def main():
    recreate_database()
    try:
        setup_django(connection_url())
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        results = run()
        report(results)
        connections.close_all()
        return results
    finally:
        if os.environ.get("BENCH_KEEP_DB") != "1":
            drop_database()


if __name__ == "__main__":
    main()
