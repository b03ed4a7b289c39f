"bench/gpu_search.py (`make bench-gpu`) on tiny components: every phase runs and reports, the budget skips phases by name, no CUDA fails in one line."
import json, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu_search.py'), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_tiny_sweep_reports_every_phase():
    r = bench('--device', 'cpu', '--tiny', '--no-compile', '--batches', '1', '4')
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out['bench'] == 'gpu_search' and out['tiny'] and out['skipped'] == []
    assert set(out['unet_s_per_sample_eval']) == {'1', '4'} and out['best_batch'] in (1, 4)
    assert set(out['unet_variants_s_per_sample_eval']) == {'classic_attention', 'channels_last', 'bfloat16'}
    assert set(out['vary_samples_per_s']) == {'single', 'batched', 'batched_dpmsolver20'}
    assert set(out['overhead_s_per_sample']) == {'vae_decode', 'embed', 'encoder'}
    assert out['iteration0_s'] > 0 and out['reconstruction_unet_evals'] == 40362 and out['reconstruction_samples'] == 489
    assert out['reconstruction_s_estimated'] > 0
    assert all(v > 0 for d in ('unet_s_per_sample_eval', 'unet_variants_s_per_sample_eval', 'vary_samples_per_s')
               for v in out[d].values())


def test_budget_skips_phases_by_name():
    r = bench('--device', 'cpu', '--tiny', '--no-compile', '--budget', '0')
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert list(out['unet_s_per_sample_eval']) == ['1'] and out['skipped'][0].startswith('unet batch 4')
    assert any(s.startswith('vary') for s in out['skipped']) and any(s.startswith('iteration 0') for s in out['skipped'])
    assert 'reconstruction_s_estimated' not in out          # no overhead measured: no estimate made up


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_needs_cuda_says_so_in_one_line():
    r = bench()
    assert r.returncode != 0 and 'needs a CUDA GPU' in r.stderr and len(r.stderr.strip().splitlines()) == 1
