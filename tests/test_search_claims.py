"""Two writers of one run folder, and a damaged result (issue 14): the runner of 03_search claims each image before it
writes it, so a second process working on the same images (the same shard started twice, a requeued SLURM task whose
old instance still runs) skips the images another process holds and comes back for them, and no image is written
twice; a `result.json` that is not valid JSON (a truncated copy) counts as unfinished, with a warning naming the file,
and is redone instead of failing every later run with a bare `JSONDecodeError`.

These tests describe the runner change proposed with issue 14 (`RunFolder.claim`, per-process staging folders,
`RunFolder.is_finished` reading the result); they fail until it is in nbs/03_search.ipynb."""
import hashlib, json, os, signal, subprocess, sys
from pathlib import Path

import pytest
from filelock import Timeout

from secondsight.run import RunFolder, SearchConfig, run_subject

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 4
RUN = """
import os, sys
import secondsight.run as S
log, real = sys.argv[2], S.reconstruct_image
def logged(cfg, subject, nsd_id, *a, **k):       # one line per image this process reconstructs
    with open(log, "a") as f: f.write(f"{{os.getpid()}} {{nsd_id}}\\n")
    return real(cfg, subject, nsd_id, *a, **k)
S.reconstruct_image = logged
cfg = S.SearchConfig(subj=1, dataset='demo', out_dir=sys.argv[1], n_images={n}, n_iter=2, n_samples=8, n_branches=2,
                     min_per_branch=4, seed=3)
S.run_subject(cfg, progress=False)
""".format(n=N_IMAGES)


def snapshot(root:Path)->dict:
    return {str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_two_writers_of_one_shard_write_each_image_once(tmp_path):
    "The measured failure: two runs of one shard at once crashed (FileNotFoundError in atomic_write) in 3 of 4 trials."
    out, log = tmp_path / 'run', tmp_path / 'written.txt'
    procs = [subprocess.Popen([sys.executable, '-c', RUN, str(out), str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(2)]
    errs = [p.communicate(timeout=1500)[1] for p in procs]
    for p, e in zip(procs, errs): assert p.returncode == 0, e[-3000:]
    written = [int(l.split()[1]) for l in log.read_text().splitlines()]
    assert sorted(written) == sorted(set(written)) and len(written) == N_IMAGES, f"images written more than once: {written}"
    dirs = sorted(p.name for p in (out / 'images').iterdir())
    assert len(dirs) == N_IMAGES
    for d in dirs: json.loads((out / 'images' / d / 'result.json').read_text())
    leftovers = [str(p) for p in out.rglob('*') if '.tmp-' in p.name or ('.staging' in p.parts and p.is_file())]
    assert not leftovers, leftovers


def test_a_claim_excludes_a_second_writer_and_dies_with_its_holder(tmp_path):
    run = RunFolder(tmp_path)
    with run.claim(37):
        with pytest.raises(Timeout):
            with run.claim(37, timeout=0): pass
        with run.claim(38, timeout=0): pass                  # other images stay free
    with run.claim(37, timeout=0): pass                      # released
    # a holder killed with SIGKILL (a requeued or preempted task) leaves no stale claim
    holder = subprocess.Popen([sys.executable, '-c', "import sys, time; from secondsight.run import RunFolder\n"
                               "c = RunFolder(sys.argv[1]).claim(37); c.acquire(); print('held', flush=True); time.sleep(600)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(Timeout):
        with run.claim(37, timeout=0): pass
    os.kill(holder.pid, signal.SIGKILL); holder.wait()
    with run.claim(37, timeout=5): pass


def test_a_damaged_result_is_redone_with_a_warning(tmp_path):
    "The measured failure: a truncated images/NNNNN/result.json made every later run fail with a bare JSONDecodeError."
    cfg = SearchConfig(subj=1, dataset='demo', out_dir=str(tmp_path / 'run'), n_images=2, n_iter=1, n_samples=8, n_branches=2,
                       min_per_branch=4, seed=3)
    first = run_subject(cfg, progress=False)
    run = RunFolder(cfg.out_dir)
    bad, good = (first[0]['nsd_id'], first[1]['nsd_id'])
    text = run.result(bad).read_text()
    run.result(bad).write_text(text[:len(text) // 2])                     # truncated
    kept = snapshot(run.image_dir(good))
    with pytest.warns(UserWarning, match=str(run.result(bad)).replace('.', r'\.')):
        assert not run.is_finished(bad)
    assert run.is_finished(good)
    with pytest.warns(UserWarning, match='will be reconstructed again'):
        again = run_subject(cfg, progress=False)
    redone = json.loads(run.result(bad).read_text())                      # the same image again (its seeds); library scores
    for k in ('nsd_id', 'stages', 'seeds', 'settings', 'random_nsd_id', 'library_nsd_ids', 'lowlevel_nsd_ids'):   # ranked in a
        assert redone[k] == first[0][k], k                                                                         # smaller batch
    assert redone['library_scores'] == pytest.approx(first[0]['library_scores'], abs=1e-5)
    assert [r['nsd_id'] for r in again] == [bad, good]
    assert snapshot(run.image_dir(good)) == kept                          # the finished image is not touched
