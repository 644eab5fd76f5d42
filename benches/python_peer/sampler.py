"""The model and the DDIM sampler, as diffgap computes them (src/diffusion/, src/model/engine.rs,
src/service/worker/scheduler.rs), in PyTorch on the model directory's TorchScript denoiser.

Outputs equal diffgap's to float rounding only where both run the same float operations in
the same order, so each step below names the Rust it mirrors. The host-side row work (L2 and
modality normalisation, the sum of an item's samples) is numpy in f32 with f64 norms, as
diffgap does it on the host; the batched work goes through the same ATen operators as tch.
"""

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch

import noise

COSINE_OFFSET = 0.008
MAX_BETA = 0.999


def _round(x):
    """Rust's f64::round (half away from zero; Python's round() rounds half to even)."""
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def alpha_bars(kind, steps):
    """schedule.rs, Schedule::new: abar_t in f64, with the same operations."""
    if kind == "cosine":

        def abar(u):
            c = math.cos((u + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * (math.pi / 2))
            return c * c  # powi(2)

        betas = [min(1.0 - abar((t + 1) / steps) / abar(t / steps), MAX_BETA) for t in range(steps)]
    elif kind == "linear":
        scale = 1000.0 / steps
        lo, hi = scale * 1e-4, scale * 0.02
        betas = [hi if steps == 1 else lo + (hi - lo) * t / (steps - 1) for t in range(steps)]
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    out, prod = [], 1.0
    for b in betas:
        prod *= 1.0 - b
        out.append(prod)
    return out


def ddim_timesteps(sampling_steps, t_start):
    """schedule.rs, Schedule::ddim_timesteps: evenly spaced, high to low, deduplicated."""
    n = min(max(sampling_steps, 1), t_start + 1)
    span = float(t_start + 1)
    ts = []
    for i in range(n):
        t = max(_round(span * (n - i) / n) - 1, 0)
        if not ts or ts[-1] != t:
            ts.append(t)
    return ts


def row_seed(base, row):
    """engine.rs, row_seed: the default seed of item `row`."""
    return (base * 0x9E3779B97F4A7C15 + row) & ((1 << 64) - 1)


def l2_rows(v):
    """normalize.rs, l2_normalized, row by row: the sum of squares in f64, summed in order
    (cumsum is sequential, unlike sum), the division in f32."""
    sq = v.astype(np.float64) ** 2
    norm = np.sqrt(np.cumsum(sq, axis=-1)[..., -1:])
    return v / np.maximum(norm, 1e-12).astype(np.float32)


def l2_tensor(x):
    """normalize.rs, l2_normalize: the same ATen norm as tch (torch.norm in Python routes to
    linalg.vector_norm instead)."""
    norm = torch.ops.aten.norm.ScalarOpt_dim(x, 2.0, [-1], True)
    return x / norm.clamp_min(1e-12)


class Stats:
    """normalize.rs, ModalityStats: the training mean and pooled scale, read as f32."""

    def __init__(self, d):
        self.mean = np.array(d["mean"], dtype=np.float32)
        self.scale = np.float32(d["scale"])
        self.mean_t = torch.from_numpy(self.mean.copy()).unsqueeze(0)

    def normalize_rows(self, x):
        return (x - self.mean) / self.scale

    def denormalize(self, z):
        return l2_tensor(z * float(self.scale) + self.mean_t)


class Model:
    """One loaded model: card, statistics, schedule and (with_net) its own TorchScript module."""

    def __init__(self, model_dir, with_net=True, bf16=False):
        model_dir = Path(model_dir)
        self.card = json.loads((model_dir / "card.json").read_text())
        c = self.card
        self.dim = int(c["space"]["dim"])
        self.stats = {m: Stats(s) for m, s in c["normalization"].items()}
        self.directions = [(d["condition"], d["target"]) for d in c["directions"]]
        self.prediction = c["prediction"]
        self.abar = alpha_bars(c["schedule"], int(c["train_timesteps"]))
        self.abar32 = np.array(self.abar, dtype=np.float32)  # `as f32`, round to nearest
        self.net = None
        # What a Python engineer would write for bfloat16: the same module under CPU autocast
        # (its matrix products in bfloat16, the result back to float32).
        self.bf16 = bf16
        if with_net:
            self.net = torch.jit.load(str(model_dir / "denoiser.pt"), map_location="cpu")
            self.net.eval()

    @property
    def max_steps(self):
        return len(self.abar)

    @functools.lru_cache(maxsize=None)
    def trajectory(self, steps):
        """Schedule::sample_timesteps: Bridge's trajectory from pure noise."""
        return tuple(ddim_timesteps(steps, self.max_steps - 1))

    def direction(self, source, target):
        return self.directions.index((source, target))

    def _level(self, ts):
        a = torch.from_numpy(self.abar32[ts]).unsqueeze(-1)
        return a.sqrt(), (-a + 1.0).sqrt()

    def _raw(self, x, ts, cond, dirs, mask):
        t = torch.from_numpy(np.asarray(ts, dtype=np.float32))
        if self.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.net(x, t, cond, dirs, mask).float()
        return self.net(x, t, cond, dirs, mask)

    def _guided(self, x, ts, cond, dirs, guidance):
        """sampler.rs, guided_output: rows with guidance 1 need one pass; the others also an
        unconditional pass, on those rows only."""
        n = x.shape[0]
        out = self._raw(x, ts, cond, dirs, torch.ones(n))
        guided = np.flatnonzero(guidance != np.float32(1.0))
        if len(guided) == 0:
            return out
        idx = torch.from_numpy(guided.astype(np.int64))
        uncond = self._raw(x.index_select(0, idx), ts[guided], cond.index_select(0, idx),
                           dirs.index_select(0, idx), torch.zeros(len(guided)))
        w = torch.from_numpy(guidance[guided].copy()).unsqueeze(-1)
        mixed = uncond + w * (out.index_select(0, idx) - uncond)
        return out.index_copy(0, idx, mixed)

    def step(self, x, ts, ts_prev, cond, dirs, guidance):
        """sampler.rs, Sampler::step: one deterministic DDIM step; rows may each be at their
        own timestep (`ts_prev` -1: to clean data)."""
        out = self._guided(x, ts, cond, dirs, guidance)
        signal, noise_level = self._level(ts)
        if self.prediction == "v":
            x0 = signal * x - noise_level * out
            eps = noise_level * x + signal * out
        elif self.prediction == "eps":
            x0, eps = (x - noise_level * out) / signal, out
        else:
            x0, eps = out, (x - signal * out) / noise_level.clamp_min(1e-4)
        prev = np.where(ts_prev >= 0, self.abar32[np.maximum(ts_prev, 0)], np.float32(1.0))
        a_prev = torch.from_numpy(prev.astype(np.float32)).unsqueeze(-1)
        return a_prev.sqrt() * x0 + (-a_prev + 1.0).clamp_min(0.0).sqrt() * eps

    def sample(self, rows, on_done):
        """Runs rows at their own trajectories in one batch; `rows` are (cond row, direction,
        (seed, sample), trajectory, guidance, target modality, tag). Longest trajectories
        first, so the rows still running are always a prefix; a row whose trajectory ends
        leaves the batch at once and `on_done(tags, outputs)` gets its denormalised rows."""
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r][3]))
        rows = [rows[r] for r in order]
        lengths = np.array([len(r[3]) for r in rows])
        width = int(lengths[0])
        traj = np.full((len(rows), width + 1), -1, dtype=np.int64)
        for r, row in enumerate(rows):
            traj[r, : len(row[3])] = row[3]
        x = torch.from_numpy(noise.normal_rows([r[2] for r in rows], self.dim))
        cond = torch.from_numpy(np.stack([r[0] for r in rows]))
        dirs = torch.tensor([r[1] for r in rows], dtype=torch.int64)
        guidance = np.array([r[4] for r in rows], dtype=np.float32)
        for k in range(width):
            n = int((lengths > k).sum())
            x = self.step(x[:n], traj[:n, k], traj[:n, k + 1], cond[:n], dirs[:n], guidance[:n])
            still = int((lengths > k + 1).sum())
            if still < n:
                self._finish(rows[still:n], x[still:n], on_done)
            x = x[:still]

    def _finish(self, rows, z, on_done):
        """scheduler.rs, finish_rows: denormalised per target modality in one pass."""
        for target in sorted({r[5] for r in rows}):
            sel = [i for i, r in enumerate(rows) if r[5] == target]
            idx = torch.tensor(sel, dtype=torch.int64)
            out = self.stats[target].denormalize(z.index_select(0, idx)).numpy()
            on_done([rows[i][6] for i in sel], out)


def combine(samples):
    """combine.rs, SampleSum: the samples summed in order from zero (f32), then L2-normalised."""
    acc = np.zeros_like(samples[0])
    for s in samples:
        acc = acc + s
    return l2_rows(acc[None, :])[0]
