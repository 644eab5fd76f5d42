"""diffgap's seeded noise, bit for bit, in numpy (src/diffusion/noise.rs).

diffgap draws row (seed, sample) of noise as `StandardNormal` f32 values (rand_distr 0.5, a
256-layer ziggurat) from `ChaCha8Rng::seed_from_u64(seed)` (rand_chacha 0.9; the 32-byte key
filled by PCG32 from the seed, rand_core 0.9) with stream `(purpose << 56) ^ sample`. A peer that
drew its noise with torch.randn would compute another function, so it draws the same numbers:

- the ChaCha8 blocks of every row of a batch at once (numpy, vectorised over rows and blocks);
- the ziggurat's fast path (about 99 % of draws: one u64, accepted at once) vectorised too,
  and its rare slow cases one by one, in stream order, as rand_distr takes them.

Every row reads its stream from block 0, two 32-bit words (low first) per u64, as rand_core's
BlockRng does after `set_stream` on a fresh generator. Written against those crates' sources
and checked bit for bit against them (rows of 1 to 20,000 values, tail cases included); the
peer's output check (`diffgap loadgen --peer-addr`) checks it again on every run.
"""

import math

import numpy as np

from zig_tables import ZIG_NORM_F, ZIG_NORM_R, ZIG_NORM_X

START = 1  # Purpose::Start: a Bridge sample's starting point x_T

_MASK64 = (1 << 64) - 1
_X = np.array(ZIG_NORM_X, dtype=np.float64)
_F = np.array(ZIG_NORM_F, dtype=np.float64)
_CONST = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
# u64 drawn per row up front: the dimension plus room for the slow cases, which take one or
# two extra u64 each (about 1 % of draws); a row that needs more is redrawn with more.
_SPARE = 64


def _pcg32_key(seed):
    """rand_core's seed_from_u64: eight PCG32 outputs, the ChaCha key words in order."""
    state, words = seed & _MASK64, []
    for _ in range(8):
        state = (state * 6364136223846793005 + 11634580027462260723) & _MASK64
        xorshifted = (((state >> 18) ^ state) >> 27) & 0xFFFFFFFF
        rot = state >> 59
        words.append(((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & 0xFFFFFFFF)
    return words


def _rotl(v, n):
    return (v << np.uint32(n)) | (v >> np.uint32(32 - n))


def _quarter(a, b, c, d):
    """ChaCha's quarter round on four rows of words each (four quarter rounds at once), in
    place."""
    a += b
    d ^= a
    d[:] = _rotl(d, 16)
    c += d
    b ^= c
    b[:] = _rotl(b, 12)
    a += b
    d ^= a
    d[:] = _rotl(d, 8)
    c += d
    b ^= c
    b[:] = _rotl(b, 7)


# The diagonal round's quarters (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)
# as rows of the state: a is rows 0-3, b, c and d these.
_DIAG_B, _DIAG_C, _DIAG_D = [5, 6, 7, 4], [10, 11, 8, 9], [15, 12, 13, 14]


def chacha8_u64(keys, streams, n_u64):
    """[rows, n_u64] uint64: the first n_u64 outputs of ChaCha8 for each (key, stream). The
    state is [16 words, rows x blocks], so that each round is a dozen numpy operations on all
    blocks of all rows, not a dozen per quarter round."""
    rows, blocks = len(keys), (n_u64 + 7) // 8
    key = np.array(keys, dtype=np.uint32)  # [rows, 8]
    stream = np.array(streams, dtype=np.uint64)
    counter = np.tile(np.arange(blocks, dtype=np.uint64), rows)
    init = np.empty((16, rows * blocks), dtype=np.uint32)
    init[0:4] = np.array(_CONST, dtype=np.uint32)[:, None]
    init[4:12] = np.repeat(key.T, blocks, axis=1)
    init[12] = counter & np.uint64(0xFFFFFFFF)
    init[13] = counter >> np.uint64(32)
    init[14] = np.repeat(stream & np.uint64(0xFFFFFFFF), blocks)
    init[15] = np.repeat(stream >> np.uint64(32), blocks)
    s = init.copy()
    with np.errstate(over="ignore"):
        for _ in range(4):  # ChaCha8: 4 double rounds
            _quarter(s[0:4], s[4:8], s[8:12], s[12:16])
            b, c, d = s[_DIAG_B], s[_DIAG_C], s[_DIAG_D]
            _quarter(s[0:4], b, c, d)
            s[_DIAG_B], s[_DIAG_C], s[_DIAG_D] = b, c, d
        s += init
    # Block by block, little-endian pairs of words: word 2k is the low half of u64 k, as
    # BlockRng reads them.
    words = np.ascontiguousarray(s.T).reshape(rows, blocks * 16)
    return words.view("<u8").astype(np.uint64)[:, :n_u64]


def _fast_path(bits):
    """The ziggurat's first test on every u64: (value, accepted at once)."""
    i = (bits & np.uint64(0xFF)).astype(np.intp)
    # (bits >> 12) as the mantissa of a float in [2, 4), minus 3: u in [-1, 1).
    u = ((bits >> np.uint64(12)) | np.uint64(1024 << 52)).view(np.float64) - 3.0
    x = u * _X[i]
    return x, np.abs(x) < _X[i + 1]


def _f64(mantissa, biased_exponent):
    return np.array([mantissa | (biased_exponent << 52)], dtype=np.uint64).view(np.float64)[0].item()


def _slow(bits, pos):
    """rand_distr's ziggurat past its fast path, from the u64 at `pos`: (value or None to draw
    again from the returned position, next position). Raises IndexError past the buffer."""
    b = int(bits[pos])
    i = b & 0xFF
    u = _f64(b >> 12, 1024) - 3.0
    x = u * ZIG_NORM_X[i]
    pos += 1
    if i == 0:
        # The tail beyond R, by hand; the loop runs at least once (x = 1, y = 0 start it).
        tx, ty = 1.0, 0.0
        while -2.0 * ty < tx * tx:
            x_ = _f64(int(bits[pos]) >> 12, 1023) - (1.0 - 2.0**-53)
            y_ = _f64(int(bits[pos + 1]) >> 12, 1023) - (1.0 - 2.0**-53)
            pos += 2
            tx, ty = math.log(x_) / ZIG_NORM_R, math.log(y_)
        return (tx - ZIG_NORM_R if u < 0.0 else ZIG_NORM_R - tx), pos
    uniform = (int(bits[pos]) >> 11) * 2.0**-53
    pos += 1
    if ZIG_NORM_F[i + 1] + (ZIG_NORM_F[i] - ZIG_NORM_F[i + 1]) * uniform < math.exp(-x * x / 2.0):
        return x, pos
    return None, pos


def _walk(bits, xs, fast, dim):
    """One row's `dim` normals: runs of fast-path values copied at once, slow cases in order."""
    out = np.empty(dim, dtype=np.float64)
    slow = np.flatnonzero(~fast)
    filled, pos, k = 0, 0, 0
    while filled < dim:
        while k < len(slow) and slow[k] < pos:
            k += 1
        stop = slow[k] if k < len(slow) else len(bits)
        take = min(stop - pos, dim - filled)
        out[filled : filled + take] = xs[pos : pos + take]
        filled, pos = filled + take, pos + take
        if filled == dim:
            break
        if pos >= len(bits):
            raise IndexError("the row needs more of its stream")
        value, pos = _slow(bits, pos)
        if value is not None:
            out[filled] = value
            filled += 1
    return out


def _all_rows(bits, xs, fast, dim):
    """Every row's `dim` normals at once where the slow cases allow it: a slow case outside the
    tail takes its u64 and the next (its uniform), and yields its x or draws again after them,
    so the draws that start a sample are those after an even number of slow ones in a row.
    Returns the values and which rows they hold; the others (a tail case, or a stream too
    short) take the walk."""
    rows, n = bits.shape
    slow = ~fast
    cols = np.arange(n)
    # k[p]: the slow positions just before p; position p starts a draw when k[p] is even.
    last_fast = np.maximum.accumulate(np.where(fast, cols, -1), axis=1)
    k = np.zeros((rows, n), dtype=np.intp)
    k[:, 1:] = cols[:-1] - last_fast[:, :-1]
    starts = k % 2 == 0
    i = (bits & np.uint64(0xFF)).astype(np.intp)
    uniform = np.zeros((rows, n))
    uniform[:, :-1] = (bits[:, 1:] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    # The acceptance test of every slow case, its exp by libm as rand_distr's (math.exp).
    r, c = np.nonzero(slow)
    ii, x = i[r, c], xs[r, c]
    pdf = np.array([math.exp(v) for v in (-x * x / 2.0).tolist()])
    f_lo, f_hi = _F[ii + 1], _F[ii]
    accept = np.zeros((rows, n), dtype=bool)
    accept[r, c] = f_lo + (f_hi - f_lo) * uniform[r, c] < pdf
    yields = starts & (fast | accept)
    rank = np.cumsum(yields, axis=1) - 1
    # Rows past which the vector form is wrong: a tail case, or a slow case without its
    # uniform, before the row's dim-th value; or fewer than dim values.
    done = (yields & (rank == dim - 1)).argmax(axis=1)
    before = cols[None, :] <= done[:, None]
    odd = starts & slow & ((i == 0) | (cols == n - 1)[None, :]) & before
    ok = (rank[:, -1] >= dim - 1) & ~odd.any(axis=1)
    keep = yields & (rank < dim) & ok[:, None]
    out = np.empty((rows, dim))
    out[np.nonzero(keep)[0], rank[keep]] = xs[keep]
    return out, ok


def normal_rows(keys, dim, purpose=START):
    """[len(keys), dim] float32: diffgap's `noise::normal_rows(keys, purpose, dim)` for
    (seed, sample) keys."""
    keys = list(keys)
    if not keys:
        return np.zeros((0, dim), dtype=np.float32)
    key_words = [_pcg32_key(seed) for seed, _ in keys]
    streams = [((purpose << 56) ^ sample) & _MASK64 for _, sample in keys]
    n = dim + _SPARE
    bits = chacha8_u64(key_words, streams, n)
    xs, fast = _fast_path(bits)
    out, ok = _all_rows(bits, xs, fast, dim)
    for r in np.flatnonzero(~ok):
        m = n
        row_bits, row_xs, row_fast = bits[r], xs[r], fast[r]
        while True:
            try:
                out[r] = _walk(row_bits, row_xs, row_fast, dim)
                break
            except IndexError:
                # Rare: more slow cases than the spare covers; redraw this row longer.
                m *= 2
                row_bits = chacha8_u64([key_words[r]], [streams[r]], m)[0]
                row_xs, row_fast = (a[0] for a in _fast_path(row_bits[None, :]))
    # f64 -> f32 rounds to nearest, as Rust's `as f32`.
    return out.astype(np.float32)
