"""A fresh process that loads a saved model, for the reload tests.

    python reload_run.py predict X.npy MODEL.keras OUT.npy [MODEL.keras OUT.npy ...]
        Loads each MODEL.keras with plain Keras in a process where importing keras_tlft fails
        (as where it is not installed), predicts X and writes the predictions.
    python reload_run.py resume MODEL.keras OUT.npz [--no-resume-from]
        Loads MODEL.keras (keras_tlft imported) and resumes its fine-tuning at epoch 2 until
        epoch 4 with ProgressiveUnfreeze(resume_from=MODEL.keras); writes the weights, the
        optimizer's variables and the logged trainable counts.
    python reload_run.py stages MODEL.keras X.npy Y.npy OUT.json
        Loads MODEL.keras (keras_tlft imported), fits it 2 epochs with ProgressiveUnfreeze
        ({0: "none", 1: 2}, verbose=1) and writes the logged trainable counts.
    python reload_run.py legacy MODEL.keras X.npy OUT.npy
        Imports keras_tlft.preprocessing (as a file saved by keras-tlft 0.1 needs), loads
        MODEL.keras and writes its predictions of X.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def predict(x_path, *paths) -> None:
    sys.modules["keras_tlft"] = None  # `import keras_tlft` now raises ImportError
    import keras
    import numpy as np

    x = np.load(x_path)
    for path, out_path in zip(paths[::2], paths[1::2]):
        model = keras.saving.load_model(path)
        np.save(out_path, model.predict(x, verbose=0))
    assert not any(name.startswith("keras_tlft") for name in sys.modules if sys.modules[name])


def resume(path, out_path, use_resume_from) -> None:
    import warnings

    import keras
    import numpy as np

    from helpers_unfreeze.tiny import data
    from keras_tlft import ProgressiveUnfreeze

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras: "Skipping variable loading for optimizer"
        model = keras.saving.load_model(path)
    callback = ProgressiveUnfreeze({0: "none", 1: 1, 3: "all"},
                                   resume_from=path if use_resume_from else None)
    x, y = data(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, verbose=0,
                            shuffle=False, callbacks=[callback])
    np.savez(
        out_path,
        weights=np.concatenate([np.ravel(w) for w in model.get_weights()]),
        optimizer=np.concatenate([np.ravel(keras.ops.convert_to_numpy(v))
                                  for v in model.optimizer.variables]),
        trainable_params=np.array(history.history["trainable_params"]),
        warnings=np.array([str(w.message) for w in caught] or [""]),
    )


def stages(path, x_path, y_path, out_path) -> None:
    import json

    import keras
    import numpy as np

    from keras_tlft import ProgressiveUnfreeze

    model = keras.saving.load_model(path)
    history = model.fit(np.load(x_path), np.load(y_path), epochs=2, verbose=0,
                        callbacks=[ProgressiveUnfreeze({0: "none", 1: 2}, verbose=1)])
    with open(out_path, "w") as f:
        json.dump(history.history["trainable_params"], f)


def legacy(path, x_path, out_path) -> None:
    import keras
    import numpy as np

    import keras_tlft.preprocessing  # noqa: F401  registers ImagePreprocessing

    np.save(out_path, keras.saving.load_model(path).predict(np.load(x_path), verbose=0))


if __name__ == "__main__":
    if sys.argv[1] == "predict":
        predict(*sys.argv[2:])
    elif sys.argv[1] == "stages":
        stages(*sys.argv[2:6])
    elif sys.argv[1] == "legacy":
        legacy(*sys.argv[2:5])
    else:
        resume(sys.argv[2], sys.argv[3], "--no-resume-from" not in sys.argv)
