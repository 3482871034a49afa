"""DIRECT sampler: the paper's steps, the maml defects alkit must not have, re-selection, files, CLI, bad input."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from alkit.direct import DIRECTSampler, coverage_score
from alkit.errors import AlkitError, ConfigError, InputError


def make_features(n_rows: int, seed: int = 0, dim: int = 128, latent: int = 12) -> np.ndarray:
    """M3GNet-like synthetic features: heavy-tailed Gaussian mixture in a low-dimensional latent space, mapped
    to ``dim`` correlated features (half squashed by tanh) plus noise, so Kaiser keeps ~``latent`` PCs."""
    rng = np.random.default_rng(seed)
    scales = 1.0 / np.sqrt(np.arange(1, latent + 1))
    n_comp = 30
    centers = rng.standard_t(3, size=(n_comp, latent)) * scales * 2.0
    mix = np.stack([np.linalg.qr(rng.normal(size=(latent, latent)))[0] * (scales * rng.uniform(0.2, 0.8, latent))
                    for _ in range(n_comp)])
    w = 1.0 / np.arange(1, n_comp + 1) ** 1.1
    comp = rng.choice(n_comp, size=n_rows, p=w / w.sum())
    lat = centers[comp] + np.einsum("ij,ijk->ik", rng.standard_t(4, size=(n_rows, latent)), mix[comp])
    x = lat @ (rng.normal(size=(latent, dim)) / np.sqrt(latent))
    x[:, : dim // 2] = np.tanh(x[:, : dim // 2])
    return (x + 0.35 * rng.normal(size=(n_rows, dim))).astype(np.float32)


def true_means(Z, labels, n):
    return np.array([Z[labels == c].mean(axis=0) for c in range(n)])


def expected_selection(Z, labels, centers, n, k, allow_duplicates):
    """The paper's rule written plainly: per cluster (id order) sort members by distance to the centre (ties by
    row index), take floor(j (s-1)/(k-1)), j=0..k-1; clusters smaller than k give all members or repeat them."""
    out = []
    for c in range(n):
        members = np.flatnonzero(labels == c)
        d = ((Z[members] - centers[c]) ** 2).sum(axis=1).astype(np.float32)  # equal to 7 digits = tie
        ranked = [m for _, m in sorted(zip(d.tolist(), members.tolist()))]
        s = len(ranked)
        if s < k and not allow_duplicates:
            out.extend(ranked)
        elif k == 1:
            out.append(ranked[0])
        else:
            out.extend(ranked[(j * (s - 1)) // (k - 1)] for j in range(k))
    return np.array(out)


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pool():
    return make_features(3000, seed=1)


@pytest.fixture(scope="module")
def fitted(pool):
    return DIRECTSampler(n_clusters=60, k=1, random_state=0).fit(pool)


@pytest.fixture(scope="module")
def versus_maml():
    """alkit and maml (its own default settings, threshold_init=0.5) on the same 20k x 128 features, n = 300
    (N / n ~ 65 as in the paper). maml is run step by step so its intermediate results can be inspected."""
    logging.getLogger("maml").setLevel(logging.WARNING)
    from maml.sampling.clustering import BirchClustering
    from maml.sampling.pca import PrincipalComponentAnalysis
    from maml.sampling.stratified_sampling import SelectKFromClusters
    from sklearn.preprocessing import StandardScaler

    X = make_features(20_000, seed=7)
    n = 300
    tracemalloc.start()
    tracemalloc.reset_peak()
    alkit = DIRECTSampler(n_clusters=n, k=1, random_state=0).fit(X)
    alkit_peak = tracemalloc.get_traced_memory()[1]

    tracemalloc.reset_peak()
    scaled = StandardScaler().fit_transform(X)
    pca = PrincipalComponentAnalysis(weighting_PCs=True).fit(scaled)
    P = pca.transform(scaled)
    birch = BirchClustering(n=n, threshold_init=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clustered = birch.transform(P)
    selected = SelectKFromClusters(k=1).transform(clustered)["selected_indexes"]
    maml_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dict(X=X, n=n, alkit=alkit, alkit_peak=alkit_peak, maml_peak=maml_peak, maml_pca=pca.pca, P=P,
                birch=birch, clustered=clustered, maml_selected=np.asarray(selected))


# ------------------------------------------------------------------------------------------------- the method
def test_fit_follows_the_paper(pool, fitted):
    s = fitted
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(pool.astype(np.float64))
    ref = PCA().fit(scaled)
    m = int(np.sum(ref.explained_variance_ > 1.0))
    assert 5 <= m <= 20 and s.n_components_ == m  # Kaiser: eigenvalue > 1 of the standardised features
    np.testing.assert_allclose(s.explained_variance_, ref.explained_variance_[:m], rtol=1e-6)
    np.testing.assert_allclose(s.weights_, ref.explained_variance_ratio_[:m], rtol=1e-6)
    Z = s.transform(pool)
    np.testing.assert_allclose(np.abs(Z), np.abs(ref.transform(scaled)[:, :m] * s.weights_), atol=1e-8)
    # exactly n non-empty clusters; centres are the TRUE member means
    assert sorted(set(s.labels_.tolist())) == list(range(60))
    assert s.cluster_sizes_.sum() == len(pool) and s.cluster_sizes_.min() >= 1
    np.testing.assert_allclose(s.cluster_centers_, true_means(Z, s.labels_, 60), atol=1e-10)
    # k = 1: the member nearest the true centroid of each cluster, clusters in id order
    np.testing.assert_array_equal(s.selected_indices_, expected_selection(Z, s.labels_, s.cluster_centers_, 60, 1, False))
    # new rows land in the fitted PC space and clusters; pool rows keep their labels
    np.testing.assert_array_equal(s.predict(pool), s.labels_)
    assert s.n_features_in_ == 128 and s.n_refilled_ >= 0


def test_k_greater_than_one_takes_constant_rank_intervals(pool):
    s = DIRECTSampler(n_clusters=40, k=5, random_state=3).fit(pool)
    Z = s.transform(pool)
    want = expected_selection(Z, s.labels_, s.cluster_centers_, 40, 5, False)
    np.testing.assert_array_equal(s.selected_indices_, want)
    assert len(set(s.selected_indices_.tolist())) == len(s.selected_indices_)
    # the rule spreads picks from the centre to the edge of each cluster
    big = int(np.argmax(s.cluster_sizes_))
    picks = s.selected_indices_[np.isin(s.selected_indices_, np.flatnonzero(s.labels_ == big))]
    d = ((Z[picks] - s.cluster_centers_[big]) ** 2).sum(axis=1)
    d_all = ((Z[s.labels_ == big] - s.cluster_centers_[big]) ** 2).sum(axis=1)
    assert np.all(np.diff(d) >= 0) and d[0] == d_all.min() and d[-1] == d_all.max()


@pytest.mark.parametrize("n_components, expect", [(4, 4), (0.5, None)])
def test_other_pc_rules(pool, n_components, expect):
    s = DIRECTSampler(n_clusters=20, n_components=n_components).fit(pool)
    ratio = s.pca_.explained_variance_ratio_
    if expect is None:  # fewest PCs reaching the variance fraction
        expect = int(np.argmax(np.cumsum(ratio) >= 0.5)) + 1
    assert s.n_components_ == expect and s.transform(pool[:3]).shape == (3, expect)


def test_minibatch_kmeans_option(pool):
    a = DIRECTSampler(n_clusters=50, clustering="minibatch_kmeans", random_state=5).fit(pool)
    b = DIRECTSampler(n_clusters=50, clustering="minibatch_kmeans", random_state=5).fit(pool)
    assert sorted(set(a.labels_.tolist())) == list(range(50))
    np.testing.assert_array_equal(a.selected_indices_, b.selected_indices_)
    Z = a.transform(pool)
    np.testing.assert_allclose(a.cluster_centers_, true_means(Z, a.labels_, 50), atol=1e-10)


def test_estimator_contract(pool):
    s = DIRECTSampler(n_clusters=-3, k=0, clustering="nope")  # no validation or work in __init__
    assert s.get_params()["n_clusters"] == -3
    c = clone(DIRECTSampler(n_clusters=7, k=2, random_state=11))
    assert c.get_params()["k"] == 2 and not hasattr(c, "labels_")
    assert c.set_params(n_clusters=9).fit(pool).cluster_sizes_.shape == (9,)


# ------------------------------------------------------------------------------------------------- vs maml
def test_same_pcs_and_weights_as_maml_and_coverage_at_least_as_good(versus_maml):
    v = versus_maml
    s, P = v["alkit"], v["P"]
    m = P.shape[1]
    assert s.n_components_ == m
    np.testing.assert_allclose(s.weights_, v["maml_pca"].explained_variance_ratio_[:m], rtol=1e-6)
    Z = s.transform(v["X"])
    np.testing.assert_allclose(np.abs(Z), np.abs(P), atol=1e-5)  # maml stays in float32
    cov_alkit = coverage_score(Z, Z[s.selected_indices_], 100)
    cov_maml = coverage_score(P, P[v["maml_selected"]], 100)
    assert len(s.selected_indices_) == v["n"]
    assert cov_alkit.mean() >= cov_maml.mean(), (cov_alkit.mean(), cov_maml.mean())


def test_maml_centre_is_one_leaf_subcluster_alkit_uses_the_true_mean(versus_maml):
    v = versus_maml
    P, labels, centres = v["P"], v["clustered"]["labels"], v["clustered"]["label_centers"]
    counts = np.bincount(labels)
    multi = [c for c in centres if counts[c] > 5]
    off = [np.linalg.norm(centres[c] - P[labels == c].mean(axis=0)) for c in multi]
    spread = np.sqrt(((P - P.mean(axis=0)) ** 2).sum(axis=1).mean())
    assert np.median(off) > 1e-3 * spread  # maml's "centre" is not its cluster's mean
    s = v["alkit"]
    Z = s.transform(v["X"])
    np.testing.assert_allclose(s.cluster_centers_, true_means(Z, s.labels_, v["n"]), atol=1e-10)


def test_maml_threshold_loop_mutates_and_overshoots_alkit_does_not(versus_maml):
    v = versus_maml
    birch, n = v["birch"], v["n"]
    assert birch.threshold_init != 0.5  # maml rewrote its own constructor parameter
    assert len(birch.model.subcluster_centers_) > 20 * n  # and overshot to far more subclusters than needed
    s = DIRECTSampler(n_clusters=n, birch_threshold=None)
    s.fit(v["X"][:5000])
    assert s.get_params()["birch_threshold"] is None and s.birch_threshold_ > 0  # fitted value kept apart
    assert v["alkit"].n_subclusters_ <= 10 * n
    fixed = DIRECTSampler(n_clusters=30, birch_threshold=0.2).fit(v["X"][:5000])
    assert fixed.birch_threshold == 0.2 and fixed.get_params()["birch_threshold"] == 0.2


def test_no_quadratic_memory(versus_maml):
    v = versus_maml
    m_maml = len(v["birch"].model.subcluster_centers_)
    # maml's final Ward step holds the condensed m x m distance matrix; alkit stays linear
    assert v["maml_peak"] > 8 * m_maml * (m_maml - 1) / 2
    assert v["alkit_peak"] < v["maml_peak"] / 10
    assert v["alkit_peak"] < 12 * v["X"].nbytes  # a few copies of the float32 input, no n^2 or m^2 term


def test_fewer_distinct_points_than_clusters_fails_fast_not_forever():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 6))
    X = np.repeat(base, 30, axis=0)
    with pytest.raises(InputError, match="distinct"):
        DIRECTSampler(n_clusters=11).fit(X)
    s = DIRECTSampler(n_clusters=10, k=2).fit(X)  # exactly as many clusters as distinct points works
    assert len(s.selected_indices_) == 20
    assert len({tuple(r) for r in s.transform(X[s.selected_indices_[::2]]).round(9)}) == 10
    # maml on 10 distinct points and n = 20: its loop shrinks the threshold for ~1000 BIRCH refits and either
    # runs past the timeout or dies with an error about the threshold, never naming the real problem.
    code = textwrap.dedent(
        """
        import logging, warnings, numpy as np
        warnings.filterwarnings("ignore"); logging.disable(logging.INFO)
        from maml.sampling.clustering import BirchClustering
        BirchClustering(n=20, threshold_init=0.5).transform(np.random.default_rng(0).normal(size=(10, 3)))
        print("FINISHED")
        """
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return
    assert "FINISHED" not in proc.stdout and "threshold" in proc.stderr and "distinct" not in proc.stderr


def test_k_larger_than_a_cluster(caplog):
    X = make_features(90, seed=2)
    with caplog.at_level(logging.WARNING, logger="alkit.direct"):
        s = DIRECTSampler(n_clusters=40, k=4).fit(X)
    sizes = s.cluster_sizes_
    assert s.n_short_clusters_ == int(np.sum(sizes < 4)) > 0
    assert len(s.selected_indices_) == int(np.minimum(sizes, 4).sum())  # all members of short clusters
    assert "fewer than k=4" in caplog.text  # said out loud, not silent
    d = DIRECTSampler(n_clusters=40, k=4, allow_duplicates=True).fit(X)
    assert len(d.selected_indices_) == 40 * 4  # exactly k per cluster, members repeated
    Z = d.transform(X)
    np.testing.assert_array_equal(d.selected_indices_, expected_selection(Z, d.labels_, d.cluster_centers_, 40, 4, True))
    # maml: a 3-member cluster with k=5 silently yields 3
    from maml.sampling.stratified_sampling import SelectKFromClusters

    P = np.random.default_rng(0).normal(size=(3, 2))
    got = SelectKFromClusters(k=5).transform({"labels": np.zeros(3, int), "PCAfeatures": P,
                                               "label_centers": {0: P.mean(axis=0)}})["selected_indexes"]
    assert len(got) == 3


def test_order_is_kept(pool):
    s = DIRECTSampler(n_clusters=30, k=3, allow_duplicates=True).fit(pool[:200])
    Z = s.transform(pool[:200])
    want = expected_selection(Z, s.labels_, s.cluster_centers_, 30, 3, True)
    np.testing.assert_array_equal(s.selected_indices_, want)  # cluster by cluster, rank order, repeats in place
    # maml deduplicates through set(), which forgets the centre-first rank order
    from maml.sampling.stratified_sampling import SelectKFromClusters

    P = np.array([[0.0], [10.0], [1.0], [0.1]])  # cluster 0 = rows 0, 3 (row 3 nearest its mean); 1 = 1, 2
    labels = np.array([0, 1, 1, 0])
    centres = {0: np.array([0.1]), 1: np.array([9.0])}
    got = SelectKFromClusters(k=3).transform({"labels": labels, "PCAfeatures": P, "label_centers": centres})
    rank_order = [3, 0, 1, 2]  # per cluster, nearest the centre first
    assert sorted(got["selected_indexes"]) == sorted(rank_order) and list(got["selected_indexes"]) != rank_order


def test_seeded_and_independent_of_global_random_state(pool):
    np.random.seed(1)
    state = np.random.get_state()[1].copy()
    a = DIRECTSampler(n_clusters=50, random_state=4).fit(pool)
    assert np.array_equal(np.random.get_state()[1], state)  # never touches the global generator
    np.random.seed(99)
    b = DIRECTSampler(n_clusters=50, random_state=4).fit(pool)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.selected_indices_, b.selected_indices_)
    c = DIRECTSampler(n_clusters=50, random_state=5).fit(pool)
    assert not np.array_equal(a.labels_, c.labels_)  # the seed is what decides
    # maml's random criterion draws from the unseeded global generator
    from maml.sampling.stratified_sampling import SelectKFromClusters

    P = np.random.default_rng(0).normal(size=(500, 2))
    data = {"labels": np.zeros(500, int), "PCAfeatures": P}
    draws = {tuple(SelectKFromClusters(k=3, selection_criteria="random").transform(data)["selected_indexes"])
             for _ in range(5)}
    assert len(draws) > 1


# ------------------------------------------------------------------------------------------------- re-selection
def test_select_spreads_a_budget_over_fitted_clusters(pool, fitted):
    s = fitted
    new = make_features(400, seed=11)
    labels = s.predict(new)
    occupied, counts = np.unique(labels, return_counts=True)
    Z = s.transform(new)

    picked = s.select(new, budget=len(occupied) * 2)
    assert len(picked) == len(set(picked.tolist())) == min(len(new), 2 * len(occupied))
    per = np.bincount(labels[picked], minlength=60)[occupied]
    assert per.max() - per[counts >= per.max()].min() <= 1  # water-filling: as even as the clusters allow
    np.testing.assert_array_equal(per, np.minimum(counts, per))

    # budget below the number of occupied clusters: one each for the most populated clusters
    few = s.select(new, budget=3)
    order = occupied[np.lexsort((occupied, -counts))][:3]
    np.testing.assert_array_equal(labels[few], order)
    for row, c in zip(few, order):  # the candidate nearest the fitted cluster's true centre
        members = np.flatnonzero(labels == c)
        d = ((Z[members] - s.cluster_centers_[c]) ** 2).sum(axis=1)
        assert row == members[np.argmin(d)]

    np.testing.assert_array_equal(np.sort(s.select(new, budget=10_000)), np.arange(len(new)))
    capped = s.select(new, budget=10_000, k=1)
    assert len(capped) == len(occupied) and set(labels[capped].tolist()) == set(occupied.tolist())
    assert len(s.select(new, budget=0)) == 0
    np.testing.assert_array_equal(s.select(new, budget=25), s.select(new, budget=25))


def test_save_and_load(tmp_path, pool, fitted):
    path = fitted.save(tmp_path / "sampler.joblib")
    again = DIRECTSampler.load(path)
    new = make_features(50, seed=12)
    np.testing.assert_array_equal(again.transform(new), fitted.transform(new))
    np.testing.assert_array_equal(again.predict(new), fitted.predict(new))
    np.testing.assert_array_equal(again.select(new, 7), fitted.select(new, 7))
    np.testing.assert_array_equal(again.selected_indices_, fitted.selected_indices_)
    (tmp_path / "junk.joblib").write_text("not a sampler")
    with pytest.raises(InputError, match="sampler"):
        DIRECTSampler.load(tmp_path / "junk.joblib")
    with pytest.raises(InputError, match="not found"):
        DIRECTSampler.load(tmp_path / "missing.joblib")


def test_coverage_score_definition():
    pool = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [9.0, 5.0], [10.0, 5.0]])
    # PC1: 5 bins over [0, 10] -> pool occupies bins 0, 1, 4 (bins 2, 3 are empty and do not count)
    sel = pool[[0, 4]]
    np.testing.assert_allclose(coverage_score(pool, sel, 5), [2 / 3, 1.0])
    np.testing.assert_allclose(coverage_score(pool, pool, 5), [1.0, 1.0])
    np.testing.assert_allclose(coverage_score(pool, pool[:0], 5), [0.0, 0.0])
    with pytest.raises(InputError, match="columns"):
        coverage_score(pool, np.zeros((1, 3)), 5)
    with pytest.raises(ConfigError, match="n_bins"):
        coverage_score(pool, sel, 0)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "X, params, error, words",
    [
        (np.zeros((0, 8)), {}, InputError, "empty"),
        (np.array([[1.0, np.nan], [2.0, 3.0], [0.0, 1.0]]), {"n_clusters": 2}, InputError, "NaN or inf in 1 row"),
        (np.array([[1.0, 2.0], [np.inf, 3.0], [0.0, 1.0]]), {"n_clusters": 2}, InputError, "first: row 1"),
        (np.ones((5, 3)), {"n_clusters": 6}, InputError, "larger than the number of rows"),
        (np.ones((5, 3)), {"n_clusters": 2}, InputError, "constant"),
        (np.repeat([[0.0, 1.0], [1.0, 0.0]], 3, axis=0), {"n_clusters": 3}, InputError, "distinct"),
        (np.random.default_rng(0).normal(size=(20, 3)), {"n_clusters": 2, "k": 0}, ConfigError, "k"),
        (np.random.default_rng(0).normal(size=(20, 3)), {"n_clusters": 0}, ConfigError, "n_clusters"),
        (np.random.default_rng(0).normal(size=(20, 3)), {"n_clusters": 2, "clustering": "ward"}, ConfigError, "clustering"),
        (np.random.default_rng(0).normal(size=(20, 3)), {"n_clusters": 2, "n_components": 1.5}, ConfigError, "fraction"),
        (np.random.default_rng(0).normal(size=(20, 3)), {"n_clusters": 2, "n_components": 9}, ConfigError, "exceeds"),
        (np.random.default_rng(0).normal(size=(20, 3)), {"n_clusters": 2, "birch_threshold": -1}, ConfigError, "birch_threshold"),
        (np.arange(10.0), {"n_clusters": 2}, InputError, "2-D"),
        ([["a", "b"], ["c", "d"]], {"n_clusters": 1}, InputError, "numeric"),
    ],
)
def test_bad_input_is_named(X, params, error, words):
    with pytest.raises(error, match=words):
        DIRECTSampler(**params).fit(X)


def test_feature_dimension_must_match(fitted):
    for call in (fitted.transform, fitted.predict, lambda X: fitted.select(X, 3)):
        with pytest.raises(InputError, match="fitted on 128"):
            call(np.zeros((4, 64)))
    with pytest.raises(InputError, match="NaN"):
        fitted.select(np.full((2, 128), np.nan), 1)
    with pytest.raises(ConfigError, match="budget"):
        fitted.select(np.zeros((2, 128)), -1)
    with pytest.raises(ConfigError, match="cap"):
        fitted.select(np.zeros((2, 128)), 2, k=0)


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_select(tmp_path, pool, capsys):
    from alkit.cli import main

    feats = tmp_path / "features.npy"
    np.save(feats, pool)
    out = tmp_path / "sel" / "selected.json"
    rc = main(["select", str(feats), "--clusters", "40", "--per-cluster", "2", "--seed", "3", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    record = json.loads(out.read_text())
    sampler = DIRECTSampler.load(record["sampler"])
    assert record["indices"] == sampler.selected_indices_.tolist() and len(record["indices"]) <= 80
    assert sampler.get_params()["random_state"] == 3 and record["n_components"] == sampler.n_components_
    assert f"PCs kept: {sampler.n_components_}" in text and "cumulative explained variance" in text
    assert "median" in text and "empty 0" in text and "PC1=" in text and len(record["coverage"]) == sampler.n_components_
    same = DIRECTSampler(n_clusters=40, k=2, random_state=3).fit(pool)
    assert record["indices"] == same.selected_indices_.tolist()

    rc = main(["select", str(tmp_path / "missing.npy"), "--clusters", "4", "--out", str(out)])
    assert rc == 2 and "not found" in capsys.readouterr().err
    np.save(feats, np.zeros((0, 4)))
    rc = main(["select", str(feats), "--clusters", "4", "--out", str(out)])
    assert rc == 2 and "empty" in capsys.readouterr().err
    (tmp_path / "bad.npy").write_text("garbage")
    rc = main(["select", str(tmp_path / "bad.npy"), "--clusters", "4", "--out", str(out)])
    assert rc == 2 and "cannot read features file" in capsys.readouterr().err
    assert issubclass(InputError, AlkitError)
