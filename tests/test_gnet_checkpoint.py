"""GNet: the published `gnet_multisubject` structure, legacy numpy pickles, bad checkpoints, real-size shapes."""
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from secondsight.gnet import GNet8j, GNetEncoder, gnet_fmap_sizes, load_gnet_multisubject, save_gnet_multisubject
from secondsight.encoders import load_model, save_model
from secondsight.encoders import torch_load


def small_models(seed=0):
    torch.manual_seed(seed)
    a = GNet8j(11, 64, [0.45, 0.44, 0.40], trunk_width=8, pass_through=8)
    b = GNet8j(6, 64, [0.45, 0.44, 0.40], trunk_width=8, pass_through=8)
    b.features.load_state_dict(a.features.state_dict())
    with torch.no_grad():  # non-trivial readout fields
        for m in (a, b): m.fwrf.rf0.normal_(); m.fwrf.rf1.normal_()
    return {1: a.eval(), 7: b.eval()}


def legacy_numpy_copy(src: Path, dst: Path):
    "Rewrite a torch.save zip so its pickle names numpy's arrays as numpy 1.x did (`numpy.core.multiarray`)."
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', compression=zipfile.ZIP_STORED) as zout:
        for n in zin.namelist():
            b = zin.read(n)
            if n.endswith('data.pkl'):
                assert b'numpy._core.multiarray' in b
                b = b.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            zout.writestr(n, b)


def test_structure_matches_the_published_keys(tmp_path):
    p = save_gnet_multisubject(tmp_path / 'gnet_multisubject', small_models())
    ck = torch_load(p)
    assert {'num_epochs', 'batch_size', 'holdout_frac', 'best_params', 'final_params', 'trn_loss_history',
            'hold_loss_history', 'hold_cc_history', 'best_epoch', 'best_joint_cc_score', 'val_cc', 'input_mean',
            'brain_nii_shape', 'voxel_index', 'voxel_roi', 'voxel_mask'} <= set(ck)
    enc = ck['best_params']['enc']
    assert 'mu' in enc and 'pre.conv1.0.weight' in enc and 'pre.conv2.0.bias' in enc
    assert {'enc.conv3.weight', 'enc.bn1.running_mean', 'enc.conv4a.conv1.weight', 'enc.conv6b.bn1.weight'} <= set(enc)
    assert sorted(ck['best_params']['fwrfs']) == [1, 7]
    assert sorted(ck['best_params']['fwrfs'][1]) == ['b', 'rf0', 'rf1', 'w']
    assert isinstance(ck['input_mean'], np.ndarray) and ck['input_mean'].shape == (1, 3, 1, 1)
    assert ck['voxel_mask'][7].dtype == bool and ck['voxel_mask'][7].sum() == 6


@pytest.mark.parametrize('legacy', [False, True])
def test_round_trip_predictions(tmp_path, legacy):
    models = small_models()
    p = save_gnet_multisubject(tmp_path / 'gnet_multisubject', models)
    if legacy:
        legacy_numpy_copy(p, tmp_path / 'legacy'); p = tmp_path / 'legacy'
    imgs = torch.rand(4, 3, 64, 64)
    for s, m in models.items():
        e = load_gnet_multisubject(p, s, nvox=m.nvox, input_size=64)
        assert isinstance(e, GNetEncoder) and e.nvox == m.nvox
        with torch.no_grad(): want = m(imgs)
        torch.testing.assert_close(e.predict(imgs), want, atol=1e-5, rtol=1e-4)
        assert (e.model.config['trunk_width'], e.model.config['pass_through']) == (8, 8)
        assert len(e.meta['val_cc']) == m.nvox


def test_checkpoint_errors(tmp_path):
    models = small_models()
    p = save_gnet_multisubject(tmp_path / 'gnet_multisubject', models)
    with pytest.raises(ValueError, match=r'has 11 voxels but subj01 has 15724 nsdgeneral voxels'):
        load_gnet_multisubject(p, 1, input_size=64)          # default: NVOX[1] of the real subject
    with pytest.raises(ValueError, match=r'no GNet readout for subject 2: the checkpoint has subjects \[1, 7\]'):
        load_gnet_multisubject(p, 2, nvox=11, input_size=64)
    with pytest.raises(ValueError, match=r'do not match input_size=227'):
        load_gnet_multisubject(p, 1, nvox=11)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_gnet_multisubject(tmp_path / 'nope', 1)
    torch.save({'something': 1}, tmp_path / 'other')
    with pytest.raises(ValueError, match=r"not a gnet_multisubject checkpoint: missing \['best_params', 'input_mean'\]"):
        load_gnet_multisubject(tmp_path / 'other', 1)
    # inconsistent mask vs readout
    bad = save_gnet_multisubject(tmp_path / 'bad', models, voxel_masks={1: np.ones(12, bool), 7: np.ones(6, bool)})
    with pytest.raises(ValueError, match=r'voxel_mask\[1\] covers 12 voxels but the readout has 11'):
        load_gnet_multisubject(bad, 1, nvox=11, input_size=64)


def test_refuses_arbitrary_pickles(tmp_path):
    "weights_only loading: a checkpoint holding an arbitrary object is refused, not executed."
    class Evil:
        def __reduce__(self): return (print, ('executed',))
    torch.save({'best_params': Evil(), 'input_mean': np.zeros(3)}, tmp_path / 'evil')
    with pytest.raises(Exception, match='Weights only load failed'):
        load_gnet_multisubject(tmp_path / 'evil', 1)


def test_real_size_shapes_on_meta():
    with torch.device('meta'): m = GNet8j(15724)
    sd = m.state_dict()
    assert tuple(sd['fwrf.rf0'].shape) == (15724, 25, 25)
    assert tuple(sd['fwrf.rf1'].shape) == (15724, 13, 13)
    assert tuple(sd['fwrf.w'].shape) == (15724, 512) and tuple(sd['fwrf.b'].shape) == (15724,)
    assert tuple(sd['features.pre.conv1.0.weight'].shape) == (64, 3, 11, 11)
    assert tuple(sd['features.enc.conv3.weight'].shape) == (128, 192, 3, 3)
    assert tuple(sd['features.enc.conv5b.conv1.weight'].shape) == (256, 256, 3, 3)
    assert gnet_fmap_sizes(227) == (25, 13)


def test_real_size_forward_cpu():
    "One real-size forward pass (227 px, 15724 voxels) on the CPU: chunked readout at full width."
    torch.manual_seed(0)
    m = GNet8j(15724).eval()
    e = GNetEncoder(m)
    x = torch.rand(2, 3, 300, 300)
    out = e.predict(x)
    assert out.shape == (2, 15724) and torch.isfinite(out).all()
    mask = np.zeros(15724, bool); mask[::97] = True
    torch.testing.assert_close(e.predict(x, mask=mask), out[:, mask], atol=1e-5, rtol=1e-4)


def test_save_load_model_keeps_gnet(tmp_path):
    torch.manual_seed(1)
    m = GNet8j(9, 64, [0.5, 0.4, 0.3], 8, 8).eval()
    p = save_model(m, tmp_path / 'gnet.safetensors', note='x')
    m2 = load_model(p)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(m2(x), m(x))
    assert m2.config == m.config and m2.meta == {'note': 'x'}
