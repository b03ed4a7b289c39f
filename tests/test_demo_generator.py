"""The demo generator on the demo's own images: the generator contract the search relies on (03_search's `Generator`:
batched = one by one, strength 1 ignores the init image and follows the embedding, the distribution narrows as the
strength falls), natural image statistics at every strength, its world (larger than the library, without the test
photographs) and `demo_generator`'s cache."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from secondsight.core import as_images, sample_seeds
from secondsight.data import load_subject
from secondsight.demo import (DEMO_TEST_PHOTOS, DemoGenerator, DemoWorld, _radial_spectrum, demo_embedder, demo_generator,
                              demo_provenance)
from secondsight.search import Generator

STRENGTHS = (0.3, 0.6, 0.9, 1.0)


@pytest.fixture(scope='module')
def setup():
    s = load_subject(1, progress=False)
    lib = np.asarray(s.library_nsd_ids)[::4]
    gen = DemoGenerator.fit(s.images(lib), demo_embedder(), n_components=64, world=DemoWorld(demo_provenance().loc[lib]))
    init = as_images(s.images(s.test_nsd_ids[:3]))
    return s, gen, init, gen.embed(init)


def test_is_a_generator(setup):
    _, gen, init, e = setup
    assert isinstance(gen, Generator)
    x = gen.vary(init[:1], e[:1], 0.6, 5, seed=0)
    assert x.shape == (5, 3, 64, 64) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert gen.decode_latents(gen.encode_latents(init)).shape == init.shape


@pytest.mark.parametrize('strength', STRENGTHS)
def test_batched_equals_one_by_one(setup, strength):
    _, gen, init, e = setup
    seeds = sample_seeds(7, 6)
    batch = gen.vary(init[:1], e[:1], strength, 6, seed=7)
    one = torch.cat([gen.vary(init[:1], e[:1], strength, 1, seed=[sd]) for sd in seeds])
    torch.testing.assert_close(batch, one, atol=1e-5, rtol=0)


def test_per_sample_inits_and_embeddings(setup):
    _, gen, init, e = setup
    both = gen.vary(init, e, 0.6, 3, seed=[1, 2, 3])
    for j in range(3): torch.testing.assert_close(both[j:j + 1], gen.vary(init[j:j + 1], e[j:j + 1], 0.6, 1, seed=[j + 1]), atol=1e-5, rtol=0)


def test_strength_one_ignores_the_init_image_and_follows_the_embedding(setup):
    s, gen, init, e = setup
    a = gen.vary(init[:1], e[:1], 1.0, 16, seed=3)
    torch.testing.assert_close(a, gen.vary(init[1:2], e[:1], 1.0, 16, seed=3))
    torch.testing.assert_close(a, gen.vary(None, e[:1], 1.0, 16, seed=3))
    others = gen.embed(as_images(s.images(np.asarray(s.library_nsd_ids)[1::50])))          # library images not used as donors
    d = lambda x: float((gen.embed(x) - e[0]).norm(dim=1).mean())
    assert d(a) < float((others - e[0]).norm(dim=1).mean())


def test_distribution_narrows_as_strength_falls(setup):
    _, gen, init, e = setup
    dist = [float((gen.vary(init[:1], e[:1], st, 16, seed=5) - init[:1]).pow(2).mean()) for st in STRENGTHS]
    assert dist == sorted(dist), dict(zip(STRENGTHS, dist))
    spread = [float(gen.vary(init[:1], e[:1], st, 16, seed=5).std(0).mean()) for st in STRENGTHS]
    assert spread == sorted(spread), dict(zip(STRENGTHS, spread))


@pytest.mark.parametrize('strength', STRENGTHS)
def test_samples_keep_the_fine_detail_of_photographs(setup, strength):
    "Power at the finest frequencies (periods of 2-2.7 px), relative to the coarse ones, compared with library images'."
    s, gen, init, e = setup
    axis = lambda x: _radial_spectrum(x * 2 - 1, 16)[0, 1:49]
    lib = axis(as_images(s.images(np.asarray(s.library_nsd_ids)[::8])))
    x = torch.cat([gen.vary(init[j:j + 1], e[j:j + 1], strength, 8, seed=j) for j in range(3)])
    assert float((axis(x) / lib)[-12:].mean()) > 0.4


def test_errors_name_the_argument(setup):
    _, gen, init, e = setup
    with pytest.raises(ValueError, match=r'strength must be in \(0, 1\]'): gen.vary(init[:1], e[:1], 1.5, 2)
    with pytest.raises(ValueError, match='init_images=None needs strength=1'): gen.vary(None, e[:1], 0.9, 2)
    with pytest.raises(ValueError, match='init_images has 3 rows'): gen.vary(init, e[:1], 0.9, 2)
    with pytest.raises(ValueError, match='2 embeddings for 3 images'): DemoGenerator.fit(init, demo_embedder(), embeds=e[:2])


def test_demo_generator_is_cached_per_demo_build(setup):
    s = setup[0]
    enc = SimpleNamespace(embedder=demo_embedder())
    g1 = demo_generator(None, s, enc)
    p = s.cache_dir / 'generator' / f'demo_{enc.embedder.name}.safetensors'
    key = __import__('json').loads(p.with_suffix('.json').read_text())['key']
    assert key['demo']['version'] >= 2 and key['embedder'] == enc.embedder.name
    g2 = demo_generator(None, s, enc)
    assert len(g1.donors) == len(s.library_nsd_ids)
    torch.testing.assert_close(g1.vary(None, g1.embed(setup[2][:1]), 1.0, 4, seed=0), g2.vary(None, g2.embed(setup[2][:1]), 1.0, 4, seed=0))


def test_the_world_holds_no_test_photograph(setup):
    s, gen = setup[:2]
    assert not set(gen.world.views) & set(DEMO_TEST_PHOTOS) and not {r['photo'] for r in gen.world.recipes} & set(DEMO_TEST_PHOTOS)
    with pytest.raises(ValueError, match='may not hold test photographs'): DemoWorld(demo_provenance().loc[s.test_nsd_ids[:2]])


def test_the_world_holds_images_the_library_lacks(setup):
    "Conditioned on test images at strength 1, the samples are new images: far from every library image, pixel by pixel."
    s, gen, init, e = setup
    x = torch.cat([gen.vary(None, e[j:j + 1], 1.0, 20, seed=j) for j in range(3)])
    lib = as_images(s.images(s.library_nsd_ids))
    rms = torch.cdist(x.flatten(1), lib.flatten(1)).min(1).values / (x[0].numel() ** 0.5)
    assert float((rms > 0.02).float().mean()) >= 0.9, rms
    gen_lib = DemoGenerator(gen.mean, gen.components, gen.spectrum, gen.donors, gen.donor_embeds, gen.embedder, gen.size)
    x = gen_lib.vary(None, e[:1], 1.0, 20, seed=0)                     # without the world: library images as they are
    assert float(torch.cdist(x.flatten(1), gen.donors.flatten(1).float() / 255).min(1).values.max()) < 1e-3 * x[0].numel() ** 0.5
