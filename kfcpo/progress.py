"""A rich progress bar over env steps (the unit a safe-RL user budgets in), showing
return, cost, KL and steps/s; Lightning's own per-batch bar would show "1/1" forever."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kfcpo.metrics_schema import EPISODE_COST, EPISODE_RETURN, POLICY_KL, TIME_ENV_STEPS, TIME_STEPS_PER_S

REFRESH_S = 0.25  # env steps arrive in thousands per second; redraw at most this often


class EnvStepProgressBar(ProgressBar):
    """Lightning's progress bar, counted in env steps up to `total_steps`, showing the
    epoch's return, cost, KL and steps/s (module docstring)."""

    def __init__(self, total_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps
        self._enabled = True
        self._progress: Progress | None = None
        self._task: Any = None
        self._pending = 0
        self._last = 0.0

    def disable(self) -> None:
        """Stop drawing (Lightning calls this on ranks other than 0)."""
        self._enabled = False

    def enable(self) -> None:
        """Draw again."""
        self._enabled = True

    def _advance(self, steps: int) -> None:
        self._pending += steps
        now = time.monotonic()
        if self._progress is not None and now - self._last >= REFRESH_S:
            self._progress.advance(self._task, self._pending)
            self._pending, self._last = 0, now

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not in on_train_start: Lightning fetches the first batch (the first
        # epoch's whole rollout) before on_train_start, and the bar must count it too.
        if not (self._enabled and trainer.is_global_zero):
            return
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.completed:>9,.0f}/{task.total:,.0f} steps"),
            TextColumn("ret {task.fields[ret]}  cost {task.fields[cost]}  kl {task.fields[kl]}"),
            TextColumn("{task.fields[sps]} steps/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            refresh_per_second=4,
        )
        # A resumed run's counts: the module's state is restored before this hook.
        done, epochs = getattr(pl_module, "env_steps", 0), getattr(pl_module, "updates", 0)
        self._task = self._progress.add_task(
            "train", total=self.total_steps, completed=done, epoch=epochs,
            ret="-", cost="-", kl="-", sps="-",
        )
        self._progress.start()
        collector = getattr(pl_module, "collector", None)
        if collector is not None:
            # Each rank counts its own steps; the bar scales rank 0's by the world size.
            world = trainer.world_size
            collector.on_progress = lambda n: self._advance(n * world)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._progress is None:
            return
        m = trainer.progress_bar_metrics
        self._progress.update(
            self._task,
            completed=int(m.get(TIME_ENV_STEPS, 0)),
            epoch=trainer.current_epoch + 1,
            ret=_shown(m.get(EPISODE_RETURN), ".2f"),
            cost=_shown(m.get(EPISODE_COST), ".2f"),
            kl=_shown(m.get(POLICY_KL), ".4f"),
            sps=_shown(m.get(TIME_STEPS_PER_S), ",.0f"),
        )
        self._pending = 0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._stop()  # the error's message must not land inside a live bar

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _shown(value: float | None, spec: str) -> str:
    """A metric for the bar; "-" until it exists (no episode has finished yet)."""
    return "-" if value is None or math.isnan(float(value)) else format(float(value), spec)
