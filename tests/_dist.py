"""Two gloo processes on this machine, for the DDP gradient tests."""

import socket


def spawn_two(worker, *args) -> None:
    """Run ``worker(rank, 2, port, *args)`` in 2 processes on a free local port; wait for both."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, *args), nprocs=2, join=True)
