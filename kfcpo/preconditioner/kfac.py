"""K-FAC preconditioner (docs/algorithm.md 2.1, 3.2): per-layer Kronecker factors of the policy's Fisher.

For every Linear layer l of `actor.mean_net` the Fisher block of the augmented weight
[W | b] is approximated as F_l ~= G_l (x) A_l; the state-independent log-std has an exact
block (2 per dimension). `KFAC` composes the pieces, one concept per module:

* kfcpo.preconditioner.kfac_layout: where each layer's block sits in the flat vector;
* kfcpo.preconditioner.kfac_factors: the factors A_l, G_l, their estimators ("expected",
  "sampled") and moving average;
* kfcpo.preconditioner.kfac_eigen: float64 eigendecompositions and the damped inverse
  (F_l + damping I)^-1, with the damping exact for the Kronecker product;
* kfcpo.fisher: the exact quadratic form by one Jacobian-vector pass (`quad_mode: exact`).

This module owns the schedule (T_s refreshes, T_f inversions), skipping non-finite or
failed updates without losing state, the checkpoint state and the metrics. `solve` is
damped; `quad` (the trust-region measure) is not.
"""

from __future__ import annotations

from typing import Any

import torch

from kfcpo.fisher import LOG_STD_FISHER, exact_quad
from kfcpo.flat import params_of
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner import kfac_eigen, kfac_factors
from kfcpo.preconditioner.base import Preconditioner
from kfcpo.preconditioner.kfac_eigen import Eigen
from kfcpo.preconditioner.kfac_factors import ESTIMATORS, FACTOR_DTYPE
from kfcpo.preconditioner.kfac_layout import layout
from kfcpo.threads import one_thread

__all__ = ["ESTIMATORS", "FACTOR_DTYPE", "KFAC", "QUAD_MODES", "STATE_VERSION", "one_thread"]

QUAD_MODES = ("kfac", "exact")
STATE_VERSION = 1


class KFAC(Preconditioner):
    """Kronecker-factored Fisher of a `GaussianActor` (every trainable parameter must be a
    Linear weight/bias of `mean_net` or the log-std).

    Args:
        damping: Tikhonov damping lambda added to every Kronecker eigenvalue, (F + lambda I).
            1e-3 by default: the Fisher's natural scale is Sigma^-1 = exp(-2 log_std) = 1
            at the initial log-std (0), so lambda only regularizes directions whose curvature is
            below ~1e-3 of that (nearly policy-invariant ones) instead of reshaping the
            whole step as ACKTR's 1e-2 does; the trust region (`quad`) sets the length.
        decay: beta of the bias-corrected moving average of the factors (no identity init).
        update_every: T_s, refresh the factors on every T_s-th `update` call.
        invert_every: T_f, eigendecompose on every T_f-th `update` call.
        estimator: "expected" (exact expectation over actions) or "sampled".
        samples: actions per state for "sampled".
        quad_mode: "kfac" (the paper's K-FAC quadratic form) or "exact"; see `quad`.

    `metrics()`: `kfac_skipped` (updates refused for non-finite statistics or a failed
    eigendecomposition), `kfac_refreshes` and `kfac_inversions`, counted since the
    previous read (kfcpo.algorithm's contract: read and reset).
    """

    def __init__(
        self,
        actor: GaussianActor,
        damping: float = 1e-3,
        decay: float = 0.95,
        update_every: int = 1,
        invert_every: int = 1,
        estimator: str = "expected",
        samples: int = 1,
        quad_mode: str = "kfac",
    ) -> None:
        super().__init__(actor)
        if not damping >= 0.0:
            raise ValueError(f"damping must be >= 0, got {damping!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if update_every < 1 or invert_every < 1 or samples < 1:
            raise ValueError("update_every, invert_every and samples must be >= 1")
        if quad_mode not in QUAD_MODES:
            raise ValueError(f"quad_mode must be one of {', '.join(QUAD_MODES)}; got {quad_mode!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
        self.damping, self.decay = float(damping), float(decay)
        self.update_every, self.invert_every = int(update_every), int(invert_every)
        self.estimator, self.samples = estimator, int(samples)
        self.quad_mode = quad_mode
        self._quad_obs: torch.Tensor | None = None  # states of the last finite update call
        self.layers, self.log_std_at = layout(actor)
        self.numel = sum(p.numel() for p in params_of(actor))
        self._calls = 0  # update() calls: the T_s / T_f clock
        self._refreshes = 0  # factor refreshes folded into the EMA (bias correction)
        self._ema: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # raw (A, G) sums
        self._eigen: list[Eigen] | None = None
        self._skipped_total = 0
        self._counts = {"kfac_skipped": 0, "kfac_refreshes": 0, "kfac_inversions": 0}

    # -- the contract ------------------------------------------------------------------
    def update(self, obs: torch.Tensor) -> None:
        if self.quad_mode == "exact" and bool(torch.isfinite(obs).all()):
            self._quad_obs = obs.detach()
        call = self._calls
        self._calls += 1
        refresh, invert = call % self.update_every == 0, call % self.invert_every == 0
        if not (refresh or invert):
            return
        ema, refreshes = self._ema, self._refreshes
        if refresh:
            batch = kfac_factors.batch_factors(self.actor, self.layers, obs, self.estimator, self.samples)
            if batch is None:
                return self._skip()
            with one_thread():
                ema, refreshes = kfac_factors.fold(self._ema, batch, self.decay), refreshes + 1
        eigen = self._eigen
        if invert and ema is not None:
            with one_thread():
                eigen = kfac_eigen.decompose(ema, self.decay, refreshes)
            if eigen is None:
                return self._skip()
        # Commit only when every step succeeded: a failure above keeps the previous state.
        self._ema, self._refreshes, self._eigen = ema, refreshes, eigen
        self._counts["kfac_refreshes"] += int(refresh)
        self._counts["kfac_inversions"] += int(invert and ema is not None)

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        """(F + damping I)^-1 g under the Kronecker approximation."""
        with one_thread():
            self._check(g)
            g = g.detach()
            return kfac_eigen.apply(
                g, self.layers, self._bases(g.dtype), self._log_std(), lambda e: 1.0 / (e + self.damping)
            )

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        """v^T F v, undamped: the KL model 0.5 v^T F v of a step must not count the damping.

        quad_mode "kfac": under the Kronecker approximation, the same curvature `solve`
        inverts (so g^T x = quad(x) + damping |x|^2 for x = solve(g)). "exact": the exact
        Fisher form on the states of the last `update`, at the current parameters, by one
        forward-mode pass; K-FAC's form underestimates it for K-FAC's own directions, which
        a trust region then overshoots. The states are not checkpointed: until the first
        `update` after a resume, "exact" falls back to the Kronecker form.
        """
        self._check(v)
        if self.quad_mode == "exact" and self._quad_obs is not None:
            weight = self.layers[0].module.weight
            obs = self._quad_obs.to(weight.device, weight.dtype)
            return exact_quad(self.actor, obs, v.detach()).to(v.dtype)
        v = v.detach()
        with one_thread():
            total = kfac_eigen.mean_quad(v, self.layers, self._bases(v.dtype))
        log_std = self._log_std()
        if log_std is not None:
            total = total + LOG_STD_FISHER * v[log_std].square().sum()
        return total

    def state_dict(self) -> dict[str, Any]:
        def clone(ts: Any) -> Any:
            return None if ts is None else [[t.detach().clone() for t in group] for group in ts]

        eigen = None if self._eigen is None else [(e.e_a, e.q_a, e.e_g, e.q_g) for e in self._eigen]
        return {
            "version": STATE_VERSION,
            "calls": self._calls,
            "refreshes": self._refreshes,
            "skipped_total": self._skipped_total,
            "ema": clone(self._ema),
            "eigen": clone(eigen),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"K-FAC state version {state.get('version')!r}, expected {STATE_VERSION}")
        device = self.layers[0].module.weight.device

        def load(ts: Any) -> Any:
            if ts is None:
                return None
            if len(ts) != len(self.layers):
                raise ValueError(f"K-FAC state has {len(ts)} layers, the actor has {len(self.layers)}")
            return [[t.detach().to(device, FACTOR_DTYPE).clone() for t in group] for group in ts]

        ema, eigen = load(state["ema"]), load(state["eigen"])
        for (a, g), layer in zip(ema or [], self.layers, strict=False):
            if (g.shape[0], a.shape[0]) != layer.shape:
                raise ValueError(f"K-FAC factor shapes {(g.shape[0], a.shape[0])} != layer {layer.shape}")
        self._calls, self._refreshes = int(state["calls"]), int(state["refreshes"])
        self._skipped_total = int(state["skipped_total"])
        self._ema = None if ema is None else [(a, g) for a, g in ema]
        self._eigen = None if eigen is None else [Eigen(*e) for e in eigen]

    def metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self._counts.items()}
        self._counts = dict.fromkeys(self._counts, 0)
        return out

    def factors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Bias-corrected moving averages (A_l, G_l), float64 copies (diagnostics, tests)."""
        if self._ema is None:
            return []
        scale = 1.0 / (1.0 - self.decay**self._refreshes)
        return [(a * scale, g * scale) for a, g in self._ema]

    # -- helpers -----------------------------------------------------------------------
    def _skip(self) -> None:
        self._skipped_total += 1
        self._counts["kfac_skipped"] += 1

    def _check(self, flat: torch.Tensor) -> None:
        if flat.numel() != self.numel:
            raise ValueError(f"flat vector has {flat.numel()} entries, the actor has {self.numel}")

    def _bases(self, dtype: torch.dtype) -> list[Eigen]:
        """The eigenbases in `dtype`, or unit curvature while every update was skipped."""
        if self._eigen is not None:
            return [e.to(dtype) for e in self._eigen]
        if self._calls == 0:
            raise RuntimeError("KFAC.update(obs) must be called before solve/quad")
        # Every update so far was skipped: fall back to identity curvature (a plain,
        # trust-region-scaled gradient step) rather than stopping training.
        return [kfac_eigen.identity(layer, dtype) for layer in self.layers]

    def _log_std(self) -> slice | None:
        """The log-std's place in the flat vector; None when it is not trained."""
        if self.log_std_at is None:
            return None
        return slice(self.log_std_at, self.log_std_at + self.actor.log_std.numel())
