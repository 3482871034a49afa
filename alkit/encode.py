"""Stage 2 of the method: encode structures into fixed-length feature vectors for DIRECT sampling.

Encoders (all scikit-learn transformers: parameters stored in ``__init__``, work done in ``fit``/``transform``):

- :class:`M3GNetEncoder`: the 128-D readout of ``M3GNet-MP-2018.6.1-Eform`` -- the Set2Set vector of the graph after
  the three interaction blocks, i.e. the vector that feeds the final MLP (the DIRECT paper's encoding).
- :class:`MEGNetEncoder`: the same idea for ``MEGNet-MP-2018.6.1-Eform``: the concatenated node Set2Set (64),
  edge Set2Set (64) and state (32) vector that feeds its output MLP, 160-D.
- :class:`LocalDescriptorEncoder`: model-free; species-resolved radial Gaussian densities of each atom's
  neighbourhood, averaged (and std) over the atoms of each species, plus the composition.

Any callable ``list[Atoms] -> (N, d)`` array is an encoder too: :func:`encode` accepts both.

Model encoders batch graphs (``batch_size`` structures, at most ``max_batch_atoms`` atoms per forward pass). All
encoders keep an optional on-disk cache (``cache_dir``) keyed by :func:`alkit.io.structure_hash` and the encoder's
identity (model name + hash of its weights, or the descriptor parameters), so a re-run never encodes a structure
twice. The cache is one SQLite file per encoder identity (SQLite rather than one .npy per structure: a pool holds
~1M structures). Each chunk of results is written in one transaction, so a kill mid-write loses at most that chunk
and never leaves a torn entry.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from ase import Atoms
from sklearn.base import BaseEstimator, TransformerMixin

from alkit.config import EFORM_MODEL, MEGNET_EFORM_MODEL, model_path
from alkit.errors import ConfigError, InputError
from alkit.io import structure_hash, to_atoms

log = logging.getLogger(__name__)

__all__ = [
    "M3GNetEncoder",
    "MEGNetEncoder",
    "LocalDescriptorEncoder",
    "FeatureCache",
    "get_encoder",
    "encode",
    "ENCODERS",
]


# ----------------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------------
def _as_atoms_list(structures, name: str = "structures") -> list[Atoms]:
    """Validate and convert a sequence of Atoms/Structures into a list of Atoms (raises InputError)."""
    if isinstance(structures, Atoms) or hasattr(structures, "lattice"):
        structures = [structures]  # a single structure
    if structures is None:
        raise InputError(f"{name}: got None instead of a list of structures")
    try:
        structures = list(structures)
    except TypeError as exc:
        raise InputError(f"{name}: expected a list of ase.Atoms or pymatgen Structures, got "
                         f"{type(structures).__name__}") from exc
    if not structures:
        raise InputError(f"{name}: empty list, nothing to encode")
    out = []
    for i, s in enumerate(structures):
        try:
            atoms = to_atoms(s)
        except InputError as exc:
            raise InputError(f"{name}[{i}]: {exc}") from exc
        if len(atoms) == 0:
            raise InputError(f"{name}[{i}] has no atoms")
        if not np.all(np.isfinite(atoms.positions)):
            raise InputError(f"{name}[{i}] ({atoms.get_chemical_formula()}) has non-finite positions")
        if np.any(atoms.pbc):
            cell = atoms.cell.array
            if not np.all(np.isfinite(cell)) or abs(atoms.cell.volume) < 1e-8:
                raise InputError(f"{name}[{i}] ({atoms.get_chemical_formula()}) is periodic but its cell is "
                                 f"degenerate: {atoms.cell.cellpar().round(3).tolist()}")
        out.append(atoms)
    return out


def _file_hash(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------------
# on-disk cache
# ----------------------------------------------------------------------------------------------------------------------
class FeatureCache:
    """Feature vectors on disk, keyed by structure hash, one SQLite file per encoder identity.

    Every :meth:`put` is one transaction (atomic: a killed process leaves the previous state intact). WAL mode and a
    busy timeout let several processes share a cache directory.
    """

    def __init__(self, cache_dir: str | os.PathLike, identity: str, dim: int):
        self.path = Path(cache_dir).expanduser() / f"{identity}.sqlite"
        self.identity = identity
        self.dim = int(dim)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create cache directory {self.path.parent}: {exc}") from exc
        with closing(self._connect()) as con, con:
            con.execute("CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=60.0)
            con.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"feature cache {self.path} is not usable: {exc}") from exc
        return con

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Return the cached vectors among ``keys`` (missing keys are absent from the result)."""
        found: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(keys))
        with closing(self._connect()) as con:
            for start in range(0, len(uniq), 500):
                chunk = uniq[start:start + 500]
                rows = con.execute(
                    f"SELECT key, vec FROM features WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.size == self.dim:  # a wrong-size entry is ignored and recomputed
                        found[key] = vec
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        """Store vectors in one transaction."""
        if not items:
            return
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with closing(self._connect()) as con, con:
            con.executemany("INSERT OR REPLACE INTO features (key, vec) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM features").fetchone()[0])


def merge_cache(source_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> int:
    """Add to ``cache_dir`` the feature vectors of every encoder cache in ``source_dir`` that it lacks; return how
    many. Entries are keyed by structure hash within a file per encoder identity, so merging can never attach a
    vector to the wrong structure or encoder. Used when runs share one pool (``alkit run --pool-from``)."""
    src, dst = Path(source_dir), Path(cache_dir)
    added = 0
    for path in sorted(src.glob("*.sqlite")):
        cache = FeatureCache(dst, path.stem, dim=0)  # the file, schema and connection settings of a cache
        try:
            with closing(cache._connect()) as con:
                con.execute("ATTACH DATABASE ? AS src", (str(path),))
                with con:
                    added += con.execute("INSERT OR IGNORE INTO features SELECT key, vec FROM src.features").rowcount
                con.execute("DETACH DATABASE src")
        except sqlite3.DatabaseError as exc:
            log.warning("feature cache %s not merged (%s): its structures are encoded again", path, exc)
    return added


CACHE_CHUNK = 32  # structures per cache transaction / progress update (at least one forward batch)


def _cached_transform(atoms_list: list[Atoms], identity: Callable[[], str], dim: int, cache_dir,
                      compute: Callable, chunk_size: int, progress: bool, label: str,
                      validate: Callable | None = None) -> np.ndarray:
    """Encode ``atoms_list`` with ``compute(chunk, indices) -> (len(chunk), dim)``, skipping structures already in
    the cache and encoding duplicates once. ``validate(atoms, indices)`` checks every structure still to encode
    before any work starts (so bad input fails fast). New vectors are stored chunk by chunk, each chunk one
    transaction, so a kill loses at most the chunk in flight."""
    keys = [structure_hash(a) for a in atoms_list]
    cache = FeatureCache(cache_dir, identity(), dim) if cache_dir is not None else None
    known: dict[str, np.ndarray] = cache.get(keys) if cache is not None else {}
    todo: dict[str, int] = {}  # first position of each structure still to encode
    for i, k in enumerate(keys):
        if k not in known and k not in todo:
            todo[k] = i
    if known:
        log.info("%s: %d of %d structures from cache %s", label, len(keys) - len(todo), len(keys), cache.path)
    todo_keys = list(todo)
    if todo_keys and validate is not None:
        validate([atoms_list[todo[k]] for k in todo_keys], [todo[k] for k in todo_keys])
    bar = None
    if progress and len(todo_keys) > chunk_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo_keys), desc=f"encode {label}", unit="structure")
    try:
        for start in range(0, len(todo_keys), chunk_size):
            chunk = todo_keys[start:start + chunk_size]
            X = np.asarray(compute([atoms_list[todo[k]] for k in chunk], [todo[k] for k in chunk]), dtype=np.float32)
            if X.shape != (len(chunk), dim):
                raise RuntimeError(f"{label} produced shape {X.shape}, expected {(len(chunk), dim)}")
            new = dict(zip(chunk, X))
            if cache is not None:
                cache.put(new)
            known.update(new)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return np.stack([known[k] for k in keys]).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------------------------
# matgl graph encoders
# ----------------------------------------------------------------------------------------------------------------------
class _MatglEncoder(BaseEstimator, TransformerMixin):
    """Shared machinery of the matgl readout encoders: lazy model loading, graph batching, caching."""

    _dim: int = 0

    def __init__(self, model_dir=None, model_name: str = EFORM_MODEL, batch_size: int = 32, cache_dir=None,
                 n_threads: int = 1, progress: bool = False, max_batch_atoms: int = 2048):
        self.model_dir = model_dir
        self.model_name = model_name
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.n_threads = n_threads
        self.progress = progress
        self.max_batch_atoms = max_batch_atoms

    # -- model -------------------------------------------------------------------------------------------------------
    def fit(self, X=None, y=None):
        """Load the pretrained model (nothing is learned; ``X`` is ignored)."""
        self._check_params()
        from alkit._compat import import_matgl, set_torch_threads

        path = model_path(self.model_name, self.model_dir)
        matgl = import_matgl()
        set_torch_threads(self.n_threads)
        with warnings.catch_warnings():
            # matgl flags the 2018 MEGNet weights' model version; they load and reproduce the published numbers.
            warnings.filterwarnings("ignore", message="Incompatible model version", category=UserWarning)
            model = matgl.load_model(str(path))
        model.eval()
        self.model_ = model
        self.net_ = getattr(model, "model", model)  # the network inside TransformedTargetModel
        self._check_net()
        self.identity_ = self._weights_identity()
        self.n_features_out_ = self._dim
        self.n_model_calls_ = 0  # forward passes run (cache hits do not count)
        self.n_encoded_ = 0  # structures run through the model
        from matgl.ext._ase_dgl import Atoms2Graph

        self.converter_ = Atoms2Graph(element_types=tuple(self.net_.element_types), cutoff=float(self.net_.cutoff))
        log.debug("loaded %s (%s) from %s", self.model_name, self.identity_, path)
        return self

    def _check_net(self) -> None:  # pragma: no cover - overridden
        pass

    def _check_params(self) -> None:
        for name in ("batch_size", "max_batch_atoms", "n_threads"):
            val = getattr(self, name)
            if not isinstance(val, (int, np.integer)) or val < 1:
                raise ConfigError(f"{name} must be a positive integer, got {val!r}")

    def _weights_identity(self) -> str:
        """Cache identity: model name + hash of its weights and architecture files (no model loading)."""
        path = model_path(self.model_name, self.model_dir)
        return f"{self.model_name}-{_file_hash([path / 'model.json', path / 'state.pt'])}"

    def __getstate__(self):
        # Ship the parameters only (e.g. to Dask workers): the model is reloaded lazily where it is used.
        state = self.__dict__.copy()
        for key in ("model_", "net_", "converter_"):
            state.pop(key, None)
        return state

    def _ensure_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            self.fit()

    def get_feature_names_out(self, input_features=None):
        return np.array([f"{type(self).__name__.lower()}_{i}" for i in range(self._dim)], dtype=object)

    # -- graphs ------------------------------------------------------------------------------------------------------
    def _graph(self, atoms: Atoms, index: int):
        import torch

        if np.any(atoms.pbc) and not np.all(atoms.pbc):
            atoms = atoms.copy()
            atoms.pbc = True  # cell checked valid: a slab's vacuum direction becomes periodic, as in pymatgen
        g, lat, state = self.converter_.get_graph(atoms)
        g.edata["pbc_offshift"] = torch.matmul(g.edata["pbc_offset"], lat[0])
        g.ndata["pos"] = g.ndata["frac_coords"] @ lat[0]
        return g, torch.as_tensor(np.asarray(state, dtype=np.float32))

    def _validate(self, atoms_list: Sequence[Atoms], indices: Sequence[int]) -> None:
        """Load the model if needed and check that it knows every element."""
        self._ensure_fitted()
        allowed = set(self.converter_.element_types)
        for atoms, index in zip(atoms_list, indices):
            unknown = sorted(set(atoms.get_chemical_symbols()) - allowed)
            if unknown:
                raise InputError(f"structure {index} ({atoms.get_chemical_formula()}) has elements {unknown} that "
                                 f"{self.model_name} does not know")

    def _forward(self, atoms_list: Sequence[Atoms], indices: Sequence[int]):
        """One batched forward pass; returns (readout (B, d) float32, final output (B,) model units)."""
        import dgl
        import torch

        graphs, states = zip(*(self._graph(a, i) for a, i in zip(atoms_list, indices)))
        g = dgl.batch(list(graphs)) if len(graphs) > 1 else graphs[0]
        state = torch.stack(states)
        with torch.no_grad():
            readout, final = self._readout_and_output(g, state)
        self.n_model_calls_ += 1
        self.n_encoded_ += len(atoms_list)
        readout = readout.detach().reshape(len(atoms_list), -1).numpy().astype(np.float32)
        final = self.model_.transformer.inverse_transform(final.detach()).reshape(len(atoms_list)).numpy()
        return readout, final.astype(np.float64)

    def _readout_and_output(self, g, state):  # pragma: no cover - overridden
        raise NotImplementedError

    def _batches(self, atoms_list: Sequence[Atoms]) -> list[tuple[int, int]]:
        """Split into forward batches of at most ``batch_size`` structures and ``max_batch_atoms`` atoms (a larger
        structure goes alone): on CPU, big batched graphs get slower per structure once they leave the cache
        (see bench/bench_encode.py)."""
        out, start, atoms_in = [], 0, 0
        for k, a in enumerate(atoms_list):
            n = len(a)
            if k > start and (k - start >= int(self.batch_size) or atoms_in + n > int(self.max_batch_atoms)):
                out.append((start, k))
                start, atoms_in = k, 0
            atoms_in += n
        out.append((start, len(atoms_list)))
        return out

    # -- public ------------------------------------------------------------------------------------------------------
    def transform(self, structures) -> np.ndarray:
        """Readout vectors, float32 ``(N, d)``. Structures found in the cache are not re-encoded."""
        atoms_list = _as_atoms_list(structures)
        self._check_params()

        def identity() -> str:  # hashing the weights does not need the model loaded
            return getattr(self, "identity_", None) or self._weights_identity()

        def compute(batch, indices):  # the model is loaded (by _validate) only if something is missing from the cache
            from alkit._compat import set_torch_threads

            set_torch_threads(self.n_threads)
            return np.concatenate([self._forward(batch[s:e], indices[s:e])[0] for s, e in self._batches(batch)])

        return _cached_transform(atoms_list, identity, self._dim, self.cache_dir, compute,
                                 max(int(self.batch_size), CACHE_CHUNK), self.progress, self.model_name,
                                 validate=self._validate)

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, y).transform(X)

    def predict(self, structures) -> np.ndarray:
        """The model's own prediction (e.g. formation energy in eV/atom), float64 ``(N,)``; not cached."""
        atoms_list = _as_atoms_list(structures)
        self._validate(atoms_list, range(len(atoms_list)))
        from alkit._compat import set_torch_threads

        set_torch_threads(self.n_threads)
        spans = self._batches(atoms_list)
        if self.progress and len(spans) > 1:
            from tqdm.auto import tqdm

            spans = tqdm(spans, desc=f"predict {self.model_name}", unit="batch")
        return np.concatenate([self._forward(atoms_list[s:e], range(s, e))[1] for s, e in spans])


class M3GNetEncoder(_MatglEncoder):
    """128-D readout of the M3GNet formation-energy model (default ``M3GNet-MP-2018.6.1-Eform``).

    The readout is the Set2Set pooling of the node features after the interaction blocks (``fea_dict["readout"]``
    in matgl's M3GNet.forward): the vector that feeds the final MLP. Set2Set is an attention-weighted pooling, so
    the vector does not depend on atom order and is unchanged by repeating the cell.

    Parameters
    ----------
    model_dir: directory holding pretrained models (default ``$ALKIT_MODEL_DIR``).
    model_name: an intensive M3GNet model directory name.
    batch_size: at most this many structures per forward pass ...
    max_batch_atoms: ... and at most this many atoms (a larger structure runs alone). On this CPU batching gains
        ~40% for 38-atom cells and ~15% for 108-atom cells up to ~2000 atoms per batch, and loses beyond.
    cache_dir: on-disk cache directory (None: no cache).
    n_threads: torch intra-op threads.
    progress: show a tqdm bar over batches.
    """

    pretrained = EFORM_MODEL  # the weights alkit.encode.check_encoder looks for

    _dim = 128

    def __init__(self, model_dir=None, model_name: str = EFORM_MODEL, batch_size: int = 32, cache_dir=None,
                 n_threads: int = 1, progress: bool = False, max_batch_atoms: int = 2048):
        super().__init__(model_dir=model_dir, model_name=model_name, batch_size=batch_size, cache_dir=cache_dir,
                         n_threads=n_threads, progress=progress, max_batch_atoms=max_batch_atoms)

    def _check_net(self) -> None:
        net = self.net_
        intensive = getattr(net, "is_intensive", False) and hasattr(self.model_, "transformer")
        if type(net).__name__ != "M3GNet" or not intensive:
            raise ConfigError(f"{self.model_name} is not an intensive M3GNet property model (got "
                              f"{type(net).__name__}); use e.g. {EFORM_MODEL}")
        self._dim = int(net.final_layer.layers[0].in_features)

    def _readout_and_output(self, g, state):
        feats = self.net_(g=g, state_attr=state, return_all_layer_output=True)
        return feats["readout"], feats["final"]

    def predict_eform(self, structures) -> np.ndarray:
        """Formation energy in eV/atom, float64 ``(N,)`` (validates the weights; not cached)."""
        return self.predict(structures)


class MEGNetEncoder(_MatglEncoder):
    """Readout of ``MEGNet-MP-2018.6.1-Eform``: node Set2Set (64) + edge Set2Set (64) + state (32) = 160-D.

    Captured with a forward pre-hook on the output MLP (MEGNet.forward does not return its intermediate vector).
    """

    pretrained = MEGNET_EFORM_MODEL

    _dim = 160

    def __init__(self, model_dir=None, model_name: str = MEGNET_EFORM_MODEL, batch_size: int = 32, cache_dir=None,
                 n_threads: int = 1, progress: bool = False, max_batch_atoms: int = 2048):
        super().__init__(model_dir=model_dir, model_name=model_name, batch_size=batch_size, cache_dir=cache_dir,
                         n_threads=n_threads, progress=progress, max_batch_atoms=max_batch_atoms)

    def _check_net(self) -> None:
        net = self.net_
        if type(net).__name__ != "MEGNet" or not hasattr(self.model_, "transformer"):
            raise ConfigError(f"{self.model_name} is not a MEGNet property model (got {type(net).__name__})")
        self._dim = int(net.output_proj.layers[0].in_features)

    def _readout_and_output(self, g, state):
        captured = []
        handle = self.net_.output_proj.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
        try:
            with warnings.catch_warnings():
                # MEGNet.forward squeezes a single graph's vectors; dgl warns about it but handles it correctly.
                warnings.filterwarnings("ignore", message="For a single graph")
                out = self.net_(g=g, state_attr=state)
        finally:
            handle.remove()
        return captured[0], out

    def predict_eform(self, structures) -> np.ndarray:
        """Formation energy in eV/atom, float64 ``(N,)``."""
        return self.predict(structures)


# ----------------------------------------------------------------------------------------------------------------------
# model-free encoder
# ----------------------------------------------------------------------------------------------------------------------
def _neighbors(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour pairs (i, j, distance) within ``cutoff``, periodic images included.

    Fully periodic cells use pymatgen's compiled ``find_points_in_spheres`` (the neighbour search matgl uses; ~1000x
    faster than ASE's pure-numpy search for small cells with a 5 Å cutoff); other cases use ASE's ``neighbor_list``.
    Both give the same pairs (tested).
    """
    if np.all(atoms.pbc):
        from pymatgen.optimization.neighbors import find_points_in_spheres

        pos = np.ascontiguousarray(atoms.positions, dtype=float)
        i, j, _, d = find_points_in_spheres(pos, pos, r=cutoff, pbc=np.ones(3, dtype=np.int64),
                                            lattice=np.ascontiguousarray(atoms.cell.array, dtype=float), tol=1e-8)
        keep = d > 1e-8  # drop each atom's zero-distance self match
        return i[keep].astype(np.int64), j[keep].astype(np.int64), d[keep]
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, cutoff)
    return i.astype(np.int64), j.astype(np.int64), d


class LocalDescriptorEncoder(BaseEstimator, TransformerMixin):
    """Model-free structure features from species-resolved radial densities (no weights needed).

    For each atom i and neighbour species s: ``rho_i,s,k = sum_j exp(-(r_ij - mu_k)^2 / 2 w^2) * fc(r_ij)`` over
    neighbours j of species s within ``cutoff`` (ASE neighbour list, cosine cutoff fc), with ``n_radial`` centres
    ``mu_k`` evenly spaced in [r_min, cutoff]. The structure vector is, per centre species, the mean (and, with
    ``std=True``, the standard deviation) of these per-atom vectors over the atoms of that species (zeros if absent),
    followed by the composition fractions. Length ``S*S*K*(1+std) + S`` for ``S`` species, ``K`` radial functions.
    Invariant to atom order, rigid motions and repetition of the cell.

    ``species``: element symbols covered; ``None`` learns them from the structures given to :meth:`fit` (or, if
    ``fit`` got none, from the first :meth:`transform`), after which they stay fixed. Structures with other
    elements raise InputError. ``cache_dir``/``batch_size``/``progress`` as for the model encoders.
    """

    def __init__(self, species: Sequence[str] | None = None, cutoff: float = 5.0, n_radial: int = 12,
                 r_min: float = 0.5, width: float | None = None, std: bool = True, cache_dir=None,
                 batch_size: int = 256, progress: bool = False):
        self.species = species
        self.cutoff = cutoff
        self.n_radial = n_radial
        self.r_min = r_min
        self.width = width
        self.std = std
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X=None, y=None):
        """Fix the species list (from ``species`` or, if None, from the elements of ``X``; with neither, the first
        :meth:`transform` fixes it)."""
        from ase.data import atomic_numbers

        if self.cutoff <= 0 or self.n_radial < 1 or not (0 <= self.r_min < self.cutoff):
            raise ConfigError(f"need cutoff > r_min >= 0 and n_radial >= 1 (got cutoff={self.cutoff}, "
                              f"r_min={self.r_min}, n_radial={self.n_radial})")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.species is not None:
            from alkit._util import species_symbols

            species = species_symbols(self.species, ConfigError)
        else:
            if X is None:
                return self  # species fixed by the first transform
            found = set()
            for a in _as_atoms_list(X):
                found.update(a.get_chemical_symbols())
            species = sorted(found, key=lambda s: atomic_numbers[s])
        self.species_ = tuple(species)
        self.centers_ = np.linspace(self.r_min, self.cutoff, int(self.n_radial))
        step = self.centers_[1] - self.centers_[0] if self.n_radial > 1 else self.cutoff
        self.width_ = float(self.width) if self.width is not None else float(step)
        self.n_features_out_ = self._dim()
        params = dict(self.get_params(), species=list(self.species_), width=self.width_)
        for key in ("cache_dir", "batch_size", "progress"):
            params.pop(key)
        self.identity_ = "local-" + hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:16]
        return self

    def _dim(self) -> int:
        s, k = len(self.species_), int(self.n_radial)
        return s * s * k * (2 if self.std else 1) + s

    def get_feature_names_out(self, input_features=None):
        names = []
        stats = ("mean", "std") if self.std else ("mean",)
        for stat in stats:
            for c in self.species_:
                for n in self.species_:
                    names += [f"{stat}_{c}-{n}_r{k}" for k in range(int(self.n_radial))]
        names += [f"x_{s}" for s in self.species_]
        return np.array(names, dtype=object)

    def _validate(self, atoms_list: Sequence[Atoms], indices: Sequence[int]) -> None:
        known = set(self.species_)
        for atoms, index in zip(atoms_list, indices):
            unknown = sorted(set(atoms.get_chemical_symbols()) - known)
            if unknown:
                raise InputError(f"structure {index} ({atoms.get_chemical_formula()}) has elements {unknown} not "
                                 f"in the encoder's species list {list(self.species_)}")

    def _one(self, atoms: Atoms, index: int) -> np.ndarray:
        sp_index = {s: i for i, s in enumerate(self.species_)}
        symbols = atoms.get_chemical_symbols()
        S, K, n = len(self.species_), int(self.n_radial), len(atoms)
        types = np.array([sp_index[s] for s in symbols], dtype=np.int64)
        i, j, d = _neighbors(atoms, float(self.cutoff))
        fc = 0.5 * (np.cos(np.pi * d / self.cutoff) + 1.0)
        g = np.exp(-((d[:, None] - self.centers_[None, :]) ** 2) / (2.0 * self.width_**2)) * fc[:, None]
        flat = i * S + types[j]  # (centre atom, neighbour species) pair of each bond
        per_atom = np.stack([np.bincount(flat, weights=g[:, k], minlength=n * S) for k in range(K)], axis=1)
        per_atom = per_atom.reshape(n, S * K)
        mean = np.zeros((S, S * K))
        sd = np.zeros((S, S * K))
        for c in range(S):
            rows = per_atom[types == c]
            if len(rows):
                mean[c] = rows.mean(axis=0)
                sd[c] = rows.std(axis=0)
        parts = [mean.ravel()] + ([sd.ravel()] if self.std else []) + [np.bincount(types, minlength=S) / n]
        return np.concatenate(parts)

    def transform(self, structures) -> np.ndarray:
        """Float32 ``(N, d)`` features."""
        atoms_list = _as_atoms_list(structures)
        if not hasattr(self, "species_"):
            self.fit(atoms_list if self.species is None else None)
        return _cached_transform(atoms_list, lambda: self.identity_, self.n_features_out_, self.cache_dir,
                                 lambda batch, indices: np.stack([self._one(a, i) for a, i in zip(batch, indices)]),
                                 int(self.batch_size), self.progress, "local", validate=self._validate)

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, y).transform(X)


# ----------------------------------------------------------------------------------------------------------------------
# registry and the generic entry point
# ----------------------------------------------------------------------------------------------------------------------
ENCODERS: dict[str, type] = {
    "m3gnet": M3GNetEncoder,
    "megnet": MEGNetEncoder,
    "local": LocalDescriptorEncoder,
}


def register_encoder(name: str, cls: type) -> None:
    """Make ``ALConfig(encoder=name)`` (and ``alkit encode --encoder name``) use ``cls``: a scikit-learn style
    transformer ``list[Atoms] -> (N, d)``. A class attribute ``pretrained`` (the weights' directory name) marks one
    that loads pretrained weights from the model directory: they are checked before any work, and ``model_dir`` is
    passed to its constructor."""
    ENCODERS[str(name).lower()] = cls


def encoder_class(name: str) -> type:
    try:
        return ENCODERS[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}") from None


def check_encoder(name: str, model_dir: str | os.PathLike | None = None) -> None:
    """Fail now, not after hours of pool MD, when the encoder is unknown or its pretrained weights are missing."""
    from alkit.config import model_path

    cls = encoder_class(name)
    weights = getattr(cls, "pretrained", None)
    if isinstance(weights, str):
        model_path(weights, model_dir)


def get_encoder(name: str, model_dir: str | os.PathLike | None = None, **kw):
    """Build an encoder by name: ``"m3gnet"`` (128-D), ``"megnet"`` (160-D) or ``"local"`` (model-free).
    ``model_dir`` goes to the encoders that load pretrained weights (those with a ``pretrained`` name)."""
    cls = encoder_class(name)
    if isinstance(getattr(cls, "pretrained", None), str):
        kw["model_dir"] = model_dir
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ConfigError(f"bad options for encoder {name!r}: {exc}") from exc


def encode(structures, encoder: Callable | BaseEstimator) -> np.ndarray:
    """Encode structures with an encoder object (``transform``) or any callable ``list[Atoms] -> (N, d)``.

    Returns a float32 ``(N, d)`` array; raises InputError for an empty input and for an encoder whose output does
    not have one finite row per structure.
    """
    atoms_list = _as_atoms_list(structures)
    if hasattr(encoder, "transform"):
        X = encoder.transform(atoms_list)
    elif callable(encoder):
        X = encoder(atoms_list)
    else:
        raise ConfigError(f"encoder must have a transform method or be callable, got {type(encoder).__name__}")
    X = np.asarray(X)
    if X.ndim == 1 and len(atoms_list) == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[0] != len(atoms_list):
        raise InputError(f"encoder returned shape {X.shape}, expected ({len(atoms_list)}, d)")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"encoder returned non-numeric features ({X.dtype})")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InputError(f"encoder returned non-finite features for {int(bad.sum())} structure(s), first at index "
                         f"{int(np.argmax(bad))}")
    return X
