"""The GPU check (`make gpu-check`): one prepared command for a GPU machine that runs, in at most 9 minutes on one
H100/H200 including the model builds, everything of this project that needs a GPU and has never run on one.

Phases, in order; each is skipped BY NAME when the time budget (`--budget`, default 540 s, counted from the start,
builds included) has less left than the phase needs, and a phase that fails is recorded and the next one runs:

1. `build`: Stable Diffusion 2.1 unCLIP at full size from its published configuration with random weights (no
   download), float16 as a run on CUDA holds it, and the hybrid encoder (GNet8j + the CLIP encoder on ViT-H/14).
2. `unet`: seconds per guided UNet evaluation per sample against the batch, achieved TFLOP/s, peak memory; the best batch.
3. `bfloat16`: the same UNet evaluation at the best batch in bfloat16 (speed, and its difference from float16).
4. `samplers`: samples/s through `UnCLIPGenerator.vary` at strength 0.92, DDIM 50 steps against DPM-Solver++ 20
   (tiny: 4 against 2; speed only: whether 20 steps reconstruct as well needs the real weights); peak memory.
5. `overhead`: per sample, VAE decode, ViT-H embedding and the hybrid encoder's prediction.
6. `reconstruction`: seconds per reconstruction at paper settings (the `ours` loop's exact counts: 40,362 UNet
   evaluations, 489 samples) from phases 2 and 5, against the cost model's floor at 40% of the card's dense peak.
7. `notebooks`: the notebooks' `#| cuda` cells (`nbdev_test --flags cuda` on each notebook holding one); the unCLIP
   cell loads the generator of phase 1, saved as a local folder ($SECONDSIGHT_UNCLIP: the machine has no internet).
8. `rehearsal_03`: the rehearsal's 03 stage (`bench/rehearsal.py --stages 03_search`, NSD files at real shapes,
   published formats with random weights) at minimal counts on the GPU.

Ends with a paragraph for the bench page (nbs/bench.ipynb, "GPU check") and ONE JSON line; the exit status is 1 when
a phase failed. Needs nothing from the network: run it in an environment with the project's dependencies (on the GPU
machine, a venv made there by `make install`, which needs the package registries; `python bench/gpu_check.py` then
works in any such environment). Files go to `--work` (default data/gpu_check/, about 12 GB with the rehearsal's).

`--device cpu --tiny` runs every phase through the same code on tiny components (tests/test_gpu_check.py): the unCLIP
copy is tiny, the notebook cells run on the CPU ($SECONDSIGHT_CUDA_CELLS=cpu), and the 03 stage runs on the demo
data set with that copy in float16 (the NSD-sized rehearsal takes 20 minutes on a CPU).

    python bench/gpu_check.py                          # CUDA, full size, 540 s
    python bench/gpu_check.py --device cpu --tiny      # the same phases on tiny components
"""
import argparse, copy, json, os, subprocess, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
from cost_model import PEAK_TFLOPS, GUIDANCE, model_flops, loop_counts
from gpu_search import full_generator, full_encoder, TinyEncoder, sync, timed, peak_gb

PHASES = ('build', 'unet', 'bfloat16', 'samplers', 'overhead', 'reconstruction', 'notebooks', 'rehearsal_03')
NEED = dict(build=(90, 5), unet=(40, 5), bfloat16=(20, 3), samplers=(45, 10), overhead=(15, 3), reconstruction=(0, 0),
            notebooks=(100, 40), rehearsal_03=(210, 60))      # seconds a phase needs (full size on a GPU, tiny)


class Skip(Exception):
    "A phase that cannot run for want of an earlier phase's result: recorded as skipped, with the reason"


class Budget:
    "Phases run while the budget lasts: `allows(name)` is False, and the phase recorded as skipped BY NAME, when it would not fit"
    def __init__(self, seconds, tiny, t0=None):
        self.t0, self.seconds, self.tiny, self.skipped = t0 or time.perf_counter(), seconds, tiny, {}
    def left(self): return self.seconds - (time.perf_counter() - self.t0)
    def need(self, name): return NEED[name][1 if self.tiny else 0]
    def allows(self, name):
        if self.left() >= self.need(name): return True
        self.skipped[name] = f"needs ~{self.need(name)} s, {max(0, self.left()):.0f} s left"; return False


def nb_with_cuda_cells(nbs=ROOT / 'nbs') -> list:
    "Names of the notebooks holding a `#| cuda` cell"
    has = lambda p: any(c['cell_type'] == 'code' and ''.join(c['source']).lstrip().startswith('#| cuda')
                        for c in json.loads(p.read_text())['cells'])
    return sorted(p.stem for p in nbs.glob('*.ipynb') if has(p))


def run_cmd(cmd, env, timeout) -> dict:
    "A subprocess with a timeout: rc, seconds, and its last lines when it failed"
    t = time.perf_counter()
    try: r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=max(1, timeout))
    except subprocess.TimeoutExpired: return dict(rc='timeout', seconds=round(time.perf_counter() - t, 1))
    out = dict(rc=r.returncode, seconds=round(time.perf_counter() - t, 1))
    if r.returncode: out['error'] = (r.stdout + r.stderr).strip().splitlines()[-8:]
    return out


def unet_call(gen, b, dtype, unet=None):
    "One guided UNet evaluation of b samples in `dtype` (with `unet`, a copy in that dtype)"
    unet, f = unet or gen.unet, gen.vae_scale
    g = torch.Generator(gen.device).manual_seed(0)
    x = torch.randn(2 * b, unet.config.in_channels, gen.size // f, gen.size // f, device=gen.device, generator=g).to(dtype)
    text = gen.text_states().repeat_interleave(b, 0).to(dtype)
    img = torch.randn(2 * b, unet.config.projection_class_embeddings_input_dim, device=gen.device, generator=g).to(dtype)
    t = torch.tensor(500, device=gen.device)
    def call():
        with torch.no_grad(): return unet(x, t, encoder_hidden_states=text, class_labels=img, return_dict=False)[0]   # no autograd graph
    return call


class Check:
    "The phases, each a method named as in PHASES, sharing what earlier ones built and measured (`self.out`)"
    def __init__(self, a):
        self.a, self.device, self.phases, self.log = a, torch.device(a.device), {}, (lambda m: print(m, file=sys.stderr, flush=True))
        self.cuda = self.device.type == 'cuda'
        self.name = torch.cuda.get_device_name(self.device) if self.cuda else str(self.device)
        self.work = Path(a.work); self.work.mkdir(parents=True, exist_ok=True)
        self.unclip_dir = self.work / 'weights' / 'stable-diffusion-2-1-unclip'      # the rehearsal's weights folder
        self.batches = a.batches or ([1, 4] if a.tiny else [1, 8, 16, 32, 48])
        self.reps = 1 if a.tiny else 3                # timed calls per measurement (after one untimed call)

    def reset_peak(self):
        if self.cuda: torch.cuda.reset_peak_memory_stats(self.device)

    def build(self):
        from secondsight.run import SearchConfig
        from secondsight.unclip import DTYPES
        from secondsight.testing import tiny_unclip
        # the generator's dtype on CUDA, as a run resolves it (float16), on every device
        self.dtype = DTYPES[SearchConfig.resolve(dataset='demo', device='cuda', out_dir='x', check_here=False).dtype]
        if self.a.tiny:   # embeddings of the demo's ViT (128-d): the tiny copy also serves the demo's 03 stage
            self.gen = tiny_unclip(embed_dim=128, num_inference_steps=50, max_batch=64, device=self.device, dtype=self.dtype)
            self.enc = TinyEncoder()
        else:
            self.gen = full_generator(argparse.Namespace(scheduler='ddim', steps=50, batch=64), self.device, self.dtype)
            self.enc = full_encoder(self.device, self.dtype)
        sync(self.device)
        return dict(dtype=str(self.dtype).replace('torch.', ''), size=self.gen.size, peak_gb=peak_gb(self.device))

    def unet(self):
        flop = None if self.a.tiny else model_flops()['unet_eval'] * 1e9          # FLOP of one UNet evaluation of one row
        s, peak = {}, {}
        for b in self.batches:
            self.reset_peak()
            try: s[b] = timed(unet_call(self.gen, b, self.dtype), self.device, reps=self.reps) / b
            except torch.cuda.OutOfMemoryError: self.log(f"UNet batch {b}: out of memory"); break
            peak[b] = peak_gb(self.device)
            self.log(f"UNet, batch {b}: {s[b] * 1e3:.2f} ms per sample-evaluation")
        self.best = min(s, key=s.get)
        res = dict(s_per_sample_eval=s, best_batch=self.best, peak_gb=peak)
        if flop: res['tflops'] = {b: 2 * flop / t / 1e12 for b, t in s.items()}
        return res

    def bfloat16(self):
        b, u16 = self.best, self.gen.unet
        ubf = copy.deepcopy(u16).to(torch.bfloat16)
        t = timed(unet_call(self.gen, b, torch.bfloat16, ubf), self.device, reps=self.reps) / b
        y16, ybf = unet_call(self.gen, b, self.dtype)().float(), unet_call(self.gen, b, torch.bfloat16, ubf)().float()
        del ubf
        return dict(s_per_sample_eval=t, speed_vs_float16=self.phases['unet']['s_per_sample_eval'][b] / t,
                    max_rel_diff_vs_float16=float((ybf - y16).abs().max() / y16.abs().max()), finite=bool(torch.isfinite(ybf).all()))

    def samplers(self):
        from secondsight.unclip import make_scheduler, unclip_scheduler_config
        gen = self.gen
        n = min(self.best, 2 if self.a.tiny else 8)
        init = torch.rand(1, 3, gen.size, gen.size, generator=torch.Generator().manual_seed(0))
        emb, res = gen.embed(init), {}
        gen.max_batch = n
        self.reset_peak()
        steps = dict(ddim=4, dpmsolver=2) if self.a.tiny else dict(ddim=50, dpmsolver=20)   # the reference's 50; 20 for DPM-Solver++
        for name in ('ddim', 'dpmsolver'):
            gen.scheduler, gen.num_inference_steps = make_scheduler(name, unclip_scheduler_config()), steps[name]
            x = []
            res[name] = n / timed(lambda: x.append(gen.vary(init, emb, 0.92, n, seed=1)), self.device, warm=not self.a.tiny)
            if not torch.isfinite(x[-1]).all(): raise RuntimeError(f"{name}: non-finite images from vary in {self.dtype}")
        gen.scheduler, gen.num_inference_steps = make_scheduler('ddim', unclip_scheduler_config()), 50
        return dict(samples_per_s=res, steps=steps, batch=n, dpmsolver_speedup=res['dpmsolver'] / res['ddim'], peak_gb=peak_gb(self.device))

    def overhead(self):
        gen, b = self.gen, min(self.best, 16)
        gen.max_batch = b
        g = torch.Generator().manual_seed(1)
        lat = torch.randn(b, 4, gen.size // gen.vae_scale, gen.size // gen.vae_scale, generator=g)
        imgs = torch.rand(b, 3, gen.size, gen.size, generator=g)
        return dict(vae_decode=timed(lambda: gen.decode_latents(lat), self.device) / b,
                    embed=timed(lambda: gen.embed(imgs), self.device) / b,
                    encoder=timed(lambda: self.enc.predict(imgs), self.device) / b)

    def reconstruction(self):
        missing = [p for p in ('unet', 'overhead') if self.phases.get(p, {}).get('status') != 'ok']
        if missing: raise Skip(f"needs the phases {', '.join(missing)}, which did not run")
        c = loop_counts('ours')
        evals = c['sample_steps'] * GUIDANCE
        t_eval = self.phases['unet']['s_per_sample_eval'][self.best]           # both guidance rows of one sample
        est = evals * t_eval / 2 + c['samples'] * sum(v for k, v in self.phases['overhead'].items() if k in ('vae_decode', 'embed', 'encoder'))
        res = dict(s_estimated=est, unet_evals=evals, samples=c['samples'], reference_s_a100=1800)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k.split()[0] in self.name), None) if self.cuda else None
        if peak and not self.a.tiny:
            floor = evals * model_flops()['unet_eval'] * 1e9 / (0.4 * peak * 1e12)   # the UNet's share (97%) of the floor
            res.update(floor_s_at_40pct=floor, times_floor=est / floor, peak_tflops=peak)
        return res

    def notebooks(self, budget):
        from rehearsal import save_unclip, _done
        if not _done(self.unclip_dir): save_unclip(self.gen, self.unclip_dir)    # phase 1's generator, as a local folder
        env = dict(os.environ, SECONDSIGHT_UNCLIP=str(self.unclip_dir), SECONDSIGHT_CUDA_CELLS=self.device.type,
                   HF_HUB_OFFLINE='1', MPLBACKEND='Agg')
        exe = Path(sys.executable).parent / 'nbdev_test'
        found, res = nb_with_cuda_cells(), {}
        for nb in (self.a.notebooks or found):
            if budget.left() < 10: res[nb] = dict(rc='skipped', why=f"{budget.left():.0f} s left"); continue
            res[nb] = run_cmd([str(exe) if exe.exists() else 'nbdev_test', '--path', f'nbs/{nb}.ipynb', '--flags', 'cuda'],
                              env, budget.left() - 5)
        if any(r['rc'] != 0 for r in res.values()): raise RuntimeError(f"nbdev_test --flags cuda failed: {json.dumps(res)[:1500]}")
        return dict(with_cuda_cells=found, ran=res)

    def rehearsal_03(self, budget):
        from rehearsal import run_stage, save_unclip, _done
        env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg')
        if not self.a.tiny:          # NSD files at real shapes (1 session, 300 images), then the 03 stage alone
            r = run_cmd([sys.executable, str(ROOT / 'bench' / 'rehearsal.py'), '--work', str(self.work), '--device', self.device.type,
                         '--stages', '03_search', '--sessions', '1', '--images', '300'], env, budget.left() - 5)
            if r['rc'] != 0: raise RuntimeError(f"rehearsal.py: {json.dumps(r)[:1500]}")
            return r
        if not _done(self.unclip_dir): save_unclip(self.gen, self.unclip_dir)
        runs = self.work / 'runs'
        params = dict(subj=1, dataset='demo', device=self.device.type, dtype=str(self.dtype).replace('torch.', ''), generator='unclip',
                      model_id=self.unclip_dir, n_images=1, n_iter=1, n_samples=2, n_branches=1, num_inference_steps=2,
                      out_dir=runs / 'subj01')
        import shutil; shutil.rmtree(runs / 'subj01', ignore_errors=True)
        (runs / 'notebooks').mkdir(parents=True, exist_ok=True)
        r = run_stage('03_search', runs / 'notebooks', params, env)
        if r['rc'] != 0: raise RuntimeError(f"03_search: {json.dumps(r)[:1500]}")
        return r


def paragraph(out) -> str:
    "What the bench page's 'GPU check' section says, from this run's numbers"
    p, say = out['phases'], []
    ok = lambda k: p.get(k, {}).get('status') == 'ok'
    say.append(f"`make gpu-check` on {out['device']} ({'tiny components' if out['tiny'] else 'full size, random weights'}, "
               f"{out['seconds']:.0f} s):")
    if ok('unet'): say.append(f"the float16 UNet takes {p['unet']['s_per_sample_eval'][p['unet']['best_batch']] * 1e3:.1f} ms per "
                              f"sample-evaluation at its best batch ({p['unet']['best_batch']})"
                              + (f", {p['unet']['tflops'][p['unet']['best_batch']]:.0f} TFLOP/s" if 'tflops' in p['unet'] else '') + ';')
    if ok('bfloat16'): say.append(f"bfloat16 runs at {p['bfloat16']['speed_vs_float16']:.2f}x float16's speed;")
    if ok('samplers'):
        st = p['samplers']['steps']
        say.append(f"DPM-Solver++ {st['dpmsolver']} gives {p['samplers']['dpmsolver_speedup']:.1f}x DDIM {st['ddim']}'s samples/s;")
    if ok('reconstruction'):
        r = p['reconstruction']
        say.append(f"one reconstruction at paper settings is estimated at {r['s_estimated'] / 60:.1f} min"
                   + (f" ({r['times_floor']:.2f}x the cost model's floor at 40% of peak)" if 'times_floor' in r else '')
                   + " against about 30 min on an A100 for the reference;")
    if ok('notebooks'): say.append(f"the `#| cuda` cells of {', '.join(p['notebooks']['ran'])} pass;")
    if ok('rehearsal_03'): say.append(f"the rehearsal's 03 stage runs on {out['device']}" + (" (on the demo data set)" if out['tiny'] else '') + ';')
    if out['skipped']: say.append(f"skipped for time: {', '.join(out['skipped'])};")
    if out['failed']: say.append(f"FAILED: {', '.join(out['failed'])};")
    return ' '.join(say).rstrip(';') + '.'


def main(argv=None):
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--tiny', action='store_true', help='tiny random components (any device; the test)')
    ap.add_argument('--budget', type=float, default=540, help='seconds for everything, builds included')
    ap.add_argument('--batches', type=int, nargs='*', help='samples per UNet call to sweep (default 1 8 16 32 48; tiny: 1 4)')
    ap.add_argument('--notebooks', nargs='*', help='notebooks to run with --flags cuda (default: every one with a #| cuda cell)')
    ap.add_argument('--work', default=str(ROOT / 'data' / 'gpu_check'), help='folder for the unCLIP copy and the rehearsal')
    a = ap.parse_args(argv)
    if torch.device(a.device).type == 'cuda' and not torch.cuda.is_available():
        sys.exit("bench/gpu_check.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine. Run it on a GPU "
                 "machine (make gpu-check), or `python bench/gpu_check.py --device cpu --tiny` to check the phases here.")
    check, budget = Check(a), Budget(a.budget, a.tiny, t0)
    phases = check.phases
    for name in PHASES:
        if name != 'build' and not budget.allows(name):                  # the build always runs: every phase needs it
            phases[name] = dict(status='skipped', why=budget.skipped[name]); check.log(f"{name}: skipped ({budget.skipped[name]})"); continue
        if name != 'build' and phases['build']['status'] != 'ok':
            phases[name] = dict(status='skipped', why='the build failed'); budget.skipped[name] = 'the build failed'; continue
        t = time.perf_counter()
        try:
            fn = getattr(check, name)
            res = fn(budget) if name in ('notebooks', 'rehearsal_03') else fn()
            phases[name] = dict(status='ok', **res)
        except Skip as e: phases[name] = dict(status='skipped', why=str(e))
        except Exception as e:                      # recorded and reported; the next phase runs
            phases[name] = dict(status='failed', error=f"{type(e).__name__}: {str(e)[:2000]}")
        phases[name]['seconds'] = round(time.perf_counter() - t, 2)
        check.log(f"{name}: {phases[name]['status']} in {phases[name]['seconds']:.1f} s"
                  + (f" ({phases[name]['error'][:300]})" if phases[name]['status'] == 'failed' else ''))
    out = dict(bench='gpu_check', device=check.name, tiny=a.tiny, budget_s=a.budget, phases=phases,
               skipped=[k for k, v in phases.items() if v['status'] == 'skipped'],
               failed=[k for k, v in phases.items() if v['status'] == 'failed'], seconds=round(time.perf_counter() - t0, 1))
    out['ok'] = not out['failed']
    print(paragraph(out))
    print(json.dumps(out, default=str))
    return 0 if out['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
