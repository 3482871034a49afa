"""``alkit select``: DIRECT sampling of a feature matrix (rows = structures)."""
from __future__ import annotations

import argparse


def _n_components(text: str):
    if text == "kaiser":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'kaiser', an integer or a fraction, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser(
        "select",
        help="DIRECT sampling: PCA (Kaiser) -> weighted PCs -> n clusters -> k rows per cluster",
        description="Select a stratified subset of a feature matrix (.npy, rows = structures) with DIRECT.",
    )
    p.add_argument("features", help="feature matrix, .npy of shape (n_structures, n_features)")
    p.add_argument("--clusters", "-n", type=int, required=True, help="number of clusters n")
    p.add_argument("--per-cluster", "-k", type=int, default=1, help="rows taken per cluster (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--clustering", choices=("birch", "minibatch_kmeans"), default="birch")
    p.add_argument("--n-components", type=_n_components, default="kaiser",
                   help="'kaiser' (default), a number of PCs, or a variance fraction in (0, 1]")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="repeat members of clusters smaller than k to get exactly k per cluster")
    p.add_argument("--bins", type=int, default=100, help="bins per PC for the coverage score (default 100)")
    p.add_argument("--out", required=True, help="JSON file for the selected row indices")
    p.add_argument("--sampler-out", default=None,
                   help="fitted sampler file (joblib; default: next to --out as <stem>.sampler.joblib)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from alkit.direct import DIRECTSampler, coverage_score
    from alkit.errors import InputError

    path = Path(args.features)
    if not path.is_file():
        raise InputError(f"features file not found: {path}")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read features file {path} (expected a .npy array): {exc}") from exc

    from alkit._util import check_writable

    out = check_writable(args.out, "selection file")
    sampler_out = check_writable(Path(args.sampler_out) if args.sampler_out else
                                 out.with_name(out.stem + ".sampler.joblib"), "sampler file")
    sampler = DIRECTSampler(
        n_clusters=args.clusters, k=args.per_cluster, n_components=args.n_components,
        clustering=args.clustering, allow_duplicates=args.allow_duplicates, random_state=args.seed,
    ).fit(X)
    Z = sampler.transform(X)
    sel = sampler.selected_indices_
    cov = coverage_score(Z, Z[sel], args.bins)
    sizes = sampler.cluster_sizes_
    cum = float(np.sum(sampler.explained_variance_ratio_))

    print(f"pool: {X.shape[0]} rows x {X.shape[1]} features ({path})")
    print(f"PCs kept: {sampler.n_components_} ({args.n_components}); cumulative explained variance {100 * cum:.1f}%")
    print("PC weights (explained variance ratio): " + " ".join(f"{w:.4f}" for w in sampler.weights_))
    print(
        f"clusters: {len(sizes)}; size min {int(sizes.min())} / median {float(np.median(sizes)):g} / "
        f"max {int(sizes.max())}; empty {int(np.sum(sizes == 0))}; smaller than k: {sampler.n_short_clusters_}"
    )
    print(f"selected: {len(sel)} rows ({args.per_cluster} per cluster)")
    print(f"coverage score per PC ({args.bins} bins): " + " ".join(f"PC{i + 1}={c:.3f}" for i, c in enumerate(cov))
          + f"; mean {cov.mean():.3f}")

    sampler.save(sampler_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "indices": [int(i) for i in sel],
        "features": str(path),
        "n_rows": int(X.shape[0]),
        "n_clusters": int(args.clusters),
        "per_cluster": int(args.per_cluster),
        "seed": int(args.seed),
        "clustering": args.clustering,
        "allow_duplicates": bool(args.allow_duplicates),
        "n_components": int(sampler.n_components_),
        "explained_variance_ratio": [float(v) for v in sampler.explained_variance_ratio_],
        "cumulative_explained_variance": cum,
        "cluster_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
                          "empty": int(np.sum(sizes == 0))},
        "coverage_bins": int(args.bins),
        "coverage": [float(c) for c in cov],
        "sampler": str(sampler_out),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} and {sampler_out}")
    return 0
