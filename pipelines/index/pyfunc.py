"""MLflow pyfunc wrapper, so the index is a registered model like the others.

``predict`` takes a DataFrame with a ``vector`` column (lists of floats) and optional
``category`` / ``k`` columns and returns one row per hit: query row, rank, product_id, score.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class IndexModel(mlflow.pyfunc.PythonModel):
    """Loads the index directory logged as the ``index`` artifact."""

    def load_context(self, context: Any) -> None:
        from pipelines.index.store import load_index

        self.loaded = load_index(context.artifacts["index"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - untyped: MLflow infers schemas from hints
        import numpy as np
        import pandas as pd

        k = int((params or {}).get("k", 10))
        q = np.stack([np.asarray(v, dtype=np.float32) for v in model_input["vector"]])
        cat = (params or {}).get("category")
        rows = []
        for qi, hits in enumerate(self.loaded.search(q, k=k, category=cat)):
            rows += [{"query": qi, "rank": r, **h} for r, h in enumerate(hits)]
        return pd.DataFrame(rows)
