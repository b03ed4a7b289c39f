"""Cost of preparing a subject for the search (`secondsight.gnet.prepare_subject`), per image, at the published sizes.

The three models that see every one of the 73,000 brick images, built at full size with random weights (speed does
not depend on the values): OpenCLIP ViT-H/14 at 224 px (the stimulus embeddings, once per data root), GNet8j at 227 px
for subject 1's 15,724 voxels, and the CLIP encoder 1024 -> 15000 -> 15000 -> 15724 (per subject). For each: GFLOP
per image (torch's FLOP counter on the 'meta' device, as `cost_model.py`: on the CPU, PyTorch's fused attention
fast path is invisible to the counter; a multiply-add = 2 FLOP) and seconds per image on this machine's CPU, then
the totals for 73,000 images. Ends with ONE JSON line.

    python bench/prepare_cost.py
"""
import json, logging, sys, time
from pathlib import Path

import open_clip
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_model import flops

from secondsight.encoders import CLIPEncoder
from secondsight.gnet import GNet8j

N_IMAGES = 73_000


@torch.no_grad()
def measure(build, shape, reps=2) -> dict:
    "GFLOP (counted on 'meta') and CPU seconds per image (after one warm-up call) of build() on a batch of `shape`"
    f, x = build(), torch.rand(*shape)
    f(x); t = time.perf_counter()
    for _ in range(reps): f(x)
    return dict(gflop_per_image=flops(build, (1, *shape[1:])) / 1e9, cpu_s_per_image=(time.perf_counter() - t) / reps / len(x))


if __name__ == '__main__':
    torch.manual_seed(0)
    logging.getLogger().setLevel(logging.ERROR)   # "No pretrained weights loaded": random weights on purpose
    vit = lambda: open_clip.create_model('ViT-H-14', pretrained=None, device=torch.get_default_device()).visual.eval()
    rows = {'gnet': measure(lambda: GNet8j(15724).eval(), (8, 3, 227, 227)),
            'clip_encoder': measure(lambda: CLIPEncoder(15724, 1024, 15000).eval(), (64, 1024)),
            'vit_h_14': measure(vit, (4, 3, 224, 224), reps=1)}
    for name, r in rows.items():
        r.update(pflop_73k=r['gflop_per_image'] * N_IMAGES / 1e6, cpu_hours_73k=r['cpu_s_per_image'] * N_IMAGES / 3600)
        print(f"{name:>13}: {r['gflop_per_image']:7.2f} GFLOP/image  {r['cpu_s_per_image']:7.3f} s/image on the CPU  "
              f"73k images: {r['pflop_73k']:6.2f} PFLOP, {r['cpu_hours_73k']:6.1f} CPU-hours")
    print(json.dumps(dict(bench='prepare_cost', threads=torch.get_num_threads(), **rows)))
