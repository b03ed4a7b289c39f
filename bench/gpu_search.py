"""Second Sight search on a GPU at full size: Stable Diffusion 2.1 unCLIP built from its published configuration
with random weights (no download; speed does not depend on the values), 768 px. One prepared run (`make bench-gpu`),
under 8 minutes on one H100/H200 including the model builds; every phase is timed and skipped, saying so, when the
time budget (`--budget`, default 420 s) would be exceeded.

Phases (each ends in the JSON line):

1. `build`: the generator and the hybrid encoder at full size (GNet8j 227 px + CLIP encoder 1024 -> 15000 -> 15000 ->
   15724 on an OpenCLIP ViT-H/14 embedder), fp16.
2. `unet`: seconds per UNet evaluation per sample against the batch (1 ... 64 samples; x2 rows for classifier-free
   guidance), achieved TFLOP/s from the cost model's FLOP count (`bench/cost_model.py`), and peak memory.
3. `attention` / `channels_last` / `bfloat16` / `compile`: the same UNet evaluation at the best batch with the classic
   attention processor instead of SDPA, with channels-last memory, in bfloat16, and `torch.compile`d (compile time
   and the number of images after which it pays).
4. `vary`: samples/s through `UnCLIPGenerator.vary` (noising, denoising, VAE decode) one sample per call (the
   reference's way) and batched, DDIM 50 against DPM-Solver++ 20 (speed only: whether 20 DPM-Solver++ steps give the
   same reconstructions needs the real weights).
5. `overhead`: per sample, VAE decode, ViT-H embedding and the hybrid encoder's prediction (what is not UNet).
6. `reconstruction`: iteration 0 of the search measured (100 samples at strength 0.92, scored), and one
   reconstruction at paper settings extrapolated from the measured costs and the loop's exact counts (`ours`: 40,362
   UNet evaluations, 489 samples), against the floor at 40% of the card's dense fp16 peak. The reference needs about
   30 minutes per image on an A100.

Needs CUDA (fails with a clear message otherwise). `--device cpu --tiny` runs every phase on tiny components as a
smoke test (tests/test_bench_gpu.py). Ends with ONE JSON line.

    python bench/gpu_search.py                      # full size, CUDA
    python bench/gpu_search.py --device cpu --tiny  # smoke test anywhere
"""
import argparse, json, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the published architectures and the cost model's counts (cost_model.py owns both; it does not import this file)
from cost_model import UNET, VAE, TEXT, VISION, FEATURE_EXTRACTOR, NOISE_AUG, NVOX, PEAK_TFLOPS, GUIDANCE, model_flops, loop_counts


def full_generator(a, device, dtype):
    "UnCLIPGenerator over the full-size architecture with random weights, built directly on the device."
    from diffusers import AutoencoderKL, UNet2DConditionModel, DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection, CLIPImageProcessor
    from secondsight.unclip import UnCLIPGenerator, make_scheduler, unclip_scheduler_config
    from secondsight.testing import tiny_tokenizer
    with torch.device(device):
        unet, vae = UNet2DConditionModel(**UNET), AutoencoderKL(**VAE)
        text, vision = CLIPTextModel(CLIPTextConfig(**TEXT)), CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION))
    return UnCLIPGenerator(unet.to(dtype), vae.to(dtype), make_scheduler(a.scheduler, unclip_scheduler_config()),
                           tiny_tokenizer(77), text.to(dtype), StableUnCLIPImageNormalizer(embedding_dim=1024),
                           DDPMScheduler(**NOISE_AUG), image_encoder=vision.to(dtype),
                           feature_extractor=CLIPImageProcessor(**FEATURE_EXTRACTOR), num_inference_steps=a.steps,
                           guidance_scale=10., max_batch=a.batch, device=device, dtype=dtype)


def full_encoder(device, dtype):
    "The hybrid encoder at full size with random weights: mean of GNet8j (227 px) and the CLIP encoder on ViT-H/14."
    from secondsight.encoders import ImageEmbedder, CLIPEncoder, ClipBetaEncoder, EnsembleEncoder
    from secondsight.gnet import GNet8j, GNetEncoder
    with torch.device(device): gnet, head = GNetEncoder(GNet8j(NVOX)), CLIPEncoder(NVOX)     # built on the device (fast on a GPU)
    clip = ClipBetaEncoder(ImageEmbedder('ViT-H-14', pretrained=None, seed=0, device=device, dtype=dtype), head)
    return EnsembleEncoder([gnet, clip])


class TinyEncoder:
    "Stand-in encoder for the smoke test: a fixed random read-out of 8x8 pooled pixels."
    nvox = 64
    def __init__(self): self.W = torch.randn(192, self.nvox, generator=torch.Generator().manual_seed(0))
    def predict(self, images, **kw):
        return torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(images).float(), 8).flatten(1) @ self.W


def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


def timed(fn, device, reps: int = 1, warm: bool = True) -> float:
    "Seconds per call of fn() (after one untimed call unless warm=False)"
    if warm: fn(); sync(device)
    t = time.perf_counter()
    for _ in range(reps): fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def peak_gb(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if torch.device(device).type == 'cuda' else None


def unet_eval(gen, b: int):
    "One guided UNet evaluation of b samples (2b rows), as `UnCLIPGenerator.denoise` calls it"
    unet, f = gen.unet, gen.vae_scale
    x = torch.randn(2 * b, unet.config.in_channels, gen.size // f, gen.size // f, device=gen.device, dtype=gen.dtype)
    text = gen.text_states().repeat_interleave(b, 0)
    img = torch.zeros(2 * b, unet.config.projection_class_embeddings_input_dim, device=gen.device, dtype=gen.dtype)
    t = torch.tensor(500, device=gen.device)
    def call():   # without no_grad the UNet (parameters requiring grad) would keep every activation for a backward pass
        with torch.no_grad(): return unet(x, t, encoder_hidden_states=text, class_labels=img, return_dict=False)
    return call


class Budget:
    "Phases run while the time budget lasts; a skipped phase is recorded, not silently dropped"
    def __init__(self, seconds): self.t0, self.seconds, self.skipped = time.perf_counter(), seconds, []
    def left(self): return self.seconds - (time.perf_counter() - self.t0)
    def allows(self, name, need):
        if self.left() >= need: return True
        self.skipped.append(f"{name} (needs ~{need:.0f} s, {self.left():.0f} s left)"); return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--tiny', action='store_true', help='tiny random components (smoke test; any device)')
    ap.add_argument('--budget', type=float, default=420, help='seconds for all phases after the build')
    ap.add_argument('--batches', type=int, nargs='*', default=[1, 4, 16, 32, 64], help='samples per UNet call to sweep')
    ap.add_argument('--no-compile', action='store_true', help='skip torch.compile')
    a = ap.parse_args()
    if torch.device(a.device).type == 'cuda' and not torch.cuda.is_available():
        sys.exit("bench/gpu_search.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine. "
                 "Run it on a GPU machine, or `python bench/gpu_search.py --device cpu --tiny` for a smoke test.")
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from secondsight.core import derive_seed, brain_scores
    from secondsight.unclip import make_scheduler, unclip_scheduler_config
    from secondsight.testing import tiny_unclip
    device, out, log = torch.device(a.device), {}, (lambda m: print(m, file=sys.stderr, flush=True))
    cuda = device.type == 'cuda'
    name = torch.cuda.get_device_name(device) if cuda else str(device)
    # 1. Build
    t = time.perf_counter()
    def build(dtype, scheduler='ddim', steps=50):
        if a.tiny: return tiny_unclip(num_inference_steps=min(steps, 4), scheduler=scheduler, max_batch=64, device=device, dtype=dtype)
        ns = argparse.Namespace(scheduler=scheduler, steps=steps, batch=64)
        return full_generator(ns, device, dtype)
    gen = build(torch.float16 if cuda else torch.float32)
    enc = TinyEncoder() if a.tiny else full_encoder(device, torch.float16)
    sync(device); out['build_s'] = time.perf_counter() - t
    log(f"{name}: built in {out['build_s']:.0f} s")
    budget = Budget(a.budget)
    flop = None if a.tiny else model_flops()['unet_eval'] * 1e9      # FLOP of one UNet evaluation of one row
    batches = [b for b in a.batches if not a.tiny or b <= 8] or [1]
    # 2. UNet evaluation against the batch
    unet_s, best = {}, batches[0]
    for b in batches:
        if unet_s and not budget.allows(f'unet batch {b}', 5): break        # the first batch always runs: the rest needs it
        if cuda: torch.cuda.reset_peak_memory_stats(device)
        try: unet_s[b] = timed(unet_eval(gen, b), device, reps=3) / b
        except torch.cuda.OutOfMemoryError: log(f"batch {b}: out of memory"); break
        out.setdefault('unet_peak_gb', {})[b] = peak_gb(device)
        log(f"UNet, batch {b}: {unet_s[b] * 1e3:.2f} ms per sample-evaluation" + (f", {2 * flop / unet_s[b] / 1e12:.0f} TFLOP/s" if flop else ''))
    best = min(unet_s, key=unet_s.get)
    out.update(unet_s_per_sample_eval=unet_s, best_batch=best)
    if flop: out['unet_tflops'] = {b: 2 * flop / s / 1e12 for b, s in unet_s.items()}
    # 3. Variants at the best batch
    ref, variants = unet_s[best], {}
    if budget.allows('attention', 10):
        gen.unet.set_attn_processor(AttnProcessor()); variants['classic_attention'] = timed(unet_eval(gen, best), device, 3) / best
        gen.unet.set_attn_processor(AttnProcessor2_0())
    if budget.allows('channels_last', 10):
        gen.unet.to(memory_format=torch.channels_last); variants['channels_last'] = timed(unet_eval(gen, best), device, 3) / best
        if variants['channels_last'] > ref: gen.unet.to(memory_format=torch.contiguous_format)
    if budget.allows('bfloat16', 60 if not a.tiny else 5):
        bf = build(torch.bfloat16); variants['bfloat16'] = timed(unet_eval(bf, best), device, 3) / best; del bf
    if not a.no_compile and budget.allows('compile', 240 if not a.tiny else 30):
        plain = gen.unet
        t = time.perf_counter(); gen.unet = torch.compile(plain); f = unet_eval(gen, best); f(); sync(device)
        out['compile_s'] = time.perf_counter() - t
        variants['compiled'] = timed(f, device, 3) / best
        gen.unet = plain
    out['unet_variants_s_per_sample_eval'] = variants
    for k, v in variants.items(): log(f"UNet, batch {best}, {k}: {v * 1e3:.2f} ms ({ref / v:.2f}x the SDPA fp16 default)")
    # 4. vary: one per call against batched, DDIM 50 against DPM-Solver++ 20
    g = torch.Generator().manual_seed(0)
    init = torch.rand(1, 3, gen.size, gen.size, generator=g)
    emb = gen.embed(init)
    vary = {}
    if budget.allows('vary', 60 if not a.tiny else 5):
        vary['single'] = 1 / timed(lambda: gen.vary(init, emb, 0.92, 1, seed=0), device)
        gen.max_batch = min(best, 32)             # also the VAE's decode chunk: 64 decodes at 768 px may not fit an 80 GB card
        vary['batched'] = best / timed(lambda: gen.vary(init, emb, 0.92, best, seed=1), device)
    if budget.allows('dpmsolver', 30 if not a.tiny else 5):
        ddim, steps = gen.scheduler, gen.num_inference_steps
        gen.scheduler, gen.num_inference_steps = make_scheduler('dpmsolver', unclip_scheduler_config()), (20 if not a.tiny else 2)
        vary['batched_dpmsolver20'] = best / timed(lambda: gen.vary(init, emb, 0.92, best, seed=1), device)
        gen.scheduler, gen.num_inference_steps = ddim, steps
    out['vary_samples_per_s'] = vary
    for k, v in vary.items(): log(f"vary, strength 0.92, {k}: {v:.3f} samples/s")
    # 5. Per-sample costs besides the UNet
    over = {}
    if budget.allows('overhead', 30 if not a.tiny else 5):
        gen.max_batch = min(best, 32)
        lat = torch.randn(best, 4, gen.size // gen.vae_scale, gen.size // gen.vae_scale)
        imgs = torch.rand(best, 3, gen.size, gen.size, generator=g)
        over = dict(vae_decode=timed(lambda: gen.decode_latents(lat), device) / best,
                    embed=timed(lambda: gen.embed(imgs), device) / best,
                    encoder=timed(lambda: enc.predict(imgs), device) / best)
        for k, v in over.items(): log(f"per sample, {k}: {v * 1e3:.1f} ms")
    out['overhead_s_per_sample'] = over
    # 6. Reconstruction: iteration 0 measured, the whole one extrapolated from the measured costs
    if budget.allows('iteration 0', 90 if not a.tiny else 5):
        target = torch.randn(3, enc.nvox, generator=g)
        if cuda: torch.cuda.reset_peak_memory_stats(device)
        n0 = 100 if not a.tiny else 8
        def it0():
            x = gen.vary(init, emb, 0.92, n0, seed=derive_seed(0, 'search', 0))
            return brain_scores(enc.predict(x), target), gen.embed(x[:4])
        out['iteration0_s'] = timed(it0, device, 1, warm=False)           # the sampler is warm from phase 4
        out['iteration0_peak_gb'] = peak_gb(device)
        log(f"iteration 0 ({n0} samples at 0.92, scored): {out['iteration0_s']:.1f} s")
    c = loop_counts('ours')
    evals = c['sample_steps'] * GUIDANCE
    t_eval = min([unet_s[best]] + [v for k, v in variants.items() if k != 'classic_attention'])
    if over:
        est = evals * t_eval / 2 + c['samples'] * sum(over.values())     # t_eval covers both guidance rows of one sample
        out.update(reconstruction_s_estimated=est, reconstruction_unet_evals=evals, reconstruction_samples=c['samples'])
        if flop and cuda:
            peak = next((v for k, v in PEAK_TFLOPS.items() if k.split()[0] in name), None)
            if peak:
                floor = (evals * flop) / (0.4 * peak * 1e12)             # the UNet's share (97%) of the cost model's floor
                out.update(floor_s_at_40pct=floor, times_floor=est / floor, peak_tflops=peak)
        log(f"one reconstruction (ours, {c['samples']} samples, {evals:,} UNet evaluations): ~{est / 60:.1f} min estimated"
            + (f", {out['times_floor']:.2f}x the floor at 40% of peak" if 'times_floor' in out else '') + " (reference: ~30 min on an A100)")
    out.update(bench='gpu_search', device=name, tiny=a.tiny, size=gen.size, skipped=budget.skipped,
               seconds=time.perf_counter() - budget.t0 + out['build_s'])
    print(json.dumps(out))


if __name__ == '__main__':
    main()
