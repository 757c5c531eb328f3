"""The crop policy shared by the search service and the index: which garments a photo holds
and which pixels the tagger and the embedder see for each.

- A query photo's garments are the detector's boxes (:func:`select_garments`); each is drawn
  as the crop models were trained on it (:func:`garment_crop`: the box grown by a context
  margin, aspect kept, on grey), and a photo with no box is one garment, the whole photo.
- A catalog image is a product shot, the shop side of the embedder's consumer-to-shop
  training: the index embeds it whole (:func:`garment_crop` with no box), as every shop shot
  was drawn in training, so its vector does not depend on where a detector happens to cut a
  product photo. (``config/index.yaml`` ``embed.crop_with`` can still crop catalog images
  with the detector's best box, :func:`catalog_crop`.)
"""

from __future__ import annotations

from typing import Any


def select_garments(
    det: dict[str, Any], width: int, height: int, score_min: float, max_garments: int
) -> list[dict[str, Any]]:
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


#: Box context of the crop models' training crops (:func:`pipelines.train.data.load_crop`):
#: the box grown by 10 % of its size; a whole image is drawn at 1 / (1 + context) on grey.
TRAIN_CONTEXT = 0.1


def garment_crop(image: Any, box: list[float] | None, size: int, context: float = TRAIN_CONTEXT) -> Any:
    """``size`` x ``size`` uint8 array of one garment as the crop models see it: the box
    (x1, y1, x2, y2; None = the whole image) grown by ``context`` of its size, aspect kept,
    drawn on grey (:func:`pipelines.train.data.square_crop`, the training crops' function)."""
    import numpy as np

    from pipelines.train.data import square_crop

    xywh = None if box is None else [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    return np.asarray(square_crop(image.convert("RGB"), xywh, size, context=context), dtype=np.uint8)


def catalog_crop(image: Any, det: dict[str, Any], score_min: float, size: int, context: float) -> Any:
    """What the index embeds for one catalog image under ``embed.crop_with``: its best detected
    garment drawn as the service draws a query's garment (``context``), else the whole image
    drawn as a shop shot: exactly the service's crop of the same photo, so it finds itself."""
    found = select_garments(det, image.size[0], image.size[1], score_min, 1)
    if found:
        return garment_crop(image, found[0]["box"], size, context)
    return garment_crop(image, None, size, TRAIN_CONTEXT)
