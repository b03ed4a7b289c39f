"""Benchmark: load one NSD-size betas session (81x104x83x750 int16, gzipped) masked to 15,724 nsdgeneral voxels.

Compares, each in its own subprocess (so peak RSS is clean):
  ours            secondsight.data.read_betas: streamed zlib decompression, volume batches masked on the fly
  decompress      plain gzip decompression of the same file (zlib stream, output discarded): the floor
  naive_fdata     nib.load(f).get_fdata() (float64 volume) then mask: what SS does
  nibabel_int16   np.asarray(img.dataobj) (int16 volume) then mask
Targets (issue 2): ours peak RSS < 1.5 GB and time <= 1.5x decompression alone.
Prints one JSON line of figures at the end.

    python bench/preprocess_session.py                 # full size (writes a ~0.7 GB file to a temp dir)
    python bench/preprocess_session.py --shape 20,24,18,60 --nvox 1500   # quick try
"""
import argparse, json, resource, subprocess, sys, tempfile, time, zlib
from pathlib import Path

import numpy as np


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024  # Linux: KB


def make_session(path, shape, nvox, seed=0):
    "Write a synthetic session like NSD's: int16, zeros outside an ellipsoid brain, streamed volume by volume."
    import gzip, nibabel as nib
    X, Y, Z, T = shape
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (X, Y, Z)), indexing="ij")
    brain = x**2 + y**2 + z**2 < 0.9
    # nsdgeneral: the `nvox` brain voxels closest to the back of the head (small y), C order
    order = np.argsort(y[brain], kind="stable")
    gen = np.zeros(brain.sum(), bool); gen[order[:nvox]] = True
    mask = np.zeros((X, Y, Z), bool); mask[brain] = gen
    hdr = nib.Nifti1Header(); hdr.set_data_shape(shape); hdr.set_data_dtype(np.int16); hdr.set_qform(np.diag([1.8]*3 + [1]), 1)
    hdr["vox_offset"] = 352
    rng = np.random.default_rng(seed)
    base = np.rint(rng.normal(0, 300, brain.sum())).astype(np.int16)
    with gzip.open(path, "wb", compresslevel=1) as f:  # nibabel's default level
        f.write(hdr.binaryblock + b"\0"*4)
        for t in range(T):
            v = np.zeros((X, Y, Z), np.int16)
            v[brain] = base + rng.integers(-600, 600, brain.sum(), dtype=np.int16)  # zeros outside the brain
            f.write(v.tobytes(order="F"))
    return mask


def worker(mode, path, mask_path):
    mask = np.load(mask_path)
    if mode == "ours":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, if not pip-installed
        from secondsight.data import read_betas
    elif mode in ("naive_fdata", "nibabel_int16"):
        import nibabel as nib
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    if mode == "decompress":
        d, n = zlib.decompressobj(31), 0
        with open(path, "rb") as f:
            while c := f.read(1 << 20):
                while c:
                    n += len(d.decompress(c, 1 << 24)); c = d.unconsumed_tail
        out = None
    elif mode == "ours":
        out = read_betas(path, mask)
    elif mode == "naive_fdata":
        data = nib.load(path).get_fdata()                       # float64 (X, Y, Z, T)
        out = data.reshape(-1, data.shape[-1])[mask.ravel()].T  # C-order mask, (T, nvox)
    elif mode == "nibabel_int16":
        data = np.asarray(nib.load(path).dataobj)
        out = data.reshape(-1, data.shape[-1])[mask.ravel()].T
    dt = time.perf_counter() - t0
    res = dict(mode=mode, seconds=round(dt, 3), peak_rss_mb=round(_rss_mb(), 1), rss_after_imports_mb=round(rss0, 1))
    if out is not None:
        res.update(shape=list(out.shape), dtype=str(out.dtype), checksum=float(np.asarray(out, np.float64).sum()))
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="81,104,83,750")
    ap.add_argument("--nvox", type=int, default=15724)
    ap.add_argument("--modes", default="decompress,ours,nibabel_int16,naive_fdata")
    ap.add_argument("--dir", default=None, help="where to write the synthetic file (default: a temp dir)")
    ap.add_argument("--worker", default=None); ap.add_argument("--file"); ap.add_argument("--mask")
    a = ap.parse_args()
    if a.worker: return worker(a.worker, a.file, a.mask)
    shape = tuple(int(s) for s in a.shape.split(","))
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        f, m = Path(tmp)/"betas_session01.nii.gz", Path(tmp)/"mask.npy"
        t0 = time.perf_counter(); mask = make_session(f, shape, a.nvox); t_make = time.perf_counter() - t0
        np.save(m, mask); file_mb = round(f.stat().st_size/2**20, 1)
        print(f"wrote {f} ({f.stat().st_size/2**20:.0f} MB) in {t_make:.0f} s; {mask.sum()} voxels", file=sys.stderr)
        res = {}
        for mode in a.modes.split(","):
            open(f, "rb").read(1)  # noqa: same page-cache state for all (the file was just written)
            p = subprocess.run([sys.executable, __file__, "--worker", mode, "--file", str(f), "--mask", str(m)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                res[mode] = dict(error=p.stderr.strip().splitlines()[-1:] or [f"exit {p.returncode}"], returncode=p.returncode)
            else: res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
            print(mode, res[mode], file=sys.stderr)
    out = dict(bench="preprocess_session", shape=list(shape), nvox=int(mask.sum()),
               file_mb=file_mb, results=res)
    if "ours" in res and "seconds" in res["ours"]:
        ours = res["ours"]
        if "decompress" in res and "seconds" in res["decompress"]:
            out["time_ratio_vs_decompress"] = round(ours["seconds"]/res["decompress"]["seconds"], 3)
        out["targets"] = dict(peak_rss_lt_1500mb=ours["peak_rss_mb"] < 1500,
                              time_within_1p5x_decompress=out.get("time_ratio_vs_decompress", 9) <= 1.5)
        ref = [r for k, r in res.items() if k != "ours" and "checksum" in r]
        out["same_values_as_nibabel"] = all(abs(r["checksum"] - ours["checksum"]) < 1e-6*max(1, abs(r["checksum"])) and
                                            r["shape"] == ours["shape"] for r in ref)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
