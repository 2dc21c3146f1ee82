"""One ``History`` for a run made of several ``fit`` calls (``fit_frozen``, then ``model.fit``)."""

from __future__ import annotations

import keras

__all__ = ['join_histories']


def join_histories(*histories) -> keras.callbacks.History:
    """One ``History`` for a run made of several ``fit`` calls, in the order given.

    Epoch numbers are kept (``fit_frozen`` gives ``0..N-1``, ``model.fit(initial_epoch=N)``
    gives ``N..``); a history whose numbers would repeat the previous one's (a ``fit`` without
    ``initial_epoch``) is renumbered to follow it. A metric missing from one part (logged by a
    callback of one stage only) reads ``None`` for those epochs.

    Args:
        *histories: ``keras.callbacks.History`` objects, as ``fit`` returns them.

    Returns:
        A new ``History`` whose ``epoch`` and ``history`` cover every part, and whose ``model``
        and ``params`` are those of the last part.

    Example:
    ```python
    frozen = tlft.fit_frozen(model, x, y, epochs=4)
    model.fit(x, y, epochs=10, initial_epoch=4)
    history = tlft.join_histories(frozen, model.history)
    history.epoch  # [0, 1, ..., 9]
    ```
    """
    for i, part in enumerate(histories):
        if not (hasattr(part, "history") and hasattr(part, "epoch")):
            raise TypeError(
                "join_histories expects the keras.callbacks.History objects that fit returns. "
                f"Received: histories[{i}]={part!r}"
            )
    joined = keras.callbacks.History()
    joined.epoch = []
    for part in histories:
        offset = 0
        if joined.epoch and part.epoch and part.epoch[0] <= joined.epoch[-1]:
            offset = joined.epoch[-1] + 1 - part.epoch[0]
        before = len(joined.epoch)
        for key in part.history:
            joined.history.setdefault(key, [None] * before)
        for key, values in joined.history.items():
            values.extend(part.history.get(key, [None] * len(part.epoch)))
        joined.epoch.extend(epoch + offset for epoch in part.epoch)
    if histories:
        joined.params = dict(getattr(histories[-1], "params", None) or {})
        if getattr(histories[-1], "model", None) is not None:
            joined.set_model(histories[-1].model)
    return joined

