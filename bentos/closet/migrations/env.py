"""Alembic environment of the closet database.

:meth:`bentos.closet.store.ClosetStore.migrate` passes an open connection in
``config.attributes["connection"]``; the ``alembic`` command line instead reads the URL
from ``sqlalchemy.url`` (``alembic -x url=... upgrade head`` or the settings' URL).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from bentos.closet.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from pipelines.settings import get_settings

        url = str(get_settings().closet_db_url)
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
