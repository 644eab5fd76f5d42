"""Exports a LAION-CLAP checkpoint to the encoder contracts diffgap serves, for users who have
one (no CLAP weights are reachable from the package registries, so this was NOT run here).

Contracts (what `diffgap encoders attach` and the server check at load time):
- text.pt: forward(input_ids int64 [B, L], attention_mask int64 [B, L]) -> float [B, 512],
  the CLAP text embedding (RoBERTa + projection), L2-normalised; tokenizer.json is the RoBERTa
  tokenizer of the checkpoint, saved in the Hugging Face `tokenizers` format (Rust reads it).
- audio.pt: forward(wave float [N]) -> float [512]: one mono waveform at 48 kHz; the module
  pads (repeat-pad) or crops to the 10 s the HTSAT encoder takes, computes its log-mel
  features inside and returns the L2-normalised CLAP audio embedding. Non-fusion checkpoints
  only (e.g. 630k-audioset-best.pt, music_audioset_epoch_15_esc_90.14.pt).
The two outputs already share the CLAP space, so attach without --heads:

    pip install laion-clap==1.1.6          # into .venv, next to torch==2.13.0
    python models/export_laion_clap.py --checkpoint 630k-audioset-best.pt --out .cache/laion
    diffgap train --pairs <your CLAP pairs> --space laion-clap --out models/laion ...
    diffgap encoders attach --model models/laion --encoders .cache/laion

A check against the eager model on the given clips (cosine >= 0.999) guards the export, as for
the default encoders; `reference.json` records it.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 48000
CLIP_SAMPLES = 480000


class TextEncoder(torch.nn.Module):
    def __init__(self, clap):
        super().__init__()
        self.clap = clap

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.clap.encode_text({"input_ids": input_ids, "attention_mask": attention_mask}, device=input_ids.device)
        x = self.clap.text_projection(x)
        return torch.nn.functional.normalize(x, dim=-1)


class AudioEncoder(torch.nn.Module):
    def __init__(self, clap):
        super().__init__()
        self.clap = clap

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.reshape(-1).float()
        n = wave.shape[0]
        if n < CLIP_SAMPLES:
            reps = CLIP_SAMPLES // max(n, 1) + 1
            wave = wave.repeat(reps)[:CLIP_SAMPLES]
        else:
            wave = wave[:CLIP_SAMPLES]
        x = self.clap.audio_branch({"waveform": wave.unsqueeze(0)}, mixup_lambda=None, device=wave.device)["embedding"]
        x = self.clap.audio_projection(x)
        return torch.nn.functional.normalize(x, dim=-1)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--amodel", default="HTSAT-tiny")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--clips", nargs="*", default=[], help="48 kHz audio files to check the export on")
    args = ap.parse_args()
    import laion_clap  # the user's installation

    wrapper = laion_clap.CLAP_Module(enable_fusion=False, amodel=args.amodel)
    wrapper.load_ckpt(args.checkpoint)
    clap = wrapper.model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    tok = wrapper.tokenize(["a dog barks", "rain on a tin roof"])
    with torch.no_grad():
        text = torch.jit.trace(TextEncoder(clap).eval(), (tok["input_ids"], tok["attention_mask"]), check_trace=False)
        audio = torch.jit.trace(AudioEncoder(clap).eval(), (torch.randn(SAMPLE_RATE * 3),), check_trace=False)
    text.save(str(args.out / "text.pt"))
    audio.save(str(args.out / "audio.pt"))
    from transformers import RobertaTokenizerFast

    RobertaTokenizerFast.from_pretrained("roberta-base").backend_tokenizer.save(str(args.out / "tokenizer.json"))
    report = {
        "torch": torch.__version__.split("+")[0],
        "text": {"package": f"laion-clap checkpoint {Path(args.checkpoint).name}", "dim": 512, "max_tokens": 77},
        "audio": {"package": f"laion-clap checkpoint {Path(args.checkpoint).name}", "dim": 512, "sample_rate": SAMPLE_RATE},
        "reference": [],
    }
    worst = 1.0
    for clip in args.clips:
        import librosa

        wave, _ = librosa.load(clip, sr=SAMPLE_RATE)
        ref = wrapper.get_audio_embedding_from_data(x=wave[None, :CLIP_SAMPLES], use_tensor=False)[0]
        with torch.no_grad():
            got = audio(torch.from_numpy(wave)).numpy()
        c = float(np.dot(ref, got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
        worst = min(worst, c)
        report["reference"].append({"file": clip, "cosine": c})
    if args.clips and worst < 0.999:
        raise SystemExit(f"audio export does not match the eager model (cosine {worst})")
    (args.out / "reference.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
