"""The embedded default: a deterministic synthetic fashion world with ground truth.

``generate_world(out, WorldConfig(seed=0))`` writes products, shop / model / street images,
COCO annotations with RLE masks, parsing maps, label noise and broken files; see
:mod:`pipelines.synth.world` for the layout.
"""

from .preview import preview
from .taxonomy import TAXONOMY, Taxonomy
from .world import WorldConfig, benchmark, build_catalog, file_hashes, generate_world, load_products

__all__ = [
    "TAXONOMY",
    "Taxonomy",
    "WorldConfig",
    "benchmark",
    "build_catalog",
    "file_hashes",
    "generate_world",
    "load_products",
    "preview",
]
