"""The judge: which search (and which starting point) reconstructs better, on the demo, with statistics.

Four demo subjects (1, 2, 5, 7; 30 test images each). Every *run* is one 03_search run folder (`run_subject`, so
resumable) that differs from the default in one thing:

- the loops: `ours` (default), `master` (the published code), `preprint`, `boi-v2`;
- variants of `ours` for the early-visual question: 3 iterations (more samples each), ROI-balanced scores; and two
  runs NOT at equal calls: `ours-2x` (twice the samples per iteration: does more search help?) and `ours-half` (half:
  is a cheaper search as good?);
- the starting points: `decoder-ridge`, `decoder-mindeye`, `decoder-mindeye-prior` (the decoded embedding instead of
  the library's mean: ridge, MindEye's backbone alone, backbone + diffusion prior), `lowlevel-decoded` (the
  brain-decoded blurry image instead of the library's low-level image), `mindeye` (MindEye's reconstruction, then the
  search from it), `mindeye-1` (MindEye's reconstruction from one sample: what second-order selection over 16 buys) and
  `boi-published` (BOI v2's start: MindEye's blurry image and embedding, with the boi-v2 loop).

The decoders themselves (backbone alone vs + prior) are also judged without generating: top-1 retrieval over each
subject's 30 test images in both directions, and the decoded embedding's cosine to the seen image's.

All at EQUAL GENERATOR CALLS: every run draws about as many samples per image as `ours` at the paper's schedule (6
iterations x 100 samples, 4 branches: 488 samples + 1 initial image); a loop or variant whose own schedule draws a
different number has its samples per iteration scaled to match (counted on 03's recording generator, exactly).

Judged per image by the simulator's TRUE brain (what the search can never see: noiseless responses, Pearson r with
the measured betas in nsdgeneral, early and higher visual cortex), PixCorr and SSIM against the seen image, and
retrieval (is the seen image the nearest of the subject's 30 test images to the reconstruction, in the generator's
embedding space; chance 1/30). Differences between conditions are paired, with 95% bootstrap CIs (04's
`compare_stages`) resampling the images, and a second, stricter one resampling the source PHOTOGRAPHS (the demo's
test images are crops of 5 photographs per subject, so images of one photograph are not independent).

    python bench/judge.py                          # everything (~1 h on 2 cores; resumes where it stopped)
    python bench/judge.py --runs ours master --subjects 1 --n-images 10     # a quick look
    python bench/judge.py --evaluate-only          # tables and figures from the finished runs
    python bench/judge.py --subjects 1 2 --runs-only --threads 1 & python bench/judge.py --subjects 5 7 --runs-only --threads 1
                                                   # the runs as two one-thread processes (2 cores), then --evaluate-only
    python bench/judge.py --runs ours ours-balanced --seed 1 --out runs/judge-seed1    # a replicate

Anytime: every run's result.json records each iteration's samples, strength and width, so the running best after
iteration k is a cheaper setting of its own ('run @k', its cost the UNet evaluations spent so far: int(50 s) steps x 2
for guidance per sample, as bench/cost_model.py counts), and so is BOI v1's width stop replayed on it ('run +width
stop'). `non_inferiority.csv` compares each with master's final (true r, nsdgeneral): non-inferior when the lower
95% bound of the difference is above -0.01.

    python bench/judge.py --runs ours master preprint boi-v2 ours-2x ours-half lowlevel-decoded boi-published \
        --summary bench/judge_summary                # the committed tables (03_search plots them)

Writes runs/judge/<run>/subjNN/ (run folders), runs/judge/per_image.csv, comparisons.csv, per_subject.csv,
anytime_per_image.csv, anytime.csv, non_inferiority.csv, decoder_retrieval.csv, decoder_comparisons.csv, figures (--fig-dir, else runs/judge); with --summary the
small tables there too; ends with ONE JSON line.
"""
import argparse, json, os, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = (1, 2, 5, 7)
ME_SAMPLES = 16   # MindEye's recons_per_sample: generator samples spent before a search from MindEye's reconstruction
METRICS_ = ['true:nsdgeneral', 'true:early_vis', 'true:higher_vis', 'hybrid:nsdgeneral', 'hybrid:early_vis', 'hybrid:higher_vis',
            'PixCorr', 'SSIM', 'retrieval']


def total_samples(loop: str, n_iter: int = 6, n_samples=None, **kw) -> int:
    "Samples one search draws (03's loop on its recording generator), + 1 for the initial image"
    from secondsight.search import search
    from secondsight.testing import RecordingGenerator, QualityEncoder
    rg, target = RecordingGenerator(), torch.randn(300, generator=torch.Generator().manual_seed(0))
    search(target, rg.image(-1, 0.0), rg.embed(rg.image(-1, 0.0))[0], QualityEncoder(target), rg, loop=loop, n_iter=n_iter,
           n_samples=n_samples, **kw)
    return sum(c['n'] for c in rg.calls) + 1


def equal_calls(loop: str, n_iter: int, budget: int) -> int:
    "Samples per iteration whose total is closest to `budget` (the total grows with n: bisection, then the two neighbours)"
    lo, hi = 8, 600
    while lo < hi:
        mid = (lo + hi) // 2
        if total_samples(loop, n_iter, mid) < budget: lo = mid + 1
        else: hi = mid
    return min({max(8, lo - 1), lo}, key=lambda n: (abs(total_samples(loop, n_iter, n) - budget), n))


def plan(names=None) -> dict:
    "run name -> (what it tests, SearchConfig overrides), at equal generator calls"
    from secondsight.run import SearchConfig
    budget = total_samples('ours')
    runs = {
        'ours': ("default loop", {}),
        'master': ("published loop (Second-Sight master)", dict(loop='master')),
        'preprint': ("the preprint's loop", dict(loop='preprint')),
        'boi-v2': ("BOI v2 loop, samples scaled to equal calls", dict(loop='boi-v2', n_samples=equal_calls('boi-v2', 6, budget))),
        'ours-3it': ("ours, 3 iterations of more samples", dict(n_iter=3, n_samples=equal_calls('ours', 3, budget))),
        'ours-2x': ("ours with twice the samples per iteration (NOT equal calls: does more search help?)", dict(n_samples=200)),
        'ours-half': ("ours with half the samples per iteration (NOT equal calls: is a cheaper search as good?)", dict(n_samples=50)),
        'ours-balanced': ("ours, score = mean r of early and higher visual", dict(score_rois='early_vis,higher_vis')),
        'lowlevel-decoded': ("ours from the brain-decoded blurry image (MindEye's low-level decoder) instead of the library's",
                             dict(lowlevel='decoded')),
        'boi-published': ("BOI v2 as published: MindEye's blurry image and embedding, GNet alone, samples scaled to equal calls "
                          "(MindEye's 16 reconstruction samples counted)",
                          dict(loop='boi-v2', init='mindeye', lowlevel='decoded', n_samples=equal_calls('boi-v2', 6, budget - ME_SAMPLES))),
        'mindeye': ("MindEye's reconstruction (prior embedding, img2img from the blurry image at 0.85, 16 samples, second-order "
                    "selection), then ours from it; its 16 samples counted", dict(init='mindeye', n_samples=equal_calls('ours', 6, budget - ME_SAMPLES))),
        'mindeye-1': ("MindEye's reconstruction with recons_per_sample=1 (no selection); only its 'mindeye' stage is judged, so its "
                      "search is a token one (1 iteration of 8 samples)", dict(init='mindeye', recons_per_sample=1, n_iter=1, n_samples=8)),
        'decoder-ridge': ("ours from the ridge decoder's embedding", dict(init='decoder-ridge')),
        'decoder-mindeye': ("ours from the MindEye-style decoder's embedding (the backbone alone)", dict(init='decoder-mindeye')),
        'decoder-mindeye-prior': ("ours from the embedding the diffusion prior samples (backbone + prior, trained jointly)",
                                  dict(init='decoder-mindeye-prior')),
    }
    if 'score_rois' not in SearchConfig.__dataclass_fields__: runs.pop('ours-balanced')   # older package
    return {k: v for k, v in runs.items() if names is None or k in names}


def run_all(runs: dict, subjects, out: Path, n_images=None, seed: int = 0):
    "Every run for every subject (finished images are skipped); the subject's models are loaded once"
    from secondsight.data import load_subject
    from secondsight.models import get_encoders
    from secondsight.run import SearchConfig, make_generator, run_subject
    times = {}
    for s in subjects:
        subject = load_subject(s, 'demo', progress=False)
        encoders = get_encoders(subject, progress=False)
        generator = make_generator(SearchConfig(subj=s), subject, encoders)
        for name, (_, over) in runs.items():
            t0 = time.time()
            cfg = SearchConfig(subj=s, out_dir=str(out / name / f'subj{s:02d}'), n_images=n_images, seed=seed, **over)
            run_subject(cfg, subject, encoders, generator, progress=False)
            times[(name, s)] = time.time() - t0
            print(f"subj{s:02d} {name}: {times[(name, s)]:.0f} s", file=sys.stderr, flush=True)
    return times


def evaluate(runs: dict, subjects, out: Path) -> pd.DataFrame:
    "Long table: one row per (condition, subject, image) with every metric"
    from secondsight.core import top1_hits
    from secondsight.data import load_subject
    from secondsight.demo import demo_provenance
    from secondsight.models import get_encoders
    from secondsight.metrics import evaluate_subject
    from secondsight.run import read_run
    photo = demo_provenance()['photo']
    rows = []
    for s in subjects:
        subject = load_subject(s, 'demo', progress=False)
        encs = get_encoders(subject, progress=False, train=False)
        judges = dict(true=subject.data_set.reference_encoders(subject)['true'], hybrid=encs.hybrid)
        for name in runs:
            d = out / name / f'subj{s:02d}'
            if not (d / 'images').is_dir(): continue
            run = read_run(d, s)
            per_image, brain, _, _ = evaluate_subject(run, subject, judges, metrics=('PixCorr', 'SSIM'), weights='random', progress=False)
            wide = pd.concat([b.set_index(['stage', 'nsd_id'])[['nsdgeneral', 'early_vis', 'higher_vis']].add_prefix(f'{e}:')
                              for e, b in brain.groupby('encoder', sort=False)], axis=1)
            t = per_image.set_index(['stage', 'nsd_id'])[['PixCorr', 'SSIM']].join(wide, how='outer').reset_index()
            seen = np.asarray(subject.images(np.asarray(run.nsd_ids)))
            seen_emb = encs.embedder.embed(seen)
            for st in run.stages + ['seen']:
                emb = seen_emb if st == 'seen' else encs.embedder.embed(run.images(st))   # the seen images embedded once
                hits = top1_hits(emb, seen_emb).float().numpy()     # 1 where the nearest seen image (cosine) is its own
                t.loc[t.stage == st, 'retrieval'] = hits[[run.nsd_ids.index(i) for i in t.loc[t.stage == st, 'nsd_id']]]
            rows.append(t.assign(run=name, subj=s))
    df = pd.concat(rows, ignore_index=True)
    df['photo'] = photo.loc[df.nsd_id].values
    return df


def decoder_hits(subjects, kinds=('mindeye', 'mindeye-prior'), seed: int = 0) -> pd.DataFrame:
    """Per test image and decoder (backbone alone vs backbone + prior, trained jointly): top-1 retrieval over the subject's
    30 test images in both directions, in the backbone's contrastive space (`project`, what MindEye retrieves with) and with
    the embedding that conditions the generator (`decode`: the prior's sample, as `start_from` draws it, or the backbone's
    output), and that embedding's cosine to the seen image's"""
    from secondsight.core import derive_seed, top1_hits
    from secondsight.data import load_subject
    from secondsight.demo import demo_provenance
    from secondsight.encoders import image_embeddings
    from secondsight.models import get_decoder, get_encoders
    photo, rows = demo_provenance()['photo'], []
    for s in subjects:
        subject = load_subject(s, 'demo', progress=False)
        enc = get_encoders(subject, progress=False, train=False)
        ids = np.asarray(subject.test_nsd_ids)
        truth = torch.as_tensor(np.asarray(image_embeddings(subject, enc.embedder, progress=False)[ids]), dtype=torch.float32)
        betas = torch.as_tensor(np.asarray(subject.test_betas(mode='average')), dtype=torch.float32)
        for kind in kinds:
            dec = get_decoder(subject, kind, embedder=enc.embedder)
            with torch.no_grad():
                proj = dec.project(betas).float()
                emb = dec.decode(betas, steps=20, seed=[derive_seed(seed, s, int(i), 'mindeye') for i in ids]).float()
            cols = {'retrieval b2i (projection)': top1_hits(proj, truth), 'retrieval i2b (projection)': top1_hits(truth, proj),
                    'retrieval b2i (decoded)': top1_hits(emb, truth), 'retrieval i2b (decoded)': top1_hits(truth, emb),
                    'cosine (decoded)': torch.nn.functional.cosine_similarity(emb, truth, dim=-1)}
            rows.append(pd.DataFrame(dict(stage=f'decoder: {kind}', subj=s, nsd_id=ids, photo=photo.loc[ids].values,
                                          **{k: v.float().numpy() for k, v in cols.items()})))
    return pd.concat(rows, ignore_index=True)


def compare_decoders(hits: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    "backbone + prior - backbone alone, paired over images and over photographs"
    from secondsight.stats import compare_stages
    ms, pairs = [c for c in hits.columns if c.startswith(('retrieval', 'cosine'))], [('decoder: mindeye-prior', 'decoder: mindeye')]
    return pd.concat([compare_stages(hits, pairs, ms, n_boot=n_boot).assign(resample='images'),
                      compare_stages(hits, pairs, ms, n_boot=n_boot, groups='photo').assign(resample='photographs')], ignore_index=True)


def conditions(df: pd.DataFrame) -> pd.DataFrame:
    "Name each (run, stage) that the comparison uses: baselines from `ours`, each run's final, each decoder's initial"
    base = df[df.run == 'ours']
    parts = [base[base.stage == st].assign(stage=lab) for st, lab in
             (('random', 'random'), ('library', 'library top-1'), ('lowlevel', 'low-level'), ('initial', 'initial'), ('seen', 'seen'))]
    for name in df.run.unique():
        r = df[df.run == name]
        if name != 'mindeye-1': parts.append(r[r.stage == 'final'].assign(stage=f'final: {name}'))   # mindeye-1's search is a token one
        if name.startswith('decoder-'): parts.append(r[r.stage == 'initial'].assign(stage=f'{name} alone'))
        if name == 'lowlevel-decoded': parts.append(r[r.stage == 'lowlevel'].assign(stage='low-level: decoded'))
        if name == 'mindeye': parts.append(r[r.stage == 'mindeye'].assign(stage='MindEye'))
        if name == 'mindeye-1': parts.append(r[r.stage == 'mindeye'].assign(stage='MindEye, 1 sample'))
    return pd.concat(parts, ignore_index=True)


def pairs_for(stages) -> list:
    "The comparisons the two issues ask for, among the conditions present"
    finals = [s for s in stages if s.startswith('final: ')]
    out = [('initial', 'random')] + [(f, 'initial') for f in finals] + [(f, 'library top-1') for f in finals]
    out += [(f, 'final: master') for f in finals if f != 'final: master' and 'final: master' in stages]
    out += [('final: ours-2x', 'final: ours'), ('final: ours-half', 'final: ours'), ('low-level: decoded', 'low-level'),
            ('final: lowlevel-decoded', 'final: ours'), ('final: boi-published', 'final: boi-v2'), ('final: boi-published', 'final: master')]
    for dec in ('decoder-ridge', 'decoder-mindeye', 'decoder-mindeye-prior'):
        if f'final: {dec}' in stages:
            out += [(f'final: {dec}', f'{dec} alone'), (f'{dec} alone', 'initial')]
            out += [(f'final: {dec}', 'final: ours')]
    out += [('decoder-mindeye-prior alone', 'decoder-mindeye alone'), ('MindEye', 'MindEye, 1 sample'), ('MindEye', 'library top-1'),
            ('final: mindeye', 'MindEye'), ('final: boi-published', 'MindEye'), ('final: mindeye', 'final: ours')]
    return [p for p in out if set(p) <= set(stages)]     # a partial run (--runs) compares what it has


def compare(cond: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    "Paired 95% CIs over images and over photographs (`compare_stages` with groups)"
    from secondsight.stats import compare_stages
    pairs, ms = pairs_for(set(cond.stage)), [m for m in METRICS_ if m in cond]
    img = compare_stages(cond, pairs, ms, n_boot=n_boot).assign(resample='images')
    pho = compare_stages(cond, pairs, ms, n_boot=n_boot, groups='photo').assign(resample='photographs')
    return pd.concat([img, pho], ignore_index=True)


def per_subject(cond: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    "final > initial > random and final vs library top-1, per subject, in true nsdgeneral and early visual r"
    from secondsight.stats import compare_stages
    pairs = [p for p in [('initial', 'random'), ('final: ours', 'initial'), ('final: ours', 'library top-1'),
                         ('final: master', 'initial'), ('final: master', 'library top-1')] if set(p) <= set(cond.stage)]
    return pd.concat([compare_stages(c, pairs, ['true:nsdgeneral', 'true:early_vis'], n_boot=n_boot).assign(subj=s)
                      for s, c in cond.groupby('subj')], ignore_index=True)


def figures(cond: pd.DataFrame, cmp: pd.DataFrame, fig_dir: Path) -> list:
    "Means with CIs per condition; forest plots of the loop and decoder comparisons"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from secondsight.stats import plot_comparison
    fig_dir.mkdir(parents=True, exist_ok=True)
    files = []
    c = cmp[cmp['resample'] == 'images']
    loops = c[c.comparison.str.contains('- final: master|- initial$', regex=True) & ~c.comparison.str.startswith('final: decoder')
              & ~c.comparison.str.contains('alone')]
    dec = c[c.comparison.str.contains('decoder')]
    ms = ['true:nsdgeneral', 'true:early_vis', 'PixCorr', 'SSIM']
    for t, name, title in ((loops, 'judge_loops.png', 'loops at equal generator calls: paired differences, 95% CI over 120 images'),
                           (dec, 'judge_decoders.png', 'decoder alone / + search / library + search: paired differences, 95% CI')):
        if len(t):
            fig = plot_comparison(t[t.metric.isin(ms)], title)
            fig.savefig(fig_dir / name, dpi=80); plt.close(fig); files.append(str(fig_dir / name))
    return files


def trajectory(df: pd.DataFrame, fig_dir: Path, runs=('ours', 'master', 'ours-balanced', 'ours-3it')) -> str:
    "Mean true and encoder r per iteration (early visual and nsdgeneral): does the search climb the true brain?"
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(8, 2.8), sharey=False)
    for ax, roi in zip(axs, ('early_vis', 'nsdgeneral')):
        for k, name in enumerate(r for r in runs if r in set(df.run)):
            d = df[df.run == name]
            steps = ['initial'] + sorted(s for s in d.stage.unique() if s.startswith('iter_'))
            m = d.groupby('stage')[[f'true:{roi}', f'hybrid:{roi}']].mean().loc[steps]
            ax.plot(range(len(steps)), m[f'true:{roi}'], '-o', ms=3, color=f'C{k}', label=f'{name}: true brain')
            ax.plot(range(len(steps)), m[f'hybrid:{roi}'], '--', color=f'C{k}', label=f'{name}: hybrid encoder')
        ax.set_title(roi, fontsize=9); ax.set_xlabel('iteration (0 = initial guess)', fontsize=8); ax.tick_params(labelsize=8)
    axs[0].set_ylabel('mean r with measured betas', fontsize=8); axs[1].legend(fontsize=6, loc='lower right')
    fig.suptitle('the running best image per iteration, mean over the test images', fontsize=9); fig.tight_layout()
    p = fig_dir / 'judge_trajectory.png'; fig.savefig(p, dpi=80); plt.close(fig)
    return str(p)


STEPS, GUIDANCE = 50, 2     # unCLIP's sampler steps at strength 1 and the guidance factor, as bench/cost_model.py counts them


def image_costs(result: dict) -> list:
    "Cumulative UNet evaluations after each iteration of one image's search (the initial guess included), from its result.json"
    init = int(STEPS * result['settings']['init_strength']) * GUIDANCE
    per = [n * b * int(STEPS * s) * GUIDANCE for n, b, s in zip(result['n_per_branch'], result['n_branches'], result['strength'])]
    return [int(init + c) for c in np.cumsum(per)]


def anytime(runs, subjects, out: Path, df: pd.DataFrame) -> pd.DataFrame:
    "Per (run, image, iteration): the running best's metrics, the UNet evaluations spent so far, and BOI's width stop"
    from secondsight.run import read_run
    rows = []
    for s in subjects:
        for name in runs:
            d = out / name / f'subj{s:02d}'
            if not (d / 'images').is_dir(): continue
            for r in read_run(d, s).results:
                w, tw = r.get('search_width'), r.get('target_width')
                if w is None: raise ValueError(f"{d}: result.json has no search_width (written before widths were logged): rerun the judge into a new --out")
                stop = next((k for k, v in enumerate(w) if v < tw), len(w) - 1)      # BOI v1: after the first iteration narrower than the target
                rows += [dict(run=name, subj=s, nsd_id=r['nsd_id'], iteration=k + 1, stage=f'iter_{k + 1:02d}', unet_evals=c,
                              width=w[k], target_width=tw, width_stop=k == stop) for k, c in enumerate(image_costs(r))]
    keys = ['run', 'subj', 'nsd_id', 'stage']
    return pd.DataFrame(rows).merge(df[keys + ['photo'] + [m for m in METRICS_ if m in df]], on=keys, how='left')


def candidates(a: pd.DataFrame, runs=('ours', 'master', 'boi-v2', 'ours-half', 'ours-2x', 'ours-3it')) -> pd.DataFrame:
    "Cheaper settings as conditions of their own: each run stopped after iteration k ('run @k'), or by BOI's width rule ('run +width stop')"
    parts = []
    for name, g in a[a.run.isin(runs)].groupby('run'):
        parts += [g[g.iteration == k].assign(stage=f'{name} @{k}') for k in sorted(g.iteration.unique())]
        parts.append(g[g.width_stop].assign(stage=f'{name} +width stop'))
    return pd.concat(parts, ignore_index=True)


def non_inferiority(c: pd.DataFrame, base: str = 'master @6', margin: float = -0.01, n_boot: int = 10_000) -> pd.DataFrame:
    "Each candidate - master's final in true r (nsdgeneral), 95% CIs over images and photographs, its mean UNet evaluations and cost ratio"
    from secondsight.stats import compare_stages
    names = [n for n in c.stage.unique() if n != base]
    pairs = [(n, base) for n in names]
    img = compare_stages(c, pairs, ['true:nsdgeneral'], n_boot=n_boot).set_index('comparison')
    pho = compare_stages(c, pairs, ['true:nsdgeneral'], n_boot=n_boot, groups='photo').set_index('comparison')
    cost, mean = c.groupby('stage').unet_evals.mean(), c.groupby('stage')[['true:nsdgeneral', 'hybrid:nsdgeneral']].mean()
    t = pd.DataFrame(dict(candidate=names, unet_evals=[cost[n] for n in names], cost_ratio=[cost[n] / cost[base] for n in names],
                          true_r=[mean.loc[n, 'true:nsdgeneral'] for n in names], hybrid_r=[mean.loc[n, 'hybrid:nsdgeneral'] for n in names],
                          diff=[img.loc[f'{n} - {base}', 'diff'] for n in names], lo=[img.loc[f'{n} - {base}', 'lo'] for n in names],
                          hi=[img.loc[f'{n} - {base}', 'hi'] for n in names], lo_photographs=[pho.loc[f'{n} - {base}', 'lo'] for n in names]))
    t['non_inferior'] = t.lo > margin
    return t.sort_values('unet_evals').reset_index(drop=True)


def anytime_figure(a: pd.DataFrame, c: pd.DataFrame, lib: pd.Series, fig_dir: Path,
                   runs=('master', 'ours', 'boi-v2', 'ours-half', 'ours-2x')) -> str:
    "Mean true and hybrid r of the running best against cumulative UNet evaluations; BOI's width stop as a cross; library top-1 dashed"
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, m in zip(axs, ('true:nsdgeneral', 'hybrid:nsdgeneral')):
        for k, name in enumerate(r for r in runs if r in set(a.run)):
            g = a[a.run == name].groupby('iteration')[['unet_evals', m]].mean()
            ax.plot(g.unet_evals / 1e3, g[m], '-o', ms=3, color=f'C{k}', label=name)
            st = c[c.stage == f'{name} +width stop'][['unet_evals', m]].mean()
            ax.plot(st.unet_evals / 1e3, st[m], 'x', ms=8, mew=2, color=f'C{k}')
        ax.axhline(lib[m], color='grey', ls='--', lw=1, label='library top-1')
        ax.set_xscale('log'); ax.minorticks_off(); ax.set_xticks([5, 10, 20, 40, 80], ['5', '10', '20', '40', '80']); ax.set_xlabel('UNet evaluations per image (thousands, log)', fontsize=8)
        ax.set_title(f'{m.split(":")[0]} r (nsdgeneral) of the running best', fontsize=9); ax.tick_params(labelsize=8)
    axs[0].set_ylabel('mean r over 120 images', fontsize=8); axs[1].legend(fontsize=7, loc='lower right')
    fig.suptitle('anytime: what each UNet evaluation buys (x: BOI\'s width stop)', fontsize=9); fig.tight_layout()
    p = fig_dir / 'judge_anytime.png'; fig.savefig(p, dpi=80); plt.close(fig)
    return str(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', nargs='*', default=None, help='run names (default: all)')
    ap.add_argument('--subjects', nargs='*', type=int, default=list(SUBJECTS))
    ap.add_argument('--n-images', type=int, default=None, help='first n test images per subject (default: all 30)')
    ap.add_argument('--out', type=Path, default=None, help='default: runs_dir()/judge (runs/judge in the checkout, or $SECONDSIGHT_RUNS/judge)')
    ap.add_argument('--fig-dir', type=Path, default=None)
    ap.add_argument('--n-boot', type=int, default=10_000)
    ap.add_argument('--seed', type=int, default=0, help='base seed of the runs (a replicate: another seed and another --out)')
    ap.add_argument('--evaluate-only', action='store_true')
    ap.add_argument('--runs-only', action='store_true', help="only the runs (e.g. one process per subject group), no evaluation")
    ap.add_argument('--threads', type=int, default=os.cpu_count() or 1, help="torch threads (1 per process when running several)")
    ap.add_argument('--summary', type=Path, default=None, help="also write the small tables (means, comparisons, anytime, "
                    "non-inferiority) here (the committed ones: bench/judge_summary, which 03_search plots)")
    a = ap.parse_args()
    from secondsight.core import runs_dir
    a.out = a.out or runs_dir() / 'judge'
    torch.set_num_threads(a.threads)
    t0, runs = time.time(), plan(a.runs)
    times = {} if a.evaluate_only else run_all(runs, a.subjects, a.out, a.n_images, a.seed)
    if a.runs_only:
        print(json.dumps(dict(bench='judge', subjects=a.subjects, runs=list(runs), run_seconds={f'{k}/subj{s:02d}': round(v, 1) for (k, s), v in times.items()})))
        return
    t1 = time.time()
    df = evaluate(runs, a.subjects, a.out)
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / 'all_stages.csv', index=False)
    cond = conditions(df)
    cmp, subj = compare(cond, a.n_boot), per_subject(cond, a.n_boot)
    a.out.mkdir(parents=True, exist_ok=True)
    cond.to_csv(a.out / 'per_image.csv', index=False); cmp.to_csv(a.out / 'comparisons.csv', index=False)
    subj.to_csv(a.out / 'per_subject.csv', index=False)
    means = cond.groupby('stage')[[m for m in METRICS_ if m in cond]].mean().round(4)
    means.to_csv(a.out / 'means.csv')
    fig_dir = a.fig_dir or a.out
    files = figures(cond, cmp, fig_dir) + [trajectory(df, fig_dir)]
    at = anytime(runs, a.subjects, a.out, df); at.to_csv(a.out / 'anytime_per_image.csv', index=False)
    cand = candidates(at)
    ni = non_inferiority(cand, n_boot=a.n_boot) if 'master @6' in set(cand.stage) else pd.DataFrame()
    curve = at.groupby(['run', 'iteration'])[['unet_evals', 'width', 'target_width'] + [m for m in METRICS_ if m in at]].mean().round(4)
    files.append(anytime_figure(at, cand, cond[cond.stage == 'library top-1'][[m for m in METRICS_ if m in cond]].mean(), fig_dir))
    for d in {a.out, a.summary} - {None}:
        d.mkdir(parents=True, exist_ok=True)
        ni.round(4).to_csv(d / 'non_inferiority.csv', index=False); curve.to_csv(d / 'anytime.csv')
        if d == a.summary:
            means.to_csv(d / 'means.csv'); cmp.round(4).to_csv(d / 'comparisons.csv', index=False); subj.round(4).to_csv(d / 'per_subject.csv', index=False)
    hits = decoder_hits(a.subjects, seed=a.seed)
    dcmp = compare_decoders(hits, a.n_boot)
    dmeans = hits.groupby('stage')[[c for c in hits.columns if c.startswith(('retrieval', 'cosine'))]].mean().round(4)
    for d in {a.out, a.summary} - {None}:
        dmeans.to_csv(d / 'decoder_retrieval.csv'); dcmp.round(4).to_csv(d / 'decoder_comparisons.csv', index=False)
    print(means.to_string(), file=sys.stderr); print(dmeans.to_string(), file=sys.stderr)
    if len(ni): print(ni.to_string(), file=sys.stderr)
    cheapest = ni[ni.non_inferior].iloc[0].to_dict() if len(ni) and ni.non_inferior.any() else None
    print(json.dumps(dict(bench='judge', subjects=a.subjects, runs={k: dict(what=v[0], overrides=v[1], samples_per_image=total_samples(
        **{'loop': 'ours', **{k2: v2 for k2, v2 in v[1].items() if k2 in ('loop', 'n_iter', 'n_samples')}})) for k, v in runs.items()},
        n_images=int(cond[cond.stage == 'initial'].shape[0]), run_seconds={f'{k}/subj{s:02d}': round(v, 1) for (k, s), v in times.items()},
        seconds=dict(runs=round(t1 - t0, 1), evaluate=round(time.time() - t1, 1)), files=files,
        means=json.loads(means.to_json(orient='index')), cheapest_non_inferior=cheapest)))


if __name__ == '__main__':
    main()
