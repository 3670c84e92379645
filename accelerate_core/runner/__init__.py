"""The job runner: each job in a child process of its own, forked from a preloaded parent.

Both executors (the local one and the Celery workers) run jobs through :class:`ForkServer`. Its server
(``python -m accelerate_core.runner.server``, a plain subprocess) imports torch, transformers (with its
lazily loaded model machinery, :data:`DEFAULT_PRELOAD`) and the entry module once, never touches a
device, and forks one child per job (about 0.1 s, against about 5.6 s for a fresh interpreter). A
child runs in a job box (:mod:`accelerate_core.runner.box`): an allow-listed environment plus the job's
own (device pinning, thread counts), limits on its whole process tree (tasks, file size, memory) and a
hard time limit; it returns one JSON value, or a classified failure (:mod:`accelerate_core.runner.outcome`).
A hung, bloated or crashing job is killed with every process it started; the server survives it.

Importing this package does not import torch.

Example::

    with ForkServer("workers.job:job_entry", max_children=2) as runner:
        outcome = runner.run("job-1", payload, env={"CUDA_VISIBLE_DEVICES": "0"}, time_limit_s=180, mem_cap_mb=6144)
"""

from __future__ import annotations

from accelerate_core.runner.client import DEFAULT_PRELOAD, ForkServer
from accelerate_core.runner.outcome import ChildOutcome, JobFailure, classify_exception

__all__ = ["DEFAULT_PRELOAD", "ChildOutcome", "ForkServer", "JobFailure", "classify_exception"]
