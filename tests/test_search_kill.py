"""Kill the search runner (SIGKILL) in the middle of a subject and run it again: finished images stay untouched
(same bytes), the rest complete, and no partial or temporary file is left anywhere."""
import hashlib, json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 4
RUN = """
import sys
from secondsight.run import SearchConfig, run_subject
cfg = SearchConfig(subj=1, dataset='demo', out_dir=sys.argv[1], n_images={n}, n_iter=2, n_samples=8, n_branches=2,
                   min_per_branch=4, seed=3)
run_subject(cfg, progress=False)
""".format(n=N_IMAGES)


def snapshot(root: Path) -> dict:
    "relative path -> (sha1 of the bytes, mtime_ns) of every file under root"
    return {str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob('*')) if p.is_file()}


def start(out):
    return subprocess.Popen([sys.executable, '-c', RUN, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def test_kill_and_resume(tmp_path):
    out = tmp_path / 'run'
    proc = start(out)
    finished = lambda: sorted((out / 'images').glob('*/result.json')) if (out / 'images').exists() else []
    t0 = time.time()
    while not finished():                           # the first image is done: the runner is inside the subject
        if proc.poll() is not None: pytest.fail(f"runner exited early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        if time.time() - t0 > 900: proc.kill(); pytest.fail("no image finished within 15 min")
        time.sleep(0.05)
    time.sleep(0.3)                                 # let it get into the next image
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    done = [p.parent.name for p in finished()]
    assert 0 < len(done) < N_IMAGES, f"kill did not land mid-subject ({len(done)} of {N_IMAGES} finished); retry"
    before = {d: snapshot(out / 'images' / d) for d in done}

    r = subprocess.run([sys.executable, '-c', RUN, str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    for d, snap in before.items(): assert snapshot(out / 'images' / d) == snap, f"finished image {d} was rewritten"
    dirs = sorted(p.name for p in (out / 'images').iterdir())
    assert len(dirs) == N_IMAGES and all((out / 'images' / d / 'result.json').is_file() for d in dirs)
    leftovers = [str(p) for p in out.rglob('*') if '.tmp-' in p.name or '.staging' in p.parts or p.name.endswith('.partial')]
    assert not leftovers, leftovers
    for d in dirs:
        res = json.loads((out / 'images' / d / 'result.json').read_text())
        assert res['stages'][-1] == 'final' and (out / 'images' / d / 'final.png').is_file()
        for k in res['stages'] + ['seen']: assert (out / 'images' / d / f'{k}.png').is_file()
