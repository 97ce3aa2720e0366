"""``torchrun --nproc-per-node 2 -m camlib.bench faithfulness`` (gloo over loopback, CPU) gives the
same CSV as a single-process run, value by value."""

from __future__ import annotations

import math
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch.distributed as dist

from bench_tiny import make_data, read_csv
from camlib.bench import distributed

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


def _launcher() -> list[str] | None:
    if not (dist.is_available() and dist.is_gloo_available()):
        return None
    exe = shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on the CPU even on a GPU machine
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _args(data, out, *extra) -> list[str]:
    return ["faithfulness", "--data", str(data), "--out", str(out), "--model", "bench_tiny:build", "--device", "cpu",
            "--no-progress", "--steps", "5", "--methods", "gradcam", "liftcam", "ablationcam", "--seed", "1",
            "--batch-size", "2", *extra]


@pytest.mark.distributed
@pytest.mark.skipif(_launcher() is None, reason="torch.distributed with gloo is not available")
def test_torchrun_matches_single_process(tmp_path):
    data = make_data(tmp_path / "data", n=5)
    single, multi = tmp_path / "single", tmp_path / "multi"
    env = _env()
    run = subprocess.run([sys.executable, "-m", "camlib.bench", *_args(data, single)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    # half of the work first (resumption across launch modes), then the rest under torchrun
    launcher = _launcher()
    cmd = [*launcher, "--standalone", "--nproc-per-node", "2", "-m", "camlib.bench", *_args(data, multi)]
    for extra in (["--n-images", "3"], []):
        run = subprocess.run([*cmd, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    assert not list(multi.glob("*.rank*.csv"))  # merged and removed

    a, b = read_csv(single / "faithfulness.csv"), read_csv(multi / "faithfulness.csv")
    assert len(a) == len(b) == 5 * 3
    assert [(r["image"], r["method"]) for r in a] == [(r["image"], r["method"]) for r in b]
    for ra, rb in zip(a, b):
        for field in ra:
            if field in ("image", "method", "seconds"):
                continue
            x, y = float(ra[field]), float(rb[field])
            assert math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6), (ra["image"], ra["method"], field, x, y)
    md = (multi / "faithfulness.md").read_text()
    assert "| LIFT-CAM | 5 |" in md
    strip = lambda text: [line for line in text.splitlines() if line.startswith("| ")]  # noqa: E731
    table_a = [line.rsplit("|", 2)[0] for line in strip((single / "faithfulness.md").read_text())]
    table_b = [line.rsplit("|", 2)[0] for line in strip(md)]  # all but the s / image column
    assert table_a == table_b


def test_shard_and_env():
    env = distributed.DistEnv(rank=1, world_size=3, local_rank=1, backend="gloo")
    assert distributed.shard(list(range(8)), env) == [1, 4, 7]
    assert distributed.shard(list(range(8)), distributed.DistEnv()) == list(range(8))
    assert distributed.env_from_environ({}) == (0, 1, 0)
    assert distributed.env_from_environ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == (2, 4, 0)
    with pytest.raises(RuntimeError):
        distributed.env_from_environ({"WORLD_SIZE": "2", "RANK": "2"})
