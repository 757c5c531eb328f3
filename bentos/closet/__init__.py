"""Shoppers' closets: users with API tokens, closet items with what the models said, and
the images behind them.

* :mod:`bentos.closet.schema` - the SQLAlchemy 2 tables (users, closet items);
* :mod:`bentos.closet.store` - :class:`~bentos.closet.store.ClosetStore`, the only code that
  touches the database and the content-addressed image directory;
* ``migrations/`` - the Alembic migrations; :meth:`ClosetStore.migrate` applies them.

The database URL and image directory come from :class:`pipelines.settings.Settings`
(``closet_db_url``, ``closet_dir``): SQLite under ``var/closet`` by default, Postgres by
setting ``TAILOR_CLOSET_DB_URL=postgresql+psycopg://...``.
"""
