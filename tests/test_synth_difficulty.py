"""Model-behaviour tier for the world itself: trivial models must fail on it."""

from pipelines.synth.baselines import trivial_baselines


def test_trivial_models_fail_on_the_world(small_world) -> None:
    scores = trivial_baselines(small_world)
    assert scores["street_garments"] > 50
    assert scores["majority_class_accuracy"] < 0.5
    assert scores["whole_image_box_hit_rate"] < 0.05
    # chance Recall@5 over ~40 products is ~0.13: a colour-only model must stay near it
    assert scores["mean_colour_recall_at_1"] < 0.3
    assert scores["mean_colour_recall_at_5"] < 0.5
