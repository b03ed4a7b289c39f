"""secondsight.metrics against independent references on cases with known answers: scikit-image SSIM with the spec's
arguments on natural photographs at NSD size, np.corrcoef for PixCorr, the reference two-way code (copied from
Brain-Diffuser), scipy's correlation distance, per-ROI brain correlation; conventions' resizing; weights errors."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy.spatial.distance import correlation as sp_correlation
from skimage import data as skdata
from skimage.color import rgb2gray
from skimage.filters import gaussian
from skimage.metrics import structural_similarity

from secondsight.core import as_images
from secondsight import metrics as M
from secondsight import weights as W


def photos(size=425):
    "Four scikit-image photographs resized to size x size (uint8) and blurred copies (sigma 3 px)."
    ims = np.stack([np.asarray(Image.fromarray(f()).resize((size, size), Image.Resampling.LANCZOS))
                    for f in (skdata.astronaut, skdata.coffee, skdata.chelsea, skdata.rocket)])
    blur = (np.stack([gaussian(im / 255., sigma=3, channel_axis=-1) for im in ims]) * 255).round().astype(np.uint8)
    return ims, blur


def pairwise_corr_all(ground_truth, predictions):  # Copied from brain-diffuser scripts/evaluate_reconstruction.py
    r = np.corrcoef(ground_truth, predictions)
    r = r[:len(ground_truth), len(ground_truth):]  # rows: groundtruth, columns: predicitons
    congruents = np.diag(r)
    success = r < congruents
    success_cnt = np.sum(success, 0)
    perf = np.mean(success_cnt) / (len(ground_truth) - 1)
    return perf


@pytest.mark.parametrize('conv', ['mindeye2', 'brain-diffuser', 'second-sight'])
def test_ssim_matches_skimage_at_nsd_size(conv):
    ims, blur = photos()
    c = M.get_convention(conv)
    gt = M._low(M._seen(ims, c), c, c.ssim_resample).permute(0, 2, 3, 1).double().numpy()  # second-sight: its 768-px PNG
    rc = M._low(blur, c, c.ssim_resample).permute(0, 2, 3, 1).double().numpy()
    ref = []
    for a, b in zip(rgb2gray(rc), rgb2gray(gt)):
        dr = 1.0 if c.ssim_data_range == 'fixed' else b.max() - b.min()
        ref.append(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=c.ssim_sample_covariance, data_range=dr))
    np.testing.assert_allclose(M.ssim(ims, blur, conv), ref, atol=1e-12)
    assert 0.5 < min(ref) < max(ref) < 1


def test_second_sight_reads_its_768px_ground_truth_png():
    "[SS] evaluates against Ground Truth.png (the stimulus upsampled to 768 px, PIL Lanczos, uint8), resized back by each metric."
    ims, blur = photos()
    L = Image.Resampling.LANCZOS
    png = [Image.fromarray(im).resize((768, 768), L) for im in ims]  # as src/second_sight.py saves it
    # src/utils.py pixel_correlation: both resized to 425 with Lanczos, uint8, np.corrcoef
    pix = [np.corrcoef(np.asarray(g.resize((425, 425), L)).flatten(), np.asarray(Image.fromarray(b).resize((425, 425), L)).flatten())[0, 1]
           for g, b in zip(png, blur)]
    np.testing.assert_allclose(M.pixcorr(ims, blur, 'second-sight'), pix, atol=1e-12)
    # stochastic_search_statistics.py calculate_ssim: PIL default resize (bicubic) to 425, /255, rgb2gray, sample covariance, GT range
    gray = lambda im: rgb2gray(np.asarray(im.resize((425, 425))) / 255.)
    ref = [structural_similarity(gray(Image.fromarray(b)), gray(g), gaussian_weights=True, sigma=1.5, use_sample_covariance=True,
                                 data_range=gray(g).max() - gray(g).min()) for g, b in zip(png, blur)]
    s = M.ssim(ims, blur, 'second-sight')
    np.testing.assert_allclose(s, ref, atol=1e-8)  # float32 images vs float64 /255
    without = M.ssim(ims, blur, M.replace(M.get_convention('second-sight'), gt_size=None))
    assert 0.001 < np.abs(s - without).min() and np.abs(s - without).max() < 0.03  # a small, real shift


def test_seen_step_reaches_the_networks_only_in_second_sight():
    ims, _ = photos(128)
    for conv, changes in (('second-sight', True), ('mindeye2', False), ('brain-diffuser', False)):
        net = M.load_metric_net('effnet', 'random', M.scale_nets(conv, 0.5))
        a, b = net.features(ims, seen=True)['EffNet-B'], net.features(ims)['EffNet-B']
        if changes:
            np.testing.assert_array_equal(a, net.features(M._seen(ims, net.conv))['EffNet-B'])  # the 768-px PNG, batch by batch
            assert not np.array_equal(a, b)
        else: np.testing.assert_array_equal(a, b)


def test_ssim_identity_symmetry_and_column_quirk():
    ims, blur = photos(128)
    np.testing.assert_allclose(M.ssim(ims, ims), 1, atol=1e-12)
    np.testing.assert_allclose(M.ssim(ims, blur), M.ssim(blur, ims), atol=1e-12)  # canonical SSIM is symmetric
    cols = M.ssim(ims[:1], blur[:1], M.replace(M.get_convention('mindeye2'), ssim_per_column=True))
    assert cols[0] > M.ssim(ims[:1], blur[:1])[0]  # the skimage<=0.19 per-column variant reads higher (spec §2)


@pytest.mark.parametrize('conv', ['mindeye2', 'brain-diffuser', 'second-sight'])
def test_pixcorr_matches_corrcoef(conv):
    ims, blur = photos(200)
    c = M.get_convention(conv)
    g, r = M._low(M._seen(ims, c), c, c.pixcorr_resample), M._low(blur, c, c.pixcorr_resample)
    assert g.shape == (4, 3, 425, 425)
    ref = [np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1] for a, b in zip(g, r)]
    np.testing.assert_allclose(M.pixcorr(ims, blur, conv), ref, atol=1e-12)
    if c.gt_size is None: np.testing.assert_allclose(M.pixcorr(ims, ims, conv), 1, atol=1e-12)
    else: assert (1 - 1e-3 < M.pixcorr(ims, ims, conv)).all() and (M.pixcorr(ims, ims, conv) < 1).all()  # its PNG is not the stimulus


def test_mindeye_resizing_is_torchvision_without_antialias():
    ims, _ = photos(512)  # ME: 512-px reconstructions squeezed through 256 px (torchvision<=0.16 tensors: no antialias)
    x = as_images(ims)
    ref = TF.resize(TF.resize(x, [256, 256], antialias=False), [425, 425], antialias=False)
    torch.testing.assert_close(M._low(ims, M.get_convention('mindeye2'), 'bilinear'), ref)


def test_brain_diffuser_keeps_native_425_gt_and_bicubic_recon():
    ims, _ = photos(425)
    rec = np.stack([np.asarray(Image.fromarray(im).resize((512, 512))) for im in ims])
    c = M.get_convention('brain-diffuser')
    np.testing.assert_array_equal(M._to_u8(M._low(ims, c, 'bicubic')), ims)  # GT untouched
    ref = np.stack([np.asarray(Image.fromarray(im).resize((425, 425), Image.Resampling.BICUBIC)) for im in rec])
    np.testing.assert_array_equal(M._to_u8(M._low(rec, c, 'bicubic')), ref)


def test_two_way_matches_reference_code():
    rng = np.random.default_rng(1)
    for n, d in ((2, 10), (5, 50), (40, 3000)):
        gt = rng.normal(size=(n, d)); rec = 0.3 * gt + rng.normal(size=(n, d))
        assert M.two_way(gt, rec).mean() == pytest.approx(pairwise_corr_all(gt, rec), abs=1e-12)
    gt = rng.normal(size=(8, 100)); rec = gt.copy(); rec[2] = gt[5]  # recon 2 is GT 5: ties fail, GT 5 beats it
    per = M.two_way(gt, rec)
    assert per[2] < 1 and per.mean() == pytest.approx(pairwise_corr_all(gt, rec), abs=1e-12)
    np.testing.assert_array_equal(M.two_way(gt, gt), np.ones(8))


def test_two_way_direction_and_ties():
    r = np.array([[0.9, 0.5, 0.2], [0.1, 0.5, 0.3], [0.95, 0.4, 0.6]])  # rows GT, columns reconstructions
    np.testing.assert_allclose(M.two_way_identification(r), [0.5, 0.5, 1.0])
    np.testing.assert_allclose(M.two_way_identification(r.T), [1.0, 1.0, 0.5])  # the other direction differs
    np.testing.assert_array_equal(M.two_way_identification(np.full((5, 5), 0.3)), np.zeros(5))
    with pytest.raises(ValueError, match='N >= 2'): M.two_way_identification(np.ones((1, 1)))


def test_corr_matrix_chunks_and_large_features():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 70001)).astype(np.float32), rng.normal(size=(4, 70001)).astype(np.float32)
    ref = np.corrcoef(a.astype(np.float64), b.astype(np.float64))[:6, 6:]
    for chunk in (1000, 16384, 10**6): np.testing.assert_allclose(M.corr_matrix(a, b, chunk), ref, atol=1e-12)


def test_corr_distance_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 1280)), rng.normal(size=(7, 1280))
    np.testing.assert_allclose(M.corr_distance(a, b), [sp_correlation(x, y) for x, y in zip(a, b)], atol=1e-12)


def test_brain_correlation_per_roi():
    rng = np.random.default_rng(4)
    nv = 300
    masks = {r: rng.random(nv) < 0.3 for r in M.ROIS if r != 'nsdgeneral'}
    b, p = rng.normal(size=(5, nv)), rng.normal(size=(5, nv))
    out = M.brain_correlation(b, p, masks)
    assert list(out.columns) == list(M.ROIS)
    for roi in M.ROIS:
        m = masks.get(roi, np.ones(nv, bool))
        np.testing.assert_allclose(out[roi], [np.corrcoef(x[m], y[m])[0, 1] for x, y in zip(b, p)], atol=1e-12)
    with pytest.raises(ValueError, match="mask 'V1' has 10 voxels"): M.brain_correlation(b, p, {'V1': np.ones(10, bool)}, ('V1',))


@pytest.mark.parametrize('net, file', [('alexnet', 'alexnet-owt-7be5be79.pth'), ('inception', 'inception_v3_google-0cc3c7bd.pth'),
                                       ('effnet', 'efficientnet_b1-c27df63c.pth'), ('swav', 'swav_800ep_pretrain.pth.tar'),
                                       ('clip', 'vit_large_patch14_clip_224.openai')])
def test_missing_pretrained_weights_say_what_to_download(net, file, tmp_path, monkeypatch):
    monkeypatch.setenv('SECONDSIGHT_WEIGHTS', str(tmp_path / 'weights'))  # an empty weights folder
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))  # an empty torch.hub cache
    try:
        if net == 'clip' and W._clip_cached('ViT-L-14', 'openai'): pytest.skip('OpenAI CLIP is cached on this machine')
        with pytest.raises(M.MetricWeightsError) as e: M.load_metric_net(net, allow_download=False)
    finally:
        torch.hub.set_dir(old)
    assert file in str(e.value) and "weights='random'" in str(e.value)


def test_brain_diffuser_effnet_weights_are_v1(tmp_path, monkeypatch):
    monkeypatch.setenv('SECONDSIGHT_WEIGHTS', str(tmp_path / 'weights'))  # an empty weights folder
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(M.MetricWeightsError, match='efficientnet_b1_rwightman-'):
            M.load_metric_net('effnet', convention='brain-diffuser', allow_download=False)
    finally:
        torch.hub.set_dir(old)


def test_random_weights_are_seeded_labelled_and_checked():
    ims, blur = photos(64)
    a = M.load_metric_net('effnet', 'random', 'mindeye2')
    b = M.load_metric_net('effnet', 'random', 'mindeye2')
    np.testing.assert_array_equal(a.features(ims)['EffNet-B'], b.features(ims)['EffNet-B'])
    assert a.random and 'RANDOM weights' in a.label
    with pytest.raises(ValueError, match="expected 'pretrained'"): M.load_metric_net('effnet', 'imagenet')
    with pytest.raises(ValueError, match='takes 224-px images'):
        M.load_metric_net('clip', 'pretrained', M.scale_nets('mindeye2', 0.5), allow_download=False)
    df = M.image_metrics(ims, {'same': ims, 'blurred': blur}, weights='random', clip_arch='ViT-S-32',
                         convention=M.scale_nets('mindeye2', 0.5), progress=False)
    assert df.attrs['weights'] == 'random' and all('RANDOM' in v for v in df.attrs['labels'].values())
    same = df[df.stage == 'same']
    np.testing.assert_allclose(same[list(M.TWO_WAY) + ['PixCorr', 'SSIM']].values, 1, atol=1e-6)
    np.testing.assert_allclose(same[list(M.DISTANCE)].values, 0, atol=1e-6)


@pytest.mark.skipif(not __import__('os').environ.get('SECONDSIGHT_REAL_WEIGHTS'), reason='set SECONDSIGHT_REAL_WEIGHTS=1 (downloads ~2 GB of weights)')
@pytest.mark.parametrize('conv', ['mindeye2', 'brain-diffuser'])
def test_real_weights_feature_shapes(conv):
    ims, blur = photos(256)
    shapes = {'AlexNet(2)': 192 * 31 * 31, 'AlexNet(5)': 256 * 15 * 15, 'InceptionV3': 2048, 'CLIP': 768, 'EffNet-B': 1280, 'SwAV': 2048} \
        if conv == 'mindeye2' else {'AlexNet(2)': 192 * 27 * 27, 'AlexNet(5)': 256 * 13 * 13, 'InceptionV3': 2048, 'CLIP': 768, 'EffNet-B': 1280, 'SwAV': 2048}
    for net in M.NETS:
        f = M.load_metric_net(net, 'pretrained', conv).features(ims[:2])
        for m, v in f.items(): assert v.shape == (2, shapes[m]), (m, v.shape)
    df = M.image_metrics(ims, {'same': ims, 'blurred': blur}, conv, 'pretrained', progress=False)
    assert (df[df.stage == 'same'][list(M.TWO_WAY)] == 1).all().all()


def test_one_image_two_way_is_nan_not_an_error():
    "A run (or shard) of one image is evaluated: two-way identification is undefined there (NaN, said in the caveats)."
    rng = np.random.default_rng(0)
    gt, rec = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    df = M.image_metrics(gt, {'final': rec}, 'mindeye2', 'random', ('PixCorr', 'AlexNet(2)', 'EffNet-B'), progress=False,
                         allow_download=False)
    assert np.isnan(df['AlexNet(2)'].iloc[0]) and np.isfinite(df['PixCorr'].iloc[0]) and np.isfinite(df['EffNet-B'].iloc[0])
    notes = M.caveats(M.get_convention('mindeye2'), 'random', {}, 1, 'demo')
    assert any('needs at least 2' in n for n in notes) and not any('resolution 1/' in n for n in notes)
