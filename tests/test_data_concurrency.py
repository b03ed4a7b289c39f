"""Parallel first use (as nbdev_test / overlapping papermill runs do): the demo and the betas cache are built once."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import json, sys, numpy as np
from secondsight.data import load_subject
s = load_subject(1, progress=False)
print(json.dumps(dict(n=int(s.n_trials), nvox=int(s.nvox), sum=float(np.asarray(s.betas[:50], np.float64).sum()))))
"""


def test_parallel_first_use_builds_once(tmp_path):
    env = dict(os.environ, SECONDSIGHT_DATA=str(tmp_path), PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    procs = [subprocess.Popen([sys.executable, "-c", CODE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs): assert p.returncode == 0, e[-2000:]
    res = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert res[0] == res[1] == res[2]
    built = [p for p in (tmp_path/"cache"/"demo"/"subj01"/"betas").iterdir() if p.suffix != ".lock"]
    assert len(built) == 1 and (built[0]/"manifest.json").exists(), built  # one cache folder, no leftovers
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]
    assert json.loads((tmp_path/"demo_nsd"/"DEMO.json").read_text())["version"] >= 1
