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
    parts, t0 = path.with_suffix('.parts'), time.time()
    chunks = lambda: sorted(parts.glob('rows*.npy')) if parts.exists() else []
    try:
        while time.time() - t0 < 120:
            if len(chunks()) >= 2: break
            if proc.poll() is not None: pytest.fail(f'the worker ended early (rc {proc.returncode})')
            time.sleep(0.05)
        else: pytest.fail('no progress within 120 s')
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait()
    done = 256 * len(chunks())                                  # chunks are written in order, each atomically
    assert not path.exists() and 0 < done < subject.n_images
    enc = CountingEncoder(make_encoder(subject.nvox))
    primes = library_beta_primes(subject, enc, 'clip', chunk=256, progress=False)
    assert enc.n == subject.n_images - done                 # resumed: only the missing rows were computed
    assert primes.shape == (subject.n_images, subject.nvox) and primes.dtype == np.float16
    assert json.loads(path.with_suffix('.json').read_text())['complete'] and not parts.exists()
    rows = np.array([0, done - 1, done, subject.n_images - 1])   # both sides of the kill
    np.testing.assert_allclose(primes[rows].astype(np.float32), enc.enc.predict(subject.images(rows)).numpy(), atol=0.02, rtol=0.01)
    # a finished cache is reused; another model's weights trigger a recomputation with a warning
    enc.n = 0
    library_beta_primes(subject, enc, 'clip', chunk=256, progress=False); assert enc.n == 0
    torch.manual_seed(6)
    other = CountingEncoder(ClipBetaEncoder(demo_embedder(), CLIPEncoder(subject.nvox, 128, 32)))
    with pytest.warns(UserWarning, match='recomputed'):
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


SHARD = ("import sys; from secondsight.data import load_subject; from secondsight.demo import demo_embedder; "
         "from secondsight.encoders import image_embeddings; "
         f"s = load_subject(1, data_root={str(DEMO_ROOT)!r}, progress=False); "
         "r = image_embeddings(s, demo_embedder(), chunk=512, progress=False, shard=int(sys.argv[1]), n_shards=3); "
         "print('assembled' if r is not None else 'waiting')")


def test_embeddings_in_concurrent_shards(subject, tmp_path):
    "Three processes share the work with no coordination but the files; exactly one assembles; the result = one process's"
    env = dict(os.environ, SECONDSIGHT_DATA=str(tmp_path), OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', SHARD, str(k)], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for k in range(3)]
    outs = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    emb = demo_embedder()
    path = subject.brick_cache_dir / 'embeddings' / f'{emb.name}.npy'
    assert path.exists() and not path.with_suffix('.parts').exists()
    assert 'assembled' in outs                                   # the last shard to finish assembled it
    got = image_embeddings(subject, emb, progress=False)         # now current: read, not recomputed
    rows = np.array([0, 511, 512, 1024, subject.n_images - 1])   # rows from each shard's chunks
    np.testing.assert_allclose(got[rows], emb.embed(subject.images(rows)).numpy(), atol=1e-5)


class CountingEmbedder:
    "The demo embedder, counting the images it embeds (same name and size, so it shares the cache)"
    def __init__(self, emb): self.emb, self.name, self.dim, self.n = emb, emb.name, emb.dim, 0
    def embed(self, images): self.n += len(images); return self.emb.embed(images)


def test_clip_primes_from_cached_embedding_chunks(subject):
    "The CLIP encoder's library predictions read the embeddings a shard just wrote (chunks, not yet assembled)"
    from secondsight.encoders import embedding_rows
    emb = CountingEmbedder(demo_embedder())
    assert image_embeddings(subject, emb, chunk=1024, progress=False, shard=0, n_shards=2) is None   # chunks 0, 2, ... only
    rows, emb.n = embedding_rows(subject, emb), 0
    np.testing.assert_allclose(rows(2048, 2053), emb.emb.embed(subject.images(np.arange(2048, 2053))).numpy(), atol=1e-5)
    assert emb.n == 0                                            # read from shard 0's chunk
    rows(1024, 1029); assert emb.n == 5                          # shard 1's chunk is not there: embedded
    enc = make_encoder(subject.nvox)
    assert library_beta_primes(subject, enc, 'clip', chunk=1024, progress=False, shard=0, n_shards=2, embeddings=rows) is None
    done = sorted(subject_cache_dir(subject).glob('beta_primes/clip.parts/rows*.npy'))
    assert [int(p.stem[4:]) for p in done] == list(range(0, subject.n_images, 2048))
    np.testing.assert_allclose(np.load(done[1])[:2].astype(np.float32), enc.predict(subject.images(np.arange(2048, 2050))).numpy(),
                               atol=0.02, rtol=0.01)                  # = predicting from the images


def test_rebuilt_stimuli_invalidate_the_embeddings(tmp_path, monkeypatch):
    "Same counts and sizes, new stimulus file (a rebuilt demo, a re-downloaded brick): the embeddings are recomputed."
    import shutil
    from secondsight.data import nsd_path
    root = tmp_path / 'demo_copy'; shutil.copytree(DEMO_ROOT, root)
    monkeypatch.setenv('SECONDSIGHT_DATA', str(tmp_path / 'data'))
    emb = CountingEmbedder(demo_embedder())
    s = load_subject(1, data_root=root, progress=False)
    image_embeddings(s, emb, progress=False); n = emb.n
    image_embeddings(s, emb, progress=False); assert emb.n == n                    # cached
    t = time.time_ns() + 10**9; os.utime(nsd_path(root, 'stimuli'), ns=(t, t))   # the file rewritten
    s2 = load_subject(1, data_root=root, progress=False)
    with pytest.warns(UserWarning, match='recomputed'): image_embeddings(s2, emb, progress=False)
    assert emb.n == 2 * n


WHOLE = ("from secondsight.data import load_subject; from secondsight.demo import demo_embedder; "
         "from secondsight.encoders import image_embeddings; "
         f"s = load_subject(1, data_root={str(DEMO_ROOT)!r}, progress=False); emb = demo_embedder(); n = [0]; "
         "f = emb.embed; emb.embed = lambda x: (n.__setitem__(0, n[0] + len(x)), f(x))[1]; "
         "r = image_embeddings(s, emb, chunk=512, progress=False); print(n[0], r is not None and r.shape[0])")


def test_concurrent_whole_matrix_requests_share_chunks(subject, tmp_path):
    """Two processes that each need the whole matrix (search shards started without the prepare step) claim chunks
    as the runner claims images: together they embed every image exactly once, and both return the whole matrix."""
    env = dict(os.environ, SECONDSIGHT_DATA=str(tmp_path), OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', WHOLE], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [int(o[1]) for o in outs] == [subject.n_images] * 2                       # both got the whole matrix
    assert sum(int(o[0]) for o in outs) == subject.n_images, outs                    # no image embedded twice
    parts = subject.brick_cache_dir / 'embeddings' / f'{demo_embedder().name}.parts'
    assert not parts.exists()                                                        # chunks and their claims gone
