"""One stage of a :class:`~keras_tlft.Schedule`: from which epoch, what trains, at which rate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keras_tlft.checks import check_number, received
from keras_tlft.model.blocks import UnfreezeState, parse_unfreeze

__all__ = ["Stage"]


@dataclass(frozen=True)
class Stage:
    """One stage of a schedule: from ``epoch`` on (``None`` in a plateau schedule, where the
    metric decides), the backbone trains as ``unfreeze`` says. ``learning_rate``, when set, is the
    learning rate of the whole model in this stage (the head's; the backbone's follows from it),
    as in "4 frozen epochs, then unfreeze everything at 1e-5"."""

    unfreeze: UnfreezeState
    epoch: int | None = None
    learning_rate: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "unfreeze", parse_unfreeze(self.unfreeze, "unfreeze"))
        if self.epoch is not None and (
            isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0
        ):
            raise ValueError(
                "Invalid schedule: a stage's epoch must be an integer >= 0 (epochs count from 0, "
                f"as in `fit`). {received('epoch', self.epoch)}"
            )
        check_number("learning_rate", self.learning_rate, allow_none=True)

    def to_json(self) -> dict:
        data: dict = {"epoch": self.epoch, "unfreeze": self.unfreeze.to_json()}
        if self.learning_rate is not None:
            data["learning_rate"] = self.learning_rate
        return data

    @classmethod
    def from_json(cls, data) -> Stage:
        if isinstance(data, Stage):
            return data
        if not isinstance(data, Mapping):
            return cls(unfreeze=data)
        unknown = set(data) - {"epoch", "unfreeze", "learning_rate"}
        if unknown or "unfreeze" not in data:
            raise ValueError(
                "Invalid schedule stage: expected a mapping with 'unfreeze' and optionally "
                f"'epoch' and 'learning_rate'. {received('stage', dict(data))}"
            )
        return cls(data["unfreeze"], data.get("epoch"), data.get("learning_rate"))
