"""Cost per image of every model on the real path, at the published sizes: FLOP and this machine's CPU seconds.

Built at full size with random weights (speed does not depend on the values). Preparing a subject
(`secondsight.models.prepare_subject`) runs three models over all 73,000 brick images: OpenCLIP ViT-H/14 at 224 px (the
stimulus embeddings, once per data root), GNet8j at 227 px for subject 1's 15,724 voxels, and the CLIP encoder 1024 ->
15000 -> 15000 -> 15724 (per subject); this script reports their totals for 73,000 images. The search then runs, per
sample, the SD 2.1 unCLIP UNet at 96 x 96 latents (768 px) once per step and guidance branch, the VAE decoder at
768 px, ViT-H, GNet and the CLIP encoder; and per test image the VAE encoder on the low-level guess's 25 library
images. For each model: GFLOP per image (torch's FLOP counter on the 'meta' device, as `cost_model.py`: on the CPU,
PyTorch's fused attention fast path is invisible to the counter; a multiply-add = 2 FLOP) and seconds per image on
this machine's CPU, float32. With `cost_model.py`'s counts this says what a GPU will spend where, before one is at
hand. Ends with ONE JSON line.

    python bench/prepare_cost.py             # all models (about 8 minutes on 2 cores)
    python bench/prepare_cost.py --prepare   # only the three that see the whole brick
    python bench/prepare_cost.py --search    # only the search's UNet and VAE
"""
import argparse, json, logging, sys, time
from pathlib import Path

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode
sys.path.insert(0, str(Path(__file__).resolve().parent))

from secondsight.encoders import CLIPEncoder
from secondsight.gnet import GNet8j

N_IMAGES = 73_000


@torch.no_grad()
def measure(build, inputs, n: int, reps: int = 2, warm: bool = True) -> dict:
    """GFLOP (counted on 'meta') and CPU seconds per image of build()(*args, **kw), where (args, kw) = inputs(n): the
    mean of `reps` calls on a batch of n, after one warm-up call when `warm`"""
    with torch.device('meta'):
        m = build(); a, kw = inputs(1)
        with FlopCounterMode(display=False) as fc: m(*a, **kw)
    f, (a, kw) = build().eval(), inputs(n)
    if warm: f(*a, **kw)
    t = time.perf_counter()
    for _ in range(reps): f(*a, **kw)
    return dict(gflop_per_image=fc.get_total_flops() / 1e9, cpu_s_per_image=(time.perf_counter() - t) / reps / n)


def models(prepare: bool = True, search: bool = True) -> dict:
    "name -> (build, inputs(n) -> (args, kwargs), batch, reps, warm-up)"
    img = lambda size: lambda n: ((torch.rand(n, 3, size, size),), {})
    out = {}
    if prepare: out.update(
        gnet=(lambda: GNet8j(15724), img(227), 8, 2, True),
        clip_encoder=(lambda: CLIPEncoder(15724, 1024, 15000), lambda n: ((torch.rand(n, 1024),), {}), 64, 2, True),
        vit_h_14=(lambda: open_clip.create_model('ViT-H-14', pretrained=None, device=torch.get_default_device()).visual,
                  img(224), 16, 1, True))
    if not search: return out
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from gpu_search import UNET, VAE
    unet_in = lambda n: ((torch.randn(n, 4, 96, 96), torch.full((n,), 500)), dict(encoder_hidden_states=torch.randn(n, 77, 1024),
                                                                             class_labels=torch.randn(n, 2048)))
    return dict(out, unet_eval=(lambda: UNet2DConditionModel(**UNET), unet_in, 2, 1, False),     # one step of one sample, both branches
                vae_decode=(lambda: AutoencoderKL(**VAE).decoder, lambda n: ((torch.randn(n, 4, 96, 96),), {}), 1, 1, False),
                vae_encode=(lambda: AutoencoderKL(**VAE).encoder, img(768), 1, 1, False))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--prepare', action='store_true', help="only the models that see every brick image")
    ap.add_argument('--search', action='store_true', help="only the search's UNet and VAE")
    torch.manual_seed(0)
    logging.getLogger().setLevel(logging.ERROR)   # "No pretrained weights loaded": random weights on purpose
    rows = {}
    a = ap.parse_args()
    for name, (build, inputs, n, reps, warm) in models(prepare=not a.search, search=not a.prepare).items():
        r = rows[name] = measure(build, inputs, n, reps, warm)
        line = f"{name:>13}: {r['gflop_per_image']:8.2f} GFLOP/image  {r['cpu_s_per_image']:7.3f} s/image on the CPU"
        if name in ('gnet', 'clip_encoder', 'vit_h_14'):
            r.update(pflop_73k=r['gflop_per_image'] * N_IMAGES / 1e6, cpu_hours_73k=r['cpu_s_per_image'] * N_IMAGES / 3600)
            line += f"  73k images: {r['pflop_73k']:6.2f} PFLOP, {r['cpu_hours_73k']:6.1f} CPU-hours"
        r['gflop_per_cpu_s'] = r['gflop_per_image'] / r['cpu_s_per_image']
        print(line + f"  ({r['gflop_per_cpu_s']:.0f} GFLOP/s)", flush=True)
    print(json.dumps(dict(bench='prepare_cost', threads=torch.get_num_threads(), **rows)))
