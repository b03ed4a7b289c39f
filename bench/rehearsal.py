"""Full-size rehearsal of the NSD path: real shapes, published file formats, random weights, minimal counts.

Writes, under a work folder (default `data/rehearsal/`, reused when complete):

- `nsd/`: an NSD mirror at REAL shapes for subject 1: the func1pt8mm grid 81 x 104 x 83, nsdgeneral with exactly
  15,724 voxels, prf-visualrois labels, `--sessions` sessions of 750 trials (int16, gzipped NIfTI, as NSD), a
  425-px `imgBrick` of `--images` images, `nsd_expdesign.mat` and `nsd_stim_info_merged.csv` in NSD's layout.
- `weights/`: the authors' published formats at full size with random weights: `gnet_multisubject` (GNet8j,
  227 px, 15,724 voxels), `sub01_clip_encoder.pt` (1024 -> 15000 -> 15000 -> 15724), `sub01_hybrid_autoencoder.pt`,
  the open_clip ViT-H-14 checkpoint under the offline name the embedder looks for, Stable Diffusion 2.1 unCLIP
  in the diffusers folder layout built from its published configuration (`stable-diffusion-2-1-unclip/`), and
  torchvision's ConvNeXt-T checkpoint under its hub file name (the low-level decoder's teacher).

Then runs the SAME notebooks as a user, 00 -> 04, through papermill with dataset 'nsd' and that weights folder,
with minimal counts (1 image, 1 iteration, 2 samples, 2 sampler steps), each stage in its own process; then 03 and 04
again for MindEye's route as BOI publishes it (`init='mindeye'`, `lowlevel='decoded'`, `loop='boi-v2'`: both of
MindEye's decoders trained at NSD size for one epoch, 2 samples per image with second-order selection) on a second
mirror, `nsd-few/` (NSD's file shapes, 25 images shown 30 times in one session: the decoders' training images each
go through the VAE at 768 px), and reports
per-stage wall time and peak memory: a table, then ONE JSON line. It is how we know the real path runs at real shapes
(a shape, dtype or memory bug shows up here, not after hours on a GPU). The files are kept between runs, and so are
the caches the notebooks write (`data/`: the stimulus embeddings, library predictions, trained decoders) unless
`--cold`; the search's run folder is always started afresh. On 2 CPU cores a warm run of 00 -> 04 takes about 26
minutes and MindEye's two stages about 28 more (most of it VAE encodes at 768 px); a cold one about an hour more, most
of it ViT-H embedding the brick (2-4 s an image).

    python bench/rehearsal.py                      # write what is missing, run 00 -> 04 on the CPU
    python bench/rehearsal.py --cold               # the same from empty caches (embeddings, predictions, decoders)
    python bench/rehearsal.py --device cuda        # the same on a GPU
    python bench/rehearsal.py --write-only         # only the files
    python bench/rehearsal.py --stages 03_search:mindeye,04_metrics:mindeye   # only MindEye's route (BOI as published)
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
GRID, NVOX, TRIALS = (81, 104, 83), 15724, 750
# MindEye's route trains its decoders on every image the subject saw, each through the VAE encoder at 768 px (12-29 s on
# 2 CPU cores): on a mirror of its own, NSD's file shapes with 25 images shown 30 times in one session (10 of them test)
FEW = dict(n_images=60, n_sessions=1, reps=30)


def _done(folder: Path) -> bool: return (folder / 'COMPLETE.json').is_file()


def _mark(folder: Path, **info): (folder / 'COMPLETE.json').write_text(json.dumps(dict(info, written=time.strftime('%F %T')), indent=1))


def write_nsd(root: Path, n_images: int, n_sessions: int, seed: int = 0, reps: int = 3):
    "Subject 1 of an NSD mirror at real shapes (random content), in the layout `secondsight.data.nsd_path` reads"
    import h5py, nibabel as nib, scipy.io
    from preprocess_session import make_session
    from secondsight.data import nsd_path
    from secondsight.demo import _demo_stim_info
    rng = np.random.default_rng(seed)
    K = n_sessions * TRIALS // reps                                  # images a subject sees (`reps` repetitions each; NSD: 3)
    n_shared = max(10, K // 10)                                      # the shared (test) images
    if n_images <= K: raise SystemExit(f"--images must exceed the {K} images a subject sees (the library is the rest)")
    perm = rng.permutation(n_images)
    shared = perm[:n_shared]
    subjectim = np.stack([np.concatenate([shared, rng.permutation(perm[n_shared:])[:K - n_shared]]) for _ in range(8)])
    order = rng.permutation(np.repeat(np.arange(K), reps))          # 10k-index of every trial
    p = nsd_path(root, 'expdesign', must_exist=False); p.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(p, dict(masterordering=(order + 1)[None].astype(np.float64), subjectim=(subjectim + 1).astype(np.float64),
                             sharedix=(shared + 1)[None].astype(np.float64)))
    _demo_stim_info(n_images, shared, subjectim, order, reps).to_csv(nsd_path(root, 'stim_info', must_exist=False))
    p = nsd_path(root, 'stimuli', must_exist=False); p.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(p, 'w') as f:                                     # smooth random colour images, 425 px
        d = f.create_dataset('imgBrick', (n_images, 425, 425, 3), np.uint8, chunks=(1, 425, 425, 3))
        import torch, torch.nn.functional as F
        for i in range(0, n_images, 64):
            x = torch.rand(min(64, n_images - i), 3, 8, 8, generator=torch.Generator().manual_seed(seed + i))
            d[i:i + len(x)] = (F.interpolate(x, size=(425, 425), mode='bicubic', align_corners=False).clamp(0, 1) * 255
                               ).round().byte().permute(0, 2, 3, 1).numpy()
    mask = None
    for ses in range(1, n_sessions + 1):
        p = nsd_path(root, 'betas', 1, ses, must_exist=False); p.parent.mkdir(parents=True, exist_ok=True)
        mask = make_session(p, (*GRID, TRIALS), NVOX, seed=seed + ses)
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    gen = np.where(mask, 1, 0).astype(np.int16)
    y = np.broadcast_to(np.linspace(0, 1, GRID[1])[None, :, None], GRID)
    prf = np.zeros(GRID, np.int16)
    ys = np.unique(y[mask])                                      # V1..V4: two brain slices each, at the back
    for lab in range(1, 5):
        prf[mask & np.isin(y, ys[2 * lab - 2:2 * lab])] = 2 * lab - 1 if lab < 4 else 7
    for name, vol in (('nsdgeneral', gen), ('prf-visualrois', prf)):
        p = nsd_path(root, 'roi', 1, roi=name, must_exist=False); p.parent.mkdir(parents=True, exist_ok=True)
        nib.Nifti1Image(vol, affine).to_filename(str(p))
    _mark(root, n_images=n_images, n_sessions=n_sessions, reps=reps, nvox=int(mask.sum()), shared=int(n_shared), seen=int(K))


def save_unclip(gen, dest: Path):
    "An `UnCLIPGenerator`'s components in the diffusers folder layout `UnCLIPGenerator.from_pretrained` reads (its dtype)"
    for name in ('unet', 'vae', 'text_encoder', 'image_encoder', 'image_normalizer'):
        getattr(gen, name).save_pretrained(dest / name)
    gen.scheduler.save_pretrained(dest / 'scheduler')
    gen.image_noising_scheduler.save_pretrained(dest / 'image_noising_scheduler')
    gen.feature_extractor.save_pretrained(dest / 'feature_extractor')
    gen.tokenizer.save_pretrained(dest / 'tokenizer')
    _mark(dest, note='random weights at the published sizes; not usable for science')


def write_weights(dest: Path, nsd: Path, seed: int = 0, device: str = 'cpu'):
    """The published model files at full size with random weights (authors' formats; unCLIP in the diffusers layout),
    each written only when missing; built on `device` (a GPU builds them in seconds), saved from the CPU"""
    import torch, open_clip, nibabel as nib
    from secondsight.core import seeded
    from secondsight.data import nsd_path
    from secondsight.encoders import CLIPEncoder, BetaAutoencoder
    from secondsight.gnet import GNet8j, save_gnet_multisubject
    from secondsight.weights import TEACHER, metric_network, metric_weight_files
    from gpu_search import full_generator
    dest.mkdir(parents=True, exist_ok=True)
    cpu = lambda m: {k: v.cpu() for k, v in m.state_dict().items()}
    def build(f):
        with torch.device(device): return seeded(f, seed)
    if not (dest / 'gnet_multisubject').exists():
        g = build(lambda: GNet8j(NVOX, 227, input_mean=[0.45, 0.43, 0.39])).cpu()
        gen = np.asarray(nib.load(str(nsd_path(nsd, 'roi', 1, roi='nsdgeneral'))).dataobj) == 1     # the published voxel_mask
        save_gnet_multisubject(dest / 'gnet_multisubject', {1: g}, voxel_masks={1: gen.ravel()}, brain_nii_shapes={1: GRID}); del g
    if not (dest / 'sub01_clip_encoder.pt').exists():
        torch.save({f'module.{k}': v for k, v in cpu(build(lambda: CLIPEncoder(NVOX))).items()}, dest / 'sub01_clip_encoder.pt')
    if not (dest / 'sub01_hybrid_autoencoder.pt').exists():
        torch.save(cpu(build(lambda: BetaAutoencoder(NVOX))), dest / 'sub01_hybrid_autoencoder.pt')
    teacher = dest / next(n for n, _ in metric_weight_files() if n.startswith(TEACHER))   # torchvision's file name, found in models_dir
    if not teacher.exists(): torch.save(cpu(metric_network(TEACHER, pretrained=False, seed=seed)[0]), teacher)
    if not (dest / 'open_clip_ViT-H-14_laion2b_s32b_b79k.bin').exists():
        torch.save(cpu(build(lambda: open_clip.create_model('ViT-H-14', pretrained=None, device=device))),
                   dest / 'open_clip_ViT-H-14_laion2b_s32b_b79k.bin')
    u = dest / 'stable-diffusion-2-1-unclip'
    if not _done(u):                                                  # fp16 halves the files
        save_unclip(build(lambda: full_generator(argparse.Namespace(scheduler='ddim', steps=50, batch=None), device, torch.float16)), u)
    _mark(dest, note='random weights at the published sizes; not usable for science')


def run_stage(stage: str, out: Path, params: dict, env: dict) -> dict:
    "One notebook (`stage`: its name, :variant) through papermill in its own process; wall time and the peak RSS of its processes (the kernel)"
    nb = stage.split(':')[0]
    args = [str(ROOT / '.venv/bin/papermill') if (ROOT / '.venv/bin/papermill').exists() else 'papermill',
            str(ROOT / 'nbs' / f'{nb}.ipynb'), str(out / f"{stage.replace(':', '-')}.ipynb"), '--cwd', str(ROOT / 'nbs'), '-k', 'python3']
    for k, v in params.items(): args += ['-p', k, str(v)]
    code = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:]); "
            "print(json.dumps(dict(rc=r.returncode, peak_rss_gb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)))")
    t0 = time.time()
    p = subprocess.run([sys.executable, '-c', code, *args], env=env, capture_output=True, text=True)
    res = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else dict(rc=p.returncode, peak_rss_gb=None)
    res.update(stage=stage, seconds=round(time.time() - t0, 1))
    if res['rc'] != 0: res['error'] = p.stderr.strip().splitlines()[-12:]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=str(ROOT / 'data' / 'rehearsal'), help="work folder (NSD mirror, weights, runs)")
    ap.add_argument('--images', type=int, default=600, help="images in the brick (more than the 500 a subject sees)")
    ap.add_argument('--sessions', type=int, default=2, help="sessions of 750 trials")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--write-only', action='store_true')
    ap.add_argument('--cold', action='store_true', help="empty the caches first (embeddings, library predictions, decoders)")
    ap.add_argument('--stages', default='00_data,01_encoders,02b_models,03_search,04_metrics,03_search:mindeye,04_metrics:mindeye',
                    help="notebooks in order; NAME:mindeye runs NAME on MindEye's route (BOI as published)")
    a = ap.parse_args()
    work = Path(a.work); nsd, few, weights, runs = work / 'nsd', work / 'nsd-few', work / 'weights', work / 'runs'
    stages = a.stages.split(',')
    t0 = time.time()
    if not _done(nsd): write_nsd(nsd, a.images, a.sessions)
    if any(st.endswith(':mindeye') for st in stages) and not _done(few): write_nsd(few, **FEW)
    write_weights(weights, nsd, device=a.device)                      # writes only what is missing
    written = round(time.time() - t0, 1)
    print(f"files ready in {written} s: {nsd} ({sum(f.stat().st_size for f in nsd.rglob('*') if f.is_file()) / 1e9:.1f} GB), "
          f"{weights} ({sum(f.stat().st_size for f in weights.rglob('*') if f.is_file()) / 1e9:.1f} GB)", flush=True)
    if a.write_only: return
    if a.cold: shutil.rmtree(work / 'data', ignore_errors=True)
    for st in stages:                                                  # else 03 finds its image done
        if st.startswith('03_search'): shutil.rmtree(runs / ('subj01' + st[9:].replace(':', '-')), ignore_errors=True)
    # the weights only in models_dir (no $SECONDSIGHT_WEIGHTS), no metric network on disk (an empty torch hub)
    env = {k: v for k, v in os.environ.items() if k != 'SECONDSIGHT_WEIGHTS'}
    env.update(SECONDSIGHT_DATA=str(work / 'data'), SECONDSIGHT_RUNS=str(runs), TORCH_HOME=str(work / 'empty_torch_hub'),
               HF_HUB_OFFLINE='1', MPLBACKEND='Agg')
    common = dict(subj=1, dataset='nsd', data_root=nsd, device=a.device, models_dir=weights, sessions=f'1-{a.sessions}')
    search = dict(model_id=weights / 'stable-diffusion-2-1-unclip', n_images=1, n_iter=1, n_samples=2, n_branches=1, num_inference_steps=2)
    mindeye = dict(init='mindeye', lowlevel='decoded', loop='boi-v2', recons_per_sample=2, decoder_epochs=1,
                   n_embed=10, n_lowlevel=5)                       # nsd-few's library has 35 images
    extra = {'03_search': dict(search, out_dir=runs / 'subj01'), '04_metrics': dict(out_dir=runs / 'subj01', weights='random'),
             '03_search:mindeye': dict(search, **mindeye, data_root=few, sessions='1', out_dir=runs / 'subj01-mindeye'),
             '04_metrics:mindeye': dict(data_root=few, sessions='1', out_dir=runs / 'subj01-mindeye', weights='random')}
    out = work / 'notebooks'; out.mkdir(parents=True, exist_ok=True)
    rows = []
    for nb in stages:
        rows.append(r := run_stage(nb, out, dict(common, **extra.get(nb, {})), env))
        print(f"{nb:>20}: rc {r['rc']}  {r['seconds']:7.1f} s  peak {r['peak_rss_gb'] or float('nan'):5.1f} GB", flush=True)
        if r['rc'] != 0: print('\n'.join(r['error'])); break
    ok = all(r['rc'] == 0 for r in rows) and len(rows) == len(stages)
    refused = None
    if ok and '04_metrics' in stages:   # pretrained metric networks requested with none on disk: MetricWeightsError, nothing written
        (out / 'pretrained').mkdir(exist_ok=True)
        r = run_stage('04_metrics', out / 'pretrained', dict(common, out_dir=runs / 'subj01', weights='pretrained'), env)
        refused = dict(rc=r['rc'], seconds=r['seconds'], line=next((l.strip() for l in reversed(r.get('error', [])) if 'MetricWeightsError' in l), None))
        print(f"04_metrics, pretrained weights requested, none on disk: rc {r['rc']}: {refused['line']}", flush=True)
        ok = r['rc'] != 0 and refused['line'] is not None
    print(json.dumps(dict(bench='rehearsal', device=a.device, cold=a.cold, files_seconds=written, stages=rows,
                          total_seconds=round(sum(r['seconds'] for r in rows), 1), pretrained_refused=refused, ok=ok)))


if __name__ == '__main__':
    main()
