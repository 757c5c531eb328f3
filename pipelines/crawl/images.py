"""Guarded image handling: check headers before decoding, decode defensively, store by sha256.

Nothing here trusts the server: the content type and size are checked before a byte is
decoded, Pillow's decompression-bomb limit is an error (not a warning), truncated files
are rejected (``LOAD_TRUNCATED_IMAGES`` is never switched on), and only a few raster
formats are accepted. Every rejection is an :class:`ImageRejected` with a ``kind`` that
becomes a row of the failures table.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import imagehash
from PIL import Image, ImageFile, UnidentifiedImageError

#: Refuse images above this many pixels (Pillow raises DecompressionBombError at 2x).
MAX_PIXELS = 50_000_000
#: Formats a shop image may have, with the file extension used in the store.
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


class ImageRejected(Exception):
    """An image that must not enter the snapshot; ``kind`` goes to the failures table."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What the snapshot records about one accepted image."""

    sha256: str
    width: int
    height: int
    format: str
    phash: str
    bytes: int

    @property
    def ext(self) -> str:
        """File extension of the stored blob."""
        return FORMATS[self.format]

    def as_dict(self) -> dict[str, object]:
        """Plain dict (for SQLite / parquet rows)."""
        return asdict(self)


def check_headers(content_type: str | None, length: int | None, max_bytes: int) -> None:
    """Reject by HTTP headers alone: not ``image/*``, empty, or larger than ``max_bytes``."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if not ctype.startswith("image/"):
        raise ImageRejected("content_type", f"Content-Type {ctype or 'missing'!r} is not an image")
    if length is not None and length == 0:
        raise ImageRejected("empty", "empty body")
    if length is not None and length > max_bytes:
        raise ImageRejected("too_large", f"{length} bytes > limit {max_bytes}")


def decode(data: bytes, max_bytes: int = 20 * 2**20) -> ImageInfo:
    """Decode ``data`` under guard and describe it; raise :class:`ImageRejected` otherwise."""
    if not data:
        raise ImageRejected("empty", "empty body")
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes > limit {max_bytes}")
    # Belt and braces: some other import may have flipped these process-wide.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
            if fmt not in FORMATS:
                raise ImageRejected("format", f"format {fmt or 'unknown'!r} not accepted")
            # Pillow only warns between MAX_PIXELS and 2x; the header's size decides here,
            # before any pixel is decoded (and without process-global warning filters, so
            # decoding is safe in worker threads).
            if probe.size[0] * probe.size[1] > MAX_PIXELS:
                raise ImageRejected(
                    "decompression_bomb", f"{probe.size[0]}x{probe.size[1]} pixels > limit {MAX_PIXELS}"
                )
            probe.verify()  # structure check without decoding pixels
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # a truncated file raises here (LOAD_TRUNCATED_IMAGES is off)
            width, height = img.size
            phash = str(imagehash.phash(img.convert("L")))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise ImageRejected("decode", f"not a decodable image: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "decode"
        raise ImageRejected(kind, f"{type(exc).__name__}: {exc}") from None
    return ImageInfo(hashlib.sha256(data).hexdigest(), width, height, fmt, phash, len(data))


def blob_path(root: Path, sha256: str, ext: str) -> Path:
    """Content-addressed location ``<root>/<sha[:2]>/<sha>.<ext>``."""
    return Path(root) / sha256[:2] / f"{sha256}.{ext}"


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def store_blob(root: Path, info: ImageInfo, data: bytes) -> Path:
    """Write ``data`` at its content address (atomic, idempotent); return the path.

    An existing blob is reused only when its bytes still hash to its name; one that does not
    (a disk error, a hand edit) is replaced. The write goes to a temp file unique to this
    call (the crawler stores from several threads of one process), is fsynced, then renamed
    over the address: readers never see half a file, and a crash leaves only a temp file.
    """
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise ValueError(f"data does not hash to {info.sha256}")
    path = blob_path(root, info.sha256, info.ext)
    if path.exists() and file_sha256(path) == info.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later crawl removes what a killed writer left behind
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sweep_temp_files(root: Path) -> list[Path]:
    """Remove the temp files of blob writers that are no longer running (a crawl killed
    mid-write leaves one: :func:`store_blob` never renames it); returns what was removed.

    Malls are crawled by concurrent processes sharing the store, so a temp file whose writer
    (the pid in its name) is alive is left alone.
    """
    from pipelines.services import pid_alive

    removed = []
    for tmp in Path(root).glob("*/.*.tmp"):
        parts = tmp.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and pid_alive(pid):  # a zombie (killed, not yet reaped) is dead
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def phash_distance(a: str, b: str) -> int:
    """Hamming distance between two hex perceptual hashes."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


_ROLES = ("shop", "model", "street")


def image_role(url: str, position: int) -> str:
    """Role of a product image: from its file name when it says so, else by position."""
    name = urlsplit(url).path.rsplit("/", 1)[-1].lower()
    for role in _ROLES:
        if name.startswith(role) or f"/{role}/" in url.lower():
            return role
    return "shop" if position == 0 else "gallery"
