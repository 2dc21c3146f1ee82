"""Stage changes by masking (``stage_change="mask"``, or ``"auto"`` for short stages): one
compiled step for every stage, and the same training as a retrace at each change, bit for bit.

tests/test_backends.py reruns this file on JAX and PyTorch (where masking is refused: nothing
retraces there)."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import data, nested_model  # noqa: E402
from helpers_unfreeze.watch import TraceWatch  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402
from keras_tlft.callbacks.stage_masks import MASK_MAX_STEPS  # noqa: E402

BACKEND = keras.backend.backend()
needs_tracing = pytest.mark.skipif(BACKEND == "torch",
                                   reason="PyTorch runs eagerly: nothing to mask")
SCHEDULE = {0: "none", 1: 1, 2: 2, 3: "all"}


class Watch(TraceWatch):
    """Weights and trainable-weight counts at each epoch end, the trainable-weight counts the
    steps ran with, and the traces of the train step."""

    def __init__(self):
        super().__init__()
        self.weights, self.trainable, self.during = [], [], set()

    def on_train_batch_begin(self, batch, logs=None):
        self.during.add(len(self.model.trainable_weights))

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])
        self.trainable.append(len(self.model.trainable_weights))


def run(stage_change, optimizer=None, schedule=SCHEDULE, n=16, epochs=5, **options):
    model = nested_model()
    model.compile(optimizer or keras.optimizers.Adam(1e-2), "mse")
    x, y = data(n)
    unfreeze = ProgressiveUnfreeze(schedule, stage_change=stage_change, **options)
    watch = Watch()
    history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[unfreeze, watch])
    return model, unfreeze, watch, history


@needs_tracing
@pytest.mark.parametrize("optimizer, options", [
    (lambda: keras.optimizers.Adam(1e-2), {"backbone_lr_ratio": 0.5, "warmup_steps": 3}),
    (lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1), {"block_lr_decay": 0.5}),
    (lambda: keras.optimizers.SGD(1e-2, momentum=0.9), {"bn": "affine", "backbone_lr": 1e-3}),
], ids=["adam-warmup", "adamw-decay", "sgd-affine-absolute"])
def test_masked_stages_train_exactly_as_retraced_ones(optimizer, options):
    plain, plain_cb, plain_watch, plain_history = run("retrace", optimizer(), **options)
    masked, masked_cb, masked_watch, masked_history = run("mask", optimizer(), **options)
    assert plain_cb.masking[0] is False and masked_cb.masking[0] is True
    for epoch, (a, b) in enumerate(zip(plain_watch.weights, masked_watch.weights)):
        for wa, wb in zip(a, b):
            np.testing.assert_allclose(wb, wa, rtol=1e-6, atol=1e-7, err_msg=f"epoch {epoch}")
    # Frozen blocks did not move while frozen (the retraced run's guarantee, kept).
    kernel = [w.path for w in masked.weights].index("block1_conv/kernel")
    start = nested_model().get_weights()[kernel]
    for epoch in range(3):  # block1 unfreezes at epoch 3
        np.testing.assert_array_equal(masked_watch.weights[epoch][kernel], start)
    assert masked_history.history["trainable_params"] == plain_history.history["trainable_params"]
    assert masked_history.history["backbone_lr"] == pytest.approx(
        plain_history.history["backbone_lr"])


@needs_tracing
def test_masking_traces_once_and_shows_each_stage_between_epochs():
    model, _, plain_watch, _ = run("retrace")
    model, unfreeze, watch, _ = run("mask")
    assert plain_watch.traces == 4  # one trace per stage
    assert watch.traces == 1  # one for the whole fit
    # Between epochs, and after fit, the model is trainable as its stage says (checkpoints,
    # summaries), not as the compiled step's union.
    assert watch.trainable == plain_watch.trainable
    assert len(model.trainable_weights) == plain_watch.trainable[-1]
    assert watch.during == {plain_watch.trainable[-1]}  # the compiled step's: the last stage's


@needs_tracing
def test_the_masked_step_holds_only_the_blocks_this_fit_reaches():
    _, _, plain_watch, _ = run("retrace", epochs=3)  # stage 4 ("all") begins at epoch 3
    _, unfreeze, watch, _ = run("mask", epochs=3)
    assert unfreeze.masking[0] is True
    assert watch.during == {plain_watch.trainable[2]} != {plain_watch.trainable[0]}


@needs_tracing
def test_auto_masks_short_stages_and_retraces_long_ones():
    most = MASK_MAX_STEPS[BACKEND]
    _, short, _, _ = run("auto", n=8 * most)  # as many steps an epoch as masking pays for
    # ... but for the frozen first stage, which keeps its own (cheaper) step: 2/3 of that
    assert short.masking == (True, f"2 retraces saved: stages of at most {most} steps from "
                                   "stage 2")
    _, shorter, _, _ = run("auto", n=8 * (most * 2 // 3))
    assert shorter.masking[1].startswith("3 retraces saved")
    _, long, _, _ = run("auto", n=8 * (most + 1), epochs=4)  # one step more
    assert long.masking == (False, f"too few short stages (stages of up to {most + 1} steps; "
                                   f"masking pays up to {most} on {BACKEND})")


@needs_tracing
def test_auto_retraces_where_masking_would_train_differently():
    _, unfreeze, _, _ = run("auto", bn="train")
    assert unfreeze.masking == (
        False, "bn='train' puts a block's BatchNorm layers in training mode when it unfreezes")
    _, unfreeze, _, _ = run("auto", optimizer=keras.optimizers.Adam(1e-2, global_clipnorm=1.0))
    assert unfreeze.masking[0] is False and "global_clipnorm" in unfreeze.masking[1]
    with pytest.raises(ValueError, match="stage_change='mask' cannot give the same training "
                                         "as a retrace here: a stage freezes blocks again"):
        run("mask", schedule={0: 2, 1: 1, 2: "all"}, allow_refreeze=True)


def test_stage_change_is_checked():
    with pytest.raises(ValueError, match="stage_change must be 'auto', 'retrace' or 'mask'. "
                                         "Received: stage_change='never'"):
        ProgressiveUnfreeze(stage_change="never")
    assert ProgressiveUnfreeze(stage_change="mask").get_config()["stage_change"] == "mask"


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch backend's answer")
def test_torch_has_nothing_to_mask():
    _, unfreeze, _, _ = run("auto")
    assert unfreeze.masking == (False, "PyTorch runs eagerly: a stage change costs no retrace "
                                       "there")
