"""Training blaze37 for real: the default recipe keeps BlazePose's real-body knowledge, a naive
fine-tune loses it, and the spine head learns from renders.

One short budget each, on renders of two motions; body AP is measured on the real COCO sample
people (ground-truth boxes), spine AP on renders of motions and seeds never trained on. The bounds
and the margins they were measured with are next to each assertion (`MEASURED`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.store import Store
from tests.conftest import REAL_PEOPLE

pytestmark = pytest.mark.slow

TRAIN = [("bend", 61, 16), ("walk", 62, 16), ("squat", 63, 16)]
HELD_OUT = [("reach", 71, 8), ("mixed", 72, 8)]
#: Iterations of the default recipe's fine-tune and of the naive one (batch 8, one torch thread).
ITERS = int(os.environ.get("SPINETRACK_TEST_BLAZE37_ITERS", "120"))
NAIVE_ITERS = 40
SEED = int(os.environ.get("SPINETRACK_TEST_BLAZE37_SEED", "0"))
#: The recipe issue #18 measured to destroy body knowledge: the whole network at Adam 1e-4, no
#: distillation, no frozen expert.
NAIVE = {"expert_body": False, "backbone_lr_mult": 1.0, "real_share": 0.0}
#: MEASURED (naive, 40 iterations): body AP 0.4875 -> 0.154, 0.125, 0.187 (seeds 0, 1, 2).
#: MEASURED at 120 iterations on these 48 frames: held-out spine AP 0.19 and 0.11 (seeds 0 and 1;
#: untrained 0.000), body AP 0.4875 -> 0.4831 (the frozen expert's rows; only the instance scores
#: move). The bound asks for learning clearly above the untrained head's zero with half the
#: smallest measured value as margin; bench/results/student.json has the full budget's 0.87.
SPINE_BOUND = 0.05


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from pipeline.model.dataset import merge_coco_files

    if not REAL_PEOPLE.is_dir():
        pytest.skip(f"real samples not present at {REAL_PEOPLE}")
    from synthetic.sample_set import SequenceSpec, render_set, store_ground_truth

    root = tmp_path_factory.mktemp("blaze37")
    store = Store(home=root / "home")
    for folder in render_set(root / "train", [SequenceSpec(*s) for s in TRAIN]):
        store_ground_truth(store, folder, tag="blaze37-test")
    held_out = render_set(root / "held-out", [SequenceSpec(*s) for s in HELD_OUT])
    val = merge_coco_files([f / "ground_truth.json" for f in held_out], root / "val.json")
    yield {"store": store, "val": val, "coco": REAL_PEOPLE / "coco"}
    store.close()


def _body_ap(model: Any, coco: Path) -> float:
    from pipeline.annotators.coco_eval import score_on_coco
    from pipeline.annotators.registered import in_memory_annotator

    body = score_on_coco(in_memory_annotator(model, "m"), coco / "test_coco.json", coco)["body_AP"]
    assert body is not None
    return float(body)


def _train(setting: dict[str, Any], name: str, iters: int, **kwargs: Any) -> Any:
    from pipeline.model.registry import load_model
    from pipeline.model.train import train

    version = train(setting["store"], iters=iters, seed=SEED, name=f"{name}-{SEED}", threads=1,
                    teacher_pool=[], **kwargs)
    return load_model(setting["store"], version.name).module


def test_default_recipe_keeps_real_bodies_and_learns_the_spine(setting: dict[str, Any]) -> None:
    from pipeline.model.predict import untrained_model
    from pipeline.model.train import evaluate_model

    start = _body_ap(untrained_model("blaze37"), setting["coco"])
    untrained_spine = evaluate_model(untrained_model("blaze37"), setting["val"])["spine_AP"]
    model = _train(setting, "default", ITERS)
    body = _body_ap(model, setting["coco"])
    spine = evaluate_model(model, setting["val"])["spine_AP"]
    print(f"body AP {start:.4f} -> {body:.4f}; held-out spine AP {untrained_spine:.4f} -> {spine:.4f}")
    assert body >= start - 0.05
    assert untrained_spine < 0.05
    assert spine >= SPINE_BOUND, spine


def test_naive_fine_tune_forgets_real_bodies(setting: dict[str, Any]) -> None:
    from pipeline.model.predict import untrained_model

    start = _body_ap(untrained_model("blaze37"), setting["coco"])
    model = _train(setting, "naive", NAIVE_ITERS, overrides=NAIVE, lr=1e-4, loss_weights={"distill": 0.0})
    body = _body_ap(model, setting["coco"])
    print(f"naive: body AP {start:.4f} -> {body:.4f}")
    assert body < start - 0.05



def test_a_fine_tune_starts_from_its_parents_head(setting: dict[str, Any]) -> None:
    """mmengine's Runner initialises the model again when training starts: a fine-tune must still
    begin from the parent's head (its spine rows), not from BlazePose's. At a learning rate of
    ~0 the child's head is the parent's; before the fix every retrain reset it and a round's
    student lost its spine (synthetic spine AP 0.87 -> 0.00 at lr 1e-12)."""
    from pipeline.model.registry import load_model
    from pipeline.model.train import train

    store = setting["store"]
    parent = train(store, iters=6, seed=SEED, name=f"parent-{SEED}", threads=1, teacher_pool=[])
    child = train(store, iters=2, seed=SEED + 1, name=f"child-{SEED}", threads=1, teacher_pool=[],
                  parent=parent.name, lr=1e-12)
    before = load_model(store, parent.name).module.head.final_layer.weight
    after = load_model(store, child.name).module.head.final_layer.weight
    moved = (after - before).abs().max().item()
    new_rows = before[[26, 30, 36]].abs().max().item()  # spine rows: trained away from their 1e-3 init
    assert moved < 1e-6, moved
    assert new_rows > 0.0, new_rows
