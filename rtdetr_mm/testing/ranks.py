"""Run a test's worker in 2 CPU processes (a gloo group set up by the
worker) and read back what each rank saved, with a hard time limit, so a
rank that hangs in a collective fails the test instead of blocking it."""
import os.path as osp
from typing import Callable, List, Sequence

import torch
import torch.multiprocessing as mp


def run_two_ranks(worker: Callable, args: Sequence, out_dir: str, start_method: str,
                  timeout_s: int = 120) -> List[dict]:
    """``worker(rank, *args)`` in 2 processes; each must save its result
    to ``out_dir/rank<r>.pt`` (``torch.save``, plain data). Returns the
    two results, rank 0 first; kills both ranks after ``timeout_s``."""
    context = mp.start_processes(worker, args=tuple(args), nprocs=2, join=False,
                                 start_method=start_method)
    try:
        finished = False
        for _ in range(timeout_s):
            if context.join(timeout=1):
                finished = True
                break
        assert finished, f'the two ranks did not finish within {timeout_s} s'
    finally:
        for proc in context.processes:
            if proc.is_alive():
                proc.kill()
    return [torch.load(osp.join(out_dir, f'rank{r}.pt'), weights_only=True) for r in (0, 1)]
