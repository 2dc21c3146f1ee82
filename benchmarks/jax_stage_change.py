"""Where a stage change's time goes on JAX: tracing, lowering, or XLA's compile.

MobileNetV2 (96x96, ``weights=None``) trains one batch repeated (batch 16) in one ``fit`` with
``ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"}, stage_change="retrace",
compile_ahead=False)`` (each stage compiled at its first step): epoch 0's first
step compiles the frozen stage's step, epoch 1's and 2's recompile it for one block and for the
whole backbone. JAX reports, through ``jax.monitoring``'s duration events, the seconds each first
step spent tracing the step to a jaxpr (``jaxpr_trace_duration``: Keras's train step run over
every layer), lowering it (``jaxpr_to_mlir_module_duration``) and compiling it with XLA
(``backend_compile_duration``). On TensorFlow a retrace reuses the backbone's traced forward pass
(``trace_backbone_once``); this says what the same idea could save on JAX.

    KERAS_BACKEND=jax python benchmarks/jax_stage_change.py            # 2 repeats

Writes ``benchmarks/results/jax_stage_change.json``.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402
from stage_change import mobilenet_and_batch  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402
from keras_tlft.reporting.bench import repeated_batch  # noqa: E402

SCHEDULE = {0: "none", 1: 1, 2: "all"}
EVENTS = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")


class FirstSteps(keras.callbacks.Callback):
    """Each epoch's step times, and the JAX compile events of its first step."""

    def __init__(self):
        super().__init__()
        self.times: list[list[float]] = []
        self.events: list[dict] = []
        self.recording = None
        jax.monitoring.register_event_duration_secs_listener(self.listen)

    def listen(self, name, seconds, **kwargs):
        short = name.rsplit("/", 1)[-1]
        if self.recording is not None and short in EVENTS:
            self.recording[short] += seconds

    def on_epoch_begin(self, epoch, logs=None):
        self.times.append([])

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.recording = collections.defaultdict(float)
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times[-1].append(time.perf_counter() - self.start)
        if batch == 0:
            self.events.append(dict(self.recording))
            self.recording = None


def run(steps: int, batch: int) -> list[dict]:
    model, x, y = mobilenet_and_batch(batch)
    probe = FirstSteps()
    model.fit(repeated_batch(x, y, steps), epochs=len(SCHEDULE), verbose=0,
              callbacks=[ProgressiveUnfreeze(SCHEDULE, stage_change="retrace",
                                                 compile_ahead=False), probe])
    keras.backend.clear_session()
    rows = []
    for epoch, (times, events) in enumerate(zip(probe.times, probe.events)):
        steady = statistics.median(times[1:])
        rows.append({"stage": str(SCHEDULE[epoch]), "first_step_s": times[0],
                     "steady_step_s": steady, "change_s": times[0] - steady,
                     **{name: events.get(name, 0.0) for name in EVENTS}})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        parser.error("run with KERAS_BACKEND=jax")
    runs = []
    for _ in range(args.repeats):
        runs.append(run(args.steps, args.batch_size))
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
        for row in runs[-1]:
            print(f"  into {row['stage']:<5} first step {row['first_step_s']:.2f} s: trace "
                  f"{row['jaxpr_trace_duration']:.2f} s, lowering "
                  f"{row['jaxpr_to_mlir_module_duration']:.2f} s, XLA compile "
                  f"{row['backend_compile_duration']:.2f} s", flush=True)
    write_json("jax_stage_change.json", {"benchmark": "jax_stage_change",
                                         "environment": environment(), "settings": vars(args),
                                         "schedule": {str(k): v for k, v in SCHEDULE.items()},
                                         "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
