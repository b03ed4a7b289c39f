"""Cost model of one reconstruction: what the search computes, counted exactly, and its floor on a given GPU.

Counts come from running each published loop (`secondsight.search.LOOPS`) with a recording generator: every
`vary` call's sample count and strength at the loop's own schedule (6 iterations, 50 DDIM steps at strength 1, as
the paper). A sample at strength s denoises int(50 s) steps; each step is one UNet evaluation per guidance branch
(classifier-free guidance: x2). FLOPs per model evaluation come from torch's FLOP counter on the published
architectures built on the 'meta' device (no memory, no weights): the SD 2.1 unCLIP UNet at 96 x 96 latents (768 px),
the VAE decoder (768 px), OpenCLIP ViT-H/14 (224 px; it embeds every sample for the CLIP encoder and the next
iteration's seeds), GNet8j (227 px, 15,724 voxels) and the CLIP encoder. A multiply-add counts 2 FLOP. MindEye's reconstruction (rows
`mindeye`, `mindeye-1`: 16 or 1 img2img samples at strength 0.85, each decoded and embedded for second-order
selection, plus its brain networks: backbone, 20 prior steps, low-level decoder) is counted the same way.

Floor = FLOP / (utilization x dense peak), per GPU, with the peaks of their data sheets (bf16/fp16 tensor cores,
dense). Ends with ONE JSON line.

    python bench/cost_model.py
    python bench/cost_model.py --utilization 0.4
"""
import argparse, json, logging

import torch
from torch.utils.flop_counter import FlopCounterMode

PEAK_TFLOPS = {'A100': 312, 'H100 SXM': 989, 'H200': 989, 'L40S': 362, 'RTX 4090': 165}   # dense bf16/fp16, data sheets
STEPS, N_ITER, GUIDANCE = 50, 6, 2

# The published configuration of stabilityai/stable-diffusion-2-1-unclip (model_index.json and the components'
# config.json files), written out so that no download is needed: the architectures counted here, and built at full size
# by gpu_search.py, prepare_cost.py and rehearsal.py (this module imports none of them).
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


def flops(build, *inputs, **kw) -> float:
    "FLOP of one forward pass of build() on meta tensors"
    with torch.device('meta'):
        m = build(); x = [torch.empty(*s) if isinstance(s, tuple) else s for s in inputs]
        with FlopCounterMode(display=False) as fc, torch.no_grad(): m(*x, **kw)
    return float(fc.get_total_flops())


def model_flops() -> dict:
    "GFLOP per evaluation of each model the search runs"
    from diffusers import AutoencoderKL, UNet2DConditionModel
    import open_clip
    from secondsight.encoders import CLIPEncoder
    from secondsight.gnet import GNet8j
    logging.getLogger().setLevel(logging.ERROR)
    unet = flops(lambda: UNet2DConditionModel(**UNET), (1, 4, 96, 96), (1,), (1, 77, 1024),
                 class_labels=torch.empty(1, 2048, device='meta'))
    vae = flops(lambda: AutoencoderKL(**VAE).decoder, (1, 4, 96, 96))
    vith = flops(lambda: open_clip.create_model('ViT-H-14', pretrained=None, device='meta').visual, (1, 3, 224, 224))
    gnet = flops(lambda: GNet8j(NVOX), (1, 3, 227, 227))
    clip = flops(lambda: CLIPEncoder(NVOX), (1, 1024))
    return {k: v / 1e9 for k, v in dict(unet_eval=unet, vae_decode=vae, vit_h_embed=vith, gnet=gnet, clip_encoder=clip).items()}


def decoder_flops() -> dict:
    "GFLOP of MindEye's brain networks at NSD size (15,724 voxels -> ViT-H/14's 1,024-d embedding, SD-2.1's 4 x 96 x 96 latents)"
    from secondsight.decoders import LowLevelDecoder, MindEyeDecoder
    logging.getLogger().setLevel(logging.ERROR)
    backbone = flops(lambda: MindEyeDecoder(NVOX, 1024), (1, NVOX))
    with torch.device('meta'):
        prior = MindEyeDecoder(NVOX, 1024, prior={}).prior
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            prior.predict(torch.empty(1, 1024), torch.zeros(1, dtype=torch.long), torch.empty(1, 1024))
    low = flops(lambda: LowLevelDecoder(NVOX, (4, 96, 96)), (1, NVOX))
    return dict(backbone=backbone / 1e9, prior_step=fc.get_total_flops() / 1e9, lowlevel=low / 1e9)


def mindeye_counts(recons_per_sample: int = 16, strength: float = 0.85) -> dict:
    "Samples and sample-steps of MindEye's reconstruction of one image: img2img from the blurry image, recons_per_sample samples"
    return dict(samples=recons_per_sample, sample_steps=recons_per_sample * int(STEPS * strength))


def loop_counts(name: str) -> dict:
    "Samples and sample-steps of one reconstruction with the loop `name` (its own schedule; plus the initial-guess sample)"
    from secondsight.search import search
    from secondsight.testing import RecordingGenerator, QualityEncoder
    rg, target = RecordingGenerator(), torch.randn(300, generator=torch.Generator().manual_seed(0))
    search(target, rg.image(-1, 0.0), rg.embed(rg.image(-1, 0.0))[0], QualityEncoder(target), rg, loop=name, n_iter=N_ITER)
    calls = [(c['n'], c['strength']) for c in rg.calls] + [(1, 0.9)]           # + the initial guess (strength 0.9)
    return dict(samples=sum(n for n, _ in calls), sample_steps=sum(n * int(STEPS * s) for n, s in calls))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--utilization', type=float, default=0.4, help="fraction of the dense peak reached (0.4 is typical of a UNet in fp16)")
    a = ap.parse_args()
    from secondsight.search import LOOPS
    g = model_flops()
    rows = {}
    for name in LOOPS:
        c = loop_counts(name)
        unet = c['sample_steps'] * GUIDANCE * g['unet_eval']
        per_sample = g['vae_decode'] + g['vit_h_embed'] + g['gnet'] + g['clip_encoder']     # decode, then scored by the hybrid
        total = unet + c['samples'] * per_sample
        rows[name] = dict(c, unet_evals=c['sample_steps'] * GUIDANCE, tflop=total / 1e3, unet_share=unet / total,
                          floor_minutes={gpu: total / 1e3 / (a.utilization * peak) / 60 for gpu, peak in PEAK_TFLOPS.items()})
    d = decoder_flops()     # MindEye's reconstruction: backbone, 20 prior steps (unguided, as start_from), the blurry image
    for name, c in (('mindeye', mindeye_counts(16)), ('mindeye-1', mindeye_counts(1))):
        unet = c['sample_steps'] * GUIDANCE * g['unet_eval']
        brain = d['backbone'] + 20 * d['prior_step'] + d['lowlevel'] + 2 * g['vae_decode']   # blurry decoded, then encoded (~ a decode)
        total = unet + brain + c['samples'] * (g['vae_decode'] + g['vit_h_embed'])           # each sample decoded and embedded (selection)
        rows[name] = dict(c, unet_evals=c['sample_steps'] * GUIDANCE, tflop=total / 1e3, unet_share=unet / total,
                          floor_minutes={gpu: total / 1e3 / (a.utilization * peak) / 60 for gpu, peak in PEAK_TFLOPS.items()})
    g.update({f'mindeye_{k}': v for k, v in d.items()})
    print("GFLOP per evaluation: " + ", ".join(f"{k} {v:,.1f}" for k, v in g.items()))
    print(f"{'loop':>9} {'samples':>8} {'UNet evals':>11} {'PFLOP':>7} {'UNet share':>10}  floor min/image at {a.utilization:.0%}: "
          + '  '.join(PEAK_TFLOPS))
    for name, r in rows.items():
        print(f"{name:>9} {r['samples']:>8} {r['unet_evals']:>11,} {r['tflop'] / 1e3:>7.1f} {r['unet_share']:>10.1%}  "
              + '  '.join(f"{r['floor_minutes'][k]:>{len(k)}.1f}" for k in PEAK_TFLOPS))
    print(json.dumps(dict(bench='cost_model', gflop_per_eval=g, utilization=a.utilization, peak_tflops=PEAK_TFLOPS, loops=rows)))


if __name__ == '__main__':
    main()
