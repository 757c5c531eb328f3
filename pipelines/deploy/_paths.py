"""Make the repo's ``bentos`` package importable from pipelines code.

``bentos/`` is the Bento's build context, not an installed package; tools running from
elsewhere (Airflow tasks, the CLI) add the project root to ``sys.path`` before importing it.
"""

from __future__ import annotations

import sys

from pipelines.settings import PROJECT_ROOT


def ensure_bentos_importable() -> None:
    """Put the project root on ``sys.path`` (once) so ``import bentos`` works."""
    root = str(PROJECT_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
