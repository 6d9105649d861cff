"""The metrics schema: every value a run logs, declared once with its name, meaning and unit.

A run logs one row per epoch (metrics.csv, wandb, the progress bar), each value under a
namespaced key `<namespace>/<name>`, the way RL loggers group them:

* `episode/`: the episodes that finished this epoch, and the cost estimate Jc;
* `time/`: wall-clock timings, throughput and the env-step counter;
* `policy/`, `update/`, `critic/`: the update's own values;
* `preconditioner/`, `blender/`, `guard/`: the components' diagnostics. A component returns its
  own names (`w_c`, `rollback_frac`) from `metrics()`; `kfcpo.algorithm` puts them under
  its family's namespace (`namespaced`), so every key it can return is declared here.

Run folders written before the schema have the bare names (`ep_ret`, `jc`, `w_c`); each
entry keeps that name as `legacy`, and `LEGACY_ALIASES` maps them to the keys here for
every reader of a metrics.csv (kfcpo.run.metrics). Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

EPISODE, TIME, POLICY, UPDATE, CRITIC = "episode", "time", "policy", "update", "critic"
PRECONDITIONER, BLENDER, GUARD = "preconditioner", "blender", "guard"
NAMESPACES = (EPISODE, TIME, POLICY, UPDATE, CRITIC, PRECONDITIONER, BLENDER, GUARD)
SEPARATOR = "/"


@dataclass(frozen=True)
class Metric:
    """One logged value: `key` = namespace/name, what it means, its unit, and the bare
    column name run folders of an older kfcpo hold it under."""

    namespace: str
    name: str
    meaning: str
    unit: str
    legacy: str

    @property
    def key(self) -> str:
        """The logged key, `<namespace>/<name>`."""
        return f"{self.namespace}{SEPARATOR}{self.name}"


SCHEMA: dict[str, Metric] = {}


def _declare(namespace: str, name: str, meaning: str, unit: str, legacy: str | None = None) -> str:
    metric = Metric(namespace, name, meaning, unit, name if legacy is None else legacy)
    assert metric.key not in SCHEMA, f"metric {metric.key} declared twice"
    SCHEMA[metric.key] = metric
    return metric.key


# ------------------------------------------------------------------ episode/ (module)
EPISODE_RETURN = _declare(EPISODE, "return", "mean return of the episodes finished this epoch "
                          "(NaN until one ends, then the last such mean)", "reward", "ep_ret")
EPISODE_COST = _declare(EPISODE, "cost", "mean cost of the episodes finished this epoch "
                        "(NaN until one ends, then the last such mean)", "cost", "ep_cost")
EPISODE_LENGTH = _declare(EPISODE, "length", "mean length of the episodes finished this epoch",
                          "steps", "ep_len")
EPISODE_COUNT = _declare(EPISODE, "count", "episodes finished this epoch (all ranks)", "episodes",
                         "episodes")
EPISODE_JC = _declare(EPISODE, "jc", "the episode-cost estimate Jc the update used: mean over "
                      "the last `cost_window` episodes", "cost", "jc")

# ---------------------------------------------------------------- time/ (module, update)
TIME_ENV_STEPS = _declare(TIME, "env_steps", "env steps done so far (all ranks)", "steps",
                          "env_steps")
TIME_STEPS_PER_S = _declare(TIME, "steps_per_s", "env steps per second over the epoch's rollout, "
                            "policy update and critic regression (all ranks)", "steps/s", "steps_per_s")
TIME_ROLLOUT_S = _declare(TIME, "rollout_s", "the epoch's rollout (rank 0)", "s", "rollout_s")
TIME_UPDATE_S = _declare(TIME, "update_s", "the epoch's policy update (rank 0)", "s", "update_s")
TIME_CRITIC_S = _declare(TIME, "critic_s", "the epoch's critic regression (rank 0)", "s", "critic_s")

# ------------------------------------------------------- policy/, update/, critic/
POLICY_KL = _declare(POLICY, "kl", "mean KL of the updated policy from the rollout policy", "nats", "kl")
POLICY_LOG_STD = _declare(POLICY, "log_std", "mean log standard deviation of the policy's actions",
                          "log", "log_std")
UPDATE_POLICY_STEPS = _declare(UPDATE, "policy_steps", "policy steps proposed this epoch (minibatches)",
                               "steps", "policy_steps")
UPDATE_STOPPED_EARLY = _declare(UPDATE, "stopped_early", "1 when the update ended before its last "
                                "minibatch: the epoch's KL stop, or a refused whole-rollout step",
                                "flag", "stopped_early")
UPDATE_NONFINITE_STEPS = _declare(UPDATE, "nonfinite_steps", "policy steps skipped for a non-finite "
                                  "gradient or direction", "steps", "nonfinite_steps")
CRITIC_LOSS = _declare(CRITIC, "loss", "mean loss of the critics' regression (reward + cost, with L2)",
                       "value^2", "critic_loss")

# ------------------------------------------------------- preconditioner/ (components)
_declare(PRECONDITIONER, "lr", "Adam's learning rate now (identity)", "1")
_declare(PRECONDITIONER, "kfac_skipped", "K-FAC updates refused for non-finite statistics or a failed "
         "eigendecomposition", "count")
_declare(PRECONDITIONER, "kfac_refreshes", "K-FAC factor refreshes this epoch", "count")
_declare(PRECONDITIONER, "kfac_inversions", "K-FAC eigendecompositions this epoch", "count")
_declare(PRECONDITIONER, "cg_iters", "mean conjugate-gradient iterations per solve", "iterations")
_declare(PRECONDITIONER, "cg_residual", "mean final residual norm of a CG solve", "1")
_declare(PRECONDITIONER, "cg_solves", "CG solves this epoch", "count")

# -------------------------------------------------------------- blender/ (components)
BLENDER_W_C = _declare(BLENDER, "w_c", "mean share of the step spent on the cost direction (margin)", "1")
_declare(BLENDER, "nu", "mean trust-region scale of the step (margin; lagrangian with trust_region)", "1")
_declare(BLENDER, "projected_frac", "fraction of steps whose directions were projected (margin)", "1")
_declare(BLENDER, "cos_rc", "mean cosine of the reward and cost directions (margin)", "1")
_declare(BLENDER, "lagrange", "the Lagrange multiplier now (lagrangian)", "1")
_declare(BLENDER, "pid_p", "the PID multiplier's proportional term Kp (Jc - d) this epoch (lagrangian, "
         "multiplier: pid)", "1")
_declare(BLENDER, "pid_i", "the PID multiplier's integral term Ki I this epoch, I the violation summed "
         "and clamped at 0 (lagrangian, multiplier: pid)", "1")
_declare(BLENDER, "pid_d", "the PID multiplier's derivative term Kd max(0, rise of Jc over pid_d_delay "
         "epochs) this epoch (lagrangian, multiplier: pid)", "1")
_declare(BLENDER, "cpo_case", "mean CPO case number (0-4, Achiam et al. 2017's cases)", "case")
_declare(BLENDER, "cpo_lambda", "mean CPO dual variable lambda", "1")
_declare(BLENDER, "cpo_nu", "mean CPO dual variable nu", "1")
_declare(BLENDER, "pcpo_projected_frac", "fraction of PCPO steps projected onto the cost set", "1")
_declare(BLENDER, "pcpo_shift", "mean length of the PCPO projection's shift (0 when none)", "1")
_declare(BLENDER, "pcpo_rescale", "mean length factor of PCPO's `rescale` (1 when none)", "1")
_declare(BLENDER, "penalty_active_frac", "fraction of minibatches where the cost penalty was active", "1")
_declare(BLENDER, "cost_surrogate", "mean cost surrogate (pessimistic PPO clip) of the penalty blender",
         "cost")

# ------------------------------------------------------------ guard/ (update, components)
GUARD_COMMITTED_FRAC = _declare(GUARD, "committed_frac", "fraction of proposed policy steps the guard "
                                "committed", "1", "committed_frac")
GUARD_ROLLBACK_FRAC = _declare(GUARD, "rollback_frac", "fraction of proposed policy steps the guard "
                               "rolled back", "1")
_declare(GUARD, "kl_step", "mean KL of a committed step from the policy before it", "nats")
_declare(GUARD, "nonfinite_skips", "steps the guard refused for a non-finite step, KL or parameter", "count")
_declare(GUARD, "ls_step_frac", "mean fraction of the full step the line search committed", "1")
_declare(GUARD, "ls_backtracks", "mean step fractions rejected before the committed one", "tries")
_declare(GUARD, "ls_improve", "mean measured rise of the reward surrogate L_r by a committed step", "1")
_declare(GUARD, "ls_expected_improve", "mean first-order prediction of that rise", "1")

# The columns Lightning's CSV logger adds itself (not logged by kfcpo).
EPOCH_COLUMN, LIGHTNING_STEP_COLUMN = "epoch", "step"
# The env-step axis of curves and budgets.
STEP_KEY = TIME_ENV_STEPS
# The values the progress bar shows (everything else is logged only).
PROGRESS_BAR_KEYS = (EPISODE_RETURN, EPISODE_COST, POLICY_KL, TIME_STEPS_PER_S, TIME_ENV_STEPS)
# Curves `kfcpo plot` draws (key, axis label); always read, NaN where a run has none.
CURVE_METRICS = ((EPISODE_RETURN, "episode return"), (EPISODE_COST, "episode cost"))

# Bare column names of run folders written before the schema -> their keys now.
LEGACY_ALIASES: dict[str, str] = {m.legacy: m.key for m in SCHEMA.values() if m.legacy != m.key}


def namespaced(namespace: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """A component's own metric names put under its family's namespace."""
    return {f"{namespace}{SEPARATOR}{name}": value for name, value in metrics.items()}


def canonical(column: str) -> str:
    """A metrics.csv column under its schema key (an older run folder's bare name mapped;
    any other column unchanged)."""
    return LEGACY_ALIASES.get(column, column)


def canonical_row(row: Mapping[str, str]) -> dict[str, str]:
    """A metrics.csv row with its columns under their schema keys. Where a row holds a
    value under both names (an old folder continued by a newer kfcpo), the non-empty one
    wins, the schema key's if both are."""
    out: dict[str, str] = {}
    for column, value in row.items():
        key = canonical(column)
        if key not in out or (value not in ("", None) and (out[key] in ("", None) or column == key)):
            out[key] = value
    return out


def canonical_header(header: list[str]) -> list[str]:
    """A metrics.csv header under schema keys, in order, without repeats."""
    return list(dict.fromkeys(canonical(c) for c in header))
