"""`shuffle_options`: every training question's options in a freshly drawn order each epoch.

A policy trained on options in one fixed order can earn reward from a letter prior (always "A")
instead of from the option texts; re-drawing the order each epoch takes that shortcut away. Med-RLVR
trained on MedQA as given, so this is off by default.

The order is a pure function of (seed, epoch, row index): every process of a data-parallel run, and
a resumed run, sees the same prompts, and the gold letter always follows its option's text.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import Any

import datasets
from torch.utils.data import Dataset as TorchDataset
from transformers import TrainerCallback

from medrlvr_trl.prompts import LETTERS

logger = logging.getLogger(__name__)


def option_order(num_options: int, *, seed: int, epoch: int, index: int) -> list[int]:
    """Position k of the new order holds option `order[k]` of the row as given."""
    order = list(range(num_options))
    random.Random(f"{seed}:{epoch}:{index}").shuffle(order)  # a str seed hashes the same in every process
    return order


def reorder_options(row: dict[str, Any], order: list[int]) -> dict[str, Any]:
    """A copy of a loaded row with its options in `order`; `answer` and `answer_index` follow the gold text."""
    gold = order.index(row["answer_index"])
    return {
        **row,
        "options": [row["options"][i] for i in order],
        "answer": LETTERS[gold],
        "answer_index": gold,
    }


def shuffled_rows(rows: datasets.Dataset, *, seed: int, epoch: int) -> datasets.Dataset:
    """The loaded rows with every question's options in epoch `epoch`'s order."""

    def redraw(row: dict[str, Any], index: int) -> dict[str, Any]:
        order = option_order(len(row["options"]), seed=seed, epoch=epoch, index=index)
        return reorder_options(row, order)

    return rows.map(redraw, with_indices=True, desc=f"drawing option orders for epoch {epoch}")


class EpochViews(TorchDataset):
    """A training set that `set_epoch` swaps for another epoch's version (built by `make`, one at a time)."""

    def __init__(self, make: Callable[[int], Any], first: Any | None = None) -> None:
        self._make = make
        self.epoch, self._data = 0, make(0) if first is None else first

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._data = epoch, self._make(epoch)
            logger.info("option orders redrawn for epoch %d", epoch)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> Any:
        return self._data[index]


class OptionOrderCallback(TrainerCallback):
    """Switches a Trainer's `EpochViews` to the epoch about to start (also the right one after a resume).

    accelerate's data loader also calls `set_epoch` on a dataset that has one, unless its sampler has
    one; this callback does not depend on which sampler a trainer uses."""

    def __init__(self, views: EpochViews) -> None:
        self.views = views

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: ANN001 (TrainerCallback's signature)
        self.views.set_epoch(math.floor((state.epoch or 0) + 1e-6))


def use_epoch_views(trainer: Any, make: Callable[[int], Any]) -> EpochViews:
    """Give a Hugging Face Trainer epoch-dependent training data: its dataset becomes an `EpochViews`
    whose epoch 0 is the dataset it was built with, and a callback switches epochs.

    Needs the data loader to read from this process's copy of the dataset (no worker processes).
    """
    if trainer.args.dataloader_num_workers:
        raise ValueError(
            "shuffle_options needs dataloader_num_workers 0 (workers keep their own copy of the data)"
        )
    views = EpochViews(make, first=trainer.train_dataset)
    trainer.train_dataset = views
    trainer.add_callback(OptionOrderCallback(views))
    return views
