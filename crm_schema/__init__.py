"""crm-sync database layer: tables, migrations, engine factory and small query helpers."""
