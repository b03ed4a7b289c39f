"""secondsight-slurm without a cluster: `--dry-run` plans a demo subject and prints both job scripts without writing
anything, and each bad input fails with a clear error before anything is submitted or written (a bad parameter, more
shards than images, a run folder of another configuration, no `sbatch` on PATH)."""
import json, os, subprocess, sys
from dataclasses import replace
from pathlib import Path

import pytest

from secondsight.run import claim_out_dir
from secondsight.slurm import SlurmConfig, minutes_per_image, plan_subject, slurm_cli, task_time

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / 'secondsight-slurm')
SMALL = ['-p', 'n_images', '6', '-p', 'n_iter', '2', '-p', 'n_samples', '12', '-p', 'n_branches', '2']


@pytest.fixture
def runs(tmp_path, monkeypatch):
    "An empty results root ($SECONDSIGHT_RUNS); the demo data in the checkout's data/ (as the other tests use it)."
    monkeypatch.setenv('SECONDSIGHT_RUNS', str(tmp_path / 'runs'))
    monkeypatch.delenv('SECONDSIGHT_DATA', raising=False)
    return tmp_path / 'runs'


def test_dry_run_prints_both_scripts_and_writes_nothing(runs):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))      # no SLURM needed for a dry run
    r = subprocess.run([CLI, 'submit', '--subj', '1', '--shards', '3', '--partition', 'gpu', *SMALL, '--dry-run'],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert 'subj01 -> ' in out and 'tasks 0-2 of 3 shards (6 of 6 images to do, up to 2 per task' in out
    minutes, source = minutes_per_image()                  # the GPU benchmark's, else the reference's 30 min: 2 x 30 x 1.5 + 30 -> 2 h
    assert f'estimated: 2 images x {minutes:.3g} min ({source})' in out and f'#SBATCH --time={task_time(2, minutes)}' in out
    for line in ('#SBATCH --array=0-2', '#SBATCH --requeue', '#SBATCH --gres=gpu:1', '#SBATCH --partition=gpu',
                 '#SBATCH --open-mode=append', f"#SBATCH --output={runs / 'demo' / 'subj01' / 'slurm' / 'search_%a.log'}",
                 '-p shard "$k"', '"device": "cuda"', '"dtype": "float16"', '"n_shards": 3', '"n_images": 6',
                 'sbatch --dependency=afterok:<array job> --kill-on-invalid-dep=yes', '04_metrics.ipynb', 'name=metrics'):
        assert line in out, line
    scripts = out.split('# ---- ')[1:]
    assert len(scripts) == 2
    for s in scripts:
        body = s.split('\n', 1)[1]
        assert subprocess.run(['bash', '-n'], input=body, text=True).returncode == 0      # valid bash
    assert not runs.exists()                                                            # nothing written


def test_a_bad_parameter_fails_with_the_configs_message(runs, capsys):
    "The tasks' configuration comes from SearchConfig.resolve, as in the notebook: the same one-line message, no kernel started"
    assert slurm_cli(['submit', '--subj', '1', '--shards', '3', '-p', 'n_branches', '9', '-p', 'n_samples', '4', '--dry-run']) == 2
    err = capsys.readouterr().err
    assert err.startswith('secondsight-slurm: error: SearchConfig.n_branches=9 is invalid: expected at most n_samples=4'), err
    assert len(err.strip().splitlines()) == 1, err
    assert slurm_cli(['submit', '--subj', '1', '--shards', '3', '-p', 'n_iters', '2']) == 2
    assert "03_search.ipynb has no parameter 'n_iters'" in capsys.readouterr().err
    assert not runs.exists()


def test_more_shards_than_images(runs, capsys):
    assert slurm_cli(['submit', '--subj', '1', '--shards', '4', '-p', 'n_images', '3', '--gpus', '0']) == 2
    err = capsys.readouterr().err
    assert "--shards 4 is more than the 3 images of subj01's run: shards [3] would have none. Use --shards 3 or fewer." in err
    assert not runs.exists()


def test_a_run_folder_of_another_configuration(runs, capsys):
    plan = plan_subject(1, 3, SlurmConfig(gpus=0), dict(n_images=6, n_iter=2))
    claim_out_dir(replace(plan.config, seed=5))                   # an earlier run with another seed
    before = sorted(p.name for p in plan.out_dir.iterdir())
    assert slurm_cli(['submit', '--subj', '1', '--shards', '3', '--gpus', '0', '-p', 'n_images', '6', '-p', 'n_iter', '2']) == 2
    err = capsys.readouterr().err
    assert f"{plan.out_dir} holds results of another configuration (seed: 5 -> 0)" in err, err
    assert sorted(p.name for p in plan.out_dir.iterdir()) == before == ['config.json', 'config.json.lock']   # no slurm/ folder
    assert json.loads((plan.out_dir / 'config.json').read_text())['seed'] == 5


def test_no_sbatch(runs, capsys, monkeypatch):
    monkeypatch.setenv('PATH', str(Path(sys.executable).parent))           # the venv only: no SLURM commands
    assert slurm_cli(['submit', '--subj', '1', '--shards', '3', '--gpus', '0', *SMALL]) == 2
    err = capsys.readouterr().err
    assert "sbatch not found on PATH: SLURM's commands are needed to submit and track jobs" in err and '--dry-run' in err
    assert not (runs / 'demo' / 'subj01' / 'slurm').exists() and not (runs / 'demo' / 'subj01' / 'config.json').exists()


def test_status_of_a_folder_without_submission(tmp_path, capsys):
    assert slurm_cli(['status', str(tmp_path)]) == 2
    assert 'holds no SLURM submission (no slurm/jobs.json)' in capsys.readouterr().err
