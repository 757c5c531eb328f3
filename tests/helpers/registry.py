"""Registry test helpers: a stand-in for a training result, tagger metrics with their
baseline, and a checkpoint file that runs code when unpickled."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class FakeTrainResult:
    """The fields of pipelines.train.TrainResult that registry.log_training_run reads."""

    model: torch.nn.Module
    metrics: dict
    config: dict = field(default_factory=lambda: {"lr": 0.1, "backbone": {"name": "tiny"}})
    history: list = field(
        default_factory=lambda: [
            {"epoch": 0, "loss": 1.0, "val_score": 0.2},
            {"epoch": 1, "loss": 0.5, "val_score": 0.4},
        ]
    )
    plots: list = field(default_factory=list)
    input_example: np.ndarray = field(default_factory=lambda: np.zeros((1, 4), dtype=np.float32))
    resumed_from: int | None = None


def gate_metrics(acc: float) -> dict[str, float]:
    """Tagger test metrics with the majority-class baseline beside acc_min."""
    return {"acc_min": acc, "baseline_acc_min": 0.25}


class _RunsCode:
    """Unpickling this writes a marker file: what a hostile "model" in the artifact store would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def hostile_pickle(path: Path, marker: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"state_dict": _RunsCode(marker)}))
