"""The search loops pinned call by call on the test doubles (`RecordingGenerator`, `QualityEncoder`): strengths, sample
counts, init images, embeddings and seeds of every `vary` call, which sample becomes the reconstruction, the
iteration images and the saved distribution, for master (with and without its re-add quirk), ours, boi-v2 and
preprint; then the runner honouring a loop's encoder and target, and the per-model library autoencoders."""
import json

import numpy as np
import pytest
import torch

from secondsight.core import derive_seed
from secondsight.core import seeded
from secondsight.encoders import BetaAutoencoder
from secondsight.search import LOOPS, SearchLoop, search, samples_per_branch, slerp
from secondsight.run import SearchConfig, run_subject
from secondsight.testing import RecordingGenerator, QualityEncoder

MASTER_STRENGTHS = [0.9186, 0.9089, 0.8825, 0.8311, 0.7464, 0.6200]
BOI_STRENGTHS = [0.92, 0.8756, 0.82, 0.7422, 0.6422, 0.52]
TARGET = torch.randn(300, generator=torch.Generator().manual_seed(0))
SEED = 11


def run(loop, n_iter=6, betas=TARGET, encoder=None, **gen_kw):
    "A search with the test doubles at the paper's sizes; returns (generator with its records, result)."
    rg = RecordingGenerator(**gen_kw)
    x = rg.image(-1, 0.)
    res = search(betas, x, rg.embed(x)[0], encoder or QualityEncoder(TARGET), rg, loop=loop, n_iter=n_iter, seed=SEED)
    return rg, res


def iterations(rg, res):
    "The recorded calls grouped by iteration"
    out, i = [], 0
    for nb in res.n_branches: out.append(rg.calls[i:i + nb]); i += nb
    assert i == len(rg.calls)
    return out


def e(rg, i): return rg.embed(rg.image(i, 0.))[0]
def best_of(call): return call['ids'][int(np.argmax(call['q']))]
def top_ids(calls, k=4):
    "ids of the k best samples of an iteration's calls, best first (the next iteration's seeds)"
    ids, q = sum((c['ids'] for c in calls), []), sum((c['q'] for c in calls), [])
    return [ids[j] for j in np.argsort(q)[::-1][:k]]


def expected_master(rg, res, loop):
    """Master's rule, written out from the records: per iteration the running embedding c_i, each branch's expected
    embedding, the running best (best-mean call) and the extra branch. Checks every call on the way."""
    m, its = loop.momenta(len(res.n_branches)), iterations(rg, res)
    c, best, running = e(rg, -1), dict(mean=-1., call=None, toward=e(rg, -1)), []
    for it, calls in enumerate(its):
        if it == 0:
            assert len(calls) == 1 and calls[0]['init_ids'] == [-1]
            assert torch.allclose(calls[0]['embed'][0], c, atol=1e-4)
            towards = [None]
        else:
            seeds = top_ids(its[it - 1])
            assert [c_['init_ids'] for c_ in calls[:4]] == [[s] for s in seeds]          # the top 4, best first
            towards = [c + m[it] * (e(rg, s) - c) for s in seeds]                         # moved m once ...
            if len(calls) == 5: towards.append(c)                                          # the extra branch: c itself
            for call, t in zip(calls, towards):
                assert torch.allclose(call['embed'][0], c + m[it] * (t - c), atol=1e-4)    # ... and once more: m**2
        assert [c_['seed'] for c_ in calls] == [derive_seed(SEED, it, b) for b in range(len(calls))]
        for b, call in enumerate(calls):
            if np.mean(call['q']) > best['mean']: best = dict(mean=np.mean(call['q']), call=call, toward=towards[b])
        if it == 0: best['toward'] = e(rg, best_of(best['call']))                          # the best sample's own embedding
        c = c + m[it] * (best['toward'] - c)                                               # every iteration
        running.append(best['call'])
    return c, running


def test_master_call_sequence_and_result():
    rg, res = run('master')
    its = iterations(rg, res)
    assert res.n_branches == [1, 4, 4, 4, 4, 4]
    assert [c['n'] for c in rg.calls] == [100] + [22] * 8 + [20] * 4 + [18] * 4 + [15] * 4
    np.testing.assert_allclose([calls[0]['strength'] for calls in its], MASTER_STRENGTHS, atol=1e-4)
    assert all(len({c['strength'] for c in calls}) == 1 for calls in its)
    c, running = expected_master(rg, res, LOOPS['master'])
    torch.testing.assert_close(res.embed, c, atol=1e-4, rtol=0)
    final = running[-1]                                                                    # the best-mean call overall
    assert final is max(rg.calls, key=lambda call: np.mean(call['q']))
    assert rg.ids(res.best_image) == [best_of(final)]                                     # its best sample
    assert [rg.ids(im)[0] for im in res.iter_images] == [best_of(call) for call in running]   # iter_k: the running best
    assert rg.ids(res.iter_images[-1]) == rg.ids(res.best_image)
    assert rg.ids(res.samples) == final['ids']                                             # the saved distribution
    np.testing.assert_allclose(res.sample_scores.numpy(), final['q'], atol=1e-5)
    assert res.samples_mean == pytest.approx(np.mean(final['q']), abs=1e-5)
    assert res.samples_iter == res.best_iter == next(i for i, calls in enumerate(its) if any(c is final for c in calls))


def test_master_embedding_moves_when_nothing_improves():
    "Iteration 2 made bad on purpose: no batch beats the best mean, and c still moves, towards the older best batch."
    bad = {k: -0.6 for k in range(5, 9)}                                                   # calls 5-8 = iteration 2
    rg, res = run('master', offsets=bad)
    assert max(res.branch_means[2]) < max(max(b) for b in res.branch_means[:2])
    c, running = expected_master(rg, res, LOOPS['master'])
    assert running[2] is running[1]
    torch.testing.assert_close(res.embed, c, atol=1e-4, rtol=0)


def test_master_readd_quirk():
    "The published guard: the running best gets a fifth branch exactly when it is already a seed (always at iteration 1)."
    loop = SearchConfig(loop='master', readd_quirk=True).search_loop()
    assert loop.readd_best == 'if-seed'
    rg, res = run(loop)
    its = iterations(rg, res)
    assert res.n_branches[1] == 5
    assert [c['n'] for c in its[1]] == [22] * 5
    best0 = best_of(its[0][0])
    assert its[1][0]['init_ids'] == its[1][4]['init_ids'] == [best0]                       # the top seed, twice
    c, running = expected_master(rg, res, loop)                                            # 5th branch embedding = c_1
    for it in range(2, 6):                                                                 # later: only when it is a seed
        assert (res.n_branches[it] == 5) == (best_of(running[it - 1]) in top_ids(its[it - 1]))


def test_ours_readds_the_best_image_when_it_is_not_a_seed():
    bad = {k: -0.6 for k in range(1, 5)}                  # iteration 1 bad: the running best stays iteration 0's sample
    rg, res = run('ours', offsets=bad)
    its = iterations(rg, res)
    assert res.n_branches[1] == 4                         # at iteration 1 the best image is the top seed
    assert res.n_branches[2] == 5                         # at iteration 2 it is no seed: a branch of its own
    assert its[2][4]['init_ids'] == [best_of(its[0][0])]
    c, running = expected_master(rg, res, LOOPS['ours'])
    for it in range(1, 6):
        assert (res.n_branches[it] == 5) == (best_of(running[it - 1]) not in top_ids(its[it - 1]))
    assert rg.ids(res.best_image) == [best_of(max(rg.calls, key=lambda call: np.mean(call['q'])))]


def test_boi_v2():
    rg, res = run('boi-v2')
    its = iterations(rg, res)
    assert [c['n'] for c in rg.calls] == [64] + [14] * 4 + [13] * 4 + [11] * 4 + [10] * 8
    np.testing.assert_allclose([calls[0]['strength'] for calls in its], BOI_STRENGTHS, atol=1e-4)
    assert all(torch.equal(c['embed'][0], e(rg, -1)) for c in rg.calls)                   # a fixed embedding
    assert torch.equal(res.embed, e(rg, -1))
    final = max(rg.calls, key=lambda call: np.mean(call['q']))
    assert rg.ids(res.best_image) == [best_of(final)] and rg.ids(res.samples) == final['ids']


def test_boi_v2_scores_the_mean_of_the_repetitions():
    "boi-v2 correlates with the repetitions' mean (a missing one left out); master averages r over them."
    g = torch.Generator().manual_seed(3)
    reps = torch.stack([TARGET + torch.randn(300, generator=g), TARGET + torch.randn(300, generator=g), torch.zeros(300)])
    enc = QualityEncoder(reps[:2].mean(0))                 # scores = qualities exactly under the mean of the two
    _, boi = run('boi-v2', n_iter=2, betas=reps, encoder=enc)
    _, master = run('master', n_iter=2, betas=reps, encoder=enc)
    q = lambda res: [float(v) for v in RecordingGenerator().qualities(torch.cat(res.iter_images))]
    np.testing.assert_allclose(boi.iter_scores, q(boi), atol=1e-5)
    assert all(abs(s - v) > 1e-3 for s, v in zip(master.iter_scores, q(master)))


def test_preprint():
    rg, res = run('preprint')
    its = iterations(rg, res)
    k = [samples_per_branch(100, 4, s) for s in MASTER_STRENGTHS]
    assert k == [22, 22, 22, 20, 18, 15]
    assert [c['n'] for c in its[0]] == [22] * 4 and all(c['init_ids'] == [-1] for c in its[0])
    assert all(c['n'] == k[i] for i, calls in enumerate(its) for c in calls)
    own = [best_of(max(calls, key=lambda call: np.mean(call['q']))) for calls in its]      # each iteration's own best
    assert [rg.ids(im)[0] for im in res.iter_images] == own
    assert res.best_score == max(res.iter_scores)                                          # the best single sample
    assert rg.ids(res.samples) == sum((c['ids'] for c in its[-1]), [])                     # the last iteration
    m = LOOPS['preprint'].momenta(6)
    for call in its[1][:4]:             # c has not moved at iteration 0 (its branches used c itself): one slerp step of m_1
        torch.testing.assert_close(call['embed'][0], slerp(e(rg, -1), e(rg, call['init_ids'][0]), m[1]), atol=1e-4, rtol=0)


def test_loop_errors():
    with pytest.raises(ValueError, match=r"loop='fast' is not a search loop: expected one of \('ours', 'master', 'preprint', 'boi-v2'\)"):
        search(TARGET, torch.zeros(1, 3, 4, 4), torch.zeros(16), None, None, loop='fast')
    with pytest.raises(ValueError, match=r"SearchLoop\('x'\).readd_best='always' is invalid"): SearchLoop('x', readd_best='always')
    with pytest.raises(ValueError, match="SearchConfig.loop='fast' is invalid"): SearchConfig(loop='fast')
    with pytest.raises(ValueError, match="readd_quirk=True is invalid: expected False with loop='preprint'"):
        SearchConfig(loop='preprint', readd_quirk=True)


def test_per_model_autoencoders_missing_fail_before_any_work(tmp_path):
    "Half a pair passed is refused before the run folder exists (none passed: run_subject loads them, see below)."
    from secondsight.encoders import BetaAutoencoder
    cfg = SearchConfig(out_dir=str(tmp_path / 'run'), library_autoencoder='per-model', n_images=1)
    with pytest.raises(ValueError, match=r"needs a beta autoencoder per library model, but \['clip'\] are missing"):
        run_subject(cfg, progress=False, autoencoders={'gnet': BetaAutoencoder(8, (4, 2, 1))})
    assert not (tmp_path / 'run').exists()


@pytest.fixture(scope='module')
def demo():
    from secondsight.data import load_subject
    from secondsight.models import get_encoders
    from secondsight.run import make_generator
    subject = load_subject(1, 'demo')
    encoders = get_encoders(subject)
    return subject, encoders, make_generator(SearchConfig(), subject, encoders)


def _guess(subject, encoders, generator, nsd_id, queries):
    from secondsight.models import prepare_subject
    from secondsight.search import initial_guesses
    prepared = prepare_subject(subject, encoders, progress=False)
    return initial_guesses(queries, subject.library_nsd_ids, {k: prepared[k] for k in ('gnet', 'clip')}, prepared['embeddings'],
                           subject.images, generator, subject.roi_masks['early_vis'])[0]


def test_runner_honours_the_loop(demo, tmp_path):
    "boi-v2 through run_subject: GNet scores the raw betas (averaged); result.json records the loop and its distribution."
    from secondsight.run import denoise_betas
    subject, encoders, generator = demo
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path), loop='boi-v2', n_images=1, n_iter=2, n_samples=8,
                       n_branches=2, min_per_branch=4)
    r, = run_subject(cfg, subject, encoders, generator, progress=False)
    assert r['loop'] == 'boi-v2' and r['search_loop']['encoder'] == 'gnet' and r['settings']['loop'] == 'boi-v2'
    assert r['n_branches'][0] == 1 and r['n_per_branch'][0] == 8
    assert r['final_distribution']['iter'] == r['best_iter']
    assert json.loads((tmp_path / 'config.json').read_text())['search_loop']['name'] == 'boi-v2'
    nested, _ = subject.test_betas(mode='nest')
    row = list(map(int, subject.test_nsd_ids)).index(r['nsd_id'])
    measured = torch.as_tensor(np.asarray(nested)[row:row + 1]).float()
    guess = _guess(subject, encoders, generator, r['nsd_id'], denoise_betas(measured, encoders.autoencoder))
    res = search(measured[0], guess.lowlevel, guess.embed, encoders.gnet, generator, loop='boi-v2', n_iter=2, n_samples=8,
                 n_branches=2, min_per_branch=4, seed=derive_seed(cfg.seed, 1, r['nsd_id'], 'search'))
    np.testing.assert_allclose(list(r['search_score'].values()), res.iter_scores, atol=1e-6)
    samples = np.load(tmp_path / 'images' / f"{r['nsd_id']:05d}" / 'samples.npz')
    np.testing.assert_allclose(samples['scores'], res.sample_scores.numpy(), atol=1e-6)


def test_per_model_library_targets(demo, tmp_path):
    "With per-model autoencoders each library model ranks against its own target (two untrained autoencoders here)."
    from secondsight.run import denoise_betas
    subject, encoders, generator = demo

    aes = {k: seeded(lambda: BetaAutoencoder(subject.nvox, (64, 32, 16)), seed).eval() for k, seed in (('gnet', 1), ('clip', 2))}   # untrained
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path), library_autoencoder='per-model', n_images=1, n_iter=1,
                       n_samples=4, n_branches=2, min_per_branch=2)
    r, = run_subject(cfg, subject, encoders, generator, progress=False, autoencoders=aes)
    nested, _ = subject.test_betas(mode='nest')
    row = list(map(int, subject.test_nsd_ids)).index(r['nsd_id'])
    measured = torch.as_tensor(np.asarray(nested)[row:row + 1]).float()
    per_model = _guess(subject, encoders, generator, r['nsd_id'], {k: denoise_betas(measured, ae) for k, ae in aes.items()})
    assert r['library_nsd_ids'] == [int(i) for i in per_model.library_ids[:10]]
    hybrid = _guess(subject, encoders, generator, r['nsd_id'], denoise_betas(measured, encoders.autoencoder))
    assert r['library_nsd_ids'] != [int(i) for i in hybrid.library_ids[:10]]


def test_per_model_loaded_by_the_runner(demo, tmp_path):
    "Without autoencoders passed (papermill -p library_autoencoder per-model) the runner loads get_autoencoders' and ranks with them."
    from secondsight.models import get_autoencoders
    from secondsight.run import denoise_betas
    subject, encoders, generator = demo
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path), library_autoencoder='per-model', n_images=1, n_iter=1,
                       n_samples=4, n_branches=2, min_per_branch=2)
    r, = run_subject(cfg, subject, encoders, generator, progress=False)
    aes = get_autoencoders(subject, encoders, train=False)                  # trained by the run, cached
    row = list(map(int, subject.test_nsd_ids)).index(r['nsd_id'])
    measured = torch.as_tensor(np.asarray(subject.test_betas(mode='nest')[0])[row:row + 1]).float()
    per_model = _guess(subject, encoders, generator, r['nsd_id'], {k: denoise_betas(measured, ae) for k, ae in aes.items()})
    assert r['library_nsd_ids'] == [int(i) for i in per_model.library_ids[:10]]


def test_runner_starts_from_another_methods_reconstructions(demo, tmp_path):
    "init=<file>: the given image is the run's low-level start (stored as lowlevel.png) and its embedding conditions it."
    from secondsight.core import load_image
    subject, encoders, generator = demo
    ids = [int(i) for i in subject.test_nsd_ids[:2]]
    imgs = (np.random.default_rng(1).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / 'mindeye.npz', images=imgs, nsd_ids=np.array(ids))
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path / 'run'), init=str(tmp_path / 'mindeye.npz'), images=tuple(ids),
                       n_iter=1, n_samples=4, n_branches=2, min_per_branch=2)
    rs = run_subject(cfg, subject, encoders, generator, progress=False)
    assert [r['nsd_id'] for r in rs] == ids and all(r['settings']['init'] == cfg.init for r in rs)
    for r, im in zip(rs, imgs):
        np.testing.assert_array_equal(load_image(tmp_path / 'run' / 'images' / f"{r['nsd_id']:05d}" / 'lowlevel.png'), im)
    np.savez(tmp_path / 'other.npz', images=imgs, nsd_ids=np.array([ids[0], 10**6]))     # an id the subject never saw
    with pytest.raises(ValueError, match=r'\[1000000\] are not test images'):
        run_subject(SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path / 'run2'), init=str(tmp_path / 'other.npz'),
                                 images=tuple(ids[:1]), n_iter=1, n_samples=4, n_branches=2, min_per_branch=2), subject, encoders, generator, progress=False)
