"""Two gloo processes on this machine, for the DDP gradient tests.

gloo can abort a process (SIGABRT, "terminate called without an active exception") while it
tears itself down, even after a barrier: about once in 20-30 runs here. That is not what these
tests test, so each rank writes a marker once its work and a final barrier are done; an abort
after both markers is reported as a warning, and a rank that dies before its marker gets the
pair rerun once in fresh processes (a second death fails the test, with both ranks' stages).
"""

import os
import socket
import tempfile
import warnings
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, marks, work) -> None:
    import faulthandler

    import torch
    import torch.distributed as dist

    faulthandler.enable(all_threads=True)  # an abort prints the Python stacks
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    work(rank, world)  # the test's own work: build, DDP, backward, save
    dist.barrier()  # both ranks done before either tears gloo down
    Path(marks, f"rank{rank}.done").touch()
    dist.destroy_process_group()


def spawn_two(worker, *args) -> None:
    """Run ``worker(rank, 2, *args)`` in 2 gloo processes (the group is set up and torn down
    here, one thread each); wait for both."""
    import torch.multiprocessing as mp

    for attempt in (1, 2):
        with tempfile.TemporaryDirectory() as marks:
            try:
                mp.spawn(
                    _rank_main, args=(2, _free_port(), marks, _Bound(worker, args)), nprocs=2,
                    join=True,
                )  # fmt: skip
                return
            except mp.ProcessExitedException as e:
                done = sorted(p.name for p in Path(marks).glob("rank*.done"))
                if len(done) == 2:
                    warnings.warn(
                        f"gloo aborted a rank after both finished their work: {e}", stacklevel=2
                    )
                    return
                if attempt == 2:
                    raise AssertionError(f"{e}; ranks that finished before it: {done}") from e
                warnings.warn(
                    f"a rank died before finishing ({e}; done: {done}); rerunning once",
                    stacklevel=2,
                )


class _Bound:
    """``worker`` with its extra arguments, picklable for the spawned processes."""

    def __init__(self, worker, args):
        self.worker, self.args = worker, args

    def __call__(self, rank, world):
        self.worker(rank, world, *self.args)
