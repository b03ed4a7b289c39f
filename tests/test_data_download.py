"""secondsight-download against a real S3 API on loopback (moto's server mode): listing, skipping, resume after a kill."""
import os, signal, socket, subprocess, sys, time
from pathlib import Path

import boto3, numpy as np, pytest

from secondsight.data import NSD_BUCKET, download_cli, download_nsd, nsd_files, nsd_key

moto_server = pytest.importorskip("moto.server")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    "A moto S3 server on 127.0.0.1 holding a tiny NSD bucket for subject 1, sessions 1-2."
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    c = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    c.create_bucket(Bucket=NSD_BUCKET)
    rng = np.random.default_rng(0)
    blobs = {}
    for i, key in enumerate(nsd_files([1], "1-2", stimuli=True)):
        size = 40 << 20 if key == nsd_key("stimuli") else 1000 + 37*i  # one big object to interrupt
        blobs[key] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        c.put_object(Bucket=NSD_BUCKET, Key=key, Body=blobs[key], ACL="public-read")  # anonymous reads, like NSD
    yield url, blobs
    server.stop()


def test_dry_run_lists_files_and_sizes(s3, tmp_path, capsys):
    url, blobs = s3
    rc = download_cli(["--subjects", "1", "--sessions", "1-2", "--root", str(tmp_path), "--dry-run", "--endpoint-url", url])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"{len(blobs)} files" in out and "would download" in out and nsd_key("betas", 1, 2) in out
    assert not any(tmp_path.iterdir())  # nothing written


def test_download_skip_and_redo_bad_files(s3, tmp_path):
    url, blobs = s3
    rows = download_nsd([1], "1-2", tmp_path, endpoint_url=url, progress=False)
    assert {r["status"] for r in rows} == {"downloaded"}
    for k, b in blobs.items(): assert (tmp_path/k).read_bytes() == b
    # second run: everything complete, nothing fetched
    assert {r["status"] for r in download_nsd([1], "1-2", tmp_path, endpoint_url=url, progress=False)} == {"complete"}
    # a wrong-size file under the final name is replaced; a stale, too-long .part is discarded
    bad, part_key = nsd_key("betas", 1, 1), nsd_key("expdesign")
    (tmp_path/bad).write_bytes(b"short")
    (tmp_path/part_key).unlink(); (tmp_path/(part_key + ".part")).write_bytes(b"x"*(len(blobs[part_key]) + 10))
    rows = download_nsd([1], "1-2", tmp_path, endpoint_url=url, progress=False)
    assert {r["key"] for r in rows if r["status"] == "downloaded"} == {bad, part_key}
    assert (tmp_path/bad).read_bytes() == blobs[bad] and (tmp_path/part_key).read_bytes() == blobs[part_key]
    assert not list(tmp_path.rglob("*.part"))


def test_resume_truncated_part(s3, tmp_path):
    "A truncated .part (what an interrupted transfer leaves) is resumed with a range request."
    url, blobs = s3
    key = nsd_key("stimuli"); dest = tmp_path/key; dest.parent.mkdir(parents=True)
    Path(str(dest) + ".part").write_bytes(blobs[key][:12345])
    download_nsd([1], "1", tmp_path, endpoint_url=url, progress=False)
    assert dest.read_bytes() == blobs[key]


def test_kill_mid_transfer_then_resume(s3, tmp_path):
    "SIGKILL the CLI during the big transfer: no file under the final name; a rerun completes it correctly."
    url, blobs = s3
    key = nsd_key("stimuli"); dest, part = tmp_path/key, tmp_path/(key + ".part")
    cmd = [sys.executable, "-c", "import sys; from secondsight.data import download_cli; sys.exit(download_cli())",
           "--subjects", "1", "--sessions", "1", "--root", str(tmp_path), "--endpoint-url", url]
    env = dict(os.environ, SECONDSIGHT_S3_ENDPOINT=url)
    killed = False
    for _ in range(3):  # the transfer is fast on loopback: retry the race a few times
        for p in (dest, part):
            if p.exists(): p.unlink()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        while proc.poll() is None and time.time() - t0 < 120:
            if part.exists() and 0 < part.stat().st_size < len(blobs[key]):
                proc.send_signal(signal.SIGKILL); proc.wait(); killed = True; break
            time.sleep(0.001)
        proc.wait()
        if killed: break
    if not killed: pytest.skip("could not interrupt the transfer (finished too fast)")
    assert not dest.exists(), "a partial file must never appear under the final name"
    assert 0 < part.stat().st_size < len(blobs[key])
    assert download_cli(["--subjects", "1", "--sessions", "1", "--root", str(tmp_path), "--endpoint-url", url]) == 0
    assert dest.read_bytes() == blobs[key] and not part.exists()


def test_missing_object_names_key(s3, tmp_path):
    url, _ = s3
    with pytest.raises(RuntimeError, match=r"betas_session40.nii.gz.*(404|NoSuchKey|Not Found)"):
        download_nsd([1], "40", tmp_path, endpoint_url=url, progress=False)


def test_unreachable_endpoint_is_one_line(tmp_path):
    "No S3 reachable (nothing listens on the port): one line naming the endpoint and what to do, exit status 2, nothing written."
    url = f"http://127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-c", "import sys; from secondsight.data import download_cli; sys.exit(download_cli())",
           "--subjects", "1", "--sessions", "1", "--root", str(tmp_path / "nsd"), "--dry-run", "--endpoint-url", url, "--retries", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, AWS_MAX_ATTEMPTS="1"))
    errors = [l for l in r.stderr.splitlines() if "error" in l.lower()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1 and f"cannot reach s3://{NSD_BUCKET} at {url}" in errors[0] and "--endpoint-url" in errors[0]
    assert not (tmp_path / "nsd").exists()
