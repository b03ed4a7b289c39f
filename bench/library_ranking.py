"""Library ranking: `secondsight.search.rank_library` (one matrix product on standardized rows) against the
reference's per-query repeat-and-correlate (Second-Sight `src/library_assembler.py::rankCoco`: for each query and
repetition, repeat the query L times and compute a row-wise Pearson r with torchmetrics' `PearsonCorrCoef`
formula against the transposed library chunk).

Each phase runs in its own subprocess so that its peak memory (ru_maxrss) is its own:

1. `compare`: a library of `--lib` x `--nvox` float32 beta primes (default 21,000 x 15,724, the reference's chunk)
   and `--queries` nested test queries (3 repetitions, some missing). The reference is timed on `--ref-queries`
   queries only (it takes seconds per query) and its time *per query* is extrapolated; the matrix product ranks all
   queries in one call. Both rankings are checked to agree (top-100 indices and scores).
2. `big`: `--queries` queries (default 982, the SS test set) against a `--big-lib` x `--nvox` float16 library
   memory-mapped from disk (default 63,000 x 15,724, every image subject 1 never saw), as the runner does; the
   library file is written beforehand by another process (`write`), so the peak RSS is the ranking's own (it
   includes the library pages mapped while reading).

Run: `python bench/library_ranking.py` (full size: ~10 GB RAM and ~2 GB of temporary disk; a few minutes on
2 cores) or `--quick` for a small smoke run. Ends by printing ONE JSON line of the figures.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch


def reference_rank(query, library, top_k=100):
    "Second Sight's rankCoco for one nested query (reps, nvox) against one library chunk (L, nvox)."
    L = library.shape[0]
    scores, div = torch.zeros(L), 0
    preds_t = library.moveaxis(0, 1)                            # (nvox, L), as `x_preds_batch.moveaxis(0, 1)`
    for rep in range(query.shape[0]):
        x = query[rep]
        if torch.count_nonzero(x) > 0:
            x_dup = x.repeat(L, 1).moveaxis(0, 1)               # (nvox, L): the query repeated L times
            # torchmetrics PearsonCorrCoef(num_outputs=L) on (x_dup, preds_t): one update + compute
            mx, my = x_dup.mean(0), preds_t.mean(0)
            var_x = ((x_dup - mx) ** 2).sum(0)
            var_y = ((preds_t - my) ** 2).sum(0)
            corr = ((x_dup - mx) * (preds_t - my)).sum(0)
            scores += corr / (var_x * var_y).sqrt()
        div += 1                                                # the reference divides by every rep, also empty ones
    scores /= div
    return torch.topk(scores, top_k)


def make_queries(n, nvox, seed=0):
    "Nested (n, 3, nvox) float32 queries; every 5th query misses its third repetition (all-zero row)."
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 3, nvox, generator=g)
    q[::5, 2] = 0
    return q


def phase_compare(a):
    from secondsight.search import rank_library
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(1)
    lib = torch.randn(a.lib, a.nvox, generator=g)                  # float32 (L, nvox)
    queries = make_queries(a.queries, a.nvox)
    # reference on a few queries (full reps); the reference's per-rep division counts missing reps too, so compare
    # on queries with all 3 repetitions (rows 1.., every 5th query misses one)
    ref_ids = [i for i in range(a.queries) if i % 5][:a.ref_queries]
    t = time.perf_counter()
    ref = [reference_rank(queries[i], lib) for i in ref_ids]
    ref_s = (time.perf_counter() - t) / len(ref_ids)
    t = time.perf_counter()
    scores, idx = rank_library(queries, lib, top_k=100)
    ours_s = time.perf_counter() - t
    agree = all(torch.equal(r.indices, idx[i]) and torch.allclose(r.values, scores[i], atol=1e-4) for r, i in zip(ref, ref_ids))
    return dict(lib=a.lib, nvox=a.nvox, ref_queries_timed=len(ref_ids), ref_s_per_query=ref_s, matmul_queries=a.queries,
                matmul_total_s=ours_s, matmul_s_per_query=ours_s / a.queries, speedup=ref_s / (ours_s / a.queries),
                agree_top100=bool(agree), peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def phase_write(a):
    "Write the float16 library to --lib-path in chunks (as library_beta_primes caches it)."
    mm = np.lib.format.open_memmap(a.lib_path, mode='w+', dtype=np.float16, shape=(a.big_lib, a.nvox))
    g = torch.Generator().manual_seed(2)
    for s in range(0, a.big_lib, 4096):
        mm[s:s + 4096] = torch.randn(min(4096, a.big_lib - s), a.nvox, generator=g).half().numpy()
    mm.flush()
    return dict(library_gb_on_disk=a.big_lib * a.nvox * 2 / 2**30)


def phase_big(a):
    "Rank the queries against the memory-mapped library (a fresh process: its peak RSS is the ranking's)."
    from secondsight.search import rank_library
    torch.set_num_threads(a.threads)
    queries = make_queries(a.queries, a.nvox, seed=3)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    primes = np.load(a.lib_path, mmap_mode='r')
    t = time.perf_counter()
    scores, idx = rank_library(queries, primes, top_k=100)
    s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(big_lib=a.big_lib, nvox=a.nvox, queries=a.queries, big_s=s, big_s_per_query=s / a.queries,
                peak_rss_gb=peak, peak_rss_before_ranking_gb=base, library_gb_on_disk=a.big_lib * a.nvox * 2 / 2**30)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--nvox', type=int, default=15724)
    p.add_argument('--lib', type=int, default=21000)
    p.add_argument('--big-lib', type=int, default=63000)
    p.add_argument('--queries', type=int, default=982)
    p.add_argument('--ref-queries', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--tmp', default=None, help='folder for the temporary float16 library (default: system temp)')
    p.add_argument('--quick', action='store_true', help='small sizes (smoke test)')
    p.add_argument('--phase', choices=['compare', 'write', 'big'], help=argparse.SUPPRESS)
    p.add_argument('--lib-path', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick: a.nvox, a.lib, a.big_lib, a.queries, a.ref_queries = 2000, 3000, 9000, 60, 2
    if a.phase:
        print(json.dumps(dict(compare=phase_compare, write=phase_write, big=phase_big)[a.phase](a)))
        return
    out = dict(bench='library_ranking', threads=a.threads, torch=torch.__version__)
    args = sys.argv[1:]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory(dir=a.tmp) as d:
        for ph in ('compare', 'write', 'big'):
            r = subprocess.run([sys.executable, __file__, *args, '--phase', ph, '--lib-path', str(Path(d) / 'primes.npy')],
                               capture_output=True, text=True, env=env)
            if r.returncode: sys.exit(f"phase {ph} failed:\n{r.stderr[-3000:]}")
            out[ph] = json.loads(r.stdout.strip().splitlines()[-1])
    c, b = out['compare'], out['big']
    print(f"reference: {c['ref_s_per_query']:.3f} s/query (timed on {c['ref_queries_timed']} queries, extrapolated per query); "
          f"matrix product: {c['matmul_s_per_query'] * 1e3:.2f} ms/query ({c['matmul_queries']} queries in one call) "
          f"at {c['lib']} x {c['nvox']}: {c['speedup']:.0f}x faster, same top-100: {c['agree_top100']}", file=sys.stderr)
    print(f"{b['queries']} queries vs {b['big_lib']} x {b['nvox']} float16 memmap: {b['big_s']:.1f} s on {a.threads} threads, "
          f"peak RSS {b['peak_rss_gb']:.2f} GB", file=sys.stderr)
    out.update(speedup=c['speedup'], big_ranking_s=b['big_s'], big_ranking_shape=[b['queries'], b['big_lib'], b['nvox']],
               peak_rss_gb=b['peak_rss_gb'],
               note='reference timed on a few queries and extrapolated per query')
    print(json.dumps(out))


if __name__ == '__main__':
    main()
