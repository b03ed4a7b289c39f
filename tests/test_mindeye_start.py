"""MindEye's reconstruction as the search's starting point (init='mindeye') on the demo: the prior decoder and the
low-level decoder are trained once and cached, the run's initial image is MindEye's second-order selected sample, and
MindEye's settings are checked before any work."""
import json

import numpy as np
import pytest
import torch

from secondsight.core import as_images, derive_seed, load_image
from secondsight.data import load_subject
from secondsight.models import get_decoder, get_encoders, get_lowlevel
from secondsight.metrics import evaluate_run
from secondsight.run import SearchConfig, make_generator, read_run, run_subject
from secondsight.search import mindeye_reconstruct, read_reconstructions


def test_mindeye_settings_are_checked():
    with pytest.raises(ValueError, match="SearchConfig.recons_per_sample=0 is invalid"): SearchConfig(recons_per_sample=0)
    with pytest.raises(ValueError, match="SearchConfig.img2img_strength=1.5 is invalid"): SearchConfig(img2img_strength=1.5)
    with pytest.raises(ValueError, match="SearchConfig.init='mindeye2' is invalid"): SearchConfig(init='mindeye2')
    with pytest.raises(ValueError, match="SearchConfig.decoder_epochs=0 is invalid"): SearchConfig(decoder_epochs=0)


def test_decoder_epochs_reach_both_decoders(tmp_path):
    "A short training (the rehearsal's) trains both of MindEye's decoders for that many epochs, cached beside the full ones"
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path / 'run'), init='mindeye', n_images=1, n_iter=1,
                       n_samples=2, n_branches=1, recons_per_sample=2, decoder_epochs=1)
    run_subject(cfg, progress=False)
    s = load_subject(1, 'demo', progress=False)
    enc = get_encoders(s, progress=False)
    dec = get_decoder(s, 'mindeye-prior', embedder=enc.embedder, train=False, epochs=1)
    low = get_lowlevel(s, make_generator(cfg, s, enc), train=False, epochs=1)
    assert dec.meta['history']['epochs'] == 1 and low.meta['history']['epochs'] == 1
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['decoder_epochs'] == 1


def test_init_mindeye_starts_from_the_reconstruction(tmp_path):
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path / 'run'), init='mindeye', n_images=2, n_iter=1,
                       n_samples=4, n_branches=2, recons_per_sample=3)
    res = run_subject(cfg, progress=False)
    assert len(res) == 2 and all(r['stages'][-1] == 'final' for r in res)
    # the decoders it trained are cached: the same reconstruction again, from the cache
    s = load_subject(1, 'demo', progress=False)
    enc = get_encoders(s, progress=False)
    gen = make_generator(cfg, s, enc)
    dec, low = get_decoder(s, 'mindeye-prior', embedder=enc.embedder, train=False), get_lowlevel(s, gen, train=False)
    assert dec.prior is not None and list(low.config['latent_shape']) == list(gen.encode_latents(s.images([0])).shape[1:])
    nsd_id = res[0]['nsd_id']
    nested, _ = s.test_betas(mode='nest')
    m = torch.as_tensor(np.asarray(nested)[list(map(int, s.test_nsd_ids)).index(nsd_id)], dtype=torch.float32)
    avg = m[m.abs().sum(-1) > 0].mean(0, keepdim=True)
    seeds = [derive_seed(cfg.seed, 1, nsd_id, "mindeye")]
    with torch.no_grad(): emb, blurry = dec.decode(avg, steps=20, seed=seeds), gen.decode_latents(low(avg))

    rec, pick, cos = mindeye_reconstruct(gen, emb, blurry, 0.85, 3, seeds)
    assert cos.shape == (1, 3) and int(pick[0]) == int(cos[0].argmax())
    # the run's initial image is img2img of that start at init_strength: its low-level stage is MindEye's reconstruction
    stored = load_image(tmp_path / 'run' / 'images' / f'{nsd_id:05d}' / 'lowlevel.png')
    np.testing.assert_allclose(as_images(stored).numpy(), as_images(rec).numpy(), atol=1.5 / 255)
    # MindEye's outputs are stages of their own: 04's tables have a row for each, and they export as another method's file
    assert res[0]['stages'][:6] == ['random', 'library', 'blurry', 'mindeye', 'lowlevel', 'initial']
    run = read_run(tmp_path / 'run', 1)
    np.testing.assert_array_equal(run.images('mindeye')[:1], run.images('lowlevel')[:1])
    np.testing.assert_allclose(as_images(run.images('blurry')[:1]).numpy(), as_images(blurry).numpy(), atol=1.5 / 255)
    recs = read_reconstructions(run.export('mindeye', tmp_path / 'mindeye.npz'), run.nsd_ids, s.test_nsd_ids)
    np.testing.assert_allclose(recs[nsd_id].numpy(), as_images(rec).numpy(), atol=1.5 / 255)
    ev = evaluate_run(tmp_path / 'run', s, metrics=('PixCorr', 'SSIM'), weights='random', figures=False, progress=False)
    assert {'blurry', 'mindeye', 'library', 'final'} <= set(ev.tables[1].index)


def test_boi_published_records_the_mindeye_reconstruction(tmp_path):
    "BOI's start (blurry image + embedding) seeds the search, and MindEye's reconstruction is scored beside it, as BOI scores its base model"
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path / 'run'), init='mindeye', lowlevel='decoded', loop='boi-v2',
                       n_images=1, n_iter=1, n_samples=4, n_branches=2, recons_per_sample=2)
    r = run_subject(cfg, progress=False)[0]
    assert r['stages'][:5] == ['random', 'library', 'blurry', 'mindeye', 'lowlevel'] and 'mindeye' in r['brain_corr']
    run = read_run(tmp_path / 'run', 1)
    np.testing.assert_array_equal(run.images('blurry'), run.images('lowlevel'))            # the search starts from the blurry image
    assert np.abs(run.images('mindeye').astype(float) - run.images('blurry')).mean() > 1   # not from the reconstruction


def test_lowlevel_decoded_starts_from_the_blurry_image(tmp_path):
    "lowlevel='decoded' (Second Sight's low-level image from the brain; with init='mindeye', BOI's start): the stored low-level stage"
    with pytest.raises(ValueError, match="SearchConfig.lowlevel='vae' is invalid"): SearchConfig(lowlevel='vae')
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path / 'run'), lowlevel='decoded', n_images=1, n_iter=1,
                       n_samples=4, n_branches=2)
    nsd_id = run_subject(cfg, progress=False)[0]['nsd_id']
    s = load_subject(1, 'demo', progress=False)
    gen = make_generator(cfg, s, get_encoders(s, progress=False))
    nested, _ = s.test_betas(mode='nest')
    m = torch.as_tensor(np.asarray(nested)[list(map(int, s.test_nsd_ids)).index(nsd_id)], dtype=torch.float32)
    with torch.no_grad(): blurry = gen.decode_latents(get_lowlevel(s, gen, train=False)(m[m.abs().sum(-1) > 0].mean(0, keepdim=True)))
    stored = load_image(tmp_path / 'run' / 'images' / f'{nsd_id:05d}' / 'lowlevel.png')
    np.testing.assert_allclose(as_images(stored).numpy(), as_images(blurry).numpy(), atol=1.5 / 255)
    lib = load_image(tmp_path / 'run' / 'images' / f'{nsd_id:05d}' / 'library.png')     # not the library's stand-in
    assert float((as_images(stored) - as_images(lib)).abs().mean()) > 0.01
