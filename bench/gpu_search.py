"""Second Sight search on a GPU at full size: Stable Diffusion 2.1 unCLIP built from its published configuration
with random weights (no download; speed does not depend on the values), 768 px, fp16.

Measures, in one run:

- `single`: samples/s drawing one sample per `UnCLIPGenerator.vary` call (how the reference generates: one
  `reconstruct(...)` per sample);
- `batched`: samples/s drawing `--batch` samples in one `vary` call (one call per branch, as `search` does);
- `reconstruction`: seconds for one reconstruction at the paper's settings (6 iterations, 100 samples, 4 branches,
  50 DDIM steps, guidance 10): `secondsight.search.search` with the hybrid encoder at full size (GNet8j at 227 px +
  the CLIP encoder 1024 -> 15000 -> 15000 -> 15724 on an OpenCLIP ViT-H/14 embedder, all random weights) and the
  initial-guess sample. The reference needs about 30 minutes per image on an A100.

Needs CUDA (fails with a clear message otherwise). `--device cpu --tiny` runs the same code on tiny components as a
smoke test. `--scheduler dpmsolver --steps 20` measures the faster sampler. Ends with ONE JSON line.

    python bench/gpu_search.py                      # full size, CUDA, fp16
    python bench/gpu_search.py --device cpu --tiny  # smoke test anywhere
"""
import argparse, json, sys, time

import numpy as np
import torch

# The published configuration of stabilityai/stable-diffusion-2-1-unclip (model_index.json and the components'
# config.json files), written out so that no download is needed.
UNET = dict(act_fn='silu', attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
            center_input_sample=False, class_embed_type='projection', projection_class_embeddings_input_dim=2048,
            cross_attention_dim=1024, down_block_types=['CrossAttnDownBlock2D'] * 3 + ['DownBlock2D'],
            downsample_padding=1, dual_cross_attention=False, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
            layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, num_class_embeds=None,
            only_cross_attention=False, out_channels=4, resnet_time_scale_shift='default', sample_size=96,
            up_block_types=['UpBlock2D'] + ['CrossAttnUpBlock2D'] * 3, upcast_attention=True, use_linear_projection=True)
VAE = dict(act_fn='silu', block_out_channels=[128, 256, 512, 512], down_block_types=['DownEncoderBlock2D'] * 4,
           in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=768,
           scaling_factor=0.18215, up_block_types=['UpDecoderBlock2D'] * 4)
TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
            max_position_embeddings=77, hidden_act='gelu', layer_norm_eps=1e-5, projection_dim=512,
            bos_token_id=0, eos_token_id=2, pad_token_id=1)
VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
              patch_size=14, projection_dim=1024, hidden_act='gelu', layer_norm_eps=1e-5)
FEATURE_EXTRACTOR = dict(crop_size={'height': 224, 'width': 224}, do_center_crop=True, do_normalize=True, do_resize=True,
                         image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
                         resample=3, size={'shortest_edge': 224})
NOISE_AUG = dict(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2')   # image_noising_scheduler
NVOX = 15724                                                                      # subject 1


def full_generator(a, device, dtype):
    "UnCLIPGenerator over the full-size architecture with random weights, built directly on the device."
    from diffusers import AutoencoderKL, UNet2DConditionModel, DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection, CLIPImageProcessor
    from secondsight.search import UnCLIPGenerator, make_scheduler, unclip_scheduler_config, _tiny_tokenizer
    with torch.device(device):
        unet, vae = UNet2DConditionModel(**UNET), AutoencoderKL(**VAE)
        text, vision = CLIPTextModel(CLIPTextConfig(**TEXT)), CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION))
    return UnCLIPGenerator(unet.to(dtype), vae.to(dtype), make_scheduler(a.scheduler, unclip_scheduler_config()),
                           _tiny_tokenizer(77), text.to(dtype), StableUnCLIPImageNormalizer(embedding_dim=1024),
                           DDPMScheduler(**NOISE_AUG), image_encoder=vision.to(dtype),
                           feature_extractor=CLIPImageProcessor(**FEATURE_EXTRACTOR), num_inference_steps=a.steps,
                           guidance_scale=10., max_batch=a.batch, device=device, dtype=dtype)


def full_encoder(device, dtype):
    "The hybrid encoder at full size with random weights: mean of GNet8j (227 px) and the CLIP encoder on ViT-H/14."
    from secondsight.encoders import ImageEmbedder, CLIPEncoder, ClipBetaEncoder, EnsembleEncoder
    from secondsight.gnet import GNet8j, GNetEncoder
    gnet = GNetEncoder(GNet8j(NVOX).to(device))
    clip = ClipBetaEncoder(ImageEmbedder('ViT-H-14', pretrained=None, seed=0, device=device, dtype=dtype),
                           CLIPEncoder(NVOX).to(device))
    return EnsembleEncoder([gnet, clip])


class TinyEncoder:
    "Stand-in encoder for the smoke test: a fixed random read-out of 8x8 pooled pixels."
    nvox = 64
    def __init__(self): self.W = torch.randn(192, self.nvox, generator=torch.Generator().manual_seed(0))
    def predict(self, images, **kw):
        return torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(images).float(), 8).flatten(1) @ self.W


def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--dtype', default='float16', choices=['float16', 'bfloat16', 'float32'])
    ap.add_argument('--tiny', action='store_true', help='tiny random components (smoke test; any device)')
    ap.add_argument('--scheduler', default='ddim', choices=['ddim', 'dpmsolver'])
    ap.add_argument('--steps', type=int, default=50, help='sampler steps at strength 1 (reference: 50 DDIM)')
    ap.add_argument('--batch', type=int, default=22, help='samples per batched call (paper: 22 in the first iterations)')
    ap.add_argument('--n-single', type=int, default=4, help='samples drawn one per call')
    ap.add_argument('--strength', type=float, default=0.92, help='strength of the throughput measurements')
    ap.add_argument('--no-reconstruction', action='store_true', help='skip the full reconstruction timing')
    a = ap.parse_args()
    if torch.device(a.device).type == 'cuda' and not torch.cuda.is_available():
        sys.exit("bench/gpu_search.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine. "
                 "Run it on a GPU machine, or `python bench/gpu_search.py --device cpu --tiny` for a smoke test.")
    from secondsight.core import derive_seed
    from secondsight.search import search, tiny_unclip, slerp
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    if a.tiny:
        a.steps, a.batch, a.n_single = min(a.steps, 4), min(a.batch, 4), min(a.n_single, 2)
        gen, enc = tiny_unclip(num_inference_steps=a.steps, scheduler=a.scheduler, max_batch=a.batch, device=device, dtype=dtype), TinyEncoder()
        settings = dict(n_iter=2, n_samples=8, n_branches=2, min_per_branch=2)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        gen, enc = full_generator(a, device, dtype), full_encoder(device, dtype)
        settings = dict(n_iter=6, n_samples=100, n_branches=4, min_per_branch=10)
    g = torch.Generator().manual_seed(0)
    init = torch.rand(1, 3, gen.size, gen.size, generator=g)
    emb = gen.embed(init)                                                      # (1, 1024)
    gen.vary(init, emb, a.strength, 1, seed=0); sync(device)                   # warm-up (kernels, allocator)
    t = time.perf_counter()
    for i in range(a.n_single): gen.vary(init, emb, a.strength, 1, seed=[i])
    sync(device); single = a.n_single / (time.perf_counter() - t)
    gen.vary(init, emb, a.strength, a.batch, seed=1); sync(device)             # warm-up at the batch size
    t = time.perf_counter()
    gen.vary(init, emb, a.strength, a.batch, seed=2)
    sync(device); batched = a.batch / (time.perf_counter() - t)
    out = dict(bench='gpu_search', device=torch.cuda.get_device_name(device) if device.type == 'cuda' else str(device),
               tiny=a.tiny, dtype=a.dtype, size=gen.size, scheduler=a.scheduler, steps=a.steps, strength=a.strength,
               samples_per_s_single=single, samples_per_s_batched=batched, batch=a.batch, batch_speedup=batched / single)
    print(f"{out['device']}: {single:.3f} samples/s one at a time, {batched:.3f} samples/s batched x{a.batch} "
          f"({batched / single:.1f}x), {a.steps} {a.scheduler} steps at strength {a.strength}", file=sys.stderr)
    if not a.no_reconstruction:
        target = torch.randn(3, enc.nvox, generator=g)
        if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        gen.vary(init, emb, 0.9, 1, seed=derive_seed(0, 'initial'))             # the initial-guess sample
        res = search(target, init, emb[0], enc, gen, seed=derive_seed(0, 'search'), **settings)
        sync(device); rec = time.perf_counter() - t
        n = sum(b * k for b, k in zip(res.n_branches, res.n_per_branch))
        out.update(reconstruction_s=rec, reconstruction_samples=n, reconstruction_settings=settings,
                   peak_gpu_gb=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else None,
                   reference_s_per_image_a100=1800)
        print(f"one reconstruction ({settings['n_iter']} iterations, {n} samples): {rec:.1f} s "
              f"(reference: ~1800 s on an A100)", file=sys.stderr)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
