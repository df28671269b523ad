"""Persistence: SQLAlchemy 2 on SQLite by default, through small repositories."""

from opendoctor.store.db import Database

__all__ = ["Database"]
