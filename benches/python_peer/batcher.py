"""Dynamic batching for the peer: worker threads, each with its own TorchScript module and its
own torch thread setting, take requests from one queue. A worker that picks up a request waits
up to the batching window for more (none when a backlog is already queued), up to a row budget,
then runs the whole batch's DDIM loops together; a row whose trajectory ends leaves the batch,
and a request is answered as soon as its rows are done. Requests that arrive while a worker
runs go to another worker or wait for the next batch: the request-level batching a Python
server would use, where diffgap admits new rows between denoising steps.

torch releases the GIL inside its operators (the TorchScript call included), so the workers'
numerical work runs in parallel beside the asyncio loop that speaks gRPC.
"""

import queue
import threading
import time

import numpy as np
import torch

from sampler import Model, combine


class Job:
    """One Bridge request: its items prepared on the event loop, and its future there."""

    def __init__(self, items, loop, future):
        # items: (cond row f32, direction, seed, samples, trajectory, guidance, target)
        self.items = items
        self.loop = loop
        self.future = future
        self.samples = [[None] * it[3] for it in items]
        self.rows_left = sum(it[3] for it in items)
        self.rows = self.rows_left

    def row_specs(self, job_index):
        """The job's rows for Model.sample, tagged (job index, item, sample)."""
        for i, (cond, direction, seed, samples, traj, guidance, target) in enumerate(self.items):
            for k in range(samples):
                yield cond, direction, (seed, k), traj, guidance, target, (job_index, i, k)

    def add(self, item, sample, row):
        """Stores one finished sample; True once every row of the job is done."""
        self.samples[item][sample] = row
        self.rows_left -= 1
        return self.rows_left == 0

    def answer(self):
        out = [combine(s) for s in self.samples]
        self.loop.call_soon_threadsafe(_resolve, self.future, out, None)

    def fail(self, error):
        self.loop.call_soon_threadsafe(_resolve, self.future, None, error)


def _resolve(future, result, error):
    # A client that went away cancelled the future; nothing to answer then.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    def __init__(self, model_dir, workers, threads, window_s, max_rows, bf16=False):
        self.queue = queue.SimpleQueue()
        self.window_s = window_s
        self.max_rows = max_rows
        self.threads = threads
        self.bf16 = bf16
        self.ready = threading.Barrier(workers + 1)
        self.errors = []
        self.workers = [
            threading.Thread(target=self._run, args=(model_dir,), name=f"peer-worker-{w}", daemon=True)
            for w in range(workers)
        ]
        for w in self.workers:
            w.start()
        self.ready.wait()
        if self.errors:
            raise RuntimeError(f"a worker failed to load the model: {self.errors[0]}")

    def submit(self, job):
        self.queue.put(job)

    def _run(self, model_dir):
        # Per thread: OpenMP's team size and MKL's thread count are this thread's settings.
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                model = Model(model_dir, bf16=self.bf16)
                warm_up(model, self.max_rows)
        except Exception as e:  # reported to the constructor, which raises it
            self.errors.append(e)
            self.ready.wait()
            return
        self.ready.wait()
        while True:
            batch = self._gather()
            try:
                with torch.inference_mode():
                    self._run_batch(model, batch)
            except Exception as e:  # a failed batch fails its requests, not the server
                for job in batch:
                    job.fail(e)

    def _gather(self):
        """The first waiting request, then more until the window closes or the rows fill."""
        batch = [self.queue.get()]
        rows = batch[0].rows
        deadline = time.monotonic() + self.window_s
        while rows < self.max_rows:
            left = deadline - time.monotonic()
            try:
                job = self.queue.get_nowait() if left <= 0 else self.queue.get(timeout=left)
            except queue.Empty:
                break
            batch.append(job)
            rows += job.rows
        # Requests whose client went away (their future cancelled) are not computed.
        return [j for j in batch if not j.future.done()]

    def _run_batch(self, model, batch):
        if not batch:
            return
        specs = [s for j, job in enumerate(batch) for s in job.row_specs(j)]

        def on_done(tags, out):
            for (j, item, sample), row in zip(tags, out):
                if batch[j].add(item, sample, row):
                    batch[j].answer()

        model.sample(specs, on_done)


def warm_up(model, max_rows):
    """As diffgap's worker does before it reports ready: one guided step at every batch size
    bucket (powers of two up to max_rows), so that no request pays a first call's setup."""
    sizes, n = [], 1
    while n < max_rows:
        sizes.append(n)
        n *= 2
    sizes.append(max_rows)
    t_max = model.max_steps - 1
    for rows in sizes:
        x = torch.zeros(rows, model.dim)
        dirs = torch.arange(rows) % max(len(model.directions), 1)
        ts = np.full(rows, t_max, dtype=np.int64)
        guidance = np.where(np.arange(rows) % 2 == 0, 1.0, 2.0).astype(np.float32)
        model.step(x, ts, ts // 2, x, dirs, guidance)
