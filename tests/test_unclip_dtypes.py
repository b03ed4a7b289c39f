"""unCLIP's reduced-precision path on the CPU (issue 25, first part): the generator a GPU run builds in float16 (or
bfloat16) runs here through the same `dtype` argument, returns float32 images on the CPU that the float32 encoders can
take, stays close to float32 on the same inputs, and keeps its contract (batched = one by one) in half precision."""
import pytest
import torch
import torch.nn.functional as F

from secondsight.core import brain_scores
from secondsight.search import search
from secondsight.testing import blobs, tiny_unclip

# max |difference| of images in [0, 1] against float32 on the same seeds, 8 DDIM steps of the tiny model
# (measured: float16 0.006, bfloat16 0.048; bfloat16 keeps 8 bits of mantissa, float16 11)
TOL = {torch.float16: 0.02, torch.bfloat16: 0.1}

@pytest.fixture(scope='module')
def inputs():
    imgs = blobs(2, size=32)
    ref = tiny_unclip(num_inference_steps=8)
    return imgs, ref.embed(imgs), ref.vary(imgs[:1], ref.embed(imgs)[:1], 0.6, 3, seed=[1, 2, 3])

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['float16', 'bfloat16'])
def test_half_precision_generator(inputs, dtype):
    imgs, emb, ref = inputs
    g = tiny_unclip(num_inference_steps=8, dtype=dtype)
    assert g.unet.dtype == dtype and g.vae.dtype == dtype
    out = g.vary(imgs[:1], emb[:1], 0.6, 3, seed=[1, 2, 3])
    assert out.dtype == torch.float32 and out.device.type == 'cpu' and torch.isfinite(out).all()
    assert float((out - ref).abs().max()) < TOL[dtype]
    one_by_one = torch.cat([g.vary(imgs[:1], emb[:1], 0.6, 1, seed=[s]) for s in (1, 2, 3)])
    assert float((out - one_by_one).abs().max()) < 1e-2          # batching changes nothing beyond half-precision rounding
    assert g.encode_latents(imgs).dtype == torch.float32 and g.embed(imgs).dtype == torch.float32

def test_search_with_a_float16_generator():
    "The search's loop with a float16 generator and a float32 encoder: float32 images reach the encoder, every score is finite"
    g = tiny_unclip(num_inference_steps=4, dtype=torch.float16)
    W = torch.randn(3 * 64, 50, generator=torch.Generator().manual_seed(0))
    class Linear:
        def predict(self, images, **kw):
            assert images.dtype == torch.float32
            return F.adaptive_avg_pool2d(images.float(), 8).flatten(1) @ W
    enc, imgs = Linear(), blobs(3, size=32)
    target = enc.predict(imgs[2:3])
    res = search(target, imgs[:1], g.embed(imgs[:1])[0], enc, g, loop='master', n_iter=2, n_samples=8, n_branches=2, min_per_branch=2, seed=0)
    assert torch.isfinite(torch.tensor(res.iter_scores)).all() and torch.isfinite(res.sample_scores).all()
    assert res.best_image.dtype == torch.float32 and res.best_image.shape == (1, 3, 32, 32)
    assert res.best_score == res.iter_scores[-1]           # master: the last iteration logs the running best
    assert res.best_score == pytest.approx(float(brain_scores(enc.predict(res.best_image), target)[0]), abs=1e-5)
