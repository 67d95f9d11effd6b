"""On PostgreSQL, make the two sample tables partitioned by time (daily partitions made on demand).

SQLite (the embedded default) keeps the plain tables from 0001: same columns, same queries.
"""

from django.db import migrations

TABLES = ("telemetry_gpusample", "telemetry_pointsample")


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        key = "gpu_id" if table == "telemetry_gpusample" else "series_id"
        schema_editor.execute(f"ALTER TABLE {table} RENAME TO {table}_plain")
        schema_editor.execute(
            f"CREATE TABLE {table} (LIKE {table}_plain INCLUDING DEFAULTS) PARTITION BY RANGE (time)"
        )
        schema_editor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key}, time)")
        # Range scans over all GPUs at once (dashboards, rollups) read by time; BRIN is tiny for that.
        schema_editor.execute(f"CREATE INDEX {table}_time_brin ON {table} USING brin (time)")
        schema_editor.execute(f"DROP TABLE {table}_plain")


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"CREATE TABLE {table}_plain (LIKE {table} INCLUDING ALL)")
        schema_editor.execute(f"DROP TABLE {table} CASCADE")
        schema_editor.execute(f"ALTER TABLE {table}_plain RENAME TO {table}")


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0001_initial")]
    operations = [migrations.RunPython(partition, unpartition)]
