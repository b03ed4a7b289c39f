"""Does MindEye's ConvNeXt term help the low-level decoder? Four demo subjects, the decoder trained with the L1 loss
alone and with the term (the demo's settings: ConvNeXt-T with fixed random weights as the teacher, 64 px), its
blurry images of each subject's 30 test images scored by PixCorr and SSIM with the seen images (the pixels the
search's low-level start and MindEye's img2img init carry). Paired 95% bootstrap CIs over the 120 images and over
their source photographs (04a's `compare_stages`).

    python bench/lowlevel_term.py                      # ~10 min on 2 cores
    python bench/lowlevel_term.py --subjects 1 --out /tmp/lt

Writes <out>/lowlevel_term_per_image.csv and lowlevel_term.csv (means, differences with CIs, training seconds);
ends with ONE JSON line.
"""
import argparse, json, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def per_image(subjects) -> tuple:
    "Long table (variant, subj, nsd_id, photo, PixCorr, SSIM) and training seconds per (variant, subj)"
    from secondsight.core import as_images, pearson_rows, ssim_rows, to_gray
    from secondsight.data import load_subject
    from secondsight.decoders import train_lowlevel
    from secondsight.demo import demo_provenance
    from secondsight.models import get_encoders
    from secondsight.run import SearchConfig, make_generator
    photo, rows, secs = demo_provenance()['photo'], [], {}
    for s in subjects:
        subject = load_subject(s, 'demo', progress=False)
        gen = make_generator(SearchConfig(subj=s), subject, get_encoders(subject, progress=False))
        ids = np.asarray(subject.test_nsd_ids)
        meas = torch.as_tensor(np.asarray(subject.test_betas('average')), dtype=torch.float32)
        kw = dict(subject.data_set.decoders.get('lowlevel', {}))
        for name, over in (('L1 only', dict(teacher=None)), ('L1 + ConvNeXt term', {})):
            t0 = time.time()
            low, _ = train_lowlevel(subject, gen, progress=False, **dict(kw, **over))
            secs[f'{name}/subj{s:02d}'] = round(time.time() - t0, 1)
            with torch.no_grad(): img = gen.decode_latents(low(meas))
            seen = as_images(subject.images(ids), size=img.shape[-1])
            rows.append(pd.DataFrame(dict(stage=name, subj=s, nsd_id=ids, photo=photo.loc[ids].values,
                                          PixCorr=np.asarray(pearson_rows(img.flatten(1), seen.flatten(1))),
                                          SSIM=np.asarray(ssim_rows(to_gray(img), to_gray(seen))))))
    return pd.concat(rows, ignore_index=True), secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--subjects', nargs='*', type=int, default=[1, 2, 5, 7])
    ap.add_argument('--out', type=Path, default=ROOT / 'bench' / 'judge_summary')
    ap.add_argument('--n-boot', type=int, default=10_000)
    a = ap.parse_args()
    from secondsight.stats import compare_stages
    t0 = time.time()
    df, secs = per_image(a.subjects)
    pair = [('L1 + ConvNeXt term', 'L1 only')]
    cmp = pd.concat([compare_stages(df, pair, ['PixCorr', 'SSIM'], n_boot=a.n_boot).assign(resample='images'),
                     compare_stages(df, pair, ['PixCorr', 'SSIM'], n_boot=a.n_boot, groups='photo').assign(resample='photographs')])
    means = df.groupby('stage')[['PixCorr', 'SSIM']].mean()
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / 'lowlevel_term_per_image.csv', index=False)
    cmp.round(4).to_csv(a.out / 'lowlevel_term.csv', index=False)
    print(means.round(4).to_string()); print(cmp.round(4).to_string())
    print(json.dumps(dict(bench='lowlevel_term', subjects=a.subjects, n_images=int((df.stage == 'L1 only').sum()),
                          means=json.loads(means.round(4).to_json(orient='index')), train_seconds=secs,
                          comparisons=json.loads(cmp.round(4).to_json(orient='records')), seconds=round(time.time() - t0, 1))))


if __name__ == '__main__':
    main()
