"""Cached predictions: the beta-prime library resumes after its process is killed; embeddings are reused.

Caches go to a temporary $SECONDSIGHT_DATA; the demo data set itself is read from its usual place.
"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from secondsight.data import load_subject
from secondsight.demo import demo_embedder, ensure_demo
from secondsight.encoders import CLIPEncoder, ClipBetaEncoder, image_embeddings, library_beta_primes, subject_cache_dir

ROOT = Path(__file__).parents[1]
DEMO_ROOT = ensure_demo()  # before any test changes $SECONDSIGHT_DATA


def make_encoder(nvox):
    "Deterministic (seeded) CLIP encoder on the demo embedder: the same in every process."
    torch.manual_seed(5)
    return ClipBetaEncoder(demo_embedder(), CLIPEncoder(nvox, 128, 32), batch_size=64)


class CountingEncoder:
    "Wraps an encoder and records how many images it was asked to predict."
    def __init__(self, enc): self.enc, self.nvox, self.fingerprint, self.n = enc, enc.nvox, enc.fingerprint, 0
    def predict(self, images, **kw): self.n += len(images); return self.enc.predict(images, **kw)


@pytest.fixture
def subject(tmp_path, monkeypatch):
    monkeypatch.setenv('SECONDSIGHT_DATA', str(tmp_path))
    s = load_subject(1, data_root=DEMO_ROOT, progress=False)
    assert str(subject_cache_dir(s)).startswith(str(tmp_path))
    return s


def test_library_resumes_after_kill(subject, tmp_path):
    path = subject_cache_dir(subject) / 'beta_primes' / 'clip.npy'
    code = ("import torch; from secondsight.data import load_subject; "
            "from secondsight.encoders import CLIPEncoder, ClipBetaEncoder, library_beta_primes; from secondsight.demo import demo_embedder; "
            f"s = load_subject(1, data_root={str(DEMO_ROOT)!r}, progress=False); torch.manual_seed(5); "
            "enc = ClipBetaEncoder(demo_embedder(), CLIPEncoder(s.nvox, 128, 32), batch_size=64); "
            "library_beta_primes(s, enc, 'clip', chunk=256, progress=False)")  # = make_encoder
    env = dict(os.environ, SECONDSIGHT_DATA=str(tmp_path), OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, cwd=ROOT)
    man, t0 = path.with_suffix('.json'), time.time()
    try:
        while time.time() - t0 < 120:
            m = json.loads(man.read_text()) if man.exists() else {}
            if m.get('rows_done', 0) >= 512: break
            if proc.poll() is not None: pytest.fail(f'the worker ended early (rc {proc.returncode})')
            time.sleep(0.05)
        else: pytest.fail('no progress within 120 s')
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait()
    done = json.loads(man.read_text())['rows_done']
    assert not path.exists() and path.with_suffix('.partial.npy').exists() and done < subject.n_images
    enc = CountingEncoder(make_encoder(subject.nvox))
    primes = library_beta_primes(subject, enc, 'clip', chunk=256, progress=False)
    assert enc.n == subject.n_images - done                 # resumed: only the missing rows were computed
    assert primes.shape == (subject.n_images, subject.nvox) and primes.dtype == np.float16
    assert json.loads(man.read_text())['complete'] and not path.with_suffix('.partial.npy').exists()
    rows = np.array([0, done - 1, done, subject.n_images - 1])   # both sides of the kill
    np.testing.assert_allclose(primes[rows].astype(np.float32), enc.enc.predict(subject.images(rows)).numpy(), atol=0.02, rtol=0.01)
    # a finished cache is reused; another model's weights trigger a recomputation with a warning
    enc.n = 0
    library_beta_primes(subject, enc, 'clip', chunk=256, progress=False); assert enc.n == 0
    torch.manual_seed(6)
    other = CountingEncoder(ClipBetaEncoder(demo_embedder(), CLIPEncoder(subject.nvox, 128, 32)))
    with pytest.warns(UserWarning, match='recomputing'):
        library_beta_primes(subject, other, 'clip', chunk=4096, progress=False)
    assert other.n == subject.n_images


def test_library_rejects_wrong_voxel_count(subject):
    torch.manual_seed(0)
    enc = ClipBetaEncoder(demo_embedder(), CLIPEncoder(subject.nvox + 1, 128, 8))
    with pytest.raises(ValueError, match=f'predicts {subject.nvox + 1} voxels, subj01 has {subject.nvox}'):
        library_beta_primes(subject, enc, 'bad', progress=False)


def test_embeddings_cached_once(subject):
    emb = demo_embedder()
    e1 = image_embeddings(subject, emb, progress=False)
    assert e1.shape == (subject.n_images, emb.dim) and e1.dtype == np.float32
    p = subject.brick_cache_dir / 'embeddings' / f'{emb.name}.npy'   # one copy for all subjects of the data root
    mtime = p.stat().st_mtime_ns
    e2 = image_embeddings(subject, emb, progress=False)
    assert p.stat().st_mtime_ns == mtime
    other = load_subject(2, data_root=DEMO_ROOT, progress=False)           # another subject, same brick: reused
    np.testing.assert_array_equal(image_embeddings(other, emb, progress=False)[[3, 4000]], e1[[3, 4000]])
    assert p.stat().st_mtime_ns == mtime and not (subject_cache_dir(other) / 'embeddings').exists()
    np.testing.assert_array_equal(e1[[3, 4000]], e2[[3, 4000]])
    np.testing.assert_allclose(e1[[3, 4000]], emb.embed(subject.images([3, 4000])).numpy(), atol=1e-5)
