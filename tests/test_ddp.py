"""Several processes (gloo on CPU): ranks never diverge, and a 2-rank update is the
1-rank update over the concatenated batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from kfcpo.algorithm import Algorithm
from kfcpo.data.batch import Batch
from kfcpo.flat import get_flat
from kfcpo.models import GaussianActor
from kfcpo.update import UpdateConfig, policy_update

ROOT = Path(__file__).resolve().parents[1]
OBS_DIM, ACT_DIM, N = 6, 2, 256
# K-FAC with decay 0: each update's factors are exactly the (all-reduced) batch ones.
PRECONDITIONERS = {"kfac": {"decay": 0.0}, "cg": {}, "identity": {}}
DDP_RUN = [
    "steps_per_epoch=1000", "total_steps=2000", "env.num_envs=1", "env.vector=sync",
    "trainer.devices=2", "trainer.strategy=ddp", "check_sync=true", "logger.wandb.mode=disabled",
]


def fixed_batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(N, OBS_DIM, generator=g)
    act = torch.randn(N, ACT_DIM, generator=g)
    return Batch(
        obs=obs, act=act, logp_old=torch.full((N,), -2.0), adv_r=torch.randn(N, generator=g),
        adv_c=torch.randn(N, generator=g), ret_r=torch.zeros(N), ret_c=torch.zeros(N),
    )


def run_update(precond_name: str, batch: Batch) -> torch.Tensor:
    """One epoch's policy update with kfcpo's blender and guard; the final parameters."""
    torch.manual_seed(1)
    actor = GaussianActor(OBS_DIM, ACT_DIM, [8, 8])
    with torch.no_grad():
        batch.logp_old = actor.log_prob(batch.obs, batch.act)
    algorithm = Algorithm.from_sections(
        actor, {"name": precond_name, **PRECONDITIONERS[precond_name]},
        {"name": "margin", "target_kl": 0.005}, {"name": "kl_rollback", "target_kl": 0.05},
    )
    # One minibatch per pass (the rank's whole share) so both runs see the same sets.
    cfg = UpdateConfig(update_iters=3, minibatch_size=len(batch), critic_iters=0, critic_minibatch_size=1,
                       cost_limit=25.0)
    policy_update(actor, batch, algorithm, 20.0, cfg, torch.Generator().manual_seed(0))
    return get_flat(actor)


def _rank_main(rank: int, world: int, port: int, name: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    batch = fixed_batch()
    half = N // world
    mine = batch.select(torch.arange(rank * half, (rank + 1) * half))
    flat = run_update(name, mine)
    if rank == 0:
        torch.save(flat, out)
    _finish_rank()


def _finish_rank() -> None:
    """Tear the group down, then leave without the interpreter's C++ teardown. A rank
    whose work was done (its output written, the barrier passed) still aborted now and
    then at exit under load ("terminate called without an active exception": a gloo
    thread met static destruction), which spawn reports as a failed rank. Errors before
    this point propagate as usual; only a finished rank exits here."""
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRECONDITIONERS))
def test_two_rank_update_equals_one_rank_update_over_the_union(name, tmp_path) -> None:
    torch.set_num_threads(1)
    single = run_update(name, fixed_batch())
    out = str(tmp_path / "rank0.pt")
    mp.start_processes(_rank_main, args=(2, free_port(), name, out), nprocs=2, start_method="spawn")
    double = torch.load(out)
    assert not torch.equal(single, run_update(name, fixed_batch().select(torch.arange(N // 2))))
    torch.testing.assert_close(double, single, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["kfcpo", "cpo"])
def test_ranks_hold_identical_parameters_after_every_update(algorithm, tmp_path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "kfcpo.cli", "fit", "--config", str(ROOT / "conf" / "goal.yaml"),
           f"algorithm={algorithm}", *DDP_RUN, f"out_dir={run}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ranks diverged" not in proc.stderr
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written by rank 0 only
    assert rows[1].split(",")[rows[0].split(",").index("time/env_steps")] == "1000.0"


def fit_with_test_double(tmp_path: Path, algorithm: str, family: str, cls: str,
                         params: str) -> subprocess.CompletedProcess:
    """A 2-rank `kfcpo fit` of `algorithm` whose `family` component is the test double
    faulty_components.`cls`, registered the way users add a component."""
    extra = tmp_path / "catalogue" / family
    extra.mkdir(parents=True)
    (extra / "double.yaml").write_text(
        f"description: test double\ntarget: faulty_components.{cls}\nparams: {params}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    cmd = [sys.executable, "-m", "kfcpo.cli", "fit", "--config", str(ROOT / "conf" / "goal.yaml"),
           f"algorithm={algorithm}", f"registry_paths=[{tmp_path / 'catalogue'}]",
           f"{family}.name=double", *DDP_RUN, f"out_dir={tmp_path / 'run'}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_the_sync_check_stops_a_fit_whose_ranks_drift_apart(tmp_path) -> None:
    """The control of the test above: with rank 1's steps 0.1% longer (a test double
    registered the way users add a blender), the same fit fails on the check."""
    params = ("{k: 10.0, margin: 0.7, normalize: true, project: adaptive, target_kl: 0.005, "
              "inner: fisher, unit_directions: true, trend: 2.0}")
    proc = fit_with_test_double(tmp_path, "kfcpo", "blender", "SkewedOnRank1", params)
    assert proc.returncode != 0
    assert "ranks diverged: 'actor." in proc.stderr, proc.stderr[-3000:]


def _diverged_rank_main(rank: int, port: int, out: str) -> None:
    from kfcpo.dist import assert_same_on_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=2)
    same, differs = torch.ones(3), torch.tensor([1.0, 2.0, 3.0 + rank * 1e-5])
    assert_same_on_ranks({"same": same})
    try:
        assert_same_on_ranks({"same": same, "w": differs})
        message = "no error"
    except RuntimeError as err:
        message = str(err)
    if rank == 0:
        Path(out).write_text(message)
    _finish_rank()


def test_sync_check_names_the_diverged_tensor(tmp_path) -> None:
    out = str(tmp_path / "message.txt")
    mp.start_processes(_diverged_rank_main, args=(free_port(), out), nprocs=2, start_method="spawn")
    assert Path(out).read_text().startswith("ranks diverged: 'w' differs between ranks")


@pytest.mark.slow
def test_a_failing_rank_fails_the_job_within_bounded_time(tmp_path) -> None:
    params = "{lr: 0.0003, max_grad_norm: 40.0}"
    proc = fit_with_test_double(tmp_path, "ppo_lag", "preconditioner", "FailsOnRank1", params)
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr
