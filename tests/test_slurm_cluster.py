"""secondsight-slurm on a real SLURM: a single-node cluster started here (Debian's munge, slurmctld and slurmd, on
localhost with this machine's cores, no GPU, private ports, sockets and state in a temporary folder).

A demo run of 6 images in 3 shards is submitted with the console script; one task is requeued after its first image
(SLURM kills it and runs it again, as after a preemption); then every image is finished exactly once, by its own shard,
the images finished before the requeue are unchanged, 04_metrics ran after the array, `status` reports it all, and
nothing is left running. A second run goes through every state `status` reports (pending, running, failed after a
kill, cancelled, timed out, 04_metrics cancelled by its dependency) with exit status 1 once a shard failed, and no lock
file is left by the killed task; an unprepared subject's array waits for its preparation job. Bad inputs fail before
anything is submitted. Without SLURM (or without root, which slurmd
needs to start jobs) the tests are skipped and say why; `.ci/run` installs the packages."""
import hashlib, json, os, re, shutil, signal, socket, subprocess, sys, time
from datetime import datetime
from pathlib import Path

import pytest

from secondsight.slurm import SlurmConfig, SlurmError, submit

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / 'secondsight-slurm')
DAEMONS = ('munged', 'slurmctld', 'slurmd')
COMMANDS = ('sbatch', 'squeue', 'sinfo', 'scontrol', 'scancel')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _tail(path, n=15):
    p = Path(path)
    return '\n'.join(p.read_text(errors='replace').splitlines()[-n:]) if p.is_file() else f'({p.name}: no log)'


class LocalSlurm:
    "A one-node SLURM in `root`, started and stopped by process id; SLURM_CONF points the commands at it."
    def __init__(self, root:Path):
        self.root, self.procs, self.host = root, {}, socket.gethostname().split('.')[0]
        self.conf, self.sock, self.partition = root / 'slurm.conf', root / 'munge.sock', 'debug'
        self.old_conf = os.environ.get('SLURM_CONF')

    def write_conf(self):
        for d in ('state', 'spool', 'log'): (self.root / d).mkdir()
        mem_mb = int(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**20 * 0.8)
        r = self.root
        self.conf.write_text(f"""ClusterName=sstest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.sock}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
MailProg=/bin/true
JobRequeue=1
ReturnToService=2
MinJobAge=3600
KillWait=5
SchedulerParameters=sched_interval=2
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name, *cmd):
        self.procs[name] = subprocess.Popen(cmd, stdout=open(self.root / 'log' / f'{name}.out', 'w'), stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _wait(self, what, ok, timeout=30):
        t0 = time.time()
        while not ok():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.time() - t0 > timeout:
                raise RuntimeError(f"{what} ({', '.join(dead) + ' exited' if dead else f'not within {timeout} s'}):\n"
                                   + '\n'.join(f'--- {n}\n' + _tail(self.root / 'log' / f'{n}.out') for n in self.procs))
            time.sleep(0.2)

    def start(self):
        self.write_conf()
        key = self.root / 'munge.key'
        key.write_bytes(os.urandom(1024)); key.chmod(0o600)
        r = self.root
        self._start('munged', 'munged', '-F', '--force', f'--socket={self.sock}', f'--key-file={key}', f'--pid-file={r}/munged.pid',
                    f'--log-file={r}/log/munged.log', f'--seed-file={r}/munged.seed')
        self._wait('munged did not start', self.sock.exists)
        os.environ['SLURM_CONF'] = str(self.conf)
        self._start('slurmctld', 'slurmctld', '-D', '-f', str(self.conf))
        self._start('slurmd', 'slurmd', '-D', '-f', str(self.conf), '-N', self.host)
        idle = lambda: 'idle' in subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True).stdout
        self._wait('the node did not come up idle', idle)

    def squeue(self)->dict:
        "job or task id -> (state, reason, numeric job id)"
        out = subprocess.run(['squeue', '-h', '-r', '-o', '%i|%T|%r|%A'], capture_output=True, text=True).stdout
        return {l.split('|')[0]: tuple(l.split('|')[1:]) for l in out.splitlines()}

    def wait_idle(self, timeout):
        t0 = time.time()
        while self.squeue():
            if time.time() - t0 > timeout: raise TimeoutError(f"jobs still in SLURM after {timeout} s: {self.squeue()}")
            time.sleep(1)

    def stop(self):
        "Cancel what is left, then stop the daemons this test started, by their process ids."
        if self.procs.get('slurmctld') and self.procs['slurmctld'].poll() is None:
            subprocess.run(['scancel', '--full', '-u', 'root'], capture_output=True)
            try: self.wait_idle(60)
            except TimeoutError: pass
        for name in ('slurmd', 'slurmctld', 'munged'):
            p = self.procs.get(name)
            if p is None or p.poll() is not None: continue
            p.send_signal(signal.SIGTERM)
            try: p.wait(20)
            except subprocess.TimeoutExpired: p.kill(); p.wait()
        if self.old_conf is None: os.environ.pop('SLURM_CONF', None)
        else: os.environ['SLURM_CONF'] = self.old_conf


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    missing = [c for c in DAEMONS + COMMANDS if shutil.which(c) is None]
    if missing: pytest.skip(f"SLURM is not installed here ({', '.join(missing)} not found): `apt-get install slurmctld slurmd "
                            "slurm-client munge` (Debian; .ci/run does it as root)")
    if os.geteuid() != 0: pytest.skip("the local SLURM runs slurmd as root (SlurmdUser=root), and this test is not root")
    c = LocalSlurm(tmp_path_factory.mktemp('slurm'))
    try: c.start()
    except (RuntimeError, OSError) as e:
        c.stop(); pytest.skip(f"SLURM is installed but did not start here: {e}")
    yield c
    c.stop()


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv('SECONDSIGHT_RUNS', str(tmp_path / 'runs'))
    monkeypatch.delenv('SECONDSIGHT_DATA', raising=False)           # the demo in the checkout's data/, as the other tests
    return tmp_path / 'runs'


SMALL = dict(n_images=6, n_iter=2, n_samples=12, n_branches=2)
CPU = dict(gpus=0, cpus=1, mem='2G', time='20', metrics_cpus=1, metrics_mem='2G')


def test_an_unknown_partition_and_a_gpu_request_fail_before_submitting(cluster, runs):
    with pytest.raises(ValueError, match=r"SlurmConfig.partition='gpu' is invalid: expected one of this cluster's partitions \['debug'\]"):
        submit([1], 3, SlurmConfig(partition='gpu', **CPU), SMALL)
    with pytest.raises(SlurmError, match=r"sbatch refuses the search array script of subj01: .*Invalid generic resource"):
        submit([1], 3, SlurmConfig(**CPU | dict(gpus=1)), SMALL)    # this node has no GPU
    with pytest.raises(SlurmError, match=r"sbatch refuses the search array script of subj01: "):
        submit([1], 3, SlurmConfig(**CPU | dict(gpus=1, gpus_per_task=True)), SMALL)   # --gpus-per-task=1: no GPU either
    assert cluster.squeue() == {}
    assert not (runs / 'demo' / 'subj01' / 'slurm').exists()


def snapshot(images:Path)->dict:
    "relative path -> (sha1, mtime_ns) of every file of the finished images"
    return {str(p.relative_to(images)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for d in images.iterdir() if (d / 'result.json').is_file() for p in sorted(d.rglob('*')) if p.is_file()}


def job_processes(marker:str)->list:
    "Processes whose environment holds `marker` (the jobs inherit the submitting environment)"
    out = []
    for p in Path('/proc').iterdir():
        if not p.name.isdigit(): continue
        try: env = (p / 'environ').read_bytes().split(b'\0')
        except OSError: continue
        if marker.encode() in env: out.append(int(p.name))
    return out


def requeue_mid_run(cluster, run:Path, array:str, shards:list, timeout=600):
    "Requeue a running task once it has finished one image; returns (its shard, its finished images, a snapshot of all finished images)."
    finished = lambda ids: [i for i in ids if (run / 'images' / f'{i:05d}' / 'result.json').is_file()]
    t0 = time.time()
    while time.time() - t0 < timeout:
        q = cluster.squeue()
        for k, ids in enumerate(shards):
            task = q.get(f'{array}_{k}')
            if task and task[0] == 'RUNNING' and 0 < len(finished(ids)) < len(ids):
                subprocess.run(['scontrol', 'requeue', f'{array}_{k}'], check=True)
                # the killed instance ends before the task is pending again; wait for its processes to be gone
                marker = f'SLURM_JOB_ID={task[2]}'
                while cluster.squeue().get(f'{array}_{k}', ('',))[0] != 'PENDING' or job_processes(marker):
                    assert time.time() - t0 < timeout, f"task {array}_{k} did not come back pending"
                    time.sleep(0.2)
                done = finished(ids)
                assert len(done) < len(ids), f"the requeue landed after shard {k} had finished ({done}): rerun the test"
                before = snapshot(run / 'images')
                # SLURM holds a requeued job for ~2 minutes (its begin time); let it start now
                while cluster.squeue().get(f'{array}_{k}', ('', ''))[1] == 'BeginTime':
                    subprocess.run(['scontrol', 'update', f'jobid={array}_{k}', 'StartTime=now'], check=True)
                    time.sleep(1)
                return k, done, before
        time.sleep(0.1)
    pytest.fail(f"no task was running mid-shard within {timeout} s: {cluster.squeue()}\n" + status(run))


def status(run)->str:
    r = subprocess.run([CLI, 'status', str(run), '--lines', '15'], capture_output=True, text=True, timeout=300)
    return r.stdout + r.stderr


def test_a_demo_run_with_a_requeued_task(cluster, runs):
    env = dict(os.environ)
    t0 = time.time()
    cmd = [CLI, 'submit', '--subj', '1', '--shards', '3', '--gpus', '0', '--cpus', '1', '--mem', '2G', '--time', '20',
           '--metrics-cpus', '1', '--metrics-mem', '2G', '--partition', cluster.partition] + [a for k, v in SMALL.items() for a in ('-p', k, str(v))]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = runs / 'demo' / 'subj01'
    sub = json.loads((run / 'slurm' / 'jobs.json').read_text())['submissions'][-1]
    array, shards = sub['array_job'], sub['shards']
    assert sub['tasks'] == [0, 1, 2] and sorted(map(len, shards)) == [2, 2, 2]

    # a second submission while the first one's jobs are queued is refused, and submits nothing
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert again.returncode == 2 and 'still has jobs of its previous submission' in again.stderr, again.stderr[-2000:]
    assert {j.split('_')[0] for j in cluster.squeue()} <= {array, sub['metrics_job']}

    # 1. one task is requeued (killed and queued again by SLURM) after its first image; status shows it REQUEUED
    k, done, before = requeue_mid_run(cluster, run, array, shards)
    r = run_status_cli(run)
    assert r.returncode == 0 and 'failed:' not in r.stdout, r.stdout + r.stderr
    # 2. everything runs to the end
    try: cluster.wait_idle(timeout=1200)
    except TimeoutError as e: pytest.fail(f"{e}\n{status(run)}")
    print(f"demo run with a requeued task (shard {k}): {time.time() - t0:.0f} s")
    report = status(run)
    assert '6/6 images finished' in report and 'failed:' not in report and '04_metrics: COMPLETED; tables in metrics/' in report, report

    # every image finished exactly once, by its own shard; those finished before the requeue untouched by the rerun
    ids = [i for s in shards for i in s]
    assert sorted(p.name for p in (run / 'images').iterdir()) == sorted(f'{i:05d}' for i in ids)
    for s, sids in enumerate(shards):
        for i in sids:
            res = json.loads((run / 'images' / f'{i:05d}' / 'result.json').read_text())
            assert (res['nsd_id'], res['settings']['shard'], res['settings']['n_shards']) == (i, s, 3)
    after = snapshot(run / 'images')
    assert {p: after[p] for p in before} == before, "a rerun changed an image finished before it"
    assert done and all(f'{i:05d}/result.json' in before for i in done)
    leftovers = [str(p) for p in run.rglob('*') if '.tmp-' in p.name or '.staging' in p.parts]
    assert not leftovers, leftovers

    # the requeued task ran twice, appending to its log; every job ended with exit code 0
    d = run / 'slurm'
    log = (d / f'search_{k}.log').read_text()
    assert log.count(f'search_{k} started') == 2 and 'runs secondsight-slurm task: secondsight.run.run_subject of' in log
    # each task's closing line counts its own shard: the requeued one found the images its first attempt finished
    assert f'shard {k}: {2 - len(done)} reconstructed, {len(done)} found done, 0 failed, of 2 images' in log, log[-3000:]
    for s in {0, 1, 2} - {k}: assert f'shard {s}: 2 reconstructed, 0 found done, 0 failed' in (d / f'search_{s}.log').read_text()
    records = {n: json.loads((d / f'{n}.exit').read_text()) for n in ('search_0', 'search_1', 'search_2', 'metrics')}
    assert {n: r['exit_code'] for n, r in records.items()} == dict.fromkeys(records, 0)
    assert records[f'search_{k}']['attempt'] == 2 and records[f'search_{k}']['job'] == f'{array}_{k}'
    for n in records: assert (d / f'{n}.log').is_file()
    assert sorted(p.name for p in d.glob('*.ipynb')) == ['metrics.ipynb']               # the search runs no notebook
    assert [p.name for p in run.rglob('*.lock')] == []

    # 04_metrics started after the last task ended, and wrote its tables
    last = max(datetime.fromisoformat(records[f'search_{s}']['ended']) for s in range(3))
    assert datetime.fromisoformat(records['metrics']['started']) >= last
    assert (run / 'metrics' / 'subj01_table.csv').is_file()

    # nothing of the jobs is left running
    assert cluster.squeue() == {}
    assert [p for p in job_processes(f"SECONDSIGHT_RUNS={runs}") if p != os.getpid()] == []


def run_status_cli(run):
    return subprocess.run([CLI, 'status', str(run), '--lines', '15'], capture_output=True, text=True, timeout=300)


def wait_for(what, ok, timeout=300, run=None):
    t0 = time.time()
    while not ok():
        if time.time() - t0 > timeout: pytest.fail(f"{what}: not within {timeout} s" + (f"\n{status(run)}" if run else ''))
        time.sleep(0.5)


def task_pid(marker:str)->int|None:
    "The Python process of a running task (`secondsight-slurm task`) whose environment holds `marker`"
    for pid in job_processes(marker):
        try: cmd = Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')
        except OSError: continue
        if b'task' in cmd and any(b'python' in c for c in cmd[:1]): return pid
    return None


def test_status_in_each_state(cluster, runs):
    "Long tasks with a 1-minute limit: shard 0 times out, shard 1 is killed, shard 2 is cancelled while pending; 04_metrics never runs"
    cmd = [CLI, 'submit', '--subj', '1', '--shards', '3', '--gpus', '0', '--cpus', '1', '--mem', '2G', '--time', '1',
           '--metrics-cpus', '1', '--metrics-mem', '2G', '--partition', cluster.partition, '-p', 'n_images', '6', '-p', 'n_iter', '500', '-p', 'n_samples', '12', '-p', 'n_branches', '2']
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = runs / 'demo' / 'subj01'
    sub = json.loads((run / 'slurm' / 'jobs.json').read_text())['submissions'][-1]
    array, shards, q = sub['array_job'], sub['shards'], cluster.squeue
    # pending and running: two tasks on the node's two CPUs, the third waits; nothing failed yet
    wait_for('two tasks running', lambda: [q().get(f'{array}_{k}', ('',))[0] for k in range(3)] == ['RUNNING', 'RUNNING', 'PENDING'], run=run)
    r = run_status_cli(run)
    rows = {l.split()[0]: l.split()[3] for l in r.stdout.splitlines() if re.match(r'\s+\d\s', l)}
    assert (r.returncode, rows) == (0, {'0': 'RUNNING', '1': 'RUNNING', '2': 'PENDING'}), r.stdout + r.stderr
    assert '04_metrics: PENDING' in r.stdout
    # shard 1's Python is killed once it holds a claim (SIGKILL: nothing of it can clean up)
    marker = f'SLURM_JOB_ID={q()[f"{array}_1"][2]}'
    wait_for("shard 1's first claim", lambda: any((run / '.claims' / f'{i:05d}.lock').exists() for i in shards[1]) and task_pid(marker), run=run)
    os.kill(task_pid(marker), signal.SIGKILL)
    wait_for('shard 1 failed', lambda: (run / 'slurm' / 'search_1.exit').is_file(), run=run)
    subprocess.run(['scancel', f'{array}_2'], check=True)              # shard 2, still pending, cancelled
    r = run_status_cli(run)
    assert r.returncode == 1, r.stdout + r.stderr                       # a shard failed: exit status 1
    assert re.search(r'\n\s+1\s+2\s+0\s+FAILED \(exit code 137\)', r.stdout) and 'failed: shard 1 (job ' in r.stdout, r.stdout
    assert 'still queued or running: wait for them' in r.stdout and 'Run the same' not in r.stdout, r.stdout   # shard 0 still runs
    assert [p for i in shards[1] for p in [run / '.claims' / f'{i:05d}.lock'] if p.exists()] == []   # the killed task's claim is gone
    assert not (run / 'config.json.lock').exists()
    # shard 0 reaches its time limit; 04_metrics, waiting for a complete array, is cancelled by its dependency
    try: cluster.wait_idle(timeout=300)
    except TimeoutError as e: pytest.fail(f"{e}\n{status(run)}")
    r = run_status_cli(run)
    rows = {l.split()[0]: l.split()[3] for l in r.stdout.splitlines() if re.match(r'\s+\d\s', l)}
    assert (r.returncode, rows) == (1, {'0': 'TIMEOUT', '1': 'FAILED', '2': 'CANCELLED'}), r.stdout + r.stderr
    assert '04_metrics: CANCELLED' in r.stdout and 'failed: 04_metrics' in r.stdout and 'Run the same `secondsight-slurm submit`' in r.stdout
    assert 'ENDED' not in r.stdout
    assert [p.name for p in run.rglob('*.lock')] == []                  # no lock file left by the killed or timed-out tasks
    assert [p for p in job_processes(f"SECONDSIGHT_RUNS={runs}") if p != os.getpid()] == []


def test_an_unprepared_subject_waits_for_its_preparation(cluster, runs, tmp_path, monkeypatch):
    "An empty cache (the demo's data linked): a preparation job first, the array pending on it; cancelling it cancels the array"
    data = tmp_path / 'data'; data.mkdir()
    (data / 'demo_nsd').symlink_to(ROOT / 'data' / 'demo_nsd')
    monkeypatch.setenv('SECONDSIGHT_DATA', str(data))
    cmd = [CLI, 'submit', '--subj', '5', '--shards', '2', '--gpus', '0', '--cpus', '1', '--mem', '2G', '--time', '20', '--no-metrics',
           '--partition', cluster.partition] + [a for k, v in SMALL.items() for a in ('-p', k, str(v))]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    run = runs / 'demo' / 'subj05'
    sub = json.loads((run / 'slurm' / 'jobs.json').read_text())['submissions'][-1]
    assert f"preparation job {sub['prepare_job']}, array job {sub['array_job']}" in r.stdout
    waiting = lambda: [cluster.squeue().get(f"{sub['array_job']}_{k}", ('', ''))[:2] for k in range(2)] == [('PENDING', 'Dependency')] * 2
    wait_for('the array waiting for the preparation', waiting, timeout=60, run=run)
    st = run_status_cli(run)
    assert f"secondsight-prepare (job {sub['prepare_job']}): " in st.stdout and st.returncode == 0, st.stdout + st.stderr
    subprocess.run(['scancel', sub['prepare_job']], check=True)
    try: cluster.wait_idle(timeout=120)                                  # the array is cancelled with it (kill-on-invalid-dep)
    except TimeoutError as e: pytest.fail(f"{e}\n{status(run)}")
    st = run_status_cli(run)
    assert st.returncode == 1 and 'failed: secondsight-prepare' in st.stdout and 'CANCELLED' in st.stdout, st.stdout


def test_the_daemons_stop(cluster):
    pids = {n: p.pid for n, p in cluster.procs.items()}
    cluster.stop()
    alive = [f'{n} ({pid})' for n, pid in pids.items() if Path(f'/proc/{pid}').exists() and cluster.procs[n].poll() is None]
    assert not alive, f"still running: {alive}"
