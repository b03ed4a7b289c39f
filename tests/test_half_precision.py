"""The GPU's reduced-precision path on the CPU (issue 25): every component a CUDA run holds in float16 (or bfloat16)
runs here in that dtype on tiny random components, through the components' own dtype arguments, and stays close to
float32 on the same inputs. On a GPU: unCLIP (tests/test_unclip_dtypes.py) and the ViT-H embedder in float16, the
embeddings and CLIP-encoder predictions of the prepare step computed from it, 04's CLIP metric network in float16
(`MetricConvention.clip_fp16_on_cuda`); GNet, the CLIP encoder and the autoencoder stay float32. Also: the scores and
interpolations the search computes from float16 data (library memmaps, half-precision embeddings) do not overflow.

Tolerances are stated per test, measured on this machine's CPU with a margin (float16 keeps 11 bits of mantissa,
bfloat16 8)."""

import numpy as np
import pytest
import torch

from secondsight.core import brain_scores, pearson_rows, seeded
from secondsight.data import get_dataset, load_subject
from secondsight.demo import ensure_demo
from secondsight.encoders import ImageEmbedder, make_embedder, CLIPEncoder, ClipBetaEncoder, BetaAutoencoder
from secondsight.gnet import GNet8j, GNetEncoder
from secondsight.metrics import load_metric_net, get_convention, two_way, corr_distance
from secondsight.models import EncoderSet, prepare_subject
from secondsight.run import SearchConfig
from secondsight.search import slerp, rank_library
from secondsight.testing import blobs
from secondsight.unclip import DTYPES

HALF = [torch.float16, torch.bfloat16]
IDS = ['float16', 'bfloat16']
# a small open_clip image tower (random weights): the same code as ViT-H-14, 32 px, 2 blocks
TINY_VIT = dict(arch='secondsight-test-vit', pretrained=None, seed=0, batch_size=256,
                arch_config={'embed_dim': 32, 'vision_cfg': {'image_size': 32, 'layers': 2, 'width': 64, 'head_width': 32,
                                                             'patch_size': 8},
                             'text_cfg': {'context_length': 8, 'vocab_size': 64, 'width': 32, 'heads': 2, 'layers': 1}})


def gpu_dtype(what: str) -> torch.dtype:
    "The dtype a CUDA run gives `what`, from the declarations the GPU path reads (not restated here)"
    if what == 'embedder': return getattr(torch, get_dataset('nsd').embedder['cuda_dtype'])      # make_embedder on cuda
    if what == 'generator': return DTYPES[SearchConfig.resolve(dataset='demo', device='cuda', out_dir='x', check_here=False).dtype]
    raise KeyError(what)


def test_the_gpu_dtypes_are_half():
    "What the tests below stand in for: float16 for the generator and NSD's embedder on cuda, float32 on the CPU"
    assert gpu_dtype('embedder') == torch.float16 and gpu_dtype('generator') == torch.float16
    assert SearchConfig.resolve(dataset='demo', device='cpu', out_dir='x').dtype == 'float32'
    assert make_embedder(dict(TINY_VIT, cuda_dtype='float16'), 'cpu').dtype == torch.float32    # cuda_dtype only on a GPU
    assert make_embedder(dict(TINY_VIT, cuda_dtype='float16'), 'cpu', half=True).dtype == torch.float16   # the GPU's rule, here
    assert get_convention('mindeye2').clip_fp16_on_cuda and not get_convention('second-sight').clip_fp16_on_cuda


# max |difference| / max |embedding| against float32, 64 images (measured: float16 0.001, bfloat16 0.008)
EMB_TOL = {torch.float16: 0.005, torch.bfloat16: 0.03}

@pytest.fixture(scope='module')
def images(): return blobs(64, size=48, seed=3)

@pytest.fixture(scope='module')
def ref_embeddings(images): return ImageEmbedder(**TINY_VIT).embed(images)

@pytest.mark.parametrize('dtype', HALF, ids=IDS)
def test_embedder_in_half_precision(images, ref_embeddings, dtype):
    "The open_clip tower in half precision: float32 embeddings out, close to float32's; any image dtype in"
    e = ImageEmbedder(**TINY_VIT, dtype=dtype)
    assert e.dtype == dtype and next(e.visual.parameters()).dtype == dtype and e.name == ImageEmbedder(**TINY_VIT).name
    out = e.embed(images)
    assert out.dtype == torch.float32 and out.device.type == 'cpu' and torch.isfinite(out).all()
    assert float((out - ref_embeddings).abs().max() / ref_embeddings.abs().max()) < EMB_TOL[dtype]
    assert float(torch.nn.functional.cosine_similarity(out, ref_embeddings).min()) > 0.999
    # a half-precision image (a float16 generator's output before its cast) and uint8 images give the same embeddings
    test_close = lambda a, b: float((a - b).abs().max() / b.abs().max()) < EMB_TOL[dtype]
    assert test_close(e.embed(images[:8].to(dtype)), out[:8])
    assert test_close(e.embed((images[:8] * 255).round().byte().permute(0, 2, 3, 1).numpy()), out[:8])


def test_clip_encoder_on_half_embeddings(ref_embeddings):
    "The float32 CLIP encoder takes a float16 embedding (a float16 tower's, a float16 cache's) and returns float32"
    enc = ClipBetaEncoder(ImageEmbedder(**TINY_VIT), seeded(lambda: CLIPEncoder(200, 32, 64), 0))
    ref = enc.predict_embeddings(ref_embeddings)
    for x in (ref_embeddings.half(), ref_embeddings.half().numpy()):
        out = enc.predict_embeddings(x)
        assert out.dtype == torch.float32 and float((out - ref).abs().max() / ref.abs().max()) < 0.005


def _encoders(subject, dtype):
    "The encoder set a GPU run holds, on tiny components: the embedder in `dtype`, GNet and the CLIP encoder in float32"
    emb = ImageEmbedder(**TINY_VIT, dtype=dtype)
    clip = ClipBetaEncoder(emb, seeded(lambda: CLIPEncoder(subject.nvox, 32, 64), 1))
    gnet = GNetEncoder(seeded(lambda: GNet8j(subject.nvox, 64, trunk_width=16, pass_through=16), 2))
    return EncoderSet(emb, clip, gnet, seeded(lambda: BetaAutoencoder(subject.nvox), 3))

def test_prepare_subject_with_a_float16_embedder(tmp_path, monkeypatch):
    "prepare_subject (the library embeddings and predictions) with the GPU's float16 embedder, against float32 on every 20th image"
    monkeypatch.setenv('SECONDSIGHT_DATA', str(tmp_path))              # caches here; the demo data set read where it is
    s = load_subject(1, data_root=ensure_demo(), progress=False)
    enc = _encoders(s, gpu_dtype('embedder'))
    half = prepare_subject(s, enc, progress=False)
    assert half['embeddings'].dtype == np.float32 and half['clip'].dtype == half['gnet'].dtype == np.float16   # the stored dtypes
    ids = np.arange(0, s.n_images, 20)
    imgs = s.images(ids)
    ref_emb = ImageEmbedder(**TINY_VIT).embed(imgs)
    ref = dict(embeddings=ref_emb.numpy(), clip=ClipBetaEncoder(ImageEmbedder(**TINY_VIT), enc.clip.model).predict_embeddings(ref_emb).numpy(),
               gnet=enc.gnet.predict(imgs).numpy())                     # GNet runs float32 on a GPU too
    tol = dict(embeddings=0.005, clip=0.01, gnet=0.002)                  # relative to the largest value (float16 storage: 0.001)
    for k, t in tol.items():
        a = np.asarray(half[k][ids], np.float32)
        assert np.isfinite(a).all() and np.abs(a - ref[k]).max() / np.abs(ref[k]).max() < t, k
    # the library ranking from the float16-prepared primes picks the same top images as from float32 ones
    q = ref['clip'][:40] + np.random.default_rng(0).normal(0, 0.5, (40, s.nvox)).astype(np.float32)
    (_, i_half), (_, i_ref) = rank_library(q, half['clip'], top_k=5, rows=ids), rank_library(q, ref['clip'], top_k=5)
    assert (i_half[:, 0] == i_ref[:, 0]).float().mean() >= 0.9


def test_clip_metric_network_in_half_precision():
    "04's CLIP network as MetricNet runs it on a GPU (half=True: float16 module and inputs), against float32"
    ref = load_metric_net('clip', 'random', 'mindeye2', 'cpu', clip_arch='ViT-S-32')
    assert ref.dtype == torch.float32
    # load_metric_net's cuda branch, taken on the CPU: the module cast to float16, its inputs too (MetricNet.half)
    half = load_metric_net('clip', 'random', 'mindeye2', 'cpu', clip_arch='ViT-S-32', half=True)
    assert half.dtype == torch.float16 and next(half.module.parameters()).dtype == torch.float16
    assert load_metric_net('clip', 'random', 'second-sight', 'cpu', clip_arch='ViT-S-32', half=True).dtype == torch.float32   # its convention: fp32
    gt, rec = blobs(6, size=64, seed=1), blobs(6, size=64, seed=2)
    f = {k: (n.features(gt, seen=True)['CLIP'], n.features(rec)['CLIP']) for k, n in (('ref', ref), ('half', half))}
    assert f['half'][0].dtype == np.float32 and np.isfinite(f['half'][0]).all()
    # per-image correlation distance within 0.01 of float32's (measured: 2e-4); two-way within one flip of 6 images
    np.testing.assert_allclose(corr_distance(*f['half']), corr_distance(*f['ref']), atol=0.01)
    np.testing.assert_allclose(two_way(*f['half']), two_way(*f['ref']), atol=0.21)   # 6 images: one flip = 0.2


def test_no_overflow_from_float16_data():
    "float16 inputs whose squares overflow float16 (max 65504): Pearson r, the library ranking and slerp are computed in float32"
    g = torch.Generator().manual_seed(0)
    betas = torch.randn(3, 15724, generator=g) * 3
    preds = (betas[0] + torch.randn(8, 15724, generator=g) * torch.linspace(1, 20, 8)[:, None]) * 50   # |x| ~ 1000
    assert torch.isinf((preds.half() ** 2).sum(1)).all()                   # what a float16 sum of squares would give
    r64 = np.mean([pearson_rows(preds.double(), b.expand(8, -1).double()) for b in betas], 0)   # mean r over repetitions
    r = brain_scores(preds.half(), betas.half())
    assert torch.isfinite(r).all() and r.dtype == torch.float32 and np.abs(r.numpy() - r64).max() < 1e-3
    assert (r.argsort() == torch.as_tensor(r64).argsort()).all()           # the ranking the search keeps
    s, i = rank_library(betas.half().numpy(), preds.half().numpy(), top_k=3)
    assert torch.isfinite(s).all() and i[0].tolist() == [0, 1, 2]
    # slerp between float16 embeddings of a large norm (ViT-H image embeds are unnormalised)
    a, b = (torch.randn(4, 1024, generator=g) * 40).half(), (torch.randn(4, 1024, generator=g) * 40).half()
    for t in (0., 0.2, 1.):
        x = slerp(a, b, t)
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        torch.testing.assert_close(x, slerp(a.float(), b.float(), t))
    torch.testing.assert_close(slerp(a, a, 0.3), a.float(), rtol=1e-3, atol=1e-2)     # parallel: linear, no 0/0
