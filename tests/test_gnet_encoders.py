"""`get_encoders`: parallel processes train the demo models once; NSD loads the published formats or names what is missing."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from secondsight.data import load_subject
from secondsight.demo import demo_embedder, ensure_demo
from secondsight.encoders import CLIPEncoder, BetaAutoencoder, EnsembleEncoder, model_fingerprint
from secondsight.gnet import GNet8j, save_gnet_multisubject
from secondsight.models import get_encoders

ROOT = Path(__file__).parents[1]
DEMO_ROOT = ensure_demo()  # before any test changes $SECONDSIGHT_DATA


def test_parallel_processes_train_once(tmp_path):
    "Two processes start on an empty cache at once: one trains under the lock, the other waits and loads."
    code = ("import json, torch; torch.set_num_threads(1); from secondsight.data import load_subject; "
            "from secondsight.models import get_encoders; from secondsight.encoders import model_fingerprint; "
            f"s = load_subject(1, data_root={str(DEMO_ROOT)!r}, progress=False); e = get_encoders(s); "
            "print(json.dumps(dict(trained_by=e.gnet.model.meta['trained_by']['pid'], "
            "gnet=model_fingerprint(e.gnet.model), clip=model_fingerprint(e.clip.model), "
            "ae=model_fingerprint(e.autoencoder))))")
    env = dict(os.environ, SECONDSIGHT_DATA=str(tmp_path), OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', code], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs): assert p.returncode == 0, err[-3000:]
    res = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert res[0] == res[1]                                    # same models, trained by one process
    assert res[0]['trained_by'] in [p.pid for p in procs]
    assert not any('retraining' in err for _, err in outs)
    models = list((tmp_path / 'cache').rglob('models/*/model.safetensors'))   # one folder per model (`cached`)
    assert sorted(m.parent.name for m in models) == ['autoencoder', 'clip', 'gnet']
    assert all((m.parent / 'manifest.json').exists() for m in models)


@pytest.fixture
def nsd_like(tmp_path, monkeypatch):
    "The demo files read as dataset='nsd' (their voxel count is not NSD's, so the count check is off)."
    monkeypatch.setenv('SECONDSIGHT_DATA', str(tmp_path))
    return load_subject(1, 'nsd', data_root=DEMO_ROOT, sessions=range(1, 11), check_nvox=False, progress=False)


def test_nsd_missing_files_are_named(nsd_like, tmp_path):
    (tmp_path / 'models').mkdir()
    torch.save({}, tmp_path / 'models' / 'gnet_multisubject')
    with pytest.raises(FileNotFoundError, match=r"missing \['sub01_clip_encoder.pt', 'sub01_hybrid_autoencoder.pt'\] in "
                                                r"models_dir=.*huggingface.co/reesekneeland/Second-Sight"):
        get_encoders(nsd_like, models_dir=tmp_path / 'models')
    with pytest.raises(FileNotFoundError, match=r"missing \['gnet_multisubject', .*models_dir=None"):
        get_encoders(nsd_like)


def test_nsd_loads_published_formats(nsd_like, tmp_path):
    "Files written in the authors' formats (small widths, 227-px GNet) load through get_encoders and predict."
    d, nv = tmp_path / 'models', nsd_like.nvox
    d.mkdir()
    torch.manual_seed(0)
    clip = CLIPEncoder(nv, 128, 64); torch.save(clip.state_dict(), d / 'sub01_clip_encoder.pt')
    ae = BetaAutoencoder(nv, (64, 32, 16)); torch.save(ae.state_dict(), d / 'sub01_hybrid_autoencoder.pt')
    g = GNet8j(nv, 227, [0.47, 0.45, 0.41], trunk_width=8, pass_through=8)
    save_gnet_multisubject(d / 'gnet_multisubject', {1: g, 2: GNet8j(5, 227, [0.47, 0.45, 0.41], 8, 8)})
    emb = demo_embedder()
    enc = get_encoders(nsd_like, models_dir=d, embedder=emb)
    assert enc.embedder is emb and isinstance(enc.hybrid, EnsembleEncoder)
    assert model_fingerprint(enc.clip.model) == model_fingerprint(clip)
    assert model_fingerprint(enc.gnet.model.fwrf) == model_fingerprint(g.fwrf)
    imgs = nsd_like.images(nsd_like.test_nsd_ids[:3])
    for k in ('clip', 'gnet', 'hybrid'): assert enc.predictor(k).predict(imgs).shape == (3, nv)
    torch.testing.assert_close(enc.hybrid.predict(imgs), (enc.gnet.predict(imgs) + enc.clip.predict(imgs)) / 2)
    assert enc.autoencoder.denoise(nsd_like.test_betas()[:2]).shape == (2, nv)
    # another subject's file (wrong voxel count) is refused by name
    torch.save(CLIPEncoder(nv + 3, 128, 8).state_dict(), d / 'sub01_clip_encoder.pt')
    with pytest.raises(ValueError, match=f'predicts {nv + 3} voxels but the subject has {nv}'):
        get_encoders(nsd_like, models_dir=d, embedder=emb)


def test_nsd_accepts_the_download_scripts_autoencoder_name(nsd_like, tmp_path):
    "The authors' download script saves sub0N_dual_autoencoder.pt (and renames it later): either name loads."
    d, nv = tmp_path / 'models', nsd_like.nvox
    d.mkdir()
    torch.manual_seed(0)
    torch.save(CLIPEncoder(nv, 128, 64).state_dict(), d / 'sub01_clip_encoder.pt')
    ae = BetaAutoencoder(nv, (64, 32, 16)); torch.save(ae.state_dict(), d / 'sub01_dual_autoencoder.pt')
    save_gnet_multisubject(d / 'gnet_multisubject', {1: GNet8j(nv, 227, [0.47, 0.45, 0.41], trunk_width=8, pass_through=8)})
    enc = get_encoders(nsd_like, models_dir=d, embedder=demo_embedder())
    assert model_fingerprint(enc.autoencoder) == model_fingerprint(ae)


def test_checkpoint_voxels_must_be_the_subjects(nsd_like, tmp_path):
    "A checkpoint whose grid or voxel mask is not the subject's nsdgeneral is refused by name, even with equal counts."
    from secondsight.gnet import load_gnet_multisubject
    nv, grid = nsd_like.nvox, nsd_like.grid_shape
    mask = np.zeros(int(np.prod(grid)), bool); mask[nsd_like.voxel_index] = True
    g = GNet8j(nv, 227, [0.47, 0.45, 0.41], trunk_width=8, pass_through=8)
    ok = save_gnet_multisubject(tmp_path / 'ok', {1: g}, voxel_masks={1: mask}, brain_nii_shapes={1: grid})
    assert load_gnet_multisubject(ok, nsd_like).model.nvox == nv
    shifted = np.roll(mask, 1)                                         # same count, other voxels
    bad = save_gnet_multisubject(tmp_path / 'bad', {1: g}, voxel_masks={1: shifted}, brain_nii_shapes={1: grid})
    with pytest.raises(ValueError, match=r"voxel_mask differs from the nsdgeneral mask of the NSD files in \d+ voxels"):
        load_gnet_multisubject(bad, nsd_like)
    other = save_gnet_multisubject(tmp_path / 'grid', {1: g}, voxel_masks={1: mask}, brain_nii_shapes={1: (81, 104, 83)})
    with pytest.raises(ValueError, match=r"grid is \(81, 104, 83\) in the checkpoint but"):
        load_gnet_multisubject(other, nsd_like)


def test_nsd_per_model_autoencoders(nsd_like, tmp_path):
    "library_autoencoder='per-model' on NSD: the hub's sub0N_gnet/clip_autoencoder.pt load by name; missing ones are named with the fix."
    from secondsight.models import get_autoencoders, published_autoencoder_paths
    d, nv = tmp_path / 'models', nsd_like.nvox
    d.mkdir()
    torch.manual_seed(0)
    g = BetaAutoencoder(nv, (64, 32, 16)); torch.save(g.state_dict(), d / 'sub01_gnet_autoencoder.pt')
    with pytest.raises(FileNotFoundError, match=r"needs \['sub01_clip_autoencoder.pt'\] in .*secondsight-weights --subjects 1 --per-model"):
        published_autoencoder_paths(nsd_like, d)
    c = BetaAutoencoder(nv, (64, 32, 16)); torch.save(c.state_dict(), d / 'sub01_clip_autoencoder.pt')
    aes = get_autoencoders(nsd_like, None, models_dir=d)                    # published: the encoders are not needed
    assert [model_fingerprint(aes[k]) for k in ('gnet', 'clip')] == [model_fingerprint(g), model_fingerprint(c)]
