"""One worker of tf.distribute.MultiWorkerMirroredStrategy (TensorFlow backend), on 127.0.0.1.

    python tf_multiworker.py --ports 12345,12346 --index 0 --input dataset --out w0.json &
    python tf_multiworker.py --ports 12345,12346 --index 1 --input dataset --out w1.json

Builds TF_CONFIG for two workers on loopback, makes the strategy, and trains a tiny model with
plain Keras ``fit`` (``--callback`` adds ProgressiveUnfreeze with a 3-stage schedule). Inputs:
``numpy`` arrays, a ``dataset`` (tf.data, global batch), or a ``distributed`` dataset
(``strategy.experimental_distribute_dataset``). Writes (atomically) a JSON summary to ``--out``:
``ok`` and the history, or the error's type and message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from helpers_distributed.files import write_json  # noqa: E402

GLOBAL_BATCH = 8




def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", required=True, help="two comma-separated free ports")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--input", choices=("numpy", "dataset", "distributed"), default="dataset")
    parser.add_argument("--callback", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in args.ports.split(",")]},
        "task": {"type": "worker", "index": args.index},
    })
    import keras
    import tensorflow as tf
    from helpers_unfreeze.tiny import data, nested_model

    keras.config.disable_traceback_filtering()  # show where Keras fails
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data(32)
    with strategy.scope():
        model = nested_model()
        model.compile(keras.optimizers.Adam(1e-2), "mse")
    fit_data: dict = {"x": x, "y": y, "batch_size": GLOBAL_BATCH}
    if args.input != "numpy":
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        if args.input == "distributed":
            dataset = strategy.experimental_distribute_dataset(dataset)
        fit_data = {"x": dataset}
    callbacks = []
    if args.callback:
        from keras_tlft import ProgressiveUnfreeze

        callbacks = [ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"}, backbone_lr_ratio=0.5)]
    summary = {"keras": keras.__version__, "tensorflow": tf.__version__, "input": args.input,
               "replicas": strategy.num_replicas_in_sync}
    try:
        history = model.fit(**fit_data, epochs=3, verbose=0, callbacks=callbacks)
        summary.update(ok=True, history={k: [float(v) for v in vs]
                                         for k, vs in history.history.items()},
                       weights_sum=float(sum(np.sum(w) for w in model.get_weights())))
    except Exception as exc:  # the point of the probe: which error, for which input
        traceback.print_exc()
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "keras" in f.filename]
        summary.update(ok=False, error=type(exc).__name__, message=str(exc)[:300],
                       where=[f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                              for f in frames[-4:]])
    write_json(args.out, summary)


if __name__ == "__main__":
    main()
