"""Benchmark: alkit's DIRECTSampler against maml's (the reference implementation), side by side.

Synthetic but realistic features: a heavy-tailed (Student-t) Gaussian mixture with Zipf-like component weights in a
14-D latent space, mapped linearly to 128 correlated features (half squashed by tanh) plus noise, so that the
Kaiser rule keeps ~14 PCs with ~84% of the variance, like M3GNet readouts of an MD pool. N = 10k, 100k, 1.3M;
n = N / 65 (the paper: 20,044 clusters for 1.3M structures); k = 1, and k = 20 at the largest N.

Every case runs in its own subprocess under an address-space rlimit (``--mem-gb``, default 8) and a timeout;
a case that runs out of memory or time is reported as such. Figures: wall time of the sampler (features already
loaded), peak RSS of the process, number selected, and the feature coverage score (mean and minimum over PCs,
``--bins`` bins, computed by the parent in one shared PC space).

    nice -n 10 python bench/bench_direct.py                      # all sizes
    python bench/bench_direct.py --sizes 10000 100000 --maml-timeout 600

``maml`` rows use maml's defaults (``threshold_init=0.5``) as a user gets them; ``maml-tuned`` rows give maml a
hand-picked ``threshold_init`` (``--maml-tuned N=T``) with which its first BIRCH pass already yields >= n
subclusters, i.e. the most favourable setting for maml (found by probing; a user does not have it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM, LATENT, N_COMPONENTS = 128, 14, 60


def make_features(n_rows: int, seed: int = 0, chunk: int = 200_000) -> np.ndarray:
    """Heavy-tailed correlated Gaussian mixture in 128-D (see module docstring), float32, deterministic."""
    rng = np.random.default_rng(seed)
    scales = 1.0 / np.sqrt(np.arange(1, LATENT + 1))  # decaying latent scales -> decaying PC spectrum
    centers = rng.standard_t(3, size=(N_COMPONENTS, LATENT)) * scales * 2.0
    covs = np.stack([
        np.linalg.qr(rng.normal(size=(LATENT, LATENT)))[0] * (scales * rng.uniform(0.2, 0.8, LATENT))
        for _ in range(N_COMPONENTS)
    ])
    weights = 1.0 / np.arange(1, N_COMPONENTS + 1) ** 1.1  # a few phases dominate the pool
    weights /= weights.sum()
    mixing = rng.normal(size=(LATENT, DIM)) / np.sqrt(LATENT)
    out = np.empty((n_rows, DIM), np.float32)
    for start in range(0, n_rows, chunk):
        m = min(chunk, n_rows - start)
        comp = rng.choice(N_COMPONENTS, size=m, p=weights)
        z = rng.standard_t(4, size=(m, LATENT))  # heavy tails
        lat = centers[comp] + np.einsum("ij,ijk->ik", z, covs[comp])
        x = lat @ mixing
        x[:, : DIM // 2] = np.tanh(x[:, : DIM // 2])
        x += 0.35 * rng.normal(size=(m, DIM))
        out[start : start + m] = x
    return out


# ------------------------------------------------------------------------------------------------- worker
def worker(args) -> None:
    """One case in this process: load features, run the sampler, write a JSON result (and the selection)."""
    limit = int(args.mem_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = {"status": "ok"}
    t0 = None
    try:
        X = np.load(args.features, mmap_mode="r")
        if args.worker == "alkit":
            from alkit.direct import DIRECTSampler

            X = np.asarray(X)
            t0 = time.perf_counter()
            s = DIRECTSampler(n_clusters=args.n, k=args.k, random_state=0).fit(X)
            result["elapsed"] = time.perf_counter() - t0
            sel = s.selected_indices_
            result.update(n_pcs=int(s.n_components_), timings=s.timings_, n_subclusters=s.n_subclusters_,
                          threshold=s.birch_threshold_, n_clusters_formed=int(np.sum(s.cluster_sizes_ > 0)))
            if args.pcs_out:
                np.save(args.pcs_out, s.transform(X))
        else:
            import logging
            import warnings

            warnings.filterwarnings("ignore")
            logging.disable(logging.INFO)
            from maml.sampling.direct import BirchClustering, DIRECTSampler, SelectKFromClusters

            X = np.asarray(X)
            t0 = time.perf_counter()
            birch = BirchClustering(n=args.n, threshold_init=args.threshold)
            ds = DIRECTSampler(structure_encoder=False, clustering=birch,
                               select_k_from_clusters=SelectKFromClusters(k=args.k))
            res = ds.fit_transform(X)
            result["elapsed"] = time.perf_counter() - t0
            sel = np.asarray(res["selected_indexes"])
            result.update(n_pcs=int(res["PCAfeatures"].shape[1]), threshold=birch.threshold_init,
                          n_subclusters=len(birch.model.subcluster_centers_),
                          n_clusters_formed=len(set(birch.model.labels_.tolist())))
        np.save(args.selected_out, np.asarray(sel, dtype=np.int64))
        result["n_selected"] = int(len(sel))
    except MemoryError:
        result["status"] = "out of memory"
        result["elapsed"] = time.perf_counter() - t0 if t0 else None
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    Path(args.result).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------- parent
def run_case(impl, features, n, k, workdir, mem_gb, timeout, threshold=0.5, pcs_out=None, label=None) -> dict:
    tag = f"{label or impl}-{Path(features).stem}-n{n}-k{k}"
    res_path, sel_path = workdir / f"{tag}.json", workdir / f"{tag}.sel.npy"
    res_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", impl, "--features", str(features), "--n", str(n), "--k", str(k),
           "--mem-gb", str(mem_gb), "--threshold", str(threshold), "--result", str(res_path),
           "--selected-out", str(sel_path)] + (["--pcs-out", str(pcs_out)] if pcs_out else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": f"timeout ({timeout:.0f} s)", "elapsed": None, "wall": time.perf_counter() - t0}
    if not res_path.exists():
        tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        oom = any("MemoryError" in line or "bad_alloc" in line or "Cannot allocate" in line for line in tail)
        return {"status": "out of memory" if oom else f"crashed (rc {proc.returncode}): {' '.join(tail)[:120]}",
                "elapsed": None, "wall": time.perf_counter() - t0}
    result = json.loads(res_path.read_text())
    result["wall"] = time.perf_counter() - t0
    if result["status"] == "ok":
        result["selected"] = np.load(sel_path)
    return result


def coverage(Z, sel, bins):
    from alkit.direct import coverage_score

    cov = coverage_score(Z, Z[np.unique(sel)], bins)
    return float(cov.mean()), float(cov.min())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_300_000])
    ap.add_argument("--k-large", type=int, default=20, help="extra k for the largest size (default 20)")
    ap.add_argument("--mem-gb", type=float, default=8.0, help="address-space limit per case (GB)")
    ap.add_argument("--alkit-timeout", type=float, default=1800.0)
    ap.add_argument("--maml-timeout", type=float, default=1200.0)
    ap.add_argument("--maml-tuned", nargs="*", default=["10000=0.3", "100000=0.2", "1300000=0.15"],
                    help="N=T: also run maml with threshold_init T at size N ('' to skip)")
    ap.add_argument("--skip-maml", action="store_true")
    ap.add_argument("--bins", type=int, default=100)
    ap.add_argument("--data-dir", default="/tmp/alkit-bench-direct")
    ap.add_argument("--json-out", default=None, help="also write all results as JSON")
    # worker mode (internal)
    ap.add_argument("--worker", choices=("alkit", "maml"), help=argparse.SUPPRESS)
    ap.add_argument("--features", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=float, default=0.5, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--selected-out", help=argparse.SUPPRESS)
    ap.add_argument("--pcs-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    tuned = dict(item.split("=") for item in args.maml_tuned if item)
    workdir = Path(args.data_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    header = (f"{'N':>9} {'n':>6} {'k':>3} {'impl':<11} {'status':<16} {'time s':>8} {'peak RSS GB':>11} "
              f"{'selected':>8} {'cov mean':>8} {'cov min':>7}  notes")
    print(header, flush=True)
    for N in args.sizes:
        feats = workdir / f"features_{N}.npy"
        if not feats.exists():
            t = time.perf_counter()
            np.save(feats, make_features(N))
            print(f"# generated {feats} ({N} x {DIM}) in {time.perf_counter() - t:.0f} s", flush=True)
        n = max(1, round(N / 65))
        ks = [1] + ([args.k_large] if N == max(args.sizes) and args.k_large > 1 else [])
        pcs_path = workdir / f"pcs_{N}.npy"
        Z = None
        for k in ks:
            cases = [("alkit", 0.5)]
            if not args.skip_maml:
                cases.append(("maml", 0.5))
                if str(N) in tuned:
                    cases.append(("maml-tuned", float(tuned[str(N)])))
            for impl, thr in cases:
                earlier = [r for r in rows if r["N"] == N and r["impl"] == impl and r["k"] == 1]
                if k > 1 and impl != "alkit" and earlier and earlier[0]["status"] != "ok":
                    r = {"status": "not run", "elapsed": None, "notes": "same clustering as k=1, which failed"}
                else:
                    r = run_case("alkit" if impl == "alkit" else "maml", feats, n, k, workdir, args.mem_gb,
                                 args.alkit_timeout if impl == "alkit" else args.maml_timeout, threshold=thr,
                                 pcs_out=pcs_path if impl == "alkit" and k == 1 else None, label=impl)
                    if impl == "alkit" and k == 1 and r["status"] == "ok":
                        Z = np.load(pcs_path)
                r.update(N=N, n=n, k=k, impl=impl)
                notes = r.get("notes", "")
                if r["status"] == "ok":
                    sel = r.pop("selected")
                    r["cov_mean"], r["cov_min"] = coverage(Z, sel, args.bins) if Z is not None else (None, None)
                    notes = (f"threshold {r['threshold']:.3g}, {r['n_subclusters']} subclusters, "
                             f"{r['n_clusters_formed']} clusters, {r['n_pcs']} PCs") if r.get("threshold") else \
                        f"{r.get('n_subclusters')} subclusters, {r['n_clusters_formed']} clusters, {r['n_pcs']} PCs"
                    if impl == "maml-tuned":
                        notes += f" (threshold_init {thr})"
                elif r["status"] != "not run":
                    notes = f"gave up after {r['wall']:.0f} s" + (f" (threshold_init {thr})" if impl != "alkit" else "")
                r["notes"] = notes
                rows.append(r)
                fmt = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"  # noqa: E731
                print(f"{N:>9} {n:>6} {k:>3} {impl:<11} {r['status']:<16.16} {fmt(r.get('elapsed'), '8.1f'):>8} "
                      f"{fmt(r.get('peak_rss_gb'), '11.2f'):>11} {fmt(r.get('n_selected'), 'd'):>8} "
                      f"{fmt(r.get('cov_mean'), '8.4f'):>8} {fmt(r.get('cov_min'), '7.3f'):>7}  {notes}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
