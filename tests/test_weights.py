"""secondsight.weights and secondsight-weights: the published weights fetched with huggingface_hub, tested at the hub
boundary (the hub's paths-info and file download answer from real files written here), without network (one line, exit
2), with --metrics, and the module's place in the import order (it imports neither metrics nor models)."""
import os, shutil, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest

from secondsight.weights import HF_WEIGHTS_REPO, download_weights, metric_weight_files, published_weight_files, weights_cli


@pytest.fixture
def hub(tmp_path, monkeypatch):
    "A stand-in of the hub's two calls over a folder of real files; records each download."
    remote = tmp_path / 'hub'; remote.mkdir()
    for i, n in enumerate(published_weight_files([1])): (remote / n).write_bytes(os.urandom(1000 + i))
    calls = []
    def paths_info(self, repo_id, paths, revision=None, **kw):
        assert repo_id == HF_WEIGHTS_REPO
        return [SimpleNamespace(path=p, size=(remote / p).stat().st_size) for p in paths if (remote / p).exists()]
    def download(repo_id, filename, revision=None, local_dir=None, **kw):
        calls.append(filename); Path(local_dir).mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(remote / filename, Path(local_dir) / filename))
    monkeypatch.setattr(huggingface_hub.HfApi, 'get_paths_info', paths_info)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
    return remote, calls


def test_dry_run_fetch_and_skip(hub, tmp_path):
    remote, calls = hub
    dest = tmp_path / 'weights'
    rows = download_weights([1], dest, dry_run=True)
    assert [r['file'] for r in rows] == ['gnet_multisubject', 'sub01_clip_encoder.pt', 'sub01_dual_autoencoder.pt']
    assert [r['bytes'] for r in rows] == [1000, 1001, 1002] and not any(r['present'] for r in rows) and calls == []
    download_weights([1], dest)
    assert sorted(calls) == sorted(published_weight_files([1]))
    assert all((dest / n).read_bytes() == (remote / n).read_bytes() for n in published_weight_files([1]))
    calls.clear(); (dest / 'sub01_clip_encoder.pt').write_bytes(b'truncated')      # a short file is fetched again
    rows = download_weights([1], dest)
    assert calls == ['sub01_clip_encoder.pt'] and [r['present'] for r in rows] == [True, False, True]


def test_cli_lists_and_reports_a_missing_file(hub, tmp_path, capsys):
    remote, _ = hub
    assert weights_cli(['--subjects', '1', '--dest', str(tmp_path / 'w'), '--dry-run']) == 0
    out = capsys.readouterr().out
    assert 'missing' in out and 'sub01_dual_autoencoder.pt' in out and '3 files' in out
    (remote / 'sub01_clip_encoder.pt').unlink()
    assert weights_cli(["--subjects", "1", "--dest", str(tmp_path / "w")]) == 2
    assert 'has no file sub01_clip_encoder.pt' in capsys.readouterr().err


def test_without_network_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1')
    r = subprocess.run([sys.executable, '-c', 'import sys; from secondsight.weights import weights_cli; sys.exit(weights_cli())'],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0, r.stderr
    assert 'cannot reach the Hugging Face Hub' in r.stderr and 'copy' in r.stderr


def test_cli_metrics_adds_the_metric_networks(hub, tmp_path, capsys):
    "--metrics lists the metric networks' files in the same weights folder (dry run: nothing fetched, nothing written)"
    dest = tmp_path / 'w'
    assert weights_cli(['--subjects', '1', '--dest', str(dest), '--dry-run', '--metrics']) == 0
    out = capsys.readouterr().out
    names = [name for name, _ in metric_weight_files()]
    assert all(n in out for n in names) and f'{3 + len(names)} files' in out and not dest.exists()


def test_imports_neither_metrics_nor_models():
    "models and metrics import this module, so it imports neither, not even inside a function (no import circle)"
    import re, secondsight.weights as W
    assert set(re.findall(r'from (?:secondsight)?\.(\w+) import|import secondsight\.(\w+)', Path(W.__file__).read_text())) <= \
        {('core', ''), ('data', ''), ('encoders', '')}
    code = "import sys, secondsight.weights; print(sorted(m for m in sys.modules if m.startswith('secondsight.')))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "['secondsight.core', 'secondsight.data', 'secondsight.encoders', 'secondsight.weights']"
