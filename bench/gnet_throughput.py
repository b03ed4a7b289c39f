"""GNet prediction throughput on the CPU at the published size (227 px input, subject 1's 15724 voxels).

Three ways to predict betas for NSD-sized images (425 x 425 uint8, the imgBrick layout), in one run:

- `reference`: Second Sight's `GNet8_Encoder.predict`: a Python loop that resizes each image with PIL (LANCZOS,
  227 px) and converts it to a float numpy array, then the model in batches of 100 (`subject_pred_pass`), with the
  readout computed as `model_zoo.Torch_LayerwiseFWRF` does (tensordot + bmm over all voxels at once);
- `ours_b1`: `GNetEncoder.predict` one image per call (batch 1: the latency of scoring a single image);
- `ours_batched`: `GNetEncoder.predict` on the whole set with `--batch` images per forward pass (resize in torch,
  antialiased bicubic, batched).

The weights are random (same architecture and sizes as `gnet_multisubject`; throughput does not depend on the
values). Prints a few human-readable lines, then ONE JSON line with the figures (images/s).

    python bench/gnet_throughput.py --n 64 --batch 32 --threads 2
"""
import argparse, json, platform, time
import numpy as np
import torch
from PIL import Image

from secondsight.gnet import GNet8j, GNetEncoder, log_act


def reference_readout(fwrf, fmaps):
    "The readout as SS `model_zoo.Torch_LayerwiseFWRF.forward` computes it (tensordot per map, then bmm)."
    phi = []
    for k, fm in enumerate(fmaps):
        g = torch.softmax(torch.flatten(getattr(fwrf, f'rf{k}'), start_dim=1), dim=1)
        phi.append(torch.tensordot(g, log_act(torch.flatten(fm, start_dim=2)), dims=[[1], [2]]))  # (nv, B, C)
    Phi = log_act(torch.cat(phi, dim=2))
    return torch.squeeze(torch.bmm(Phi, torch.unsqueeze(fwrf.w, 2))).t() + torch.unsqueeze(fwrf.b, 0)


def reference_predict(model, images, batch_size=100):
    "Per-image PIL resize + numpy conversion (as SS `GNet8_Encoder.predict`), then batches of 100 (as `subject_pred_pass`)\
 through the reference readout."
    data = []
    for im in images:
        pil = Image.fromarray(im).resize((227, 227), resample=Image.Resampling.LANCZOS)
        data.append(np.array(pil).astype(np.float32) / 255.0)
    x = np.moveaxis(np.array(data), 3, 1)
    out = np.zeros((len(x), model.nvox), np.float32)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out[i:i + batch_size] = reference_readout(model.fwrf, model.features(torch.from_numpy(x[i:i + batch_size]))).numpy()
    return out


def timed(fn, n_images, repeat):
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t)
    return out, n_images / best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=64, help='images per measurement')
    ap.add_argument('--n_b1', type=int, default=None, help='images for the batch-1 measurement (default: min(n, 16))')
    ap.add_argument('--batch', type=int, default=32, help='batch size of the batched run')
    ap.add_argument('--nvox', type=int, default=15724, help="voxels (subject 1's nsdgeneral count)")
    ap.add_argument('--src', type=int, default=425, help='source image size (NSD: 425)')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    ap.add_argument('--repeat', type=int, default=2, help='repetitions; the best time counts')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    n_b1 = a.n_b1 or min(a.n, 16)
    torch.manual_seed(0)
    model = GNet8j(a.nvox, 227, [0.48, 0.45, 0.41]).eval()
    enc = GNetEncoder(model, batch_size=a.batch)
    rng = np.random.default_rng(0)
    # smooth random images (a blurred noise field per image), uint8 (n, src, src, 3) like imgBrick rows
    base = rng.integers(0, 256, (a.n, a.src // 8, a.src // 8, 3), dtype=np.uint8)
    images = np.stack([np.asarray(Image.fromarray(b).resize((a.src, a.src), Image.BICUBIC)) for b in base])

    with torch.no_grad(): enc.predict(images[:2])  # warm-up
    ref_out, ref_ips = timed(lambda: reference_predict(model, images), a.n, a.repeat)
    ours_out, batched_ips = timed(lambda: enc.predict(images, batch_size=a.batch).numpy(), a.n, a.repeat)
    _, b1_ips = timed(lambda: [enc.predict(images[i:i + 1], batch_size=1) for i in range(n_b1)], n_b1, a.repeat)
    # agreement of the two preprocessing paths (LANCZOS vs antialiased bicubic): per voxel, across images
    a_, b_ = ref_out - ref_out.mean(0), ours_out - ours_out.mean(0)
    r = float(np.nanmean((a_ * b_).sum(0) / np.sqrt((a_ ** 2).sum(0) * (b_ ** 2).sum(0))))

    print(f"reference (PIL loop + batches of 100): {ref_ips:8.2f} images/s")
    print(f"ours, batch 1:                         {b1_ips:8.2f} images/s")
    print(f"ours, batch {a.batch:<4d}                     {batched_ips:8.2f} images/s  "
          f"(x{batched_ips / ref_ips:.2f} vs reference)")
    print(f"agreement reference vs ours: mean over voxels of r across images = {r:.4f}")
    print(json.dumps(dict(bench='gnet_throughput', device='cpu', cpu=platform.processor() or platform.machine(),
                          threads=torch.get_num_threads(), input_size=227, nvox=a.nvox, src_size=a.src, n_images=a.n,
                          n_images_b1=n_b1, batch=a.batch, reference_ips=round(ref_ips, 3), ours_b1_ips=round(b1_ips, 3),
                          ours_batched_ips=round(batched_ips, 3), speedup_batched_vs_reference=round(batched_ips / ref_ips, 3),
                          agreement_r=round(float(r), 5))))


if __name__ == '__main__':
    main()
