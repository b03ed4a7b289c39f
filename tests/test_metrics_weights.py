"""Where the metric networks' pretrained weights come from (secondsight.weights, used by secondsight.metrics'
load_metric_net): the weights folder (models_dir, $SECONDSIGHT_WEIGHTS, data/weights) first, then torch.hub's /
open_clip's caches, then a download. Real checkpoint files (random weights under the published names) are written and
loaded; fetching is checked over a loopback HTTP server. No network is used."""
import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torchvision.models.feature_extraction import create_feature_extractor

from secondsight import metrics as M
from secondsight import weights as W
from secondsight.core import seeded

EFF_V2 = 'efficientnet_b1-c27df63c.pth'


@pytest.fixture
def hub(tmp_path):
    "An empty torch.hub cache for the test (restored afterwards)."
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    yield tmp_path / 'hub' / 'checkpoints'
    torch.hub.set_dir(old)


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    "An empty weights folder, also set as $SECONDSIGHT_WEIGHTS (so data/weights of this checkout plays no part)."
    d = tmp_path / 'weights'
    d.mkdir()
    monkeypatch.setenv('SECONDSIGHT_WEIGHTS', str(d))
    return d


def _same_weights(module, sd):
    got = module.state_dict()
    return len(got) > 10 and all(torch.equal(v, sd[k]) for k, v in got.items())


@pytest.mark.filterwarnings('ignore:NOTE. The nodes obtained by tracing')
def test_inception_from_weights_folder_equals_torchvision_loader(hub, wdir):
    "Our build + load of the folder's file gives the network torchvision's own inception_v3(weights=...) gives from its cache."
    sd = seeded(lambda: tvm.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), 3)
    hub.mkdir(parents=True)
    torch.save(sd, hub / 'inception_v3_google-0cc3c7bd.pth')  # torchvision reads only its cache; check_hash applies to downloads
    torch.save(sd, wdir / 'inception_v3_google-0cc3c7bd.pth')
    ref = tvm.inception_v3(weights=tvm.Inception_V3_Weights.IMAGENET1K_V1).eval()
    ref = create_feature_extractor(ref, return_nodes=['avgpool'])
    ours = M.load_metric_net('inception', allow_download=False)
    assert ours.label == 'InceptionV3: torchvision inception_v3 IMAGENET1K_V1'
    x = torch.rand(2, 3, 160, 160)
    torch.testing.assert_close(ours.module(x)['avgpool'], ref(x)['avgpool'], rtol=0, atol=0)  # transform_input and weights agree


def test_weights_folder_comes_before_torch_hub_cache(hub, wdir, tmp_path):
    a = seeded(lambda: tvm.efficientnet_b1().state_dict(), 1)
    b = seeded(lambda: tvm.efficientnet_b1().state_dict(), 2)
    hub.mkdir(parents=True)
    torch.save(a, hub / EFF_V2)
    assert _same_weights(M.load_metric_net('effnet', allow_download=False).module, a)  # only in the cache: the cache's
    torch.save(b, wdir / EFF_V2)
    assert _same_weights(M.load_metric_net('effnet', allow_download=False).module, b)  # $SECONDSIGHT_WEIGHTS wins
    other = tmp_path / 'other'
    other.mkdir()
    torch.save(a, other / EFF_V2)
    assert _same_weights(M.load_metric_net('effnet', models_dir=other, allow_download=False).module, a)  # models_dir wins over the env


def test_image_metrics_takes_models_dir(hub, tmp_path):
    rng = np.random.default_rng(0)
    gt, rec = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(W.MetricWeightsError, match=EFF_V2):
        M.image_metrics(gt, {'final': rec}, metrics=('EffNet-B',), allow_download=False, progress=False, models_dir=tmp_path)
    torch.save(seeded(lambda: tvm.efficientnet_b1().state_dict(), 1), tmp_path / EFF_V2)
    df = M.image_metrics(gt, {'final': rec}, metrics=('EffNet-B',), allow_download=False, progress=False, models_dir=tmp_path)
    assert df.attrs['weights'] == 'pretrained' and df.attrs['labels']['effnet'].endswith('IMAGENET1K_V2')
    assert np.isfinite(df['EffNet-B']).all()


def test_swav_from_weights_folder_and_a_wrong_file(hub, wdir):
    sd = seeded(lambda: tvm.resnet50().state_dict(), 4)
    torch.save({f'module.{k}': v for k, v in sd.items() if not k.startswith('fc.')}, wdir / 'swav_800ep_pretrain.pth.tar')  # as published
    net = M.load_metric_net('swav', allow_download=False)
    assert _same_weights(net.module, sd) and net.label == 'SwAV: SwAV ResNet-50 (swav_800ep_pretrain)'
    torch.save(seeded(lambda: tvm.efficientnet_b1().state_dict(), 1), wdir / 'swav_800ep_pretrain.pth.tar')
    with pytest.raises(W.MetricWeightsError, match='is not the SwAV ResNet-50 checkpoint'): M.load_metric_net('swav', allow_download=False)


def test_wrong_or_truncated_torchvision_file(hub, wdir):
    torch.save(seeded(lambda: tvm.alexnet().state_dict(), 1), wdir / EFF_V2)  # an AlexNet under EffNet's name
    with pytest.raises(W.MetricWeightsError, match=f'{EFF_V2} is not its checkpoint'): M.load_metric_net('effnet', allow_download=False)
    (wdir / EFF_V2).write_bytes(b'PK\x03\x04 cut short')
    with pytest.raises(W.MetricWeightsError, match='cannot be read as a checkpoint'): M.load_metric_net('effnet', allow_download=False)


def test_clip_from_weights_folder(hub, wdir):
    import open_clip
    sd = seeded(lambda: open_clip.create_model('ViT-S-32', pretrained=None).state_dict(), 5)
    with pytest.raises(W.MetricWeightsError, match='expected open_clip_ViT-S-32_openai.bin in the weights folder'):
        M.load_metric_net('clip', clip_arch='ViT-S-32', allow_download=False)
    torch.save(sd, wdir / 'open_clip_ViT-S-32_openai.bin')  # the name 01_encoders' ImageEmbedder also looks for
    net = M.load_metric_net('clip', clip_arch='ViT-S-32', allow_download=False)
    assert net.label == 'CLIP: open_clip ViT-S-32 openai (stand-in for OpenAI ViT-L-14)'
    vis = {k.removeprefix('visual.'): v for k, v in sd.items() if k.startswith('visual.')}
    assert _same_weights(net.module, vis)


@pytest.mark.parametrize('net, file', [('alexnet', 'alexnet-owt-7be5be79.pth'), ('swav', 'swav_800ep_pretrain.pth.tar'),
                                       ('clip', 'open_clip_ViT-L-14_openai.bin')])
def test_missing_weights_error_is_one_line_naming_folder_file_and_options(net, file, hub, wdir):
    if net == 'clip' and W._clip_cached('ViT-L-14', 'openai'): pytest.skip('OpenAI CLIP is cached on this machine')
    with pytest.raises(W.MetricWeightsError) as e: M.load_metric_net(net, allow_download=False)
    msg = str(e.value)
    assert '\n' not in msg and f'expected {file} in the weights folder {wdir} (models_dir=, else $SECONDSIGHT_WEIGHTS' in msg
    assert 'allow_download=False' in msg and 'secondsight-weights --metrics' in msg and "weights='random'" in msg


def test_metrics_raises_the_weights_modules_error():
    "load_metric_net, image_metrics and evaluate_run raise secondsight.weights' MetricWeightsError; metrics re-exports it"
    assert M.MetricWeightsError is W.MetricWeightsError and 'MetricWeightsError' in M.__all__
    assert M.RANDOM_WEIGHTS_LABEL is W.RANDOM_WEIGHTS_LABEL and M.NETS is W.NETS


def test_fetch_dry_run_lists_every_file_and_writes_nothing(tmp_path):
    (tmp_path / EFF_V2).write_bytes(b'x')
    rows = W.fetch_metric_weights(tmp_path, dry_run=True)
    assert [r['file'] for r in rows] == ['alexnet-owt-7be5be79.pth', 'inception_v3_google-0cc3c7bd.pth', 'efficientnet_b1_rwightman-bac287d4.pth',
                                         EFF_V2, 'convnext_tiny-983f1562.pth', 'swav_800ep_pretrain.pth.tar', 'open_clip_ViT-L-14_openai.bin']
    assert [r['present'] for r in rows] == [False, False, False, True, False, False, False]   # convnext: the low-level decoder's teacher
    assert rows[0]['source'] == 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth' and rows[3]['bytes'] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [EFF_V2]


@pytest.fixture
def http_dir(tmp_path):
    "A folder served over HTTP on the loopback interface."
    d = tmp_path / 'served'
    d.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(d))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield d, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()


def test_fetch_downloads_over_http_checks_the_hash_and_keeps_present_files(http_dir, tmp_path, hub, wdir):
    served, base = http_dir
    sd = seeded(lambda: tvm.efficientnet_b1().state_dict(), 6)
    torch.save(sd, served / 'eff.pth')
    h = hashlib.sha256((served / 'eff.pth').read_bytes()).hexdigest()[:8]
    files = [(f'efficientnet_b1-{h}.pth', f'{base}/eff.pth')]
    rows = W.fetch_metric_weights(files=files, progress=False)  # dest: $SECONDSIGHT_WEIGHTS
    assert rows[0]['present'] is False and (wdir / files[0][0]).read_bytes() == (served / 'eff.pth').read_bytes()
    assert W.fetch_metric_weights(files=files, progress=False)[0]['present'] is True
    with pytest.raises(OSError, match='invalid hash value'):
        W.fetch_metric_weights(tmp_path / 'd2', files=[('eff-deadbeef.pth', f'{base}/eff.pth')], progress=False)
    with pytest.raises(OSError, match='HTTP Error 404'):
        W.fetch_metric_weights(tmp_path / 'd2', files=[('gone.pth', f'{base}/gone.pth')], progress=False)
    assert not (tmp_path / 'd2').exists() or not list((tmp_path / 'd2').iterdir())  # nothing half-written



def test_fetch_clip_converts_open_clips_cached_file(tmp_path):
    "CLIP goes through open_clip's own download rule (here answered offline by a Hugging Face cache laid out by hand, holding a"
    " small safetensors file in ViT-L-14/openai's place) and lands in the weights folder as a torch state dict."
    import os, subprocess, sys
    from safetensors.torch import save_file
    snap = tmp_path / 'hf' / 'hub' / 'models--timm--vit_large_patch14_clip_224.openai'
    (snap / 'refs').mkdir(parents=True)
    (snap / 'refs' / 'main').write_text('0' * 40)
    (snap / 'snapshots' / ('0' * 40)).mkdir(parents=True)
    sd = {'visual.proj': torch.randn(4, 3), 'logit_scale': torch.tensor(4.6)}
    save_file(sd, snap / 'snapshots' / ('0' * 40) / 'open_clip_model.safetensors')
    code = ("from secondsight.weights import fetch_metric_weights, _clip_cached; assert _clip_cached('ViT-L-14', 'openai'); "
            "print(fetch_metric_weights(files=[('open_clip_ViT-L-14_openai.bin', 'open_clip:ViT-L-14/openai')], progress=False))")
    env = dict(os.environ, HF_HOME=str(tmp_path / 'hf'), HF_HUB_OFFLINE='1', SECONDSIGHT_WEIGHTS=str(tmp_path / 'w'))
    env.pop('HF_HUB_CACHE', None)
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = torch.load(tmp_path / 'w' / 'open_clip_ViT-L-14_openai.bin', weights_only=True)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    with pytest.raises(OSError, match="open_clip has no pretrained ViT-L-14 weights 'nosuchtag'"):
        W.fetch_metric_weights(tmp_path / 'w2', files=[('x.bin', 'open_clip:ViT-L-14/nosuchtag')])
