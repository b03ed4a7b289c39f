"""Encoders: released state-dict formats, real-size configurations, the demo embedder's stability across processes."""
import subprocess, sys, json
from pathlib import Path

import numpy as np
import pytest
import torch

from secondsight.encoders import (CLIPEncoder, BetaAutoencoder, ImageEmbedder, load_model, save_model,
    load_released_clip_encoder, load_released_autoencoder, released_model_path, EnsembleEncoder, ClipBetaEncoder)
from secondsight.demo import demo_embedder


def test_released_clip_encoder_formats(tmp_path):
    torch.manual_seed(0)
    m = CLIPEncoder(13, d_in=10, hidden=17).eval()
    torch.save(m.state_dict(), tmp_path / 'sub02_clip_encoder.pt')
    # a DataParallel-saved variant ('module.' prefix) loads too
    torch.save({f'module.{k}': v for k, v in m.state_dict().items()}, tmp_path / 'dp.pt')
    x = torch.randn(3, 10)
    for f in ('sub02_clip_encoder.pt', 'dp.pt'):
        m2 = load_released_clip_encoder(tmp_path / f, nvox=13)
        assert m2.config == dict(nvox=13, d_in=10, hidden=17)
        with torch.no_grad(): torch.testing.assert_close(m2(x), m(x))
    with pytest.raises(ValueError, match='predicts 13 voxels but the subject has 14278'):
        load_released_clip_encoder(tmp_path / 'sub02_clip_encoder.pt', nvox=14278)


def test_released_autoencoder_format(tmp_path):
    torch.manual_seed(0)
    a = BetaAutoencoder(21, dims=(12, 8, 4)).eval()
    torch.save(a.state_dict(), tmp_path / 'sub01_hybrid_autoencoder.pt')
    a2 = load_released_autoencoder(tmp_path / 'sub01_hybrid_autoencoder.pt', nvox=21)
    assert a2.config == dict(nvox=21, dims=[12, 8, 4])
    b = np.random.default_rng(0).standard_normal((5, 21)).astype(np.float32)
    torch.testing.assert_close(a2.denoise(b), a.denoise(b))
    torch.save(CLIPEncoder(3, 4, 5).state_dict(), tmp_path / 'sub01_clip_encoder.pt')
    with pytest.raises(ValueError, match='not a released autoencoder state dict: missing keys'):
        load_released_autoencoder(tmp_path / 'sub01_clip_encoder.pt')


def test_released_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'sub05_hybrid_autoencoder.pt is missing: download it from '
                                                r'https://huggingface.co/reesekneeland/Second-Sight/resolve/main/sub05_hybrid_autoencoder.pt'):
        released_model_path(tmp_path, 'sub05_hybrid_autoencoder.pt')


def test_real_size_configs_on_meta():
    with torch.device('meta'):
        c = CLIPEncoder(12682)
        a = BetaAutoencoder(12682)
    assert tuple(c.linear.weight.shape) == (15000, 1024) and tuple(c.linear2.weight.shape) == (15000, 15000)
    assert tuple(c.outlayer.weight.shape) == (12682, 15000)
    assert [tuple(a.state_dict()[f'encoder.{i}.weight'].shape) for i in (0, 2, 4)] == [(5000, 12682), (1000, 5000), (500, 1000)]
    assert [tuple(a.state_dict()[f'decoder.{i}.weight'].shape) for i in (0, 2, 4)] == [(1000, 500), (5000, 1000), (12682, 5000)]


def test_default_embedder_architecture_on_meta():
    e = ImageEmbedder('ViT-H-14', pretrained=None, seed=0, device='meta')
    assert (e.dim, e.image_size) == (1024, 224)
    assert e.preprocess_cfg['interpolation'] == 'bicubic'
    assert e.name == 'ViT-H-14_seed0'


def test_demo_embedder_identical_across_processes():
    "Cached embeddings and trained demo models rely on the seeded random weights being the same in every process."
    imgs = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    here = demo_embedder().embed(imgs).numpy()
    code = ("import torch, json; from secondsight.demo import demo_embedder; "
            "torch.manual_seed(123); torch.rand(10); "  # a different global RNG state must not matter
            "imgs = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)); "
            "print(json.dumps(demo_embedder().embed(imgs).tolist()))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    np.testing.assert_allclose(np.array(json.loads(out.stdout.strip().splitlines()[-1])), here, atol=1e-5)


def test_save_load_round_trip_autoencoder(tmp_path):
    torch.manual_seed(0)
    a = BetaAutoencoder(7, (5, 4, 3))
    p = save_model(a, tmp_path / 'ae.safetensors', history={'val_loss': [np.float32(1.5)]})
    a2 = load_model(p)
    assert a2.meta['history']['val_loss'] == [1.5]
    x = np.ones((2, 7), np.float32)
    torch.testing.assert_close(a2.denoise(x), a.denoise(x))
    (tmp_path / 'ae.json').write_text(json.dumps(dict(cls='Nope', config={})))
    with pytest.raises(ValueError, match=r"names class 'Nope'"):
        load_model(p)


def test_ensemble_weights_validation():
    emb = demo_embedder()
    a, b = (ClipBetaEncoder(emb, CLIPEncoder(4, emb.dim, 8)) for _ in range(2))
    with pytest.raises(ValueError, match=r'weights must have shape \(2,\) or \(2, 4\)'):
        EnsembleEncoder([a, b], weights=np.ones(3))
    with pytest.raises(ValueError, match='positive sum for every voxel'):
        EnsembleEncoder([a, b], weights=np.zeros((2, 4)))
