"""Alembic environment: runs migrations on the URL that `opendoctor.store.db.migrate` sets."""

from alembic import context
from sqlalchemy import create_engine, text

from opendoctor.store.tables import Base

# Replicas started together all migrate at start: on PostgreSQL one at a time, under
# this advisory lock, so the second finds the schema done instead of failing on it.
MIGRATION_LOCK = 0x6F64_6D67  # "odmg"

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set"

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        locking = connection.dialect.name == "postgresql"
        if locking:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()  # the lock is the session's: it outlives this transaction
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
        if locking:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
    engine.dispose()
