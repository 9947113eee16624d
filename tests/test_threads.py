"""The thread policy: CPUs from affinity and cgroup quota (fake cgroup trees), the precedence of
--threads / SPIKEFORGE_THREADS / OMP_NUM_THREADS, the load check on a fake /proc, the --nproc
split, and what config.json and `spikeforge bench` record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from test_train_synthetic import write_mnist

from spikeforge import cli, threads
from spikeforge.errors import ConfigError
from spikeforge.train import distributed


def _cgroup_v2(tmp: Path, own: str, quotas: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup2 mount at tmp/cg with ``cpu.max`` files; this process in cgroup ``own``."""
    for rel, text in quotas.items():
        (tmp / "cg" / rel).mkdir(parents=True, exist_ok=True)
        (tmp / "cg" / rel / "cpu.max").write_text(text + "\n")
    mountinfo = tmp / "mountinfo"
    mountinfo.write_text(f"41 31 0:38 / {tmp / 'cg'} rw,relatime - cgroup2 cgroup2 rw\n")
    proc_cgroup = tmp / "cgroup"
    proc_cgroup.write_text(f"0::{own}\n")
    return mountinfo, proc_cgroup


def _cgroup_v1(tmp: Path, root: str, own: str, quota: str, period: str,
               folder: str) -> tuple[Path, Path]:
    """A cgroup v1 ``cpu,cpuacct`` mount of hierarchy ``root`` at tmp/cpu, with the quota files
    in ``folder`` below it; this process in cgroup ``own``."""
    where = tmp / "cpu" / folder
    where.mkdir(parents=True, exist_ok=True)
    (where / "cpu.cfs_quota_us").write_text(quota + "\n")
    (where / "cpu.cfs_period_us").write_text(period + "\n")
    mountinfo = tmp / "mountinfo"
    mountinfo.write_text(
        f"35 31 0:35 {root} {tmp / 'memory'} rw - cgroup cgroup rw,memory\n"
        f"32 31 0:29 {root} {tmp / 'cpu'} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n")
    proc_cgroup = tmp / "cgroup"
    proc_cgroup.write_text(f"5:memory:{own}\n4:cpu,cpuacct:{own}\n0::/\n")
    return mountinfo, proc_cgroup


def test_cgroup_v2_quota_is_the_smallest_along_the_path(tmp_path):
    files = _cgroup_v2(tmp_path, "/jobs/a", {"jobs/a": "150000 100000", "jobs": "300000 100000"})
    assert threads.cgroup_cpu_limit(*files) == 1.5
    files = _cgroup_v2(tmp_path, "/jobs/a", {"jobs/a": "max 100000", "jobs": "50000 100000"})
    assert threads.cgroup_cpu_limit(*files) == 0.5


def test_cgroup_v2_without_a_quota_is_unlimited(tmp_path):
    files = _cgroup_v2(tmp_path, "/jobs/a", {"jobs/a": "max 100000"})
    assert threads.cgroup_cpu_limit(*files) is None
    assert threads.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing") is None


def test_cgroup_v1_quota_in_the_process_cgroup(tmp_path):
    files = _cgroup_v1(tmp_path, "/", "/docker/abc", "250000", "100000", "docker/abc")
    assert threads.cgroup_cpu_limit(*files) == 2.5
    files = _cgroup_v1(tmp_path, "/", "/docker/abc", "-1", "100000", "docker/abc")
    assert threads.cgroup_cpu_limit(*files) is None


def test_cgroup_v1_inside_a_container_reads_the_mount_root(tmp_path):
    # the container's cgroup is the mount's root: its quota sits at the mount point itself
    files = _cgroup_v1(tmp_path, "/docker/abc", "/docker/abc", "100000", "50000", "")
    assert threads.cgroup_cpu_limit(*files) == 2.0


@pytest.mark.parametrize("affinity, quota, expected", [
    (8, "250000 100000", 2),   # quota rounded down
    (8, "50000 100000", 1),    # never below one
    (2, "400000 100000", 2),   # affinity smaller than the quota
    (3, "max 100000", 3),      # no quota
])
def test_available_cpus_is_affinity_capped_by_the_quota(tmp_path, monkeypatch, affinity, quota,
                                                        expected):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: affinity)
    files = _cgroup_v2(tmp_path, "/a", {"a": quota})
    assert threads.available_cpus(*files) == expected


def test_precedence_flag_then_spikeforge_threads_then_omp_then_auto():
    env = {"SPIKEFORGE_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert threads.resolve(2, env, cpus=8) == threads.ThreadPolicy(2, "--threads", 8)
    assert threads.resolve(None, env, cpus=8) == threads.ThreadPolicy(3, "SPIKEFORGE_THREADS", 8)
    assert threads.resolve(None, {"OMP_NUM_THREADS": "5"}, cpus=8).threads == 5
    auto = threads.resolve(None, {}, cpus=8)
    assert (auto.threads, auto.source, auto.fixed) == (8, "auto", False)


def test_torchrun_workers_split_the_cpus_and_ignore_torchruns_omp_setting():
    # torchrun sets OMP_NUM_THREADS=1 and LOCAL_WORLD_SIZE in each worker
    env = {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}
    policy = threads.resolve(None, env, cpus=8)
    assert (policy.threads, policy.source, policy.processes) == (4, "auto", 2)
    assert threads.resolve(None, {**env, "SPIKEFORGE_THREADS": "3"}, cpus=8).threads == 3
    assert threads.resolve(None, {"LOCAL_WORLD_SIZE": "3"}, cpus=2).threads == 1


@pytest.mark.parametrize("flag, env, name", [
    (0, {}, "--threads"), (None, {"SPIKEFORGE_THREADS": "two"}, "SPIKEFORGE_THREADS"),
    (None, {"SPIKEFORGE_THREADS": "-1"}, "SPIKEFORGE_THREADS"),
])
def test_a_bad_count_names_its_source(flag, env, name):
    with pytest.raises(ConfigError, match=name):
        threads.resolve(flag, env, cpus=2)


def _fake_proc(tmp: Path, tasks: dict[int, tuple[int, list[tuple[str, int]]]]) -> Path:
    """/proc with pid -> (ppid, [(state, nice) per thread]) in the stat format of proc(5)."""
    for pid, (ppid, states) in tasks.items():
        def stat(tid, state, nice, ppid=ppid):
            fields = [state, str(ppid)] + ["0"] * 14 + [str(nice)] + ["0"] * 30
            return f"{tid} (python3 -c x) " + " ".join(fields) + "\n"
        (tmp / str(pid)).mkdir(parents=True)
        (tmp / str(pid) / "stat").write_text(stat(pid, states[0][0], states[0][1]))
        for i, (state, nice) in enumerate(states):
            task = tmp / str(pid) / "task" / str(pid + i)
            task.mkdir(parents=True)
            (task / "stat").write_text(stat(pid + i, state, nice))
    (tmp / "self").mkdir()
    return tmp


def test_busy_threads_counts_runnable_threads_of_other_processes_at_our_priority(tmp_path):
    import os

    nice = os.getpriority(os.PRIO_PROCESS, 0)
    proc = _fake_proc(tmp_path, {
        100: (1, [("R", nice)]),                               # a busy loop
        200: (1, [("R", nice), ("S", nice), ("R", nice)]),      # a 2-thread job
        300: (1, [("R", nice + 19)]),                           # a niced background job
        400: (1, [("R", nice), ("R", nice)]),                   # ourselves
        500: (7, [("R", nice)]), 501: (7, [("R", nice)]),       # --nproc siblings (parent 7)
        502: (7, [("S", nice)]),
    })
    assert threads.busy_threads(proc, own_pid=400) == 1 + 2 + 2     # 100, 200, 500 + 501
    assert threads.busy_threads(proc, own_pid=502) == 1 + 2 + 2 + 2  # 100, 200, 400, siblings
    assert threads.busy_threads(proc, own_pid=502, skip_siblings=True) == 1 + 2 + 2


@pytest.mark.parametrize("base, cpus, busy, processes, expected", [
    (2, 2, 0, 1, 2), (2, 2, 1, 1, 1), (2, 2, 4, 1, 1), (8, 8, 3, 1, 5), (4, 8, 0, 2, 4),
    (4, 8, 2, 2, 3), (1, 2, 0, 2, 1),
])
def test_load_share(base, cpus, busy, processes, expected):
    assert threads.load_share(base, cpus, busy, processes) == expected


def test_an_automatic_count_follows_the_load_and_a_fixed_one_does_not(monkeypatch):
    busy = {"n": 1}
    monkeypatch.setattr(threads, "busy_threads", lambda **_: busy["n"])
    with threads.applied(threads.ThreadPolicy(2, "auto", 2)):
        assert threads.adapt() == 1 == torch.get_num_threads()  # the first check: at once
        busy["n"] = 0
        assert threads.adapt() == 1  # checked at most every ADAPT_EVERY_S
        assert threads.adapt(force=True) == 2 == torch.get_num_threads()
    with threads.applied(threads.ThreadPolicy(2, "--threads", 2)):
        busy["n"] = 2
        assert threads.adapt(force=True) == 2
    assert threads.current() is None


def test_applied_restores_torchs_thread_count():
    before = torch.get_num_threads()
    with threads.applied(threads.ThreadPolicy(before + 1, "--threads", 8)):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_nproc_splits_the_cpus_between_the_workers(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda *a: 2)
    env, warning = distributed.worker_env(2, None, {})
    assert env["OMP_NUM_THREADS"] == "1" and "SPIKEFORGE_THREADS" not in env
    assert warning is None
    env, warning = distributed.worker_env(2, 2, {})
    assert env["SPIKEFORGE_THREADS"] == env["OMP_NUM_THREADS"] == "2"
    assert warning.count(".") == 1 and warning.endswith(
        "--nproc 2 with 2 threads each runs 4 threads on the 2 CPUs this process may use, so "
        "they will wait for each other; use --threads 1 (or leave the count out to split the "
        "CPUs).")


def test_nproc_above_the_cpu_count_is_refused_without_cuda(monkeypatch):
    """Each process holds a whole copy of the model and data: --nproc 64 on 2 CPUs took 17 GB
    before it was refused."""
    monkeypatch.setattr(threads, "available_cpus", lambda *a: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^--nproc 3 starts more processes than the 2 CPUs "
                       r"this process may use, .*; use --nproc 2 or fewer\.$"):
        distributed.worker_env(3, None, {})
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="--nproc must be a positive integer"):
            distributed.worker_env(bad, None, {})


def test_the_launchers_own_policy_is_not_passed_on_as_a_users_count(monkeypatch):
    """``spikeforge train --nproc 2`` runs under the automatic policy, which exports its own
    OMP_NUM_THREADS (2 on 2 CPUs); the workers must still split the CPUs (1 thread each), not
    take that export for a count the user fixed."""
    monkeypatch.setattr(threads, "available_cpus", lambda *a: 2)
    for name in ("OMP_NUM_THREADS", "SPIKEFORGE_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with threads.applied(threads.resolve()):
        assert os.environ["OMP_NUM_THREADS"] == "2"
        env, warning = distributed.worker_env(2)
    assert env["OMP_NUM_THREADS"] == "1" and "SPIKEFORGE_THREADS" not in env
    assert warning is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice is passed on
    with threads.applied(threads.resolve()):
        env, warning = distributed.worker_env(2)
    assert env["SPIKEFORGE_THREADS"] == "2" and "use --threads 1" in warning


def test_config_json_and_bench_record_the_thread_count(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPIKEFORGE_THREADS", raising=False)
    data = write_mnist(tmp_path / "mnist", n_train=64, n_test=32)
    run = tmp_path / "run"
    assert cli.main(["train", "rleaky", "-T", "2", "-b", "32", "--epochs", "1", "--data-dir",
                     str(data), "--out-dir", str(run), "--no-progress", "--threads", "1"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["threads"] == 1 and config["threads_policy"] == "from --threads"
    assert "threads: 1 (from --threads)" in capsys.readouterr().out
    monkeypatch.setenv("SPIKEFORGE_THREADS", "1")
    assert cli.main(["bench", "rleaky", "-T", "2", "--batch-size", "4", "--iters", "1",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threads"] == 1 and out["threads_policy"] == "from SPIKEFORGE_THREADS"


def test_torchs_openmp_runtime_starts_with_the_policys_count(tmp_path):
    """libgomp prints the settings it started with (OMP_DISPLAY_ENV): the command must export
    them before torch loads it, and the kernels share that one runtime."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(OMP_DISPLAY_ENV="true", SPIKEFORGE_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "spikeforge", "bench", "rleaky", "-T", "2",
                           "--batch-size", "4", "--iters", "1", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("OPENMP DISPLAY ENVIRONMENT BEGIN") == 1
    assert "OMP_NUM_THREADS = '1'" in proc.stderr


def test_a_fixed_count_above_the_cpus_is_warned_about_in_one_process_too(monkeypatch):
    """SPIKEFORGE_THREADS=999 on 2 CPUs ran 5.8x slower than the default without a word."""
    monkeypatch.setattr(threads, "available_cpus", lambda *a: 2)
    assert threads.oversubscription(threads.resolve(None, {})) is None
    policy = threads.resolve(None, {"SPIKEFORGE_THREADS": "9"})
    assert threads.oversubscription(policy) == (
        "SPIKEFORGE_THREADS asks for 9 threads on the 2 CPUs this process may use, so they will "
        "wait for each other; use 2 or fewer, or leave the count out.")
