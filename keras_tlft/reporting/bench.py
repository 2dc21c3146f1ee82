"""Measurement engine for ``keras-tlft bench``: training phases and inference, no printing.

One model goes through the phases in one ``fit``: ``ProgressiveUnfreeze`` changes the stage at
each epoch boundary, exactly as in a user's run, so the cost of each stage change (the callback's
own work plus the retrace it forces) is measured, not simulated. Steps run on one synthetic batch
repeated, so data loading costs nothing and the figures are the model's own.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

TRAIN_PHASES = ("frozen", "partial", "full")
PHASES = (*TRAIN_PHASES, "inference")
#: ``model.compile``'s ``jit_compile`` values, as the CLI and the JSON name them.
JIT_NAMES = {"auto": "auto", True: "on", False: "off"}


@dataclass
class PhaseResult:
    """The figures of one phase."""

    phase: str
    unfreeze: str | None
    trainable_params: int
    steps: int
    step_ms_median: float
    step_ms_p10: float
    step_ms_p90: float
    images_per_second: float
    peak_memory_mb: float | None
    trace_seconds: float
    stage_change_seconds: float | None = None


@dataclass
class BenchReport:
    """Everything ``keras-tlft bench`` measured, JSON-able through :meth:`to_dict`."""

    backbone: str
    backend: str
    device: str
    on_gpu: bool
    memory_kind: str
    batch_size: int
    image_size: int
    steps: int
    warmup_steps: int
    mixed_precision: bool
    jit_compile: bool
    partial: str
    jit_requested: str = "auto"
    total_params: int = 0
    phases: list[PhaseResult] = field(default_factory=list)
    interrupted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def device_name() -> tuple[str, bool]:
    """A readable name of the device Keras computes on, and whether it is a GPU."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"GPU {details.get('device_name', gpus[0].name)}", True
        elif backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform == "gpu":
                return f"GPU {dev.device_kind}", True
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"GPU {torch.cuda.get_device_name(0)}", True
    except Exception:  # a device probe must never stop a benchmark
        pass
    return f"CPU {_cpu_model()} ({os.cpu_count()} cores)", False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class MemoryProbe:
    """Peak memory of a phase: the GPU allocator's peak on a GPU, the process's peak RSS on a CPU
    (Linux resets it per phase through /proc/self/clear_refs)."""

    def __init__(self, on_gpu: bool):
        import keras

        self.on_gpu = on_gpu
        self.backend = keras.backend.backend()
        self.kind = "GPU memory (allocator peak)" if on_gpu else "process memory (peak RSS)"

    def reset(self) -> None:
        if self.on_gpu:
            if self.backend == "tensorflow":
                import tensorflow as tf

                tf.config.experimental.reset_memory_stats("GPU:0")
            elif self.backend == "torch":
                import torch

                torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def peak_mb(self) -> float | None:
        try:
            if self.on_gpu:
                if self.backend == "tensorflow":
                    import tensorflow as tf

                    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
                if self.backend == "torch":
                    import torch

                    return torch.cuda.max_memory_allocated() / 2**20
                import jax

                stats = jax.devices()[0].memory_stats() or {}
                return stats.get("peak_bytes_in_use", 0) / 2**20 or None
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except Exception:  # memory figures are best effort; the timings still stand
            return None
        return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _phase_result(phase, unfreeze, trainable, times, warmup, batch_size, memory, change=None):
    steady = times[warmup:] or times[-1:]
    median = statistics.median(steady)
    return PhaseResult(
        phase=phase,
        unfreeze=unfreeze,
        trainable_params=trainable,
        steps=len(steady),
        step_ms_median=median * 1e3,
        step_ms_p10=_percentile(steady, 0.1) * 1e3,
        step_ms_p90=_percentile(steady, 0.9) * 1e3,
        images_per_second=batch_size / median,
        peak_memory_mb=memory,
        trace_seconds=max(0.0, sum(times[:warmup]) - warmup * median),
        stage_change_seconds=change,
    )


def run_bench(
    backbone: str,
    *,
    batch_size: int = 8,
    image_size: int | None = None,
    steps: int = 10,
    warmup_steps: int = 2,
    mixed_precision: bool = False,
    jit_compile: bool | str = "auto",
    phases=PHASES,
    partial="1",
    num_classes: int = 10,
    on_step: Callable[[str, int, int], None] | None = None,
) -> BenchReport:
    """Measure ``backbone`` (+ a GAP head) phase by phase on synthetic data.

    Args:
        backbone: a registered backbone name.
        batch_size, image_size: the batch; ``image_size`` defaults to the backbone's own.
        steps, warmup_steps: measured steps per phase, after the warm-up steps (which include
            the trace/compile and are reported as ``trace_seconds``).
        mixed_precision: train under ``mixed_float16`` (``mixed_bfloat16`` on a CPU).
        jit_compile: passed to ``model.compile``: ``"auto"`` (its default: XLA on a GPU with
            TensorFlow and JAX, off on a TensorFlow CPU and on PyTorch), ``True`` or ``False``.
            The report's ``jit_compile`` says what Keras used, ``jit_requested`` what was asked.
        phases: any of ``frozen``, ``partial``, ``full``, ``inference``, run in that order.
        partial: the unfreeze spec of the ``partial`` phase (``k`` top blocks or ``from:...``).
        on_step: called as ``on_step(phase, step, total)`` after every step, for progress.

    A ``KeyboardInterrupt`` ends the run cleanly: the phases finished so far are returned, with
    ``interrupted=True``.
    """
    import keras
    import numpy as np

    from keras_tlft.backbones.registry import get_backbone
    from keras_tlft.callbacks.unfreeze import ProgressiveUnfreeze
    from keras_tlft.model.assembly import build_model
    from keras_tlft.model.blocks import count_weights, parse_unfreeze

    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise ValueError(f"Unknown phase(s) {unknown}: expected some of {', '.join(PHASES)}. "
                         f"Received: phases={list(phases)!r}")
    for name, value, low in (("batch_size", batch_size, 1), ("steps", steps, 1),
                             ("warmup_steps", warmup_steps, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
    if jit_compile not in ("auto", True, False):
        raise ValueError(f"jit_compile must be 'auto', True or False. "
                         f"Received: jit_compile={jit_compile!r}")
    parse_unfreeze(partial, "partial")
    spec = get_backbone(backbone)
    size = image_size or spec.default_input_shape[0]
    device, on_gpu = device_name()
    policy = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16" if on_gpu else "mixed_bfloat16")
    report = BenchReport(
        backbone=spec.key, backend=keras.backend.backend(), device=device, on_gpu=on_gpu,
        memory_kind=MemoryProbe(on_gpu).kind, batch_size=batch_size, image_size=size,
        steps=steps, warmup_steps=warmup_steps, mixed_precision=mixed_precision,
        jit_compile=jit_compile is True, partial=str(parse_unfreeze(partial)),
        jit_requested=JIT_NAMES[jit_compile],
    )
    try:
        shape = (size, size, spec.default_input_shape[2])
        model = build_model(spec, num_classes, input_shape=shape, weights=None)
        report.total_params = model.count_params()
        if jit_compile != "auto":  # inference alone is never compiled: set it on the model
            model.jit_compile = jit_compile
        report.jit_compile = bool(model.jit_compile)  # what "auto" resolves to, or a refused True
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (batch_size, *shape)).astype("float32")
        y = rng.integers(0, num_classes, batch_size)
        train = [p for p in TRAIN_PHASES if p in phases]
        if train:
            _bench_training(model, x, y, train, partial, steps, warmup_steps, jit_compile,
                            report, on_step, ProgressiveUnfreeze, count_weights)
        if "inference" in phases:
            _bench_inference(model, x, steps, warmup_steps, report, on_step)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return report


class _StepTimer:
    """Times every training step and every stage change (the callback's on_epoch_begin)."""

    def __init__(self, keras, phases, memory, on_step, total):
        self.phases, self.memory, self.on_step, self.total = phases, memory, on_step, total
        self.times: dict[str, list[float]] = {p: [] for p in phases}
        self.peaks: dict[str, float | None] = {}
        self.changes: dict[str, float] = {}
        self.keras = keras

    def callbacks(self, unfreeze_cb):
        timer = self

        class Before(timer.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.memory.reset()
                timer.change_start = time.perf_counter()

            def on_train_batch_begin(self, batch, logs=None):
                timer.start = time.perf_counter()

        class After(timer.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.changes[timer.phases[epoch]] = time.perf_counter() - timer.change_start

            def on_train_batch_end(self, batch, logs=None):
                phase = timer.phases[self.model._tlft_bench_epoch]
                timer.times[phase].append(time.perf_counter() - timer.start)
                if timer.on_step:
                    timer.on_step(phase, batch + 1, timer.total)

            def on_epoch_end(self, epoch, logs=None):
                timer.peaks[timer.phases[epoch]] = timer.memory.peak_mb()

        class Epoch(timer.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.model._tlft_bench_epoch = epoch

        return [Epoch(), Before(), unfreeze_cb, After()]


def _bench_training(model, x, y, train, partial, steps, warmup, jit, report, on_step,
                    progressive_unfreeze, count_weights):
    import keras

    states = {"frozen": "none", "partial": partial, "full": "all"}
    schedule = {i: states[p] for i, p in enumerate(train)}
    memory = MemoryProbe(report.on_gpu)
    timer = _StepTimer(keras, train, memory, on_step, warmup + steps)
    trainable: dict[str, int] = {}

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            trainable[train[epoch]] = count_weights(self.model.trainable_weights)

    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                  jit_compile=jit)
    data = repeated_batch(x, y, warmup + steps)
    # Each phase's own step and the retrace a change forces (masking would give every phase
    # the last one's step: stage_change="auto" masks stages as short as a bench's; on JAX,
    # compiling the next phase ahead would run beside this phase's timed steps).
    cbs = timer.callbacks(progressive_unfreeze(schedule, stage_change="retrace",
                                               compile_ahead=False)) + [Count()]
    try:
        model.fit(data, epochs=len(train), callbacks=cbs, verbose=0)
    finally:
        for i, phase in enumerate(train):
            if len(timer.times[phase]) < warmup + 1:
                break
            change = timer.changes.get(phase) if i else None
            report.phases.append(_phase_result(
                phase, states[phase], trainable.get(phase, 0), timer.times[phase], warmup,
                len(x), timer.peaks.get(phase), change))


def _bench_inference(model, x, steps, warmup, report, on_step):
    memory = MemoryProbe(report.on_gpu)
    memory.reset()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        out = model.predict_on_batch(x)
        _ = out[0] if hasattr(out, "__getitem__") else out
        times.append(time.perf_counter() - start)
        if on_step:
            on_step("inference", i + 1, warmup + steps)
    report.phases.append(_phase_result("inference", None, 0, times, warmup, len(x),
                                       memory.peak_mb()))


def repeated_batch(x, y, steps):
    """The same batch, ``steps`` times, as a PyDataset: data loading costs nothing (the
    plain-Keras baselines in benchmarks/ feed their `fit` the same way)."""
    import keras

    class RepeatBatch(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return steps

        def __getitem__(self, index):
            return x, y

    return RepeatBatch()
