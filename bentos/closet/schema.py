"""The closet database's tables (SQLAlchemy 2 declarative). Schema changes go through an
Alembic migration in ``migrations/versions``; ``tests/test_closet.py`` checks that the
migrated database matches these models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    """A shopper (or an app acting for one). Only the SHA-256 of the API token is stored."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ClosetItem(Base):
    """One garment a shopper owns, with what the models said at upload (or at the last
    re-tag) and what the shopper corrected by hand (``category_source``/``tags[h].source``
    == ``"user"``, kept by re-tagging)."""

    __tablename__ = "closet_items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex: not enumerable
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    image_ext: Mapped[str] = mapped_column(String(8), nullable=False)
    category: Mapped[str] = mapped_column(String(32), index=True, nullable=False)
    category_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    category_source: Mapped[str] = mapped_column(String(8), nullable=False)  # model | user
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # {head: {value, score, source}}
    box: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # float32, L2-normalised
    model_versions: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
