"""PostgreSQL: leave a fifth of each page of the records table free (fillfactor 80, from the
default 100), so that a record written again (a PUT or a batch that replaces it) is
usually a heap-only-tuple (HOT) update: the new row version goes on the same page and
neither index (the unique (environment, record_key) one, record_by_version) gets a new
entry, since no indexed column changes. With full pages every rewrite inserted into both
indexes and left them to be vacuumed. A record is about 1.2 KiB, so an 8 KiB page keeps five
and room for one more version; PostgreSQL prunes old versions when it next reads the page.

Measured in process (10,000 records of 1 KiB rewritten in batches of 1,000, PostgreSQL 15,
the shared 2-core machine): about 19,000 records/s with full pages, 25,000 to 30,000 with
fillfactor 80 (docs/architecture.md, "Speed of the data plane"). Source: PostgreSQL
documentation, "CREATE TABLE … fillfactor" and "Heap-Only Tuples (HOT)".

Only new pages are filled to 80%; existing ones change as they are rewritten (or with
VACUUM FULL, which this does not run: it locks the table). Other databases: nothing."""

from django.db import migrations


def _set_fillfactor(value: int):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        table = schema_editor.quote_name(apps.get_model("keys", "Record")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(value)})")

    return run


class Migration(migrations.Migration):
    dependencies = [("keys", "0011_apikey_form_token")]

    operations = [migrations.RunPython(_set_fillfactor(80), _set_fillfactor(100))]
