"""Processes that train one network together (torch.distributed): the group, its few collectives, spawning.

A run with N processes is one *group*: rank 0 is its writer (checkpoints, validation, progress,
and under ``torchrun`` the store), every rank computes its share of each batch. A group comes
from one of two places:

- `spawn`: this process starts N workers itself (start method *spawn*, a free loopback port,
  gloo on the CPU, nccl with one GPU per rank) and gets rank 0's return value back; its
  progress events and a worker's error travel back through a queue.
- a launcher (``torchrun --nproc-per-node N``): every process reads ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and joins (`join_launched`).

Ranks agree by broadcast from rank 0 (`agree`, `share`), so a decision taken on one clock (stop
for the time budget) is taken by every rank at the same step and none waits in a collective for
a rank that left.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pickle
import queue as queues
import socket
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from segloop.errors import InvalidInputError

__all__ = [
    "Group",
    "agree",
    "barrier",
    "check_nproc",
    "current_group",
    "from_writer",
    "join_launched",
    "launched_rank",
    "launched_size",
    "rank_device",
    "share",
    "spawn",
    "sum_across_ranks",
]

#: How long a rank waits in a collective (rank 0 validating, writing a checkpoint) before failing.
TIMEOUT = datetime.timedelta(hours=1)
#: Environment a launcher such as torchrun sets for each process.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_POLL_S = 0.2


@dataclass(frozen=True)
class Group:
    """Where this process stands in its training group.

    Attributes:
        rank: 0..world_size-1; rank 0 writes.
        world_size: processes in the group (1: training alone).
        local_rank: rank among the processes of this machine (the GPU index with CUDA).
        local_world_size: processes on this machine (they share its CPU cores).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_writer(self) -> bool:
        """True on the one process that writes checkpoints, validates and reports (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def current_group() -> Group:
    """The group this process belongs to: an initialised process group, or training alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return Group()
    rank, world = dist.get_rank(), dist.get_world_size()
    return Group(
        rank=rank,
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", rank)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
    )


def launched_rank() -> int | None:
    """This process's rank when a launcher (torchrun) started a group of 2+, else None."""
    return int(os.environ["RANK"]) if launched_size() is not None else None


def launched_size() -> int | None:
    """The size of the group a launcher (torchrun) started, when 2+ (else None)."""
    if not all(os.environ.get(name) for name in LAUNCH_VARIABLES) or int(os.environ["WORLD_SIZE"]) < 2:
        return None
    return int(os.environ["WORLD_SIZE"])


@contextlib.contextmanager
def join_launched(device: str | torch.device) -> Iterator[Group]:
    """Join the group a launcher (torchrun) described in the environment, for the ``with`` block.

    Alone (no launcher, or a group already joined) it yields `current_group` and changes nothing.

    Args:
        device: the run's device (`segloop.engine.device.resolve_device`): nccl for CUDA, else gloo.
    """
    if launched_rank() is None or dist.is_initialized():
        yield current_group()
        return
    from segloop.engine.device import resolve_device

    target = resolve_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(_backend(target), timeout=TIMEOUT)
    try:
        yield current_group()
    finally:
        dist.destroy_process_group()


def check_nproc(nproc: int, device: torch.device, *, cases: int, batch_size: int) -> None:
    """Refuse a process count the run cannot use.

    Args:
        nproc: processes asked for.
        device: the resolved device (``cpu``, ``cuda`` or ``cuda:N``).
        cases: training cases (each process needs at least one to draw from in a fair share).
        batch_size: the global batch, split evenly over the processes.

    Raises:
        InvalidInputError: ``nproc`` < 1, more processes than cases or than GPUs, a single GPU
            named for several processes, or a batch that does not split evenly.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        msg = f"nproc={nproc!r} is not valid: expected a whole number of processes >= 1"
        raise InvalidInputError(msg)
    if nproc == 1:
        return
    if nproc > cases:
        msg = f"{nproc} processes for {cases} training cases: expected at most one process per case"
        raise InvalidInputError(msg)
    if device.type == "cuda" and device.index is not None:
        msg = (
            f"{nproc} processes on the one device {device}: expected device cuda (one GPU per process) or cpu"
        )
        raise InvalidInputError(msg)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        msg = f"{nproc} processes on {torch.cuda.device_count()} GPUs: expected at most one process per GPU"
        raise InvalidInputError(msg)
    if device.type not in ("cpu", "cuda"):
        msg = f"{nproc} processes on device {device}: expected cpu or cuda"
        raise InvalidInputError(msg)
    if batch_size % nproc:
        msg = (
            f"a batch of {batch_size} does not split over {nproc} processes:"
            f" expected a batch size that is a multiple of {nproc}"
        )
        raise InvalidInputError(msg)


def rank_device(device: torch.device, group: Group) -> torch.device:
    """The device of this rank: its own GPU (``cuda:LOCAL_RANK``) in a CUDA group, else ``device``."""
    if group.distributed and device.type == "cuda":
        return torch.device("cuda", group.local_rank)
    return device


def agree(flag: bool, group: Group) -> bool:
    """Rank 0's ``flag`` on every rank."""
    return bool(from_writer((float(flag),), group)[0])


def from_writer(values: tuple[float, ...], group: Group) -> tuple[float, ...]:
    """Rank 0's ``values`` on every rank (one broadcast of a float64 vector; same length on all)."""
    if not group.distributed:
        return values
    vector = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.broadcast(vector, src=0)
    return tuple(float(v) for v in vector.cpu())


def share(value: Any, group: Group) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank; the others' arguments are ignored."""
    if not group.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(group: Group) -> None:
    """Wait until every rank of the group gets here."""
    if group.distributed:
        dist.barrier()


def sum_across_ranks(local: torch.Tensor) -> torch.Tensor:
    """The sum of ``local`` over the ranks, differentiable through this rank's own share only.

    ``local + (sum - local)`` with the second term detached: a loss built from it has, on each
    rank, the gradient of that rank's contribution, so the sum of the ranks' gradients is the
    gradient of the loss of the whole batch (DistributedDataParallel averages them: multiply the
    loss by the world size).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return local + (total - local.detach())


def spawn(
    function: Callable[..., Any],
    nproc: int,
    device: torch.device,
    arguments: tuple[Any, ...],
    *,
    on_message: Callable[[Any], None] | None = None,
) -> Any:
    """Run ``function(*arguments, send)`` in ``nproc`` new processes that form a group; rank 0's result.

    Each worker joins a group on a free loopback port (gloo, or nccl with ``device`` CUDA), calls
    ``function`` with ``send``, a callable that passes a picklable message to ``on_message`` in
    this process, and leaves the group. A worker's exception is raised here with its type (a bug's
    traceback from the worker is attached as a note); an interrupt here (Ctrl-C, an exception from
    ``on_message``) terminates the workers.

    Args:
        function: a module-level function (workers import it by name).
        nproc: processes, >= 1.
        device: the resolved device of the run.
        arguments: picklable positional arguments.
        on_message: receives what workers send, in order.

    Returns:
        What ``function`` returned on rank 0.
    """
    context = mp.get_context("spawn")
    messages = context.Queue()
    port = _free_port()
    processes = mp.start_processes(
        _worker,
        args=(function, nproc, port, _backend(device), messages, arguments),
        nprocs=nproc,
        join=False,
        start_method="spawn",
    )
    outcome: dict[str, Any] = {}
    # torch logs "terminating process N" when it stops the others after a failure: the error says why
    with _quieter(logging.getLogger(ProcessException.__module__)):
        try:
            _wait(processes, messages, outcome, on_message)
        finally:
            for process in processes.processes:
                if process.is_alive():
                    process.terminate()
            for process in processes.processes:
                process.join()
            messages.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def _wait(
    processes: Any, messages: Any, outcome: dict[str, Any], on_message: Callable[[Any], None] | None
) -> None:
    """Pass the workers' messages on until all have ended; a failed worker's error is raised."""
    done = False
    while not done:
        try:
            done = processes.join(timeout=_POLL_S)
        except ProcessException:
            _drain(messages, outcome, on_message)
            if "error" in outcome:
                raise outcome["error"] from None
            raise
        _drain(messages, outcome, on_message)


@contextlib.contextmanager
def _quieter(logger: logging.Logger) -> Iterator[None]:
    """Only errors from ``logger`` within the block."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _drain(messages: Any, outcome: dict[str, Any], on_message: Callable[[Any], None] | None) -> None:
    while True:
        try:
            kind, payload = messages.get_nowait()
        except queues.Empty:
            return
        if kind == "message" and on_message is not None:
            on_message(payload)
        elif kind == "result":
            outcome["result"] = payload
        elif kind == "error":
            outcome.setdefault("error", payload)


def _worker(
    rank: int,
    function: Callable[..., Any],
    nproc: int,
    port: int,
    backend: str,
    messages: Any,
    arguments: tuple[Any, ...],
) -> None:
    """One spawned rank: join the group, run, send the result (rank 0) or the error back."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(nproc),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(nproc),
    )
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=nproc, timeout=TIMEOUT)
    try:
        result = function(*arguments, lambda message: messages.put(("message", message)))
        if rank == 0:
            messages.put(("result", result))
    except BaseException as error:
        messages.put(("error", _portable(error)))
        raise
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _portable(error: BaseException) -> BaseException:
    """``error`` as it can cross a queue: itself if it pickles, a RuntimeError naming it otherwise."""
    from segloop.errors import SegloopError

    try:
        copy = pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any error that does not pickle is sent by name
        copy = RuntimeError(f"{type(error).__name__}: {error}")
    if not isinstance(error, SegloopError):
        copy.add_note("in a training process:\n" + "".join(traceback.format_exception(error)))
    return copy


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def _collective_device() -> torch.device:
    """Where a collective's tensors live: the rank's GPU with nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _free_port() -> int:
    """A TCP port free on the loopback interface now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
