"""Bad NSD files (on temporary copies of the demo): each raises a clear error and leaves no partial cache."""
import gzip, json, shutil
from pathlib import Path

import nibabel as nib, numpy as np, pytest

from secondsight.data import CorruptFileError, load_subject, nsd_key, nsd_path
from secondsight.demo import ensure_demo


@pytest.fixture(scope="module")
def demo_root():
    return ensure_demo()


@pytest.fixture
def nsd(demo_root, tmp_path, monkeypatch):
    "A fresh copy of the demo (subject 1 only) under tmp, with caches under tmp too."
    root = tmp_path/"nsd"
    for key in ("expdesign", "stim_info", "stimuli"):
        dst = root/nsd_key(key); dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(demo_root/nsd_key(key), dst)
    for sub in (Path(nsd_key("betas", 1, 1)).parent, Path(nsd_key("roi", 1, roi="x")).parent):
        shutil.copytree(demo_root/sub, root/sub)
    shutil.copytree(demo_root/"simulator", root/"simulator")
    shutil.copy2(demo_root/"DEMO.json", root/"DEMO.json")
    monkeypatch.setenv("SECONDSIGHT_DATA", str(tmp_path/"data"))
    return root


def _no_partial_cache(tmp_path):
    "No cache folder holds betas without a manifest, and no temporary build folder is left."
    cache = tmp_path/"data"/"cache"
    if not cache.exists(): return
    left = [p for p in cache.rglob("*") if ".building-" in p.name]
    assert not left, left
    for b in cache.rglob("betas.npy"): assert (b.parent/"manifest.json").exists()


def test_copy_loads_and_cache_is_reused(nsd, tmp_path):
    s = load_subject(1, "demo", nsd, progress=False)
    m = json.loads((s.betas_cache/"manifest.json").read_text())
    assert m["sessions"] == s.sessions and m["normalization"] == "zscore" and len(m["key"]["sources"]) == 1 + len(s.sessions)
    s2 = load_subject(1, "demo", nsd, progress=False)
    assert isinstance(s2.betas, np.memmap) and np.array_equal(s.betas, s2.betas)
    assert str(tmp_path) in str(s.betas_cache)


def test_truncated_betas(nsd, tmp_path):
    p = nsd_path(nsd, "betas", 1, 4); raw = p.read_bytes(); p.write_bytes(raw[: len(raw)*2//3])
    with pytest.raises(CorruptFileError, match=r"betas_session04.nii.gz is truncated or corrupt.*Delete it and fetch it again"):
        load_subject(1, "demo", nsd, progress=False)
    _no_partial_cache(tmp_path)


def test_corrupt_betas_bytes(nsd, tmp_path):
    "Flipped bytes in the compressed stream: a zlib error or a CRC mismatch, never silently wrong betas."
    p = nsd_path(nsd, "betas", 1, 2); raw = bytearray(p.read_bytes())
    mid = len(raw)//2
    raw[mid:mid + 64] = bytes(64)
    p.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"betas_session02.nii.gz is truncated or corrupt"):
        load_subject(1, "demo", nsd, progress=False)
    _no_partial_cache(tmp_path)


def test_corrupt_header(nsd, tmp_path):
    p = nsd_path(nsd, "betas", 1, 1)
    p.write_bytes(gzip.compress(b"not a nifti file at all" * 10))
    with pytest.raises(CorruptFileError, match=r"Cannot read the NIfTI header of .*betas_session01.nii.gz"):
        load_subject(1, "demo", nsd, progress=False)
    _no_partial_cache(tmp_path)


def test_shape_mismatch_with_roi(nsd, tmp_path):
    p = nsd_path(nsd, "betas", 1, 3)
    img = nib.load(p); v = np.asarray(img.dataobj)[:-1]  # one x-plane fewer
    nib.Nifti1Image(v, img.affine).to_filename(p)
    with pytest.raises(ValueError, match=r"betas_session03.nii.gz: betas volume has shape \(21, 26, 20, \d+\) but the ROI mask has shape \(22, 26, 20\)"):
        load_subject(1, "demo", nsd, progress=False)
    _no_partial_cache(tmp_path)


def test_nan_betas(nsd, tmp_path):
    p = nsd_path(nsd, "betas", 1, 5)
    img = nib.load(p); v = np.asarray(img.dataobj).astype(np.float32)
    s = load_subject(1, "demo", nsd, progress=False, cache=False)
    x, y, z = np.unravel_index(s.voxel_index[:3], s.grid_shape)
    v[x, y, z, 2] = np.nan
    nib.Nifti1Image(v, img.affine).to_filename(p)
    with pytest.raises(ValueError, match=r"betas_session05.nii.gz: 3 non-finite \(NaN/inf\) betas at 3 nsdgeneral voxels in 1 of"):
        load_subject(1, "demo", nsd, progress=False)
    _no_partial_cache(tmp_path)


def test_missing_session_and_files(nsd):
    nsd_path(nsd, "betas", 1, 6).unlink()
    with pytest.raises(FileNotFoundError, match=r"betas of session\(s\) \[6\] missing"):
        load_subject(1, "demo", nsd, sessions=range(1, 8), progress=False)
    s = load_subject(1, "demo", nsd, progress=False)  # default sessions = those on disk
    assert 6 not in s.sessions
    nsd_path(nsd, "roi", 1, roi="nsdgeneral").unlink()
    with pytest.raises(FileNotFoundError, match=r"nsdgeneral.nii.gz.*ROI file nsdgeneral"):
        load_subject(1, "demo", nsd, progress=False)


def test_missing_nsd_files_name_download_command(tmp_path):
    (tmp_path/"nsd").mkdir()
    with pytest.raises(FileNotFoundError, match=r"nsd_expdesign.mat.*secondsight-download --subjects 1,2,5,7 --sessions 1-37 --root"):
        load_subject(2, "nsd", tmp_path/"nsd")


def test_nsd_missing_session_names_command(nsd, tmp_path):
    "A real-NSD layout (no DEMO.json) missing sessions: the message names the path and the download command."
    (nsd/"DEMO.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"session\(s\) \[11, 12.*37\] missing.*secondsight-download --subjects 1 --sessions 11-37"):
        load_subject(1, "nsd", nsd, check_nvox=False, progress=False)
    n = int((np.asarray(nib.load(nsd_path(nsd, "roi", 1, roi="nsdgeneral")).dataobj) == 1).sum())   # the demo's count
    assert n != 15724
    with pytest.raises(ValueError, match=rf"{n} voxels == 1, expected 15724 for subj01"):
        load_subject(1, "nsd", nsd, sessions=range(1, 11), progress=False)


def test_stale_cache_is_rebuilt(nsd):
    s = load_subject(1, "demo", nsd, progress=False)
    old = np.array(s.betas[:, 0])
    p = nsd_path(nsd, "betas", 1, 1)
    img = nib.load(p); v = np.asarray(img.dataobj); v[..., 0] = v[..., 1]
    nib.Nifti1Image(v, img.affine).to_filename(p)
    s2 = load_subject(1, "demo", nsd, progress=False)
    assert not np.array_equal(old, np.asarray(s2.betas[:, 0]))
    np.testing.assert_allclose(s2.betas[0], s2.betas[1])


def test_unknown_subject_and_demo_subject():
    with pytest.raises(ValueError, match=r"subj=0 is not an NSD subject"):
        load_subject(0)
    with pytest.raises(ValueError, match=r"subj04 is not in the demo data set"):
        load_subject(4, "demo")
