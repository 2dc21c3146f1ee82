"""The learning-rate finder's check: does `tlft.lr_find`'s suggestion land in the best decade?

On benchmark 1's transfer task (Fashion-MNIST classes 0-4 -> 5-9, the cached pretrained CNN and
the few-label draws of `transfer_fashion_mnist.py`, imported from it), for each recipe and seed:
`lr_find` runs on that seed's training labels (the model as the recipe starts it: the backbone
frozen, with the "gradual" schedule's stages tested too for the progressive recipe), then the
recipe trains with Adam at 1e-5, 1e-4, 1e-3, 1e-2, 1e-1 and 1 (one learning rate per decade;
1 because the linear probe's best grid point was 1e-1, the top of a grid that ended there) and
at the finder's two suggestions (steepest descent, the library's suggestion, and minimum / 10),
all with the same seeds as benchmark 1.

The rule: the suggestion "lands in the best decade" when it is within a factor sqrt(10) of the
grid learning rate with the best mean test accuracy (|log10(suggestion / best)| <= 0.5), i.e.
inside the grid the grid point nearest to it in log scale is the best one. The grid points sit
at the lower edges of the decades [10^k, 10^(k+1)), so the decade rule would count 0.9e-3 as
missing a best grid point of 1e-3 and 9e-3 as hitting it; the symmetric rule asks whether the
finder picks the grid point a grid search picks. Both are written to the JSON.

Usage:
    python benchmarks/lr_finder_decade.py                  # the linear probe, 3 seeds
    python benchmarks/lr_finder_decade.py --recipes linear_probe,progressive

Prints a table and writes benchmarks/results/lr_finder_decade.json.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402
from transfer_fashion_mnist import (  # noqa: E402
    PRETRAINED,
    SPEC,
    few_labels,
    run_recipe,
    transfer_task,
)

import keras_tlft as tlft  # noqa: E402

GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
RECIPES = ("linear_probe", "progressive")
SUGGESTIONS = ("steepest", "minimum_tenth")


def find(x, y, seed, schedule):
    """``lr_find`` on the recipe's starting model (pretrained backbone, frozen, new head)."""
    keras.utils.set_random_seed(seed)
    model = tlft.build_model(SPEC, 5, head="gap,dense:5:softmax", weights=str(PRETRAINED))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    result = tlft.lr_find(model, x, y, schedule=schedule, seed=seed)
    keras.backend.clear_session()
    return result


def nearest_grid(lr: float) -> float:
    return min(GRID, key=lambda g: abs(math.log10(lr) - math.log10(g)))


def within_sqrt10(lr: float, best: float) -> bool:
    """The rule: within a factor sqrt(10) of ``best`` (at the grid's edges too, where the
    nearest grid point can be further away)."""
    return abs(math.log10(lr / best)) <= 0.5


def in_decade(lr: float, best: float) -> bool:
    return best <= lr < best * 10


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="linear_probe",
                        help=f"comma-separated, from: {', '.join(RECIPES)} (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=100, help="labels per class")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not recipes or set(recipes) - set(RECIPES):
        parser.error(f"--recipes takes names from {', '.join(RECIPES)}. "
                     f"Received: --recipes={args.recipes}")
    started = time.perf_counter()

    pretrain_s, (x_t, y_t), (x_eval, y_eval) = transfer_task(args.pretrain_epochs)

    finder = {}
    schedule = "gradual:backbone_lr_ratio=1" if "progressive" in recipes else None  # as benchmark 1
    for seed in range(args.seeds):
        x, y = few_labels(x_t, y_t, args.labels, seed)
        start = time.perf_counter()
        result = find(x, y, seed, schedule)
        head = next(t for t in result.tests if t.name == "head")
        finder[seed] = {"steepest": head.steepest, "minimum_tenth": head.minimum_tenth,
                        "seconds": time.perf_counter() - start, "result": result.to_json()}
        print(f"seed {seed}: lr_find {result.suggestions} (minimum/10 of the head "
              f"{head.minimum_tenth}), {finder[seed]['seconds']:.0f} s", flush=True)

    rows = []
    for recipe in recipes:
        runs = {}   # learning-rate label -> list of (lr, accuracy, seconds)
        for seed in range(args.seeds):
            x, y = few_labels(x_t, y_t, args.labels, seed)
            tried = [(f"{g:.0e}", g) for g in GRID]
            tried += [(name, finder[seed][name]) for name in SUGGESTIONS]
            for label, lr in tried:
                run = run_recipe(recipe, x, y, x_eval, y_eval, args.epochs, lr, seed)
                keras.backend.clear_session()
                runs.setdefault(label, []).append((lr, run["accuracy"], run["seconds"]))
        table = {label: {"learning_rates": [r[0] for r in v],
                         "accuracies": [r[1] for r in v],
                         "accuracy_mean": statistics.fmean(r[1] for r in v),
                         "accuracy_std": statistics.stdev([r[1] for r in v]) if len(v) > 1
                         else 0.0,
                         "seconds_mean": statistics.fmean(r[2] for r in v)}
                 for label, v in runs.items()}
        best_label = max((f"{g:.0e}" for g in GRID), key=lambda k: table[k]["accuracy_mean"])
        best = float(best_label)
        verdicts = {}
        for name in SUGGESTIONS:
            lrs = table[name]["learning_rates"]
            verdicts[name] = {
                "per_seed_nearest_grid": [nearest_grid(lr) for lr in lrs],
                "per_seed_within_sqrt10": [within_sqrt10(lr, best) for lr in lrs],
                "per_seed_in_decade": [in_decade(lr, best) for lr in lrs],
                "all_within_sqrt10": all(within_sqrt10(lr, best) for lr in lrs),
            }
        rows.append({"recipe": recipe, "best_grid_lr": best,
                     "best_at_grid_edge": best in (GRID[0], GRID[-1]), "by_learning_rate": table,
                     "verdicts": verdicts})
        print(f"{recipe}: best grid lr {best:.0e}; " + "; ".join(
            f"{n} {[f'{lr:.1e}' for lr in table[n]['learning_rates']]} within sqrt(10): "
            f"{verdicts[n]['per_seed_within_sqrt10']}" for n in SUGGESTIONS), flush=True)

    total_s = time.perf_counter() - started
    print_table(rows, args)
    print(f"total wall time {total_s / 60:.1f} min (pretraining {pretrain_s:.0f} s"
          f"{', cached' if not pretrain_s else ''})", flush=True)
    write_json("lr_finder_decade.json", {
        "benchmark": "lr_finder_decade", "environment": environment(),
        "settings": {**vars(args), "grid": list(GRID), "optimizer": "adam",
                     "rule": "suggestion within a factor sqrt(10) of the best grid lr "
                             "(nearest grid point in log scale is the best one)",
                     "test_images": int(len(y_eval)), "pretrain_seconds": pretrain_s,
                     "total_seconds": total_s},
        "lr_find": {str(k): v for k, v in finder.items()},
        "results": rows,
    })
    return 0


def print_table(rows, args) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Test accuracy by learning rate, Fashion-MNIST 5-9, {args.labels} "
                        f"labels/class, {args.epochs} epochs, {args.seeds} seed(s)")
    table.add_column("learning rate")
    for row in rows:
        table.add_column(row["recipe"], justify="right")
    labels = list(rows[0]["by_learning_rate"])
    for label in labels:
        cells = []
        for row in rows:
            r = row["by_learning_rate"][label]
            lr = (" (" + ", ".join(f"{v:.1e}" for v in r["learning_rates"]) + ")"
                  if label in SUGGESTIONS else "")
            mark = " *" if label == f"{row['best_grid_lr']:.0e}" else ""
            cells.append(f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}{mark}{lr}")
        table.add_row(label, *cells)
    Console().print(table)
    print("*: best grid learning rate; suggestions within sqrt(10) of it, per seed: " + "; ".join(
        f"{row['recipe']} steepest {row['verdicts']['steepest']['per_seed_within_sqrt10']}, "
        f"minimum/10 {row['verdicts']['minimum_tenth']['per_seed_within_sqrt10']}"
        for row in rows))


if __name__ == "__main__":
    raise SystemExit(main())
