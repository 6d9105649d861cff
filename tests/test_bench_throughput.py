"""`kfcpo bench throughput` end to end on a tiny budget: one command, one markdown table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from kfcpo.tools.bench import cpu_meter
from kfcpo.tools.bench import throughput as bench


def test_layouts_resolve_per_env_count() -> None:
    assert bench.resolve("sync", 4).label == "sync"
    assert bench.resolve("async:2", 4).label == "async:2"
    assert bench.resolve("async:2", 1).label == "async:1"  # at most one worker per env
    assert bench.resolve("async:n", 8).label == "async:8"
    worker = bench.resolve("async:2+worker", 4)
    assert worker.label == "async:2+worker" and "env.engine=worker" in worker.overrides()
    assert bench.resolve("sync+worker", 4).label == "sync+worker"
    assert "env.engine=step" in bench.resolve("async:2", 4).overrides()
    with pytest.raises(Exception, match="async:W"):
        bench.resolve("threads", 2)


def test_cpu_meter_sees_a_busy_child() -> None:
    meter = cpu_meter.CpuMeter()
    meter.start()
    subprocess.run([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 0.5: pass"],
                   check=True)
    window = meter.stop()
    assert window.cpu_s >= 0.3 and 0.3 < window.cores <= 1.5


@pytest.mark.slow
def test_one_command_writes_the_whole_table(tmp_path: Path) -> None:
    out = tmp_path / "throughput.md"
    subprocess.run(
        [sys.executable, "-m", "kfcpo.cli", "bench", "throughput", "--envs", "SafetyPointCircle1-v0",
         "--num-envs", "1", "2", "--layouts", "sync", "async:2", "--algorithms", "cpo",
         "--steps-per-epoch", "200", "--epochs", "2", "--rounds", "1", "--out", str(out),
         "update_iters=1", "model.critic_iters=1"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| PointCircle1-v0 |")]
    # 1 env: sync, async:1; 2 envs: sync, async:2; plus the per-env summary row.
    assert len(rows) == 5, text
    assert "| 2 | async:2 | cpo |" in text and "| 1 | async:1 | cpo |" in text
    assert "†" not in text  # fit ran the layouts asked for
