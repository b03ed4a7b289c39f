"""secondsight-slurm without a cluster: `--dry-run` plans a demo subject and prints its job scripts without writing
anything, and each bad input fails with a clear error before anything is submitted or written (a bad parameter, more
shards than images, a run folder of another configuration, no `sbatch` on PATH), a cheap one before the data libraries
are even imported. The plan counts the images still to do, schedules the preparation of an unprepared subject, and a
task (`secondsight-slurm task`, what each array task runs) counts its own shard's images."""
import json, os, re, subprocess, sys
from dataclasses import replace
from pathlib import Path

import pytest

from secondsight.run import claim_out_dir
from secondsight.data import load_subject
from secondsight.run import RunFolder
from secondsight.slurm import (SlurmConfig, describe, minutes_per_image, plan_subject, preparation_missing, slurm_cli, task_config,
                               task_params, task_time)

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / 'secondsight-slurm')
SMALL = ['-p', 'n_images', '6', '-p', 'n_iter', '2', '-p', 'n_samples', '12', '-p', 'n_branches', '2']


@pytest.fixture
def runs(tmp_path, monkeypatch):
    "An empty results root ($SECONDSIGHT_RUNS); the demo data in the checkout's data/ (as the other tests use it)."
    monkeypatch.setenv('SECONDSIGHT_RUNS', str(tmp_path / 'runs'))
    monkeypatch.delenv('SECONDSIGHT_DATA', raising=False)
    return tmp_path / 'runs'


def test_dry_run_prints_the_scripts_and_writes_nothing(runs):
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
                 'task --shard "$k"', '# Runs: secondsight-slurm task: secondsight.run.run_subject of', '"device": "cuda"',
                 '"dtype": "float16"', '"n_shards": 3', '"n_images": 6', 'sbatch --dependency=afterok:<array job> --kill-on-invalid-dep=yes',
                 f"# Runs: the notebook {ROOT / 'nbs' / '04_metrics.ipynb'} through papermill", 'name=metrics',
                 'for NSD pass --dataset nsd --data-root DIR'):                  # the hint names this tool's own options
        assert line in out, line
    assert '-p dataset' not in out and '03_search.ipynb' not in out           # the search runs no notebook
    scripts = out.split('# ---- ')[1:]
    prepare = bool(preparation_missing(load_subject(1, 'demo', progress=False)))   # an unprepared subject: its preparation first
    assert len(scripts) == 2 + prepare
    search, metrics = scripts[prepare:]
    assert '--mem=32G' in search and '--cpus-per-task=4' in search
    assert '--mem=16G' in metrics and '--gres=gpu:1' in metrics and '"device": "cuda"' in metrics   # 04_metrics' own resources
    for s in scripts:
        body = s.split('\n', 1)[1]
        assert subprocess.run(['bash', '-n'], input=body, text=True).returncode == 0      # valid bash
    assert not runs.exists()                                                            # nothing written


def test_gpus_per_task_and_the_metrics_resources(runs):
    r = subprocess.run([CLI, 'submit', '--subj', '1', '--shards', '3', *SMALL, '--gpus', '2', '--gpu-type', 'h100', '--gpus-per-task',
                        '--mem', '64G', '--metrics-mem', '8G', '--metrics-cpus', '2', '--metrics-gpus', '0', '--dry-run'],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    search, metrics = r.stdout.split('# ---- ')[-2:]
    assert '#SBATCH --gpus-per-task=h100:2' in search and '#SBATCH --ntasks=1' in search and '--gres' not in search and '--mem=64G' in search
    assert '--gpus' not in metrics and '--gres' not in metrics and '--mem=8G' in metrics and '--cpus-per-task=2' in metrics
    assert '"device": "cpu"' in metrics


def test_a_cheap_mistake_fails_before_the_data_libraries_load(runs):
    "A bad option, resource or parameter name is reported without importing torch (seconds and a GB of memory)"
    code = ("import sys; from secondsight.slurm import slurm_cli\n"
            "for bad in (['--mem', 'lots'], ['-p', 'n_iters', '2'], ['--shards', '0'], ['-m', 'n_imgs', '1']):\n"
            "    assert slurm_cli(['submit', '--subj', '1', '--shards', '3', *bad]) == 2, bad\n"
            "assert 'torch' not in sys.modules and 'secondsight.core' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 4 and all(e.startswith('secondsight-slurm: error: ') for e in errs), errs
    assert "04_metrics.ipynb has no parameter 'n_imgs'" in errs[3]
    assert not runs.exists()


def test_the_plan_counts_images_not_shards(runs):
    "A resubmission asks for the shards with images to do, and says how many images (not the shards' sizes)"
    slurm, params = SlurmConfig(gpus=0), dict(n_images=6, n_iter=2)
    plan = plan_subject(1, 3, slurm, params)
    assert plan.todo == 6 and plan.tasks == [0, 1, 2]
    rf = RunFolder(plan.out_dir)
    for i in plan.shards[0] + plan.shards[1][:1]:                     # shard 0 finished, one image of shard 1
        rf.result(i).parent.mkdir(parents=True); rf.result(i).write_text('{}')
    plan = plan_subject(1, 3, slurm, params)
    assert (plan.tasks, plan.todo) == ([1, 2], 3)
    assert 'tasks 1-2 of 3 shards (3 of 6 images to do, up to 2 per task' in describe(plan)


def test_an_unprepared_subject_gets_a_preparation_job(tmp_path, runs, monkeypatch):
    "An empty cache (the demo's data linked, nothing prepared): secondsight-prepare first, the array after it (afterok)"
    data = tmp_path / 'data'; data.mkdir()
    (data / 'demo_nsd').symlink_to(ROOT / 'data' / 'demo_nsd')
    monkeypatch.setenv('SECONDSIGHT_DATA', str(data))
    r = subprocess.run([CLI, 'submit', '--subj', '5', '--shards', '2', *SMALL, '--gpus', '0', '--prepare-time', '2:00:00', '--dry-run'],
                       capture_output=True, text=True, cwd=ROOT, timeout=600, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'subj05 -> ' in r.stdout and ': secondsight-prepare, then tasks 0-1 of 2 shards' in r.stdout
    prepare, search, metrics = r.stdout.split('# ---- ')[1:]
    assert prepare.startswith('sbatch ') and 'prepare.sbatch' in prepare.splitlines()[0]
    assert 'from secondsight.models import prepare_cli' in prepare and "--subj 5 --dataset demo" in prepare and '--device cpu' in prepare
    assert '#SBATCH --time=2:00:00' in prepare and 'name=prepare' in prepare
    assert search.startswith('sbatch --dependency=afterok:<preparation job> --kill-on-invalid-dep=yes')
    assert not (runs / 'demo' / 'subj05' / 'slurm').exists()


def test_a_task_counts_its_own_shard(runs):
    "`secondsight-slurm task`: the closing line counts this shard's images, not the run folder's (another shard's images are there)"
    p = json.dumps(task_params(task_config(1, 2, dict(n_images=4, n_iter=2, n_samples=12, n_branches=2), gpus=0)))
    run = lambda k: subprocess.run([CLI, 'task', '--shard', str(k), '--params', p], capture_output=True, text=True, cwd=ROOT, timeout=600)
    last = lambda r: [l for l in r.stdout.splitlines() if l.startswith('secondsight-slurm task: shard')][-1]
    r1 = run(1)
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert 'secondsight-slurm task: subj01 shard 1 of 2: 2 images, 0 done earlier; run_subject of ' + str(ROOT / 'secondsight') in r1.stdout
    r0, again = run(0), run(1)
    assert last(r0).startswith('secondsight-slurm task: shard 0: 2 reconstructed, 0 found done, 0 failed, of 2 images'), r0.stdout[-2000:]
    assert last(again).startswith('secondsight-slurm task: shard 1: 0 reconstructed, 2 found done, 0 failed, of 2 images'), again.stdout[-2000:]
    out = runs / 'demo' / 'subj01'
    assert len(list(out.glob('images/*/result.json'))) == 4
    assert [p.name for p in out.rglob('*.lock')] == []                 # the claims and the config lock are gone


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
    assert slurm_cli(['submit', '--subj', '1', '--shards', '4', '-p', 'n_images', '3', '--gpus', '0', '--dry-run']) == 2
    err = capsys.readouterr().err
    assert "--shards 4 is more than the 3 images of subj01's run: shards [3] would have none. Use --shards 3 or fewer." in err
    assert not runs.exists()


def test_a_run_folder_of_another_configuration(runs, capsys):
    plan = plan_subject(1, 3, SlurmConfig(gpus=0), dict(n_images=6, n_iter=2))
    claim_out_dir(replace(plan.config, seed=5))                   # an earlier run with another seed
    before = sorted(p.name for p in plan.out_dir.iterdir())
    assert slurm_cli(['submit', '--subj', '1', '--shards', '3', '--gpus', '0', '-p', 'n_images', '6', '-p', 'n_iter', '2', '--dry-run']) == 2
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
