"""The closet store: users and their tokens, closet items, and the images behind them.

Images are stored content-addressed (``<closet_dir>/images/ab/<sha256>.<ext>``), never in
the database; two items of the same photo share one file, which is removed with the last
item that references it. Every item method takes the owner's ``user_id`` and only ever
sees that user's rows: another user's item id is "not found", never "forbidden", so ids
leak nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .schema import ClosetItem, User

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: A hand correction wins over the models: re-tagging keeps it.
USER, MODEL = "user", "model"


class UnknownUser(LookupError):
    """No user of that name."""


class NotFound(LookupError):
    """No such item for this user (it may exist for another one)."""


def hash_token(token: str) -> str:
    """SHA-256 hex of an API token. Tokens are 256-bit random strings, so a fast hash is
    enough: there is nothing to brute-force that a slow hash would protect."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Analysis:
    """What the models say about one closet photo (its main garment)."""

    category: str
    category_score: float
    tags: dict[str, dict[str, Any]]  # {head: {value, score}}
    embedding: np.ndarray  # (D,) float32, L2-normalised
    box: list[float] | None
    versions: dict[str, str]


class ClosetStore:
    """Users and closets in one SQLAlchemy database plus a content-addressed image folder."""

    def __init__(self, url: str, images_dir: Path) -> None:
        self.url = url
        self.images_dir = Path(images_dir)
        # The store's folder exists once it is open, whatever the database (SQLite or Postgres).
        self.images_dir.mkdir(parents=True, exist_ok=True)
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            # SQLite leaves foreign keys (ON DELETE CASCADE) off unless asked, per connection.
            event.listen(self.engine, "connect", lambda conn, _rec: conn.execute("PRAGMA foreign_keys=ON"))
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, s: Any = None, migrate: bool = True) -> ClosetStore:
        """The store of the settings in force (``closet_db_url``, ``closet_dir/images``), migrated."""
        from pipelines.settings import get_settings

        s = s or get_settings()
        store = cls(str(s.closet_db_url), Path(s.closet_dir) / "images")
        if migrate:
            store.migrate()
        return store

    # ------------------------------------------------------------------ schema
    def migrate(self) -> str:
        """Apply the Alembic migrations up to head; returns the head revision."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return self.revision() or ""

    def revision(self) -> str | None:
        """The database's current Alembic revision (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # ------------------------------------------------------------------ users
    def add_user(self, name: str) -> str:
        """Create user ``name``; returns its API token (shown once: only its hash is kept)."""
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError("a user name is 1 to 64 characters")
        token = secrets.token_urlsafe(32)
        with self._session.begin() as db:
            if db.scalar(select(User).where(User.name == name)) is not None:
                raise ValueError(f"user {name!r} exists already (revoke it, or pick another name)")
            db.add(User(name=name, token_hash=hash_token(token), created_at=_now()))
        return token

    def rotate_token(self, name: str) -> str:
        """A new token for ``name`` (the old one stops working); un-revokes the user."""
        token = secrets.token_urlsafe(32)
        with self._session.begin() as db:
            user = db.scalar(select(User).where(User.name == name))
            if user is None:
                raise UnknownUser(name)
            user.token_hash, user.revoked_at = hash_token(token), None
        return token

    def revoke(self, name: str) -> None:
        """Revoke ``name``'s token: its requests get 401 from now on. Its closet is kept."""
        with self._session.begin() as db:
            user = db.scalar(select(User).where(User.name == name))
            if user is None:
                raise UnknownUser(name)
            user.revoked_at = user.revoked_at or _now()

    def list_users(self) -> list[dict[str, Any]]:
        """Every user with its item count and state (never a token or its hash)."""
        with self._session() as db:
            counts = dict(db.execute(select(ClosetItem.user_id, func.count()).group_by(ClosetItem.user_id)).all())
            return [
                {
                    "name": u.name,
                    "created_at": u.created_at.isoformat(),
                    "revoked": u.revoked_at is not None,
                    "items": int(counts.get(u.id, 0)),
                }
                for u in db.scalars(select(User).order_by(User.name))
            ]

    def user_for_token(self, token: str | None) -> User | None:
        """The active user whose token this is, else None."""
        if not token:
            return None
        with self._session() as db:
            user = db.scalar(select(User).where(User.token_hash == hash_token(token)))
            return user if user is not None and user.revoked_at is None else None

    def user_id(self, name: str) -> int:
        """The id of user ``name``."""
        with self._session() as db:
            uid = db.scalar(select(User.id).where(User.name == name))
        if uid is None:
            raise UnknownUser(name)
        return int(uid)

    # ------------------------------------------------------------------ images
    def image_path(self, sha256: str, ext: str) -> Path:
        """Where an image with this content hash lives."""
        return self.images_dir / sha256[:2] / f"{sha256}.{ext}"

    def _put_image(self, data: bytes, ext: str) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.image_path(sha, ext)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a reader never sees half a file
        return sha

    def _drop_image_if_unused(self, db: Session, sha: str, ext: str) -> None:
        if db.scalar(select(func.count()).select_from(ClosetItem).where(ClosetItem.image_sha256 == sha)) == 0:
            self.image_path(sha, ext).unlink(missing_ok=True)

    # ------------------------------------------------------------------ items
    def add_item(
        self, user_id: int, image: bytes, ext: str, analysis: Analysis, category: str | None = None
    ) -> dict[str, Any]:
        """Store a closet photo and what the models said about it; ``category`` overrides the
        model's (recorded as the user's)."""
        sha = self._put_image(image, ext)
        now = _now()
        item = ClosetItem(
            id=uuid.uuid4().hex,
            user_id=user_id,
            image_sha256=sha,
            image_ext=ext,
            category=category or analysis.category,
            category_score=float(analysis.category_score),
            category_source=USER if category else MODEL,
            tags={h: {**t, "source": MODEL} for h, t in analysis.tags.items()},
            box=analysis.box,
            embedding=np.asarray(analysis.embedding, np.float32).tobytes(),
            model_versions=dict(analysis.versions),
            created_at=now,
            updated_at=now,
        )
        with self._session.begin() as db:
            db.add(item)
        return self.card(item)

    def _get(self, db: Session, user_id: int, item_id: str) -> ClosetItem:
        item = db.scalar(select(ClosetItem).where(ClosetItem.id == item_id, ClosetItem.user_id == user_id))
        if item is None:
            raise NotFound(item_id)
        return item

    def get_item(self, user_id: int, item_id: str) -> dict[str, Any]:
        """One of the user's items (raises :class:`NotFound`)."""
        with self._session() as db:
            return self.card(self._get(db, user_id, item_id))

    def item_image(self, user_id: int, item_id: str) -> tuple[Path, str]:
        """(path, ext) of one of the user's item images."""
        with self._session() as db:
            item = self._get(db, user_id, item_id)
            return self.image_path(item.image_sha256, item.image_ext), item.image_ext

    def list_items(self, user_id: int, category: str | None = None) -> list[dict[str, Any]]:
        """The user's items (optionally of one category), newest first."""
        q = select(ClosetItem).where(ClosetItem.user_id == user_id)
        if category:
            q = q.where(ClosetItem.category == category)
        with self._session() as db:
            return [self.card(i) for i in db.scalars(q.order_by(ClosetItem.created_at.desc(), ClosetItem.id))]

    def update_item(
        self, user_id: int, item_id: str, category: str | None = None, tags: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Correct the category and/or tag values by hand; corrections survive re-tagging."""
        with self._session.begin() as db:
            item = self._get(db, user_id, item_id)
            if category:
                item.category, item.category_source = category, USER
            if tags:
                new = dict(item.tags)
                for head, value in tags.items():
                    new[head] = {"value": value, "score": 1.0, "source": USER}
                item.tags = new  # a new dict: JSON columns track assignment, not mutation
            item.updated_at = _now()
            return self.card(item)

    def delete_item(self, user_id: int, item_id: str) -> None:
        """Delete the item's row; its image goes too when no other item references it."""
        with self._session.begin() as db:
            item = self._get(db, user_id, item_id)
            sha, ext = item.image_sha256, item.image_ext
            db.delete(item)
            db.flush()
            self._drop_image_if_unused(db, sha, ext)

    def embeddings(self, user_id: int, category: str | None = None) -> tuple[list[dict[str, Any]], np.ndarray]:
        """The user's items (optionally one category) and their embeddings (N, D)."""
        q = select(ClosetItem).where(ClosetItem.user_id == user_id)
        if category:
            q = q.where(ClosetItem.category == category)
        with self._session() as db:
            items = list(db.scalars(q.order_by(ClosetItem.id)))
            cards = [self.card(i) for i in items]
            vecs = [np.frombuffer(i.embedding, dtype=np.float32) for i in items]
        return cards, (np.stack(vecs) if vecs else np.zeros((0, 0), np.float32))

    def retag(self, analyze: Any, user: str | None = None) -> dict[str, int]:
        """Recompute every item (or one user's) with ``analyze(image_path) -> Analysis``:
        model category, tags, embedding, box and versions are replaced; what the user
        corrected by hand is kept. Returns ``{"items": n, "kept_corrections": m}``."""
        q = select(ClosetItem)
        if user:
            q = q.where(ClosetItem.user_id == self.user_id(user))
        n = kept = 0
        with self._session() as db:
            ids = list(db.scalars(q.with_only_columns(ClosetItem.id).order_by(ClosetItem.id)))
        for item_id in ids:
            with self._session.begin() as db:
                item = db.get(ClosetItem, item_id)
                if item is None:  # deleted meanwhile
                    continue
                a: Analysis = analyze(self.image_path(item.image_sha256, item.image_ext))
                tags = {h: {**t, "source": MODEL} for h, t in a.tags.items()}
                for h, t in item.tags.items():
                    if t.get("source") == USER:
                        tags[h] = t
                        kept += 1
                if item.category_source == USER:
                    kept += 1
                else:
                    item.category = a.category
                item.category_score = float(a.category_score)
                item.tags, item.box = tags, a.box
                item.embedding = np.asarray(a.embedding, np.float32).tobytes()
                item.model_versions, item.updated_at = dict(a.versions), _now()
                n += 1
        return {"items": n, "kept_corrections": kept}

    # ------------------------------------------------------------------ output
    @staticmethod
    def card(item: ClosetItem) -> dict[str, Any]:
        """The item as the API returns it."""
        return {
            "id": item.id,
            "category": item.category,
            "category_score": item.category_score,
            "category_source": item.category_source,
            "tags": dict(item.tags),
            "box": item.box,
            "image_url": f"/closet/items/{item.id}/image",
            "model_versions": dict(item.model_versions),
            "created_at": item.created_at.isoformat(),
            "updated_at": item.updated_at.isoformat(),
        }
