"""Devices, CPU threads and memory of a job: which device a name means, how provenance
describes it, a block run with a given number of torch threads, the CPU threads a job gets on
a shared machine, the peak memory a block of code takes and the memory a job may use."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import resource
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cmrbench.errors import CmrbenchError

GB = 1024**3
MAX_MEMORY_ENV = "CMRBENCH_MAX_MEMORY_GB"
"""Environment variable: the memory (GiB) one job may use when ``run --max-memory`` is unset."""


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch using ``threads`` CPU threads (None: leave them as they are)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str | None = None) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1", or "1" for "cuda:1"), or CUDA when available,
    else the CPU."""
    if name and name.isdigit():
        return torch.device("cuda", int(name))
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_description(device: torch.device) -> str:
    """Human-readable device name for provenance."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------- threads


@dataclass(frozen=True)
class ThreadShare:
    """The CPU threads each of ``jobs`` concurrent jobs gets, and why (``note`` is None on a
    machine that no other process loads)."""

    threads: int
    note: str | None = None


def shared_threads(jobs: int, cores: int | None = None, load: float | None = None) -> ThreadShare:
    """Each job's default CPU threads: ``cores // jobs``, or 1 when other processes already
    keep every core busy (the 1-minute load average, taken before the jobs start, above the
    core count).

    Oversubscribed OpenMP threads wait on each other: one ``unet2d_xs`` step at batch 16 and
    96 px took 0.87 s with 1 thread and 2.2 s with 2 while another run held the second of 2
    cores. An idle machine keeps the share, so its results do not depend on the load.
    """
    cores = cores or os.cpu_count() or 1
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    share = max(1, cores // jobs)
    if load <= cores or share == 1:
        return ThreadShare(share)
    return ThreadShare(
        1,
        f"load average {load:.1f} on {cores} cores: other processes keep the "
        f"cores busy, so each job runs 1 CPU thread instead of {share} "
        f"(--threads N sets it; results are bit-identical only at equal "
        f"thread counts)",
    )


# --------------------------------------------------------------------------- memory


@dataclass
class PeakMemory:
    """Bytes a block of code added at its peak on a device (filled in when the block ends)."""

    bytes: float = 0.0


PROC_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _max_rss_bytes() -> float:
    """The process's peak resident set since it started (``ru_maxrss``: kB on Linux, bytes
    on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) if sys.platform == "darwin" else float(peak) * 1024


def _reset_peak_rss() -> bool:
    """Give freed heap memory back to the system and restart the peak resident set
    (``VmHWM``) from the current one; False where the kernel does not allow it."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name).malloc_trim(0)  # glibc keeps freed blocks otherwise
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def resident_bytes() -> float:
    """This process's resident set now (Linux), else its peak so far."""
    return _status_bytes("VmRSS") or _max_rss_bytes()


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Measure the memory the block adds at its peak on ``device``.

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated at the start. CPU on
    Linux: the peak resident set (``VmHWM``, restarted through ``/proc/self/clear_refs``)
    above the resident set at the start. Elsewhere the process's ``ru_maxrss`` growth: a
    block that stays below an earlier peak of the process reads as less than it took.
    """
    measured = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        allocated = torch.cuda.memory_allocated(device)
        yield measured
        torch.cuda.synchronize(device)
        measured.bytes = float(torch.cuda.max_memory_allocated(device) - allocated)
        torch.cuda.empty_cache()
        return
    linux = _reset_peak_rss() and _status_bytes("VmHWM") is not None
    start = resident_bytes() if linux else _max_rss_bytes()
    yield measured
    end = _status_bytes("VmHWM") if linux else _max_rss_bytes()
    measured.bytes = max(0.0, (end or 0.0) - start)


class MemoryLimitError(CmrbenchError, ValueError):
    """``--max-memory`` or `MAX_MEMORY_ENV` is not a positive number of GB."""


@dataclass(frozen=True)
class MemoryBudget:
    """The memory one job may use, in bytes, and where that figure comes from."""

    bytes: float
    source: str

    def __str__(self) -> str:
        return f"{gigabytes(self.bytes)} ({self.source})"


def gigabytes(nbytes: float) -> str:
    """``1.25 GB`` (GiB), or ``more than the device has`` for a step that ran out of memory."""
    return f"{nbytes / GB:.2f} GB" if math.isfinite(nbytes) else "more than the device has"


def _meminfo_available() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_headroom() -> float | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1; a Slurm job's or a
    container's), None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            folder, limit_file, usage_file = (
                Path("/sys/fs/cgroup") / path.lstrip("/"),
                "memory.max",
                "memory.current",
            )
        elif "memory" in controllers.split(","):
            folder, limit_file, usage_file = (
                Path("/sys/fs/cgroup/memory") / path.lstrip("/"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        else:
            continue
        try:
            limit = (folder / limit_file).read_text().strip()
            usage = float((folder / usage_file).read_text().strip())
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:  # v1 writes "no limit" as ~2^63
            return max(0.0, float(limit) - usage)
    return None


def host_memory_available() -> MemoryBudget | None:
    """What a new allocation can get on this host: ``MemAvailable``, or less under a cgroup
    limit; the physical memory where neither can be read (None if that cannot either)."""
    available, headroom = _meminfo_available(), _cgroup_headroom()
    if headroom is not None and (available is None or headroom < available):
        return MemoryBudget(headroom, "left under this process's cgroup memory limit")
    if available is not None:
        return MemoryBudget(available, "available RAM")
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return MemoryBudget(
            float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "physical RAM"
        )
    return None


def memory_budget(
    device: torch.device, jobs_on_device: int = 1, max_memory_gb: float | None = None
) -> MemoryBudget | None:
    """The memory each of ``jobs_on_device`` concurrent jobs may use on ``device``.

    ``max_memory_gb`` (else the `MAX_MEMORY_ENV` variable) sets it; otherwise the device's
    free memory (CUDA) or `host_memory_available` (CPU), split between the jobs, each worker
    process less the memory Python and torch take before a job starts (about this
    process's resident set). None when nothing can be read.
    """
    if max_memory_gb is None and os.environ.get(MAX_MEMORY_ENV):
        max_memory_gb = _env_gb(os.environ[MAX_MEMORY_ENV])
        source = f"{MAX_MEMORY_ENV}={os.environ[MAX_MEMORY_ENV]}"
    else:
        source = f"--max-memory {max_memory_gb:g}" if max_memory_gb is not None else ""
    if max_memory_gb is not None:
        if not max_memory_gb > 0:
            raise MemoryLimitError(
                f"--max-memory {max_memory_gb!r}: expected a positive number of GB"
            )
        return MemoryBudget(max_memory_gb * GB, source)
    total: MemoryBudget | None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        total = MemoryBudget(float(free), f"free memory of {torch.cuda.get_device_name(device)}")
        base = 0.0
    else:
        total = host_memory_available()
        base = resident_bytes() if jobs_on_device > 1 else 0.0
    if total is None:
        return None
    if jobs_on_device == 1:
        return total
    return MemoryBudget(
        max(0.0, total.bytes / jobs_on_device - base),
        f"{total.source} shared by {jobs_on_device} worker processes",
    )


def _env_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise MemoryLimitError(f"{MAX_MEMORY_ENV}={text!r}: expected a positive number of GB")
    return value


# --------------------------------------------------------------------------- out of memory


MEMORY_KNOBS = (
    "--scale small, a smaller batch (finetune.batch_size or "
    "pretrain.methods.<method>.batch_size in a grid file), a smaller "
    "dataset.image_size, or fewer --jobs"
)
"""What makes a job use less memory, for the errors that say it ran out."""
OUT_OF_MEMORY_ERRORS = ("OutOfMemoryError", "MemoryError", "WorkerKilledError")
"""Error types (the start of an ``error.json`` error) that mean a job ran out of memory."""


def describe_error(exc: BaseException) -> str:
    """``"<ExceptionType>: <message>"``, as ``error.json`` and the run's summary hold it; a
    CUDA out-of-memory error or a `MemoryError` also says what happened and what uses less."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        where = "GPU memory" if isinstance(exc, torch.cuda.OutOfMemoryError) else "CPU RAM"
        text += f" (the job ran out of {where}; to use less: {MEMORY_KNOBS})"
    return text


def killed_worker_error(exitcode: int | None) -> str:
    """What ``error.json`` says of a job whose worker process died with ``exitcode``
    (negative: the signal that ended it)."""
    if exitcode == -signal.SIGKILL:
        return (
            "WorkerKilledError: the worker process running this job was killed by SIGKILL, "
            "most likely by the kernel's out-of-memory killer (`dmesg` or `journalctl -k` "
            "says so): the job needed more memory than was free. A rerun resumes it from "
            f"its last checkpoint; to use less: {MEMORY_KNOBS}"
        )
    if exitcode is not None and exitcode < 0:
        return (
            f"WorkerDiedError: the worker process running this job was ended by "
            f"{signal.Signals(-exitcode).name}"
        )
    return f"WorkerDiedError: the worker process running this job exited with code {exitcode}"


def ran_out_of_memory(error: str) -> bool:
    """Whether a job's error (``"<ExceptionType>: ..."``) says it ran out of memory."""
    return error.split(":", 1)[0] in OUT_OF_MEMORY_ERRORS
