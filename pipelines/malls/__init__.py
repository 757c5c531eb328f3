"""Demo malls: real HTTP shops on loopback, built from a synthetic world or real photos.

Public API::

    malls = build_demo_malls(world, seed=0, faults=False)   # demo-jsonld, demo-microdata, demo-css
    photo = build_photo_mall(photos_dir, labels_csv)        # JSON-LD shop over real photos
    with MallServer(malls + [photo]) as server:
        server.url("demo-jsonld")                           # http://127.0.0.1:PORT
"""

from pipelines.malls.demo import DEMO_MALLS, build_demo_malls, duplicate_products, load_world
from pipelines.malls.faults import FaultConfig, FaultPlan, FaultState
from pipelines.malls.photos import build_photo_mall
from pipelines.malls.server import MallServer, RequestLog, benchmark_requests, serve_forever
from pipelines.malls.site import ImageRef, Listing, Mall, Response

__all__ = [
    "DEMO_MALLS",
    "FaultConfig",
    "FaultPlan",
    "FaultState",
    "ImageRef",
    "Listing",
    "Mall",
    "MallServer",
    "RequestLog",
    "Response",
    "benchmark_requests",
    "build_demo_malls",
    "build_photo_mall",
    "duplicate_products",
    "load_world",
    "serve_forever",
]
