"""Exports the CAVP video encoder of Diff-Foley (Luo et al., NeurIPS 2023) to the video contract
diffgap serves, for users who have the checkpoint and the Diff-Foley code (neither is reachable
from the package registries, so this was NOT run here).

Contract (checked by the server at load time, `src/encoders/module.rs`):
- video.pt: forward(frames float [B, T, 3, H, W]) -> float [B, D]: RGB frames in [0, 1]; the
  module applies the checkpoint's own normalisation inside and returns the L2-normalised CAVP
  video embedding (mean-pooled over time). CAVP uses T = 32 frames at 8 fps (4 s), 224 x 224.
- the audio side of a CAVP space is the CAVP audio encoder; export it the same way to the
  audio contract (waveform float [N] at its sample rate -> [D], mel front-end inside), or serve
  audio as embeddings only.

    export PYTHONPATH=/path/to/Diff-Foley
    python models/export_cavp.py --checkpoint cavp_epoch66.ckpt --config <its yaml> --out .cache/cavp
    diffgap encoders attach --model models/cavp --encoders .cache/cavp

The server checks the contract on load and refuses the module with a message that names the
expected shapes when it does not hold.
"""

import argparse
import json
from pathlib import Path

import torch

FRAMES, HEIGHT, WIDTH = 32, 224, 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)


class VideoEncoder(torch.nn.Module):
    def __init__(self, cavp):
        super().__init__()
        self.cavp = cavp
        self.register_buffer("mean", MEAN)
        self.register_buffer("std", STD)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames - self.mean) / self.std
        # Diff-Foley's video encoder takes [B, 3, T, H, W] and gives per-frame features.
        feats = self.cavp.encode_video(x.permute(0, 2, 1, 3, 4), normalize=False, pool=False)
        return torch.nn.functional.normalize(feats.mean(1), dim=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    from omegaconf import OmegaConf  # from the user's Diff-Foley environment
    from ldm.util import instantiate_from_config

    cfg = OmegaConf.load(args.config)
    model = instantiate_from_config(cfg.model)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state.get("state_dict", state), strict=False)
    enc = VideoEncoder(model.eval()).eval()
    probe = torch.rand(1, FRAMES, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        traced = torch.jit.trace(enc, (probe,), check_trace=False)
        dim = int(traced(probe).shape[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    traced.save(str(args.out / "video.pt"))
    report = {
        "torch": torch.__version__.split("+")[0],
        "video": {"package": f"CAVP checkpoint {Path(args.checkpoint).name}", "dim": dim,
                  "frames": FRAMES, "height": HEIGHT, "width": WIDTH},
    }
    (args.out / "reference.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} (video.pt: [B, {FRAMES}, 3, {HEIGHT}, {WIDTH}] -> [B, {dim}])")


if __name__ == "__main__":
    main()
