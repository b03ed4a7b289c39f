"""`nbdev_docs` without Quarto (tools/quarto_stand_in.sh, which `make install` copies to .venv/bin/quarto): nbdev 2.4.14
would run `sudo` to install Quarto and `pip install -e .[dev]` into the venv; with the stand-in on PATH it installs
nothing and stops with one line. Run in a tiny nbdev project in a temporary folder, on a PATH of spies (`sudo`, `curl`,
`pip` record their calls and fail), so nothing can be installed and the repository is not touched."""
import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).parents[1]
STAND_IN = ROOT / 'tools' / 'quarto_stand_in.sh'
NBDEV_DOCS = Path(sys.executable).parent / 'nbdev_docs'
SETTINGS = """[DEFAULT]
repo = tinylib
lib_name = tinylib
version = 0.0.1
lib_path = tinylib
nbs_path = nbs
doc_path = _docs
title = tinylib
description = a project to run nbdev_docs in
user = someone
author = someone
author_email = someone@example.org
copyright = 2026
branch = main
git_url = https://github.com/someone/tinylib
doc_host = https://someone.github.io
doc_baseurl = /tinylib
keywords = test
license = apache2
status = 3
min_python = 3.10
audience = Developers
language = English
custom_sidebar = False
readme_nb = index.ipynb
"""
INDEX = '{"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# tinylib\\n", "\\n", "> a page"]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'

def tool_bin(tmp_path, stand_in:bool):
    "A PATH folder of spies for what nbdev's installer runs, the tools the stand-in uses, and (stand_in) the stand-in as quarto."
    b = tmp_path / ('bin' if stand_in else 'bin-bare'); b.mkdir()
    for t in ('sudo', 'curl', 'pip'):
        (b / t).write_text(f'#!/bin/sh\necho "{t} $*" >> "{tmp_path}/installs.log"\nexit 1\n'); (b / t).chmod(0o755)
    for t in ('readlink', 'grep'):
        if not shutil.which(t): pytest.skip(f'{t} is not on PATH (the stand-in uses it)')
        (b / t).symlink_to(shutil.which(t))
    if stand_in: shutil.copy(STAND_IN, b / 'quarto'); (b / 'quarto').chmod(0o755)     # as `make install` copies it
    return b

def nbdev_docs(tmp_path, stand_in:bool):
    proj = tmp_path / 'proj'
    shutil.rmtree(proj, ignore_errors=True)
    (proj / 'nbs').mkdir(parents=True); (proj / 'tinylib').mkdir()
    (proj / 'settings.ini').write_text(SETTINGS); (proj / 'tinylib' / '__init__.py').write_text('')
    (proj / 'nbs' / 'index.ipynb').write_text(INDEX)
    env = dict(HOME=str(tmp_path), PATH=str(tool_bin(tmp_path, stand_in)), LANG='C.UTF-8')
    r = subprocess.run([str(NBDEV_DOCS)], cwd=proj, env=env, capture_output=True, text=True, timeout=120)
    log = tmp_path / 'installs.log'
    return r, (log.read_text().splitlines() if log.exists() else [])

@pytest.mark.skipif(not NBDEV_DOCS.exists(), reason=f'no nbdev_docs beside {sys.executable}')
def test_nbdev_docs_without_quarto_installs_nothing_and_says_so_in_one_line(tmp_path):
    r, installs = nbdev_docs(tmp_path, stand_in=True)
    assert installs == [] and 'install' not in r.stdout, r.stdout          # no sudo, curl or pip ran
    assert r.returncode == 1 and r.stdout.strip() == '', r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith('quarto: Quarto is not installed') and '`make docs` builds the offline site' in line

@pytest.mark.skipif(not NBDEV_DOCS.exists(), reason=f'no nbdev_docs beside {sys.executable}')
def test_without_the_stand_in_nbdev_docs_runs_sudo_and_pip(tmp_path):
    "Why the stand-in exists (and that the spies see an install): nbdev's own answer to a missing Quarto."
    r, installs = nbdev_docs(tmp_path, stand_in=False)
    assert 'Quarto is not installed. We will download and install it for you.' in r.stdout
    assert installs[0] == 'sudo touch .installing' and any(l.startswith('pip install -e ') for l in installs), installs

def test_a_real_quarto_further_on_path_runs(tmp_path):
    "Quarto installed after the venv: the stand-in runs it; another stand-in is not taken for it (no loop)."
    first, other, real = tool_bin(tmp_path, True), tmp_path / 'other', tmp_path / 'real'
    other.mkdir(); real.mkdir()
    shutil.copy(STAND_IN, other / 'quarto'); (other / 'quarto').chmod(0o755)
    (real / 'quarto').write_text('#!/bin/sh\necho "real quarto $*"\n'); (real / 'quarto').chmod(0o755)
    run = lambda *dirs: subprocess.run([str(first / 'quarto'), 'render', '--no-cache'], env=dict(PATH=os.pathsep.join(map(str, dirs))),
                                       capture_output=True, text=True, timeout=30)
    r = run(first, other, real)
    assert r.returncode == 0 and r.stdout == 'real quarto render --no-cache\n'
    r = run(first, other)
    assert r.returncode == 1 and r.stdout == '' and 'Quarto is not installed' in r.stderr

@pytest.mark.skipif(not shutil.which('make'), reason='make is not installed')
def test_make_install_puts_the_stand_in_in_the_venv():
    "(a dry run: `make -n` prints what it would do and does nothing)"
    r = subprocess.run(['make', '-n', '-W', 'tools/quarto_stand_in.sh', 'install'], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert 'install -m 755 tools/quarto_stand_in.sh .venv/bin/quarto' in r.stdout, r.stdout + r.stderr
