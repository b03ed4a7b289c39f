"""Bad inputs of the search module fail early with clear messages; the ranking equals a float64 Pearson computation
at a realistic voxel count."""
import json

import numpy as np
import pytest
import torch

from secondsight.run import SearchConfig, check_device, claim_out_dir, select_images
from secondsight.search import rank_library, search
from secondsight.testing import tiny_unclip


def test_config_errors(monkeypatch):
    monkeypatch.delenv('SECONDSIGHT_DATA', raising=False)
    with pytest.raises(ValueError, match=r"SearchConfig.data_root=None is invalid.*-p data_root"):
        SearchConfig(dataset='nsd')
    with pytest.raises(ValueError, match="SearchConfig.dtype='float64' is invalid"): SearchConfig(dtype='float64')
    with pytest.raises(ValueError, match="'demo' or 'nsd'"): SearchConfig(dataset='coco')
    with pytest.raises(ValueError, match="SearchConfig.n_iter=0 is invalid"): SearchConfig(n_iter=0)
    with pytest.raises(ValueError, match="denoises at least one step"):
        SearchConfig(dataset='nsd', data_root='.', num_inference_steps=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.cuda.is_available"): check_device(SearchConfig(device="cuda"))
        with pytest.raises(ValueError, match="torch.cuda.is_available"): SearchConfig.resolve(dataset="demo", device="cuda", out_dir="x")
    with pytest.raises(ValueError, match="SearchConfig.device=.gpu. is invalid"): SearchConfig(device="gpu")


def test_select_images():
    test_ids = [3, 8, 12, 40, 41]
    assert select_images(SearchConfig(), test_ids) == test_ids
    assert select_images(SearchConfig(n_images=4, shard=1, n_shards=2), test_ids) == [8, 40]
    assert select_images(SearchConfig(images=[41, 3]), test_ids) == [41, 3]
    with pytest.raises(ValueError, match=r"contains \[5\], which are not test images of subj01"):
        select_images(SearchConfig(images=[3, 5]), test_ids)


def test_out_dir_holds_one_configuration(tmp_path):
    claim_out_dir(SearchConfig(out_dir=str(tmp_path), n_iter=3))
    assert json.loads((tmp_path / 'config.json').read_text())['n_iter'] == 3
    claim_out_dir(SearchConfig(out_dir=str(tmp_path), n_iter=3, shard=1, n_shards=2))   # shards share a folder
    with pytest.raises(ValueError, match=r"another configuration \(n_iter: 3 -> 4\)"):
        claim_out_dir(SearchConfig(out_dir=str(tmp_path), n_iter=4))
    with pytest.raises(ValueError, match="out_dir is None"): claim_out_dir(SearchConfig())


def test_rank_library_matches_float64_pearson():
    rng = np.random.default_rng(0)
    nvox, L = 15724, 500
    lib = rng.normal(size=(L, nvox)).astype(np.float32)
    q = rng.normal(size=(4, 3, nvox)).astype(np.float32)
    q[0, 2] = 0                                           # a missing repetition
    lib[7] = 0.3 * q[1, 0] + lib[7]                       # a planted match
    scores, idx = rank_library(q, lib, top_k=10, chunk_size=128)
    z = lambda x: (x - x.mean(-1, keepdims=True)) / np.linalg.norm(x - x.mean(-1, keepdims=True), axis=-1, keepdims=True)
    zl = z(lib.astype(np.float64))
    full = np.stack([np.mean([z(r.astype(np.float64)) @ zl.T for r in qq if r.any()], 0) for qq in q])
    assert (idx.numpy() == np.argsort(-full, 1)[:, :10]).all()
    np.testing.assert_allclose(scores.numpy(), np.sort(full, 1)[:, ::-1][:, :10], atol=1e-5)
    assert idx[1, 0] == 7


def test_search_rejects_bad_schedules():
    gen = tiny_unclip(num_inference_steps=4)
    img = torch.rand(1, 3, 32, 32)
    class Enc:
        def predict(self, x, **kw): return x.flatten(1)[:, :50]
    with pytest.raises(ValueError, match="got 2 strengths and 3 momenta for n_iter=3"):
        search(torch.randn(50), img, gen.embed(img)[0], Enc(), gen, n_iter=3, strengths=[0.9, 0.8])
    with pytest.raises(ValueError, match="n_branches=5 must be in 1..n_samples=4"):
        search(torch.randn(50), img, gen.embed(img)[0], Enc(), gen, n_iter=1, n_samples=4, n_branches=5)


def test_unclip_generator_input_errors():
    gen = tiny_unclip(num_inference_steps=4)
    img = torch.rand(2, 3, 32, 32)
    e = gen.embed(img)
    with pytest.raises(ValueError, match="init_images has 2 rows: expected 1 .* or n=3"): gen.vary(img, e[:1], 0.5, 3)
    with pytest.raises(ValueError, match="init_images=None needs strength=1"): gen.vary(None, e[:1], 0.5, 1)
    with pytest.raises(ValueError, match="embeds must have 32 values per row"): gen.vary(img[:1], torch.randn(1, 5), 0.5, 1)
    assert gen.vary(None, e[:1], 1.0, 2, seed=0).shape == (2, 3, 32, 32)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_unclip_half_precision(dtype):
    gen = tiny_unclip(num_inference_steps=4, dtype=dtype)
    x = torch.rand(1, 3, 32, 32)
    y = gen.vary(x, gen.embed(x), 0.7, 2, seed=0)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 32, 32) and torch.isfinite(y).all()
    assert 0 <= y.min() and y.max() <= 1
