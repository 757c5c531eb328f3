"""The crop policy shared by the search service and the index: which garments a photo holds
and which pixels each one's embedding sees.

Retrieval only works when a catalog image and the same image sent as a query are embedded
from the same crop. The service detects garments and embeds each box; so the index embeds
each catalog image through the same detector with the same threshold and rounding
(:func:`catalog_crop`): the best box when one clears the threshold, else the whole image
(the service's fallback for a photo in which nothing is detected). Both sides call these
functions, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any


def select_garments(det: dict[str, Any], width: int, height: int, score_min: float,
                    max_garments: int) -> list[dict[str, Any]]:
    """Detector output -> garments ``{"box", "score", "category"}``: boxes at or above
    ``score_min``, clipped to the image, degenerate ones dropped, best ``max_garments`` first."""
    out = []
    for box, s, c in zip(det.get("boxes", []), det.get("scores", []), det.get("categories", []), strict=False):
        if float(s) < score_min:
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
        y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
        if x2 - x1 >= 2 and y2 - y1 >= 2:  # degenerate boxes cannot be cropped
            out.append({"box": [x1, y1, x2, y2], "score": float(s), "category": str(c)})
    out.sort(key=lambda g: -g["score"])
    return out[:max_garments]


def crop_box(image: Any, box: list[float]) -> Any:
    """The PIL crop of ``box`` (x1, y1, x2, y2), rounded to whole pixels the same way everywhere."""
    return image.crop(tuple(int(round(v)) for v in box))


def catalog_crop(image: Any, det: dict[str, Any], score_min: float) -> Any:
    """What the index embeds for one catalog image: the best detected garment, else the whole image."""
    found = select_garments(det, image.size[0], image.size[1], score_min, 1)
    return crop_box(image, found[0]["box"]) if found else image
