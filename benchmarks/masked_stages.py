"""Stage changes by retrace against by masking (``ProgressiveUnfreeze(stage_change=...)``), and a
retrace with the backbone's forward pass traced once against one that walks it every time.

One ``fit`` of MobileNetV2 (``weights=None``, 96x96, batch 16, one batch repeated ``--steps``
times an epoch) with ``ProgressiveUnfreeze(SCHEDULE, stage_change=...)``, each of the runs
``--repeats`` times, interleaved, in one process. Per stage: the median step (each epoch's first
step left out); per stage change: its first step minus that stage's median step (the retrace,
or nothing); and the whole fit's wall time. Only the stage-change mechanism differs between the
runs: the weights they end with are compared too (masking, and a retrace that reuses the traced
backbone, train exactly as retracing everything does). On TensorFlow a third run,
``retrace_each`` (``trace_backbone_once=False``), retraces the backbone at every stage change
as keras-tlft 0.2 did.

    KERAS_BACKEND=tensorflow python benchmarks/masked_stages.py
    KERAS_BACKEND=jax python benchmarks/masked_stages.py --repeats 1

Writes ``benchmarks/results/masked_stages_<backend>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402
from stage_change import mobilenet_and_batch  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402
from keras_tlft.reporting.bench import repeated_batch  # noqa: E402

# Five stages, one epoch each: the head alone, then one block more, then all of them.
SCHEDULE = {0: "none", 1: 1, 2: 2, 3: 3, 4: "all"}


class Clock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times: list[list[float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.times.append([])

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times[-1].append(time.perf_counter() - self.start)


# variant: (stage_change, trace_backbone_once). "retrace_each" walks the backbone's layers at
# every retrace, as keras-tlft 0.2 did (TensorFlow only: JAX retraces everything either way).
VARIANTS = {"retrace": ("retrace", True), "retrace_each": ("retrace", False),
            "mask": ("mask", True)}


def run(variant: str, steps: int, batch: int) -> tuple[dict, list]:
    model, x, y = mobilenet_and_batch(batch)
    clock = Clock()
    stage_change, once = VARIANTS[variant]
    unfreeze = ProgressiveUnfreeze(SCHEDULE, stage_change=stage_change, trace_backbone_once=once)
    start = time.perf_counter()
    model.fit(repeated_batch(x, y, steps), epochs=len(SCHEDULE), verbose=0,
              callbacks=[unfreeze, clock])
    fit_s = time.perf_counter() - start
    steady = [statistics.median(t[1:]) for t in clock.times]
    changes = [clock.times[e][0] - steady[e] for e in range(1, len(SCHEDULE))]
    weights = [np.array(w) for w in model.get_weights()]
    keras.backend.clear_session()
    return {"fit_s": fit_s, "step_ms": [s * 1e3 for s in steady],
            "change_s": changes, "mean_change_s": statistics.mean(changes),
            "masking": list(unfreeze.masking),
            "traced_forward": list(unfreeze.traced_forward)}, weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch (= per stage)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    names = VARIANTS if keras.backend.backend() == "tensorflow" else ("retrace", "mask")
    runs: dict[str, list] = {name: [] for name in names}
    final: dict[str, list] = {}
    for _ in range(args.repeats):  # interleaved: both see the same machine
        for variant in runs:
            result, final[variant] = run(variant, args.steps, args.batch_size)
            runs[variant].append(result)
            print(variant, f"fit {result['fit_s']:.1f} s, changes "
                  f"{[round(c, 2) for c in result['change_s']]} s, steps "
                  f"{[round(s) for s in result['step_ms']]} ms, load {os.getloadavg()[0]:.1f}",
                  flush=True)
    diff = max(float(np.abs(a - b).max()) for other in runs if other != "retrace"
               for a, b in zip(final["retrace"], final[other]))
    best = {v: {"fit_s": min(r["fit_s"] for r in rs),
                "mean_change_s": min(r["mean_change_s"] for r in rs),
                "step_ms": [min(r["step_ms"][i] for r in rs) for i in range(len(SCHEDULE))]}
            for v, rs in runs.items()}
    backend = keras.backend.backend()
    print(f"\n{backend}, MobileNetV2 96x96, batch {args.batch_size}, {args.steps} steps a stage, "
          f"best of {args.repeats}; largest weight difference at the end: {diff:.2g}")
    print(f"{'':<12} {'fit':>8} {'stage change':>13}   step per stage (ms)")
    for v, b in best.items():
        print(f"{v:<12} {b['fit_s']:>6.1f} s {b['mean_change_s']:>11.2f} s   "
              + " ".join(f"{s:.0f}" for s in b["step_ms"]))
    ratio = best["mask"]["fit_s"] / best["retrace"]["fit_s"]
    print(f"mask / retrace: fit {ratio:.2f}x")
    once = {}
    if "retrace_each" in best:
        each = best["retrace_each"]
        once = {"fit_ratio_retrace_over_retrace_each": best["retrace"]["fit_s"] / each["fit_s"],
                "change_ratio_retrace_over_retrace_each":
                    best["retrace"]["mean_change_s"] / each["mean_change_s"]}
        print("retrace (backbone traced once) / retrace_each: fit "
              f"{once['fit_ratio_retrace_over_retrace_each']:.2f}x, stage change "
              f"{once['change_ratio_retrace_over_retrace_each']:.2f}x")
    write_json(f"masked_stages_{backend}.json", {
        "benchmark": "masked_stages", "environment": environment(), "settings": vars(args),
        "schedule": {str(k): v for k, v in SCHEDULE.items()}, "runs": runs, "best": best,
        "fit_ratio_mask_over_retrace": ratio, **once, "max_weight_difference": diff})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
