"""bench/gpu_check.py (`make gpu-check`) on tiny components on the CPU, through the same code as on a GPU: every phase
runs and reports (the notebooks' `#| cuda` cell of 03a on a tiny float16 unCLIP copy, the 03 stage through papermill in
float16), a tiny budget skips phases by name and still ends with the JSON line, no CUDA fails in one line, and the
full-size components the GPU run builds are built here on the 'meta' device (shapes only)."""
import argparse, json, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))


def check(*args, timeout=900):
    r = subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu_check.py'), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    return r, (json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None)


def test_every_phase_on_tiny_components(tmp_path):
    # 04's cuda cell needs CUDA (its guard skips it on the CPU) and its notebook runs 2.5 min here: 03a's only
    r, out = check('--device', 'cpu', '--tiny', '--work', str(tmp_path), '--batches', '1', '2', '--notebooks', '03a_unclip')
    assert r.returncode == 0, r.stderr[-3000:]
    p = out['phases']
    assert out['bench'] == 'gpu_check' and out['tiny'] and out['ok'] and out['skipped'] == [] and out['failed'] == []
    assert list(p) == ['build', 'unet', 'bfloat16', 'samplers', 'overhead', 'reconstruction', 'notebooks', 'rehearsal_03']
    assert all(v['status'] == 'ok' and v['seconds'] >= 0 for v in p.values())
    assert p['build']['dtype'] == 'float16'                                    # the dtype a run on CUDA resolves to
    assert set(p['unet']['s_per_sample_eval']) == {'1', '2'} and p['unet']['best_batch'] in (1, 2)
    assert p['bfloat16']['finite'] and 0 < p['bfloat16']['max_rel_diff_vs_float16'] < 0.1
    assert set(p['samplers']['samples_per_s']) == {'ddim', 'dpmsolver'} and p['samplers']['steps'] == dict(ddim=4, dpmsolver=2)
    assert set(p['overhead']) >= {'vae_decode', 'embed', 'encoder'}
    rec = p['reconstruction']
    assert rec['unet_evals'] == 40362 and rec['samples'] == 489 and rec['s_estimated'] > 0 and 'times_floor' not in rec   # no floor for a CPU
    assert p['notebooks']['with_cuda_cells'] == ['03a_unclip', '04_metrics'] and p['notebooks']['ran']['03a_unclip']['rc'] == 0
    assert (tmp_path / 'weights' / 'stable-diffusion-2-1-unclip' / 'unet' / 'config.json').is_file()
    assert p['rehearsal_03']['rc'] == 0 and p['rehearsal_03']['stage'] == '03_search'
    cfg = json.loads((tmp_path / 'runs' / 'subj01' / 'config.json').read_text())
    assert (cfg['dtype'], cfg['generator'], cfg['model_id']) == ('float16', 'unclip', str(tmp_path / 'weights' / 'stable-diffusion-2-1-unclip'))
    assert len(list((tmp_path / 'runs' / 'subj01' / 'images').glob('*/result.json'))) == 1
    para = r.stdout.strip().splitlines()[-2]                                     # the bench page's paragraph
    assert para.startswith("`make gpu-check` on cpu (tiny components") and "estimated at" in para and "FAILED" not in para
    assert para.endswith("the rehearsal's 03 stage runs on cpu (on the demo data set).")


def test_a_tiny_budget_skips_phases_by_name(tmp_path):
    r, out = check('--device', 'cpu', '--tiny', '--work', str(tmp_path), '--budget', '0')
    assert r.returncode == 0, r.stderr[-3000:]
    assert out['phases']['build']['status'] == 'ok'                             # every phase needs it: it always runs
    assert out['skipped'] == ['unet', 'bfloat16', 'samplers', 'overhead', 'reconstruction', 'notebooks', 'rehearsal_03']
    assert all('s left' in out['phases'][k]['why'] for k in out['skipped']) and out['failed'] == []
    assert 'reconstruction_s' not in json.dumps(out)                              # no estimate made up without measurements
    assert 'skipped for time: unet, bfloat16' in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_needs_cuda_says_so_in_one_line(tmp_path):
    r, out = check('--work', str(tmp_path))
    assert r.returncode != 0 and out is None and 'needs a CUDA GPU' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_full_size_components_build(tmp_path):
    "What the build phase makes on a GPU, on the 'meta' device: the published shapes, the GPU's dtype, and a saveable folder"
    from gpu_search import full_generator, full_encoder
    gen = full_generator(argparse.Namespace(scheduler='ddim', steps=50, batch=8), 'meta', torch.float16)
    assert gen.size == 768 and gen.unet.dtype == torch.float16 and gen.tokenizer.model_max_length == 77
    assert gen.unet.config.projection_class_embeddings_input_dim == 2 * gen.image_encoder.config.projection_dim == 2048
    enc = full_encoder('meta', torch.float16)
    assert enc.nvox == 15724 and enc.encoders[1].embedder.dim == 1024 and enc.encoders[1].embedder.dtype == torch.float16


def test_the_estimate_needs_its_measurements(tmp_path):
    "reconstruction without the unet and overhead phases' numbers is skipped, naming them (never estimated from nothing)"
    import gpu_check
    c = gpu_check.Check(argparse.Namespace(device='cpu', tiny=True, work=str(tmp_path), batches=None, notebooks=None))
    c.phases['unet'] = dict(status='ok')
    with pytest.raises(gpu_check.Skip, match='needs the phases overhead, which did not run'): c.reconstruction()
    assert gpu_check.nb_with_cuda_cells() == ['03a_unclip', '04_metrics']
