"""Input validation for the search service: every bad input becomes a :class:`BadInput` (4xx).

The checks run in order of cost, so hostile input is rejected before it is expensive:
size in bytes (before reading it all), pickle / non-multipart content types, image header
(format allow-list, dimensions against the pixel limit: a decompression bomb is caught
here from its header alone), then the full decode (a truncated file fails here). Nothing
in this module imports torch, so it is cheap to test.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pipelines.serving_config import load_config  # noqa: F401  (the service reads its config through here)

#: Content types that could carry a pickle; never accepted (BentoML's own pickle serde included).
PICKLE_TYPES = (
    "application/vnd.bentoml+pickle",
    "application/python-pickle",
    "application/x-pickle",
    "application/pickle",
)


class BadInput(Exception):
    """A client error: ``status`` (4xx), a machine-readable ``code`` and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message", "field"}}``."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


@dataclass(frozen=True)
class Limits:
    """Upload limits (see ``config/serving.yaml``)."""

    max_bytes: int = 10 * 1024 * 1024
    # 12 MP: a phone photo; a decoded RGB image of that size is ~36 MB, and the service
    # decodes at most ``max_decodes`` at once (a 24 KB PNG can declare 25 MP)
    max_pixels: int = 12_000_000
    min_side: int = 8
    formats: tuple[str, ...] = field(default=("JPEG", "PNG", "WEBP", "BMP", "GIF"))
    max_aspect: float = 10.0  # longer side / shorter side: a 1 x 12,000,000 strip holds no garment
    max_decodes: int = 2  # uploads decoded at the same time (the rest wait)


def limits_from_config(cfg: dict[str, dict[str, Any]] | None = None) -> Limits:
    """:class:`Limits` from the serving config."""
    lim = (cfg or load_config())["limits"]
    return Limits(
        int(lim["max_bytes"]),
        int(lim["max_pixels"]),
        int(lim["min_side"]),
        tuple(str(f).upper() for f in lim["formats"]),
        float(lim.get("max_aspect", 10.0)),
        int(lim.get("max_decodes", 2)),
    )


def check_content_type(content_type: str | None) -> None:
    """Reject pickle payloads and anything that is not a multipart form (415)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in PICKLE_TYPES or "pickle" in media:
        raise BadInput(
            415, "pickle_rejected", f"content type {media!r} is not accepted: pickle payloads are never deserialised"
        )
    if media != "multipart/form-data":
        raise BadInput(
            415,
            "unsupported_media_type",
            f"send a multipart/form-data form with an 'image' file field (got content type {media or 'none'!r})",
        )


def check_declared_size(content_length: str | None, limits: Limits) -> None:
    """Reject a request whose declared body is over the byte limit before reading it (413)."""
    if content_length and content_length.isdigit() and int(content_length) > limits.max_bytes + 64 * 1024:
        # 64 KiB slack: the multipart envelope and the other fields are not image bytes.
        raise BadInput(
            413,
            "too_large",
            f"request body is {int(content_length)} bytes; the image limit is {limits.max_bytes} bytes",
            "image",
        )


def parse_k(raw: Any, k_max: int = 100, default: int = 10) -> int:
    """``k`` from a form value: an integer in ``1..k_max`` (422 otherwise)."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    try:
        k = int(str(raw).strip())
    except ValueError:
        raise BadInput(
            422, "invalid_k", f"k must be an integer between 1 and {k_max}, got {str(raw)[:40]!r}", "k"
        ) from None
    if not 1 <= k <= k_max:
        raise BadInput(422, "invalid_k", f"k must be between 1 and {k_max}, got {k}", "k")
    return k


def parse_category(raw: Any, categories: tuple[str, ...] | list[str]) -> str | None:
    """Optional category filter: empty -> None, else one of ``categories`` (422 otherwise)."""
    if raw is None or str(raw).strip() == "":
        return None
    value = str(raw).strip().lower()
    if value not in categories:
        raise BadInput(
            422, "invalid_category", f"category must be one of {list(categories)}, got {str(raw)[:40]!r}", "category"
        )
    return value


def decode_image(data: bytes | None, limits: Limits) -> Image.Image:
    """Validate and fully decode an uploaded image into an RGB :class:`PIL.Image.Image`.

    Raises :class:`BadInput`: 422 missing/empty, 413 over the byte or pixel limit (a
    decompression bomb is caught from its header), 400 not an image / disallowed format /
    truncated or corrupt / too small.
    """
    if data is None:
        raise BadInput(422, "missing_field", "form field 'image' (an image file) is required", "image")
    if len(data) == 0:
        raise BadInput(400, "empty_image", "the uploaded 'image' file is empty", "image")
    if len(data) > limits.max_bytes:
        raise BadInput(413, "too_large", f"image is {len(data)} bytes; the limit is {limits.max_bytes} bytes", "image")
    if data[:2] == b"\x80\x04" or data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x05"):
        raise BadInput(
            400, "pickle_rejected", "the 'image' field holds a pickle; pickle payloads are never deserialised", "image"
        )
    # Pillow raises DecompressionBombError only above 2x MAX_IMAGE_PIXELS; the explicit size
    # check below is the real limit, the module setting is a second line of defence.
    Image.MAX_IMAGE_PIXELS = max(limits.max_pixels, 1)
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated upload must fail, not be padded grey
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit Pillow only warns; the explicit check below answers.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(limits.formats))
            w, h = img.size
            if w * h > limits.max_pixels:
                raise BadInput(
                    413,
                    "too_many_pixels",
                    f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels} pixels "
                    "(decompression bombs are rejected from their header)",
                    "image",
                )
            if min(w, h) < limits.min_side:
                raise BadInput(
                    400, "too_small", f"image is {w}x{h}; each side must be at least {limits.min_side} pixels", "image"
                )
            if max(w, h) > limits.max_aspect * min(w, h):
                raise BadInput(
                    400,
                    "extreme_aspect",
                    f"image is {w}x{h}; the longer side may be at most {limits.max_aspect:g} times the shorter",
                    "image",
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = img.convert("RGB")
    except BadInput:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInput(413, "decompression_bomb", f"image rejected as a decompression bomb: {exc}", "image") from None
    except UnidentifiedImageError:
        raise BadInput(
            400,
            "not_an_image",
            f"the 'image' field is not a supported image (allowed formats: {', '.join(limits.formats)})",
            "image",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated / corrupt data as OSError ("image file is truncated").
        raise BadInput(
            400, "corrupt_image", f"the image could not be decoded (truncated or corrupt): {exc}", "image"
        ) from None
    return rgb
