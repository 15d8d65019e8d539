from django.db import migrations

INDEX = "entity_data_gin"


def create_gin_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON entities_app_entity USING gin (data jsonb_path_ops)")


def drop_gin_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    """Postgres only: SQLite has no GIN indexes and filters entities without one."""

    dependencies = [("entities_app", "0001_initial")]
    operations = [migrations.RunPython(create_gin_index, drop_gin_index)]
