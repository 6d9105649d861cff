"""K-FAC preconditioner (docs/algorithm.md 2.1, 3.2): per-layer Kronecker factors of the policy's Fisher.

For every Linear layer l of `actor.mean_net`, with input a (a 1 appended for the bias)
and pre-activation output s, the Fisher block of the augmented weight [W | b] (PyTorch's
(out, in) layout, row-major) is approximated as F_l ~= G_l (x) A_l with

    A_l = E[a a^T],   G_l = E[d d^T],   d = d log pi(a~|x) / d s,  a~ ~ pi(.|x).

Two estimators of G: "expected" takes the expectation over a~ in closed form, which for a
Gaussian gives G_l = E_x[J^T Sigma^-1 J] with J = d mu / d s (act_dim backward passes, no
noise); "sampled" draws `samples` actions per state (ACKTR's Monte Carlo estimate). The
state-independent log-std has an exact block: the Fisher of log sigma_k is 2 per dimension.

Inversion: eigendecompositions A = Q_A diag(e_A) Q_A^T, G = Q_G diag(e_G) Q_G^T in float64
(eigenvalues clamped at 0), then (F_l + damping I)^-1 vec(V) = Q_G [(Q_G^T V Q_A) /
(e_G e_A^T + damping)] Q_A^T: the damping is exact for the Kronecker product, not split
between the factors. `solve` is damped; `quad` (the trust-region measure) is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kfcpo.dist import all_mean
from kfcpo.fisher import LOG_STD_FISHER, exact_quad
from kfcpo.flat import params_of
from kfcpo.models.actor import GaussianActor
from kfcpo.precond.base import Preconditioner

ESTIMATORS = ("sampled", "expected")
QUAD_MODES = ("kfac", "exact")
# Factors are accumulated and inverted in float64: the eigenvalues of A span many decades
# (tanh features are strongly correlated) and float32 eigh loses the small ones.
FACTOR_DTYPE = torch.float64
STATE_VERSION = 1


@dataclass
class _Layer:
    """Where one Linear layer's parameters sit in the flat vector."""

    module: nn.Linear
    weight_at: int
    bias_at: int | None

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in + 1 if bias): the augmented weight the factors describe."""
        out_f, in_f = self.module.weight.shape
        return out_f, in_f + (self.bias_at is not None)


@dataclass
class _Eigen:
    """Clamped eigendecomposition of one layer's factors."""

    e_a: torch.Tensor
    q_a: torch.Tensor
    e_g: torch.Tensor
    q_g: torch.Tensor


def _offsets(actor: nn.Module) -> dict[int, int]:
    """id(parameter) -> its offset in the flat vector (kfcpo.flat order)."""
    out, at = {}, 0
    for p in params_of(actor):
        out[id(p)] = at
        at += p.numel()
    return out


def _sym_eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the symmetrized matrix, eigenvalues clamped at 0 (factors are PSD;
    round-off can make the smallest slightly negative)."""
    e, q = torch.linalg.eigh(0.5 * (m + m.T))
    return e.clamp_min(0.0), q


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the factor-sized work (EMA, eigh, solves; matrices of at most ~260^2) on one
    thread. It gains nothing from a second one, and when the cores are shared (other
    processes, rollout workers) every parallel region waits for a descheduled thread:
    measured on this project's 2-core machine under load, a 65x65 eigh took 26 ms instead
    of 0.8 ms and one elementwise op on a 257x257 factor 24 ms instead of 0.1 ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _second_moment(aa: torch.Tensor, a_sum: torch.Tensor, n: int, append_one: bool) -> torch.Tensor:
    """E[a a^T] from a^T a, the column sums and the row count n, with a 1 appended to each
    row when `append_one`: assembled rather than by concatenating a ones column to the
    (N, in) inputs, which would copy them."""
    if not append_one:
        return aa / n
    s = a_sum[None, :]
    top = torch.cat([aa, s.T], dim=1)
    bottom = torch.cat([s, torch.full((1, 1), float(n), dtype=aa.dtype, device=aa.device)], dim=1)
    return torch.cat([top, bottom], dim=0) / n


class KFAC(Preconditioner):
    """Kronecker-factored Fisher of a `GaussianActor` (every trainable parameter must be a
    Linear weight/bias of `mean_net` or the log-std).

    Args:
        damping: Tikhonov damping lambda added to every Kronecker eigenvalue, (F + lambda I).
            1e-3 by default: the Fisher's natural scale is Sigma^-1 = exp(-2 log_std) ~ 2.7
            at the initial log-std, so lambda only regularizes directions whose curvature is
            below ~1e-3 of that (nearly policy-invariant ones) instead of reshaping the
            whole step as ACKTR's 1e-2 does; the trust region (`quad`) sets the length.
        decay: beta of the bias-corrected moving average of the factors (no identity init).
        update_every: T_s, refresh the factors on every T_s-th `update` call.
        invert_every: T_f, eigendecompose on every T_f-th `update` call.
        estimator: "expected" (exact expectation over actions) or "sampled".
        samples: actions per state for "sampled".
        quad_mode: "kfac" (the spec's default) or "exact"; see `quad`.

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
        self.layers, self.log_std_at = self._layout(actor)
        self.numel = sum(p.numel() for p in params_of(actor))
        self._calls = 0  # update() calls: the T_s / T_f clock
        self._refreshes = 0  # factor refreshes folded into the EMA (bias correction)
        self._ema: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # raw (A, G) sums
        self._eigen: list[_Eigen] | None = None
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
            batch = self._batch_factors(obs)
            if batch is None:
                return self._skip()
            with one_thread():
                ema, refreshes = self._fold(batch), refreshes + 1
        eigen = self._eigen
        if invert and ema is not None:
            with one_thread():
                eigen = self._decompose(ema, refreshes)
            if eigen is None:
                return self._skip()
        # Commit only when every step succeeded: a failure above keeps the previous state.
        self._ema, self._refreshes, self._eigen = ema, refreshes, eigen
        self._counts["kfac_refreshes"] += int(refresh)
        self._counts["kfac_inversions"] += int(invert and ema is not None)

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        """(F + damping I)^-1 g under the Kronecker approximation."""
        with one_thread():
            return self._apply(g, lambda e: 1.0 / (e + self.damping))

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        """v^T F v, undamped: the KL model 0.5 v^T F v of a step must not count the damping.

        quad_mode "kfac": under the Kronecker approximation, the same curvature `solve`
        inverts (so g^T x = quad(x) + damping |x|^2 for x = solve(g)). "exact": the exact
        Fisher form on the states of the last `update`, at the current parameters, by one
        forward-mode pass; K-FAC's form underestimates it for K-FAC's own directions, which
        a trust region then overshoots. The states are not checkpointed: until the first
        `update` after a resume, "exact" falls back to the Kronecker form.
        """
        if v.numel() != self.numel:
            raise ValueError(f"flat vector has {v.numel()} entries, the actor has {self.numel}")
        if self.quad_mode == "exact" and self._quad_obs is not None:
            weight = self.layers[0].module.weight
            obs = self._quad_obs.to(weight.device, weight.dtype)
            return exact_quad(self.actor, obs, v.detach()).to(v.dtype)
        v = v.detach()
        with one_thread():
            total = self._kronecker_mean_quad(v)
        if self.log_std_at is not None:
            total = total + LOG_STD_FISHER * self._log_std(v).square().sum()
        return total

    def _kronecker_mean_quad(self, v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=v.dtype, device=v.device)
        for layer, eig in zip(self.layers, self._bases(v.dtype), strict=True):
            rot = eig.q_g.T @ self._block(v, layer) @ eig.q_a
            total = total + (torch.outer(eig.e_g, eig.e_a) * rot.square()).sum()
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
        self._eigen = None if eigen is None else [_Eigen(*e) for e in eigen]

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

    # -- curvature statistics ------------------------------------------------------------
    def _batch_factors(self, obs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """This batch's (A_l, G_l), averaged over ranks; None when any is non-finite."""
        n = obs.shape[0]
        sums, count = self._batch_sums(obs)
        with one_thread():  # from here on the work is factor-sized, independent of N
            stats = []
            for layer, (aa, a_sum, dd) in zip(self.layers, sums, strict=True):
                stats += [
                    _second_moment(aa, a_sum, n, layer.bias_at is not None),
                    torch.stack(dd).sum(0) / count,
                ]
            packed = all_mean(torch.cat([s.to(FACTOR_DTYPE).reshape(-1) for s in stats]))
            if not bool(torch.isfinite(packed).all()):
                return None
            out, at = [], 0
            for s in stats:
                out.append(packed[at : at + s.numel()].view_as(s))
                at += s.numel()
        return list(zip(out[0::2], out[1::2], strict=True))

    def _batch_sums(
        self, obs: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]], int]:
        """The N-sized work, per layer: (a^T a, column sums of a, [d^T d per output vector]),
        and the number of (state, vector) pairs the d^T d sum over."""
        weight = self.layers[0].module.weight
        obs = obs.detach().to(weight.device, weight.dtype)
        with torch.enable_grad():
            mean, inputs, outputs = self._forward(obs)
            grad_outs, count = self._output_grads(mean)
            dd: list[list[torch.Tensor]] = [[] for _ in outputs]
            for i, go in enumerate(grad_outs):
                # d (sum_n f_n) / d s gives each sample's own d_n: the sum, not the mean,
                # keeps per-sample output gradients unshrunk by N.
                ds = torch.autograd.grad(mean, outputs, go, retain_graph=i < len(grad_outs) - 1)
                for acc, d in zip(dd, ds, strict=True):
                    acc.append(d.T @ d)
        return [(a.T @ a, a.sum(0), d) for a, d in zip(inputs, dd, strict=True)], count

    def _forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The mean network run layer by layer with detached weights: returns the mean, each
        Linear's input and its output (the tensors d/ds is taken with respect to). A manual
        pass instead of hooks, so nothing fires during rollouts."""
        x, inputs, outputs = obs, [], []
        for m in self.actor.mean_net:
            if isinstance(m, nn.Linear):
                inputs.append(x.detach())
                bias = None if m.bias is None else m.bias.detach()
                x = F.linear(x, m.weight.detach(), bias)
                if not x.requires_grad:  # first layer: make its output the graph's leaf
                    x.requires_grad_(True)
                outputs.append(x)
            else:
                x = m(x)
        return x, inputs, outputs

    def _output_grads(self, mean: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """Vectors v with d = v^T d mu / d s, and how many (state, v) pairs G averages over.

        d log N(a~ | mu, sigma) / d mu = (a~ - mu) / sigma^2 = eps / sigma for a~ = mu + sigma
        eps. "expected": E_eps[(J^T eps/sigma)(.)^T] = sum_k J^T e_k e_k^T J / sigma_k^2, so
        the act_dim vectors e_k / sigma_k give the expectation exactly.
        """
        inv_std = torch.exp(-self.actor.log_std.detach()).to(mean.dtype)
        n, act_dim = mean.shape
        if self.estimator == "expected":
            eye = torch.eye(act_dim, dtype=mean.dtype, device=mean.device)
            return [(eye[k] * inv_std).expand(n, act_dim) for k in range(act_dim)], n
        eps = torch.randn(self.samples, n, act_dim, dtype=mean.dtype, device=mean.device)
        return list(eps * inv_std), n * self.samples

    def _fold(
        self, batch: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """EMA of the raw sums m <- beta m + (1 - beta) x (bias correction at read time)."""
        beta = self.decay
        if self._ema is None:
            return [((1 - beta) * a, (1 - beta) * g) for a, g in batch]
        return [
            (beta * ma + (1 - beta) * a, beta * mg + (1 - beta) * g)
            for (ma, mg), (a, g) in zip(self._ema, batch, strict=True)
        ]

    def _decompose(self, ema: list[tuple[torch.Tensor, torch.Tensor]], refreshes: int) -> list[_Eigen] | None:
        """Eigenpairs of the bias-corrected factors; None if eigh fails or is non-finite."""
        scale = 1.0 / (1.0 - self.decay**refreshes)
        eigen = []
        for a, g in ema:
            try:
                e_a, q_a = _sym_eigh(a * scale)
                e_g, q_g = _sym_eigh(g * scale)
            except torch.linalg.LinAlgError:
                return None
            if not all(bool(torch.isfinite(t).all()) for t in (e_a, q_a, e_g, q_g)):
                return None
            eigen.append(_Eigen(e_a, q_a, e_g, q_g))
        return eigen

    def _skip(self) -> None:
        self._skipped_total += 1
        self._counts["kfac_skipped"] += 1

    # -- flat-vector plumbing ----------------------------------------------------------
    def _apply(self, g: torch.Tensor, fn: Any) -> torch.Tensor:
        """fn(eigenvalue) applied to the Kronecker curvature: x = Q fn(e) Q^T g per block,
        in g's dtype (the float64 eigendecomposition is where precision matters; applying
        it in float32 halves the cost of the 256-wide products)."""
        if g.numel() != self.numel:
            raise ValueError(f"flat vector has {g.numel()} entries, the actor has {self.numel}")
        g = g.detach()
        out = torch.empty_like(g)
        for layer, eig in zip(self.layers, self._bases(g.dtype), strict=True):
            rot = eig.q_g.T @ self._block(g, layer) @ eig.q_a
            x = eig.q_g @ (rot * fn(torch.outer(eig.e_g, eig.e_a))) @ eig.q_a.T
            self._put(out, layer, x)
        if self.log_std_at is not None:
            at, k = self.log_std_at, self.actor.log_std.numel()
            out[at : at + k] = self._log_std(g) * fn(torch.tensor(LOG_STD_FISHER, dtype=g.dtype))
        return out

    def _bases(self, dtype: torch.dtype) -> list[_Eigen]:
        if self._eigen is not None:
            return [_Eigen(*(t.to(dtype) for t in (e.e_a, e.q_a, e.e_g, e.q_g))) for e in self._eigen]
        if self._calls == 0:
            raise RuntimeError("KFAC.update(obs) must be called before solve/quad")
        # Every update so far was skipped: fall back to identity curvature (a plain,
        # trust-region-scaled gradient step) rather than stopping training.
        return [self._identity(layer, dtype) for layer in self.layers]

    @staticmethod
    def _identity(layer: _Layer, dtype: torch.dtype) -> _Eigen:
        out_f, in_f = layer.shape
        kw = {"dtype": dtype, "device": layer.module.weight.device}
        return _Eigen(
            torch.ones(in_f, **kw), torch.eye(in_f, **kw), torch.ones(out_f, **kw), torch.eye(out_f, **kw)
        )

    @staticmethod
    def _block(flat: torch.Tensor, layer: _Layer) -> torch.Tensor:
        """The augmented (out, in [+1]) matrix [W | b] of `layer` inside `flat`."""
        out_f, in_f = layer.module.weight.shape
        w = flat[layer.weight_at : layer.weight_at + out_f * in_f].view(out_f, in_f)
        if layer.bias_at is None:
            return w
        return torch.cat([w, flat[layer.bias_at : layer.bias_at + out_f].view(out_f, 1)], dim=1)

    @staticmethod
    def _put(flat: torch.Tensor, layer: _Layer, block: torch.Tensor) -> None:
        out_f, in_f = layer.module.weight.shape
        flat[layer.weight_at : layer.weight_at + out_f * in_f] = block[:, :in_f].reshape(-1)
        if layer.bias_at is not None:
            flat[layer.bias_at : layer.bias_at + out_f] = block[:, in_f]

    def _log_std(self, flat: torch.Tensor) -> torch.Tensor:
        assert self.log_std_at is not None
        return flat[self.log_std_at : self.log_std_at + self.actor.log_std.numel()]

    @staticmethod
    def _layout(actor: GaussianActor) -> tuple[list[_Layer], int | None]:
        """Flat offsets of each Linear and of log_std; ValueError for any other parameter."""
        at = _offsets(actor)
        layers, covered = [], set()
        for m in actor.mean_net:
            if isinstance(m, nn.Linear):
                if id(m.weight) not in at or (m.bias is not None and id(m.bias) not in at):
                    raise ValueError("KFAC needs trainable weights and biases in every Linear layer")
                bias_at = None if m.bias is None else at[id(m.bias)]
                layers.append(_Layer(m, at[id(m.weight)], bias_at))
                covered |= {id(m.weight)} | ({id(m.bias)} if m.bias is not None else set())
        log_std_at = at.get(id(actor.log_std))
        if log_std_at is not None:
            covered.add(id(actor.log_std))
        if not layers or covered != set(at):
            raise ValueError(
                "KFAC supports actors whose trainable parameters are the Linear layers directly "
                "inside mean_net plus log_std"
            )
        return layers, log_std_at
