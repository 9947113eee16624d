"""How many threads torch and the OpenMP kernels use, chosen so that a shared CPU does not
collapse the throughput.

The count comes from, first to last (:func:`resolve`):

1. ``--threads N`` on the command line;
2. ``SPIKEFORGE_THREADS=N`` in the environment;
3. ``OMP_NUM_THREADS=N`` (outside a ``torchrun`` worker, where the launcher sets it);
4. automatic: the CPUs this process may use (:func:`available_cpus`: its affinity mask and its
   cgroup CPU quota), divided between the ``LOCAL_WORLD_SIZE`` processes ``--nproc`` starts.

An automatic count also follows the load (:func:`adapt`, called between batches: at the first batch,
then at most every :data:`ADAPT_EVERY_S`): it drops to the CPUs that other runnable threads of our
priority leave free, at least one, and climbs back when they finish. A parallel region of N threads
ends when its slowest thread does; beside a busy process one of ours waits a whole scheduler slice
for a core at every region, which is how ``spikeforge bench rleaky`` fell from 16,000 to 131 img/s
(issue 14). A fixed count (1–3 above) never changes, so a run with ``--threads`` is reproducible bit
for bit; an automatic one may sum per-thread partial gradients in a different order when the load
changes.

Spin-waiting: OpenMP's wait policy is left as the runtime (or the user: ``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``) sets it. Sleeping idle threads (``OMP_WAIT_POLICY=passive``) avoid the
collapse too, but pay a futex wake-up at every parallel region: on a quiet 2-core machine they
halved ``spikeforge bench rleaky`` (about 21,000 against 40,000 img/s with libgomp's default
spin) and cost fc-lif a quarter, and short spin counts (3,000–10,000) were slower still. The
load-following count above removes the collapse instead: beside busy processes the run drops to
the free CPUs, where nobody waits at a barrier for a core. The kernels themselves run one thread
below a size threshold (``threads_for`` in ``kernels/neuron_math.h``, ``team`` in
``sparse_kernels.cpp``) and take their thread count from ``torch.get_num_threads()`` on each
call; torch's bundled libgomp and the kernel libraries share one runtime (same soname
``libgomp.so.1``), so :func:`apply` sets both at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

ENV = "SPIKEFORGE_THREADS"
#: Seconds between two load checks of an automatic thread count.
ADAPT_EVERY_S = 2.0
#: Threads niced more than this many levels below ours are ignored by the load check: CFS
#: gives each nice level 1.25× less weight, so at +5 they take under a third of a core from us.
NICE_IGNORED_ABOVE = 5
MOUNTINFO = Path("/proc/self/mountinfo")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC = Path("/proc")


@dataclass(frozen=True)
class ThreadPolicy:
    """The resolved thread count of this process.

    ``threads``: threads for torch and the kernels; ``source``: where it came from (``--threads``,
    ``SPIKEFORGE_THREADS``, ``OMP_NUM_THREADS`` or ``auto``); ``cpus``: CPUs this process may
    use; ``processes``: local processes sharing them (``--nproc``).
    """

    threads: int
    source: str
    cpus: int
    processes: int = 1

    @property
    def fixed(self) -> bool:
        """Whether the count was given by the user (and never adapts to the load)."""
        return self.source != "auto"

    def describe(self) -> str:
        """Where the count comes from, e.g. ``from --threads`` or ``auto: up to 2 = 2 CPUs``."""
        if self.fixed:
            return f"from {self.source}"
        share = f" / {self.processes} processes" if self.processes > 1 else ""
        return (f"auto: up to {self.threads} = {self.cpus} CPUs{share}, fewer while other "
                "processes keep them busy")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _mounts(mountinfo: Path) -> list[tuple[str, str, str, str]]:
    """(root, mount point, fs type, super options) of each cgroup mount in ``mountinfo``."""
    found = []
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4], rest[0], rest[2]))
    return found


def _read_quota(folder: Path, v2: bool) -> float | None:
    """CPUs allowed by ``folder``'s own quota (``cpu.max`` or ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``), None when unlimited or unreadable."""
    try:
        if v2:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota == "max":
                return None
        else:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        q, p = int(quota), int(period)
    except (OSError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(mountinfo: Path = MOUNTINFO, proc_cgroup: Path = PROC_CGROUP
                     ) -> float | None:
    """CPUs this process's cgroup may use (quota / period, the smallest along the path from its
    cgroup up to the mount's root; v2 ``cpu.max`` and v1 ``cpu.cfs_quota_us``), None when no
    quota limits it. Source: the kernel's cgroup v1 CFS bandwidth and cgroup v2 ``cpu.max``
    documentation (Documentation/scheduler/sched-bwc.rst, admin-guide/cgroup-v2.rst)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}  # "v2" or v1 controller -> cgroup path
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            paths["v2"] = parts[2]
        for controller in parts[1].split(","):
            paths.setdefault(controller, parts[2])
    limits = []
    for root, point, fstype, options in _mounts(mountinfo):
        v2 = fstype == "cgroup2"
        if v2:
            path = paths.get("v2")
        elif "cpu" in options.split(","):
            path = paths.get("cpu")
        else:
            continue
        if path is None:
            continue
        # the mount shows the hierarchy from `root` down; a container sees its own cgroup as /
        rel = os.path.relpath(path, root) if path.startswith(root) else "."
        folder = Path(point) / ("" if rel == "." else rel)
        while True:
            limit = _read_quota(folder, v2)
            if limit is not None:
                limits.append(limit)
            if folder == Path(point) or folder.parent == folder:
                break
            folder = folder.parent
    return min(limits) if limits else None


def available_cpus(mountinfo: Path = MOUNTINFO, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup quota rounded down
    (a thread beyond the quota is throttled mid-region, which stalls the whole team), >= 1."""
    cpus = affinity_cpus()
    limit = cgroup_cpu_limit(mountinfo, proc_cgroup)
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def _positive_int(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{where} must be a positive integer, got {text!r}; give the number "
                          "of threads (or leave it out to choose from the free CPUs).")
    return value


def oversubscription(policy: ThreadPolicy, processes: int = 1) -> str | None:
    """A one-sentence warning when ``processes`` processes of ``policy.threads`` threads each
    need more than ``policy.cpus`` CPUs (their threads would wait for each other), else None."""
    total = processes * policy.threads
    if total <= policy.cpus:
        return None
    if processes > 1:
        return (f"--nproc {processes} with {policy.threads} threads each runs {total} threads on "
                f"the {policy.cpus} CPUs this process may use, so they will wait for each other; "
                f"use --threads {max(1, policy.cpus // processes)} (or leave the count out to "
                "split the CPUs).")
    return (f"{policy.source} asks for {policy.threads} threads on the {policy.cpus} CPUs this "
            f"process may use, so they will wait for each other; use {policy.cpus} or fewer, or "
            "leave the count out.")


def under_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a worker that torchrun started (it sets ``LOCAL_WORLD_SIZE``)."""
    return "LOCAL_WORLD_SIZE" in (os.environ if environ is None else environ)


def resolve(flag: int | None = None, environ: Mapping[str, str] | None = None,
            processes: int | None = None, cpus: int | None = None) -> ThreadPolicy:
    """The thread policy: ``--threads`` (``flag``) > ``SPIKEFORGE_THREADS`` >
    ``OMP_NUM_THREADS`` (ignored in a torchrun worker) > ``cpus // processes``.

    ``processes`` defaults to torchrun's ``LOCAL_WORLD_SIZE`` (1 outside torchrun); ``cpus`` to
    :func:`available_cpus`. Raises :class:`ConfigError` for a count that is not a positive
    integer.
    """
    env = os.environ if environ is None else environ
    if processes is None:
        processes = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    processes = max(1, processes)
    cpus = available_cpus() if cpus is None else cpus
    if flag is not None:
        return ThreadPolicy(_positive_int(str(flag), "--threads"), "--threads", cpus, processes)
    if env.get(ENV, "").strip():
        return ThreadPolicy(_positive_int(env[ENV].strip(), ENV), ENV, cpus, processes)
    omp = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp and not under_torchrun(env):
        with contextlib.suppress(ConfigError):
            return ThreadPolicy(_positive_int(omp, "OMP_NUM_THREADS"), "OMP_NUM_THREADS", cpus,
                                processes)
    return ThreadPolicy(max(1, cpus // processes), "auto", cpus, processes)


_state: dict[str, object] = {"policy": None, "last": 0.0}


def _export(policy: ThreadPolicy) -> None:
    """``OMP_NUM_THREADS`` into the environment: read by each OpenMP runtime when it starts
    (torch's at ``import torch``) and inherited by child processes."""
    os.environ["OMP_NUM_THREADS"] = str(policy.threads)


def apply(policy: ThreadPolicy) -> None:
    """Use ``policy.threads`` in torch (intra-op; inter-op too while it has not started) and the
    kernels; export ``OMP_NUM_THREADS`` for child processes and OpenMP runtimes not yet loaded;
    make :func:`adapt` follow the load when the count is automatic."""
    _export(policy)
    import torch

    torch.set_num_threads(policy.threads)
    with contextlib.suppress(RuntimeError):  # only before the first inter-op task
        torch.set_num_interop_threads(policy.threads)
    # the first adapt() checks at once: a short run beside a busy process must not spend its
    # first ADAPT_EVERY_S (a whole 200-batch fc-lif epoch) with threads waiting for a core
    _state["policy"], _state["last"] = policy, -math.inf


@contextlib.contextmanager
def applied(policy: ThreadPolicy) -> Iterator[ThreadPolicy]:
    """:func:`apply` ``policy`` for the duration of the block (a command run in-process), then
    restore torch's thread count and stop adapting."""
    saved_env = os.environ.get("OMP_NUM_THREADS")
    _state["user_omp"] = saved_env
    _export(policy)  # before torch starts its OpenMP runtime
    import torch

    before = torch.get_num_threads()
    apply(policy)
    try:
        yield policy
    finally:
        _state["policy"] = None
        _state.pop("user_omp", None)
        torch.set_num_threads(before)
        if saved_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved_env


def user_environ() -> dict[str, str]:
    """The environment as the user gave it: inside :func:`applied`, ``OMP_NUM_THREADS`` as it
    was before the policy exported its own count (which is no choice of the user's)."""
    env = dict(os.environ)
    if "user_omp" in _state:
        if _state["user_omp"] is None:
            env.pop("OMP_NUM_THREADS", None)
        else:
            env["OMP_NUM_THREADS"] = str(_state["user_omp"])
    return env


def _thread_stats(task_dir: Path) -> Iterator[tuple[str, int]]:
    """(state letter, nice) of each thread under ``task_dir`` (``/proc/PID/task``)."""
    try:
        entries = list(os.scandir(task_dir))
    except OSError:
        return
    for entry in entries:
        try:
            with open(os.path.join(entry.path, "stat"), "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 16:
            yield fields[0].decode(), int(fields[16])  # stat fields 3 (state) and 19 (nice)


def _ppid(proc: Path, pid: str) -> int:
    try:
        with open(proc / pid / "stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])  # stat field 4
    except (OSError, IndexError, ValueError):
        return -1


def busy_threads(proc: Path = PROC, own_pid: int | None = None,
                 skip_siblings: bool = False) -> int:
    """Runnable threads of other processes whose nice is at most ours +
    :data:`NICE_IGNORED_ABOVE` (a snapshot of ``/proc/*/task/*/stat``, proc(5)); with
    ``skip_siblings``, not those of processes with our parent (the other ``--nproc`` workers)."""
    own_pid = os.getpid() if own_pid is None else own_pid
    try:
        own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        own_nice = 0
    try:
        pids = [e.name for e in os.scandir(proc) if e.name.isdigit() and int(e.name) != own_pid]
    except OSError:
        return 0
    parent = _ppid(proc, str(own_pid)) if skip_siblings else None
    busy = 0
    for pid in pids:
        running = sum(state == "R" and nice <= own_nice + NICE_IGNORED_ABOVE
                      for state, nice in _thread_stats(proc / pid / "task"))
        if running and not (skip_siblings and _ppid(proc, pid) == parent):
            busy += running
    return busy


def load_share(base: int, cpus: int, busy: int, processes: int = 1) -> int:
    """Threads for each of our ``processes`` when ``busy`` other threads compete for ``cpus``
    CPUs: an equal part of the free CPUs, between 1 and ``base``."""
    return max(1, min(base, (cpus - busy) // max(1, processes)))


def adapt(force: bool = False, samples: int = 3) -> int:
    """Re-check the load (at most every :data:`ADAPT_EVERY_S` unless ``force``) and set torch's
    thread count to :func:`load_share` of the median of ``samples`` snapshots; a no-op unless
    :func:`apply` installed an automatic policy. Returns the thread count in use."""
    import torch

    policy = _state["policy"]
    if not isinstance(policy, ThreadPolicy) or policy.fixed:
        return torch.get_num_threads()
    now = time.monotonic()
    if not force and now - float(_state["last"]) < ADAPT_EVERY_S:
        return torch.get_num_threads()
    _state["last"] = now
    siblings = policy.processes > 1
    busy = statistics.median_low(busy_threads(skip_siblings=siblings) for _ in range(samples))
    threads = load_share(policy.threads, policy.cpus, busy, policy.processes)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def current() -> ThreadPolicy | None:
    """The policy :func:`apply` installed (None outside a command)."""
    policy = _state["policy"]
    return policy if isinstance(policy, ThreadPolicy) else None
