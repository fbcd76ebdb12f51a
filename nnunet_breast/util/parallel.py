"""Independent per-case jobs, in parallel or not: results in input order, a tqdm bar, spawned processes
(forking next to torch's or SimpleITK's threads can deadlock)."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Iterable, Sequence

from tqdm import tqdm


def map_cases(fn: Callable, jobs: Iterable[Sequence], num_processes: int = 1, desc: str = "",
              progress: bool = True) -> list:
    """``[fn(*job) for job in jobs]``, with up to ``num_processes`` processes (``fn`` must be picklable)."""
    jobs = list(jobs)
    if num_processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(fn, *job) for job in jobs]
            return [f.result() for f in tqdm(futures, desc=desc, disable=not progress, unit="case")]
    return [fn(*job) for job in tqdm(jobs, desc=desc, disable=not progress, unit="case")]
