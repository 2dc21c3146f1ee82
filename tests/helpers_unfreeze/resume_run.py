"""One training run for the resume tests, in its own process.

    python resume_run.py OUT.npz BACKUP_DIR --schedule epoch|plateau [--kill EPOCH:BATCH]
        [--backup-first] [--epochs N] [--save-freq N]

Trains the tiny nested model (6 epochs by default) with ProgressiveUnfreeze and BackupAndRestore
(a checkpoint per epoch, or every N batches with --save-freq). With --kill the process SIGKILLs
itself after that batch, as a preempted job would die; started again with the same arguments
(without --kill) it resumes from the last checkpoint. At the end it writes the weights, the
trainable flags, the optimizer's variables and the last epoch's logs to OUT.npz.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("backup_dir")
    parser.add_argument("--schedule", choices=["epoch", "plateau"], default="epoch")
    parser.add_argument("--kill", default=None)
    parser.add_argument("--backup-first", action="store_true")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--save-freq", type=int, default=None)
    args = parser.parse_args()

    import keras

    from helpers_unfreeze.tiny import data, nested_model
    from keras_tlft import ProgressiveUnfreeze

    model = nested_model()
    rng = np.random.default_rng(1)  # the same start in every process, whatever Keras's RNG did
    for v in model.weights:
        value = rng.normal(0, 0.3, v.shape)
        v.assign((np.abs(value) + 0.5 if "variance" in v.path else value).astype("float32"))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(32)
    xv, yv = data(16, seed=1)

    if args.schedule == "epoch":
        unfreeze = ProgressiveUnfreeze({0: "none", 2: 1, 4: "all"}, warmup_steps=6,
                                       backbone_lr_ratio=0.5, block_lr_decay=0.5,
                                       log_details=True)
    else:  # min_delta so large that each stage moves on after its second epoch
        unfreeze = ProgressiveUnfreeze("plateau", patience=1, min_delta=1e9, warmup_steps=6,
                                      log_details=True)
    backup = keras.callbacks.BackupAndRestore(args.backup_dir,
                                              save_freq=args.save_freq or "epoch")
    callbacks = [backup, unfreeze] if args.backup_first else [unfreeze, backup]
    last = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            last.update(logs, epoch=epoch)

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if args.kill == f"{self.epoch}:{batch}":
                os.kill(os.getpid(), signal.SIGKILL)

    # Only the plateau schedule needs validation (it watches val_loss).
    validation = (xv, yv) if args.schedule == "plateau" else None
    model.fit(x, y, validation_data=validation, batch_size=8, epochs=args.epochs, verbose=0,
              shuffle=False, callbacks=[*callbacks, Record(), Kill()])
    backbone = model.get_layer("backbone")
    np.savez(
        args.out,
        logs=json.dumps({k: float(v) for k, v in last.items()}),
        trainable=np.array([layer.trainable for layer in backbone.layers]),
        iterations=int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        stage_iterations=next(keras.ops.convert_to_numpy(v) for v in model.optimizer.variables
                              if v.name == "tlft_stage_iterations"),
        **{f"weight_{i}": w for i, w in enumerate(model.get_weights())},
        **{f"optimizer_{i}": keras.ops.convert_to_numpy(v)
           for i, v in enumerate(model.optimizer.variables)},
    )


if __name__ == "__main__":
    main()
