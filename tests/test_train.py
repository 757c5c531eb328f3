"""Training engine, evaluation metrics, manifest rows and inference (model behaviour tier).

Runs are tiny (few steps, tiny inputs) so the file stays within a couple of minutes on a
shared 2-core CPU; quality runs are ``slow``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.manifests import load_manifest, validate_manifest_frame

MODELS = ("detector", "parser", "tagger", "embedder")
TINY = {
    "workers": 0,
    "warmup_epochs": 0,
    "eval_limit": 12,
    "image_size": 96,
    "crop_size": 40,
    "batch_size": 6,
    "fpn_channels": 32,
    "psp_channels": 32,
    "threads": 2,
}


# ------------------------------------------------------------------ metrics: perfect -> 1


def test_metrics_are_one_for_perfect_predictions() -> None:
    from pipelines.train import metrics as M

    lab = np.random.default_rng(0).integers(0, 5, size=(20, 20))
    lab[0, 0] = 255  # ignored pixel
    s = M.segmentation_scores(M.confusion(lab, np.where(lab == 255, 0, lab), 5))
    assert s == {"miou": 1.0, "pixel_acc": 1.0}
    y = np.array([0, 1, 2, 2, 1])
    assert M.classification_scores(y, y, 4) == {"acc": 1.0, "f1": 1.0}
    assert M.classification_scores(y, np.zeros(5, int), 4)["acc"] == pytest.approx(0.2)
    g = np.eye(4, dtype=np.float32)
    assert M.recall_at_k(g, list("abcd"), g, list("abcd"), (1, 5)) == {1: 1.0, 5: 1.0}
    x = np.repeat(np.eye(2, dtype=np.float32), 6, axis=0)
    assert M.precision_at_k(x, ["u"] * 6 + ["v"] * 6, 5) == 1.0
    gts = [[([10, 10, 20, 30], 1), ([50, 50, 10, 10], 2)], [([5, 5, 40, 40], 2)]]
    dets = [[(b, 0.9, c) for b, c in img] for img in gts]
    m, prec = M.coco_detection(gts, dets, 2)
    assert m == {"map_50": 1.0, "map_50_95": 1.0} and prec.shape == (101, 2)
    assert M.coco_detection(gts, [[], []], 2)[0]["map_50"] == 0.0


# --------------------------------------------------------------------- rows and dev split


def test_world_rows_and_dev_training_set(small_world: Path, small_set: Path) -> None:
    from pipelines.ingest.world import world_manifest_rows

    rows = world_manifest_rows(small_world)
    broken = {b["file"] for b in json.loads((small_world / "broken.json").read_text())}
    for model, df in rows.items():
        assert len(df) and "group" in df and not {"split", "repeat", "weight"} & set(df.columns)
        assert not set(df["image"]) & broken, f"{model} rows include broken files"
        assert all((small_world / p).exists() for p in df["image"][:20])
    assert set(rows["detector"]["role"]) == {"street", "model"}
    assert set(rows["tagger"]["role"]) == {"shop", "model", "street"}
    assert (rows["embedder"]["identity"] == rows["embedder"]["group"]).all()
    for model in MODELS:
        df = load_manifest(small_set, model)
        validate_manifest_frame(df, model)
        # a group (product or scene) never straddles two splits
        assert (df.groupby("group")["split"].nunique() == 1).all()
        assert set(df["split"]) == {"train", "val", "test"}


def test_repeats_are_augmented(small_set: Path) -> None:
    """An oversampled row (repeat 3) is drawn 3 times per epoch; copies are augmented (on the
    crop path: with cached frozen-trunk features a repeat is the same features again)."""
    import torch

    from pipelines.train import get_task
    from pipelines.train.config import resolve_config

    task = get_task("tagger")
    df = load_manifest(small_set, "tagger", "train").iloc[:2].copy()
    df["repeat"] = [3, 1]
    cfg = task.prepare({**resolve_config("tagger"), **TINY, "feature_cache": False}, df)
    train = task.dataset(df, True, cfg)
    assert len(train) == 4
    plain = task.dataset(df, False, cfg)[0][0]
    assert not torch.equal(train[1][0], plain) and not torch.equal(train[1][0], train[2][0])
    assert torch.equal(task.dataset(df, False, cfg)[0][0], plain)  # evaluation is deterministic


# ------------------------------------------------------------------ training per model

_RESULTS: dict[str, object] = {}


@pytest.mark.parametrize("name", MODELS)
def test_tiny_training_run(name: str, small_set: Path, tmp_path: Path) -> None:
    """A real (tiny) run: loss goes down, artefacts and plots are written, predict works."""
    from PIL import Image

    from pipelines.train import PRIMARY_METRIC, get_task, load_model, predict, train_model

    over = {**TINY, "epochs": 3, "max_steps_per_epoch": 4, "lr": 0.003, "patience": 5}
    if name == "embedder":  # the metric loss is noisy over a few steps
        # uniform class draws: this synthetic-only set has no large same-category classes
        # for the size-weighted draw to favour, only products of 1-3 crops
        over.update(lr=0.001, max_steps_per_epoch=12, class_size_power=0.0)
    res = train_model(name, small_set, tmp_path / name, overrides=over, progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert res.epochs_run == 3 and len(losses) == 3 and res.resumed_from is None
    assert losses[-1] < losses[0], losses
    for f in ("model.pt", "history.json", "config.json", "checkpoints/last.pt"):
        assert (tmp_path / name / f).exists()
    assert res.plots and all(p.suffix == ".png" and p.exists() for p in res.plots)
    # the primary metric, or its fallback where this synthetic-only set lacks real photos
    expected = next(k for k in (PRIMARY_METRIC[name], *get_task(name).fallback) if k in res.metrics)
    assert res.primary_metric == expected
    assert all(0.0 <= v <= 1.0 for k, v in res.metrics.items() if not k.startswith("n_") and "lift" not in k)
    assert not res.model.training
    # rebuild from model.pt alone and predict on PIL images
    model = load_model(name, res.checkpoint)
    imgs = [Image.new("RGB", (72, 96), (200, 40, 40)), Image.new("RGB", (60, 50), (20, 40, 200))]
    out = predict(name, model, imgs)
    if name == "detector":
        assert set(out[0]) == {"boxes", "scores", "categories"} and len(out) == 2
    elif name == "parser":
        assert out[0].shape == (96, 72) and out[1].shape == (50, 60)
    elif name == "tagger":
        value, score = out[0]["category"]
        assert value in res.config["heads"]["category"] and 0 <= score <= 1
    else:
        assert out.shape == (2, res.config["dim"])
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    assert isinstance(res.input_example, np.ndarray)


def test_resume_after_kill(small_set: Path, tmp_path: Path) -> None:
    """SIGKILL right after the first epoch's checkpoint; a restart continues from there to
    the same end. The child stops itself (SIGSTOP) once that checkpoint is on disk, so the
    kill lands at the same point every time, whatever the machine's speed."""
    from pipelines.train import train_model

    out = tmp_path / "run"
    over = {**TINY, "epochs": 4, "max_steps_per_epoch": 3, "patience": 10}
    code = (
        "import sys, json, os, signal\n"
        "from pipelines.train import engine, train_model\n"
        "save = engine.atomic_save\n"
        "def save_then_stop(obj, path):\n"
        "    save(obj, path)\n"
        "    if path.name == 'last.pt':\n"
        "        os.kill(os.getpid(), signal.SIGSTOP)\n"
        "engine.atomic_save = save_then_stop\n"
        "train_model('embedder', sys.argv[1], sys.argv[2], overrides=json.loads(sys.argv[3]), progress=False)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(small_set), str(out), json.dumps(over)],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.DEVNULL,
    )
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns when the child stops (or dies)
    assert os.WIFSTOPPED(status), f"the child ended before its first checkpoint (status {status})"
    os.kill(proc.pid, signal.SIGKILL)
    os.waitpid(proc.pid, 0)
    proc.returncode = -signal.SIGKILL  # reaped above; keeps Popen from waiting again
    res = train_model("embedder", small_set, out, overrides=over, progress=False)
    assert res.resumed_from == 1
    assert res.epochs_run == 4
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]


def test_early_stopping_and_config_change(small_set: Path, tmp_path: Path) -> None:
    """lr 0 never improves val: training stops after `patience` epochs; a changed config
    does not resume from the old checkpoint."""
    from pipelines.train import train_model

    over = {**TINY, "epochs": 6, "max_steps_per_epoch": 1, "patience": 1, "lr": 0.0}
    res = train_model("tagger", small_set, tmp_path / "r", overrides=over, progress=False)
    assert res.epochs_run == 2  # epoch 1 sets the best, epoch 2 does not improve -> stop
    res2 = train_model("tagger", small_set, tmp_path / "r", overrides={**over, "seed": 1}, progress=False)
    assert res2.resumed_from is None


@pytest.mark.shared_data
def test_photo_rows_derive_boxes(shared_photos: Path) -> None:
    from pipelines.ingest.photos import MAIN_LABELS, photo_manifest_rows

    rows = photo_manifest_rows(shared_photos, limit=40)
    tag = rows["tagger"]
    assert len(tag) == 40 and {"label", "bbox", "category", "box_source", "group"} <= set(tag.columns)
    assert (tag["box_source"] == "segmented").mean() > 0.7
    for bbox, w, h in zip(tag["bbox"], tag["width"], tag["height"], strict=True):
        x, y, bw, bh = json.loads(bbox)
        assert 0 <= x and 0 <= y and x + bw <= w + 1 and y + bh <= h + 1 and bw * bh > 0.02 * w * h
    assert rows["embedder"]["identity"].isna().all()
    det = rows["detector"]
    assert det["label"].isin(MAIN_LABELS).any() and not det["label"].isin(["Not sure", "Skip", "Other"]).any()


def test_cached_prefix_features_match_the_full_forward(small_set: Path, tmp_path: Path) -> None:
    """Training on cached frozen-trunk features is training the served model: the cached
    prefix + tail equals the model on the crop, and a second call reads the cache only."""
    import torch

    from pipelines.train import build_model
    from pipelines.train.config import resolve_config
    from pipelines.train.data import load_crop, parse_bbox, to_tensor
    from pipelines.train.features import cache_enabled, prefix_features
    from pipelines.train.tagger import TaggerTask

    task = TaggerTask()
    df = load_manifest(small_set, "tagger").iloc[:10].reset_index(drop=True)
    cfg = task.prepare(resolve_config("tagger", "demo", {"crop_size": 64, "workers": 0}), df)
    assert cache_enabled(cfg)
    model = build_model("tagger", cfg).eval()
    feats = prefix_features(model, df, cfg, cache_dir=tmp_path, progress=False)
    files = sorted(tmp_path.rglob("*.npy"))
    assert len(files) == len(df)
    stamp = [f.stat().st_mtime_ns for f in files]
    x = torch.stack([to_tensor(load_crop(p, parse_bbox(b), 64)) for p, b in zip(df["image"], df["bbox"], strict=True)])
    with torch.no_grad():
        direct, cached = model(x), model.from_prefix(feats)
    for head in direct:  # the cache stores float16: equal to that precision
        assert torch.allclose(direct[head], cached[head], atol=0.05), head
        assert (direct[head].argmax(1) == cached[head].argmax(1)).float().mean() >= 0.9
    again = prefix_features(model, df, cfg, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, feats) and [f.stat().st_mtime_ns for f in files] == stamp


def test_cached_scene_features_match_the_full_forward(small_set: Path, tmp_path: Path) -> None:
    """The detector and the parser train on cached trunk maps of their canvases: replaying
    them gives what the served model computes on the canvas (detections and parser logits),
    mirrored maps are the mirrored canvas's, and a second call reads the cache only."""
    from collections import OrderedDict

    import torch

    from models._common import normalise
    from pipelines.train import build_model
    from pipelines.train.config import resolve_config
    from pipelines.train.data import CANVAS_FILL, load_rgb, square_canvas, to_tensor
    from pipelines.train.detector import DetectorTask
    from pipelines.train.features import scene_cache_enabled, scene_features
    from pipelines.train.parser import ParserTask

    df = load_manifest(small_set, "parser").iloc[:6].reset_index(drop=True)
    images = list(map(str, df["image"]))
    maps = scene_features(images, 96, CANVAS_FILL, flips=True, cache_dir=tmp_path, progress=False)
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == len(images)
    stamp = [f.stat().st_mtime_ns for f in files]
    canvas = torch.stack([to_tensor(square_canvas(load_rgb(p), 96, CANVAS_FILL)[0]) for p in images])

    pcfg = ParserTask().prepare(resolve_config("parser", "demo", {"image_size": 96}), df)
    assert scene_cache_enabled(pcfg, "encoder")
    parser = build_model("parser", pcfg).eval()
    with torch.no_grad():
        for mirrored, x in ((False, canvas), (True, canvas.flip(-1))):
            direct = parser(x)
            cached = parser.from_cached({b: m.float() for b, m in maps[mirrored].items()})
            assert torch.allclose(direct, cached, atol=0.05)
            assert (direct.argmax(1) == cached.argmax(1)).float().mean() >= 0.99

    ddf = load_manifest(small_set, "detector").iloc[:6].reset_index(drop=True)
    task = DetectorTask()
    dcfg = task.prepare(resolve_config("detector", "demo", {"image_size": 96, "score_thresh": 0.0}), ddf)
    assert scene_cache_enabled(dcfg)
    detector = build_model("detector", dcfg).eval()
    dmaps = scene_features(
        list(map(str, ddf["image"])), 96, CANVAS_FILL, flips=False, cache_dir=tmp_path, progress=False
    )[False]
    dcanvas = torch.stack([to_tensor(square_canvas(load_rgb(p), 96, CANVAS_FILL)[0]) for p in ddf["image"]])
    with torch.no_grad():
        live = detector.backbone.body(normalise(dcanvas))
        with detector.backbone.replay({b: m.float() for b, m in dmaps.items()}):
            replayed = detector.backbone(dcanvas)
        ref = detector.backbone.fpn(OrderedDict((str(i), f) for i, f in enumerate(live)))
    for k in ref:
        assert torch.allclose(ref[k], replayed[k], atol=0.05), k
    again = scene_features(images, 96, CANVAS_FILL, flips=True, cache_dir=tmp_path, progress=False)
    assert all(torch.equal(again[m][b], maps[m][b]) for m in maps for b in maps[m])
    assert [f.stat().st_mtime_ns for f in files] == stamp


def test_class_draws_follow_class_size() -> None:
    """``class_size_power`` 1 draws classes by their item count: the few same-category classes
    of real photos (hundreds of crops each) come into most batches instead of almost none."""
    from pipelines.train.embedder import MPerClassBatches

    labels = np.array([0] * 400 + [1] * 400 + [k for k in range(2, 202) for _ in range(2)])

    def share_of_big(power: float) -> float:
        batches = list(MPerClassBatches(labels, 4, 32, 50, seed=0, size_power=power))
        return float(np.mean([labels[i] <= 1 for b in batches for i in b]))

    uniform, by_size = share_of_big(0.0), share_of_big(1.0)
    assert uniform < 0.05 and by_size > 0.15, (uniform, by_size)


def test_crop_draws_only_the_box_and_content_histogram_skips_the_fill() -> None:
    """A boxed crop shows the box alone on grey (as the service draws a detected box), and
    the content histogram counts the drawn pixels only."""
    import torch
    from PIL import Image

    from models._common import _content_hist
    from pipelines.train.data import square_crop, to_tensor

    img = Image.new("RGB", (100, 100), (255, 0, 0))  # red all around ...
    img.paste((0, 0, 255), (40, 45, 60, 55))  # ... a wide blue box in the middle
    crop = np.asarray(square_crop(img, [40, 45, 20, 10], 40, context=0.0))
    assert (crop[20, 20] == (0, 0, 255)).all()  # the box
    assert (crop[2, 20] == (128, 128, 128)).all()  # above it: grey, not the red neighbour
    hist = _content_hist(to_tensor(Image.fromarray(crop))[None], 4)
    blue = (0 * 4 + 0) * 4 + 3
    assert torch.isclose(hist[0, blue], torch.tensor(1.0))


def test_garment_colour_histogram_ignores_the_backdrop_of_the_box() -> None:
    """Two red shoes on a white floor: the box's rim is floor, so the garment histogram
    (group ``colour``) puts its mass on red, while the drawn-pixel histogram is mostly white."""
    import torch
    from PIL import Image

    from models._common import Descriptor, _content_hist, _fg_hist
    from pipelines.train.data import square_crop, to_tensor

    scene = Image.new("RGB", (200, 120), (30, 120, 30))  # green street around the box
    scene.paste((250, 250, 250), (40, 40, 160, 80))  # the box: white floor ...
    scene.paste((200, 20, 20), (46, 50, 70, 76))  # ... a red shoe on the left
    scene.paste((200, 20, 20), (130, 50, 154, 76))  # ... and one on the right
    crop = to_tensor(square_crop(scene, [40, 40, 120, 40], 224, context=0.0))[None]
    red, white = (3 * 4 + 0) * 4 + 0, (3 * 4 + 3) * 4 + 3
    garment = _fg_hist(crop, 4, 0.1) ** 2  # square-rooted shares
    assert garment[0, red] > 0.8 and garment[0, white] < 0.05, garment[0]  # the rest: blended edges
    assert _content_hist(crop, 4)[0, white] > 0.5
    # a crop where nothing stands out from the rim keeps every drawn pixel
    plain = to_tensor(square_crop(Image.new("RGB", (50, 50), (250, 250, 250)), None, 64))[None]
    assert torch.isclose((_fg_hist(plain, 4, 0.1) ** 2)[0, white], torch.tensor(1.0))
    d = Descriptor(fg_hist=4)
    assert d == Descriptor.from_config({"fg_hist": 4}) and "colour" in d.groups(_lite0_trunk())


def _lite0_trunk():
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)


def test_embedder_reads_only_its_input_groups() -> None:
    """The embedder shares the tagger's descriptor (one trunk pass for both) but reads the
    groups its ``inputs`` name: changing the colour columns leaves its embedding unchanged."""
    import torch

    from models import create

    cfg = {
        "pretrained": False,
        "freeze_blocks": 99,
        "grid_stages": [4],
        "fg_hist": 4,
        "dim": 16,
        "inputs": ["pooled", "grid"],
    }
    model = create("embedder", cfg).eval()
    start, stop = model.groups["colour"]
    f = torch.randn(3, stop)
    g = f.clone()
    g[:, start:stop] = torch.rand(3, stop - start)
    assert torch.allclose(model.from_prefix(f), model.from_prefix(g))
    assert model.proj[0].num_features == model.groups["grid"][1]  # pooled + grid columns
    with pytest.raises(ValueError, match="not among the prefix groups"):
        create("embedder", {**cfg, "inputs": ["pooled", "texture"]})


def test_retrain_without_a_training_set_is_a_clear_error_with_nothing_written(tmp_path, monkeypatch) -> None:
    from pipelines.settings import get_settings
    from pipelines.train.stages import plan_stage

    monkeypatch.setenv("TAILOR_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="no training set under .*run the validate_catalog DAG"):
            plan_stage(["tagger"], None)
        with pytest.raises(ValueError, match="unknown model"):
            plan_stage(["sweater"], None)
        assert not get_settings().runs_dir.exists()
    finally:
        get_settings.cache_clear()
