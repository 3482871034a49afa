"""MLIP-2 ``.mtp`` files: the one reader, writer and validator of moment tensor potentials in alkit.

Every command that reads a potential goes through :meth:`MTPPotential.read`, so a corrupt file gets the same clear
``ConfigError`` everywhere (naming the file and the problem) before any work starts.

The format is MLIP-2's (``mlp train`` writes it; motep reads it): a header (``version``, ``potential_name``, optional
``scaling``, ``species_count``, ``potential_tag``), the radial basis (``radial_basis_type = RBChebyshev`` with
``min_dist``, ``max_dist``, ``radial_basis_size``, ``radial_funcs_count`` and, once trained, ``radial_coeffs``), then
the moment tree (``alpha_*``) and the linear coefficients. motep's grouped ``min``/``max``/``size`` spelling is read
too. alkit writes MLIP-2's flat spelling, numbers in shortest round-trip form, so a potential survives a write/read
cycle bit for bit.

Species. MLIP-2 files know only type indices (and often have an empty ``potential_tag``); alkit's own files record
the species in the tag (``alkit_L16_Ti_H``, see :func:`alkit.mtp.levels.make_tag`). :meth:`MTPPotential.resolve_species`
reconciles the tag with species a user gives.

``scaling`` multiplies the radial basis (MLIP-2 and motep: ``Q_b = scaling * T_b(s) * (R - r)^2``); a missing field
means 1.
"""
from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from alkit.errors import ConfigError

_INT_KEYS = ("species_count", "radial_basis_size", "radial_funcs_count", "alpha_moments_count",
             "alpha_index_basic_count", "alpha_index_times_count", "alpha_scalar_moments")
_FLOAT_KEYS = ("scaling", "min_dist", "max_dist")
_ALIASES = {"min": "min_dist", "max": "max_dist", "size": "radial_basis_size", "min_val": "min_dist",
            "max_val": "max_dist", "basis_size": "radial_basis_size"}


def _floats(text: str, what: str) -> np.ndarray:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError(f"{what} is not a {{...}} list")
    body = body[1:-1].strip()
    if not body:
        return np.zeros(0)
    return np.array([float(x) for x in body.split(",")], dtype=float)


def _int_rows(text: str, what: str) -> np.ndarray:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError(f"{what} is not a {{...}} list")
    rows = re.findall(r"\{([^{}]*)\}", body[1:-1])
    if not rows:
        return np.zeros((0, 4), dtype=np.int32)
    out = [[int(x) for x in r.split(",")] for r in rows]
    if any(len(r) != 4 for r in out):
        raise ValueError(f"{what} entries must have 4 integers")
    return np.array(out, dtype=np.int32)


def _fmt_float(x: float) -> str:
    return repr(float(x))


@dataclass
class MTPPotential:
    """A moment tensor potential (trained or not) as held in an MLIP-2 ``.mtp`` file."""

    species_count: int
    min_dist: float
    max_dist: float
    radial_basis_size: int
    radial_funcs_count: int
    alpha_moments_count: int
    alpha_index_basic: np.ndarray
    alpha_index_times: np.ndarray
    alpha_moment_mapping: np.ndarray
    radial_coeffs: np.ndarray | None = None
    species_coeffs: np.ndarray | None = None
    moment_coeffs: np.ndarray | None = None
    scaling: float = 1.0
    version: str = "1.1.0"
    potential_name: str = "MTP1m"
    potential_tag: str = ""
    radial_basis_type: str = "RBChebyshev"
    source: str = ""
    _basis: object = field(default=None, repr=False, compare=False)

    # ---- reading ---------------------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | os.PathLike) -> "MTPPotential":
        """Read and validate an ``.mtp`` file; ``ConfigError`` naming the file and the problem."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"MTP file {path} does not exist")
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise ConfigError(f"cannot read MTP file {path}: {exc}") from exc
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> "MTPPotential":
        if not text.lstrip().startswith("MTP"):
            raise ConfigError(f"{source} is not an MLIP-2 .mtp file (it does not start with 'MTP')")
        try:
            pot = cls._parse(text.splitlines(), source)
        except ConfigError:
            raise
        except (ValueError, IndexError, KeyError) as exc:
            raise ConfigError(f"MTP file {source} is corrupt: {exc}") from None
        pot.validate()
        return pot

    @classmethod
    def _parse(cls, lines: list[str], source: str) -> "MTPPotential":
        vals: dict[str, object] = {}
        radial = None
        k = 1
        while k < len(lines):
            raw = lines[k]
            line = raw.strip()
            k += 1
            if not line:
                continue
            if line == "radial_coeffs":
                for key in ("species_count", "radial_funcs_count", "radial_basis_size"):
                    if key not in vals:
                        raise ValueError(f"radial_coeffs come before {key}")
                spc, rfc, rbs = (int(vals[x]) for x in ("species_count", "radial_funcs_count", "radial_basis_size"))
                radial = np.zeros((spc, spc, rfc, rbs))
                for _ in range(spc * spc):
                    while k < len(lines) and not lines[k].strip():
                        k += 1
                    if k >= len(lines):
                        raise ValueError("radial_coeffs end early")
                    head = lines[k].strip()
                    k += 1
                    m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", head)
                    if not m:
                        raise ValueError(f"expected a species pair like '0-1' in radial_coeffs, got {head!r}")
                    a, b = int(m.group(1)), int(m.group(2))
                    if a >= spc or b >= spc:
                        raise ValueError(f"radial_coeffs pair {head} is outside species_count = {spc}")
                    for mu in range(rfc):
                        row = _floats(lines[k], f"radial_coeffs {head} row {mu}")
                        k += 1
                        if row.size != rbs:
                            raise ValueError(f"radial_coeffs {head} row {mu} has {row.size} values, "
                                             f"radial_basis_size is {rbs}")
                        radial[a, b, mu] = row
                continue
            if "=" not in line:
                raise ValueError(f"unexpected line {line!r}")
            key, _, value = (s.strip() for s in line.partition("="))
            key = _ALIASES.get(key, key)
            if key in _INT_KEYS:
                vals[key] = int(value)
            elif key in _FLOAT_KEYS:
                vals[key] = float(value)
            elif key in ("alpha_index_basic", "alpha_index_times"):
                vals[key] = _int_rows(value, key)
            elif key == "alpha_moment_mapping":
                vals[key] = _floats(value, key).astype(np.int64)
            elif key in ("species_coeffs", "moment_coeffs"):
                vals[key] = _floats(value, key)
            elif key in ("version", "potential_name", "potential_tag", "radial_basis_type"):
                vals[key] = value
            elif key.startswith("magnetic") or key in ("min_mag", "max_mag", "mag_basis_size"):
                raise ConfigError(f"{source}: magnetic MTPs are not supported")
            else:
                raise ValueError(f"unknown field {key!r}")
        missing = [x for x in ("species_count", "min_dist", "max_dist", "radial_basis_size", "radial_funcs_count",
                               "alpha_moments_count", "alpha_index_basic", "alpha_index_times",
                               "alpha_moment_mapping") if x not in vals]
        if missing:
            raise ConfigError(f"MTP file {source} is corrupt: it has no {', '.join(missing)}")
        counts = {
            "alpha_index_basic_count": len(vals["alpha_index_basic"]),
            "alpha_index_times_count": len(vals["alpha_index_times"]),
            "alpha_scalar_moments": len(vals["alpha_moment_mapping"]),
        }
        for key, n in counts.items():
            if key in vals and int(vals[key]) != n:
                name = key.replace("_count", "").replace("alpha_scalar_moments", "alpha_moment_mapping")
                raise ValueError(f"{name} has {n} entries, {key} says {vals[key]}")
        return cls(
            species_count=int(vals["species_count"]), min_dist=float(vals["min_dist"]),
            max_dist=float(vals["max_dist"]), radial_basis_size=int(vals["radial_basis_size"]),
            radial_funcs_count=int(vals["radial_funcs_count"]), alpha_moments_count=int(vals["alpha_moments_count"]),
            alpha_index_basic=np.asarray(vals["alpha_index_basic"], dtype=np.int32).reshape(-1, 4),
            alpha_index_times=np.asarray(vals["alpha_index_times"], dtype=np.int32).reshape(-1, 4),
            alpha_moment_mapping=np.asarray(vals["alpha_moment_mapping"], dtype=np.int32),
            radial_coeffs=radial, species_coeffs=vals.get("species_coeffs"), moment_coeffs=vals.get("moment_coeffs"),
            scaling=float(vals.get("scaling", 1.0)), version=str(vals.get("version", "1.1.0")),
            potential_name=str(vals.get("potential_name", "MTP1m")), potential_tag=str(vals.get("potential_tag", "")),
            radial_basis_type=str(vals.get("radial_basis_type", "RBChebyshev")), source=source,
        )

    # ---- checks ----------------------------------------------------------------------------------------------
    def validate(self) -> "MTPPotential":
        """Check counts, index ranges, the order of the moment tree and finiteness; ``ConfigError`` if broken."""
        src = self.source or "the potential"

        def bad(msg: str):
            raise ConfigError(f"MTP file {src} is corrupt: {msg}")

        if self.radial_basis_type != "RBChebyshev":
            bad(f"radial_basis_type {self.radial_basis_type!r} is not supported (only RBChebyshev)")
        if self.species_count < 1:
            bad("species_count < 1")
        if self.radial_funcs_count < 1 or self.radial_basis_size < 1:
            bad("radial_funcs_count and radial_basis_size must be >= 1")
        if not (math.isfinite(self.min_dist) and math.isfinite(self.max_dist) and 0 <= self.min_dist < self.max_dist):
            bad(f"need 0 <= min_dist < max_dist, got {self.min_dist}, {self.max_dist}")
        if not (math.isfinite(self.scaling) and self.scaling > 0):
            bad(f"scaling must be a positive number, got {self.scaling}")
        basic, times, mapping = self.alpha_index_basic, self.alpha_index_times, self.alpha_moment_mapping
        amc = self.alpha_moments_count
        if len(basic) > amc:
            bad(f"{len(basic)} basic moments but alpha_moments_count = {amc}")
        if len(basic) and (basic.min() < 0 or basic[:, 0].max() >= self.radial_funcs_count):
            bad("alpha_index_basic entries must be {mu, a, b, c} with 0 <= mu < radial_funcs_count")
        if len(times):
            if times[:, [0, 1, 3]].min() < 0 or times[:, [0, 1, 3]].max() >= amc:
                bad("alpha_index_times refers to moments outside alpha_moments_count")
            if times[:, 3].min() < len(basic):
                bad("alpha_index_times writes to a basic moment")
            last = np.full(amc, -1)
            last[times[:, 3]] = np.arange(len(times))  # later entries overwrite: index of the last write
            uses_before = (last[times[:, 0]] >= np.arange(len(times))) | (last[times[:, 1]] >= np.arange(len(times)))
            if uses_before.any():
                bad(f"alpha_index_times entry {int(np.argmax(uses_before))} uses a moment before it is complete")
        if len(mapping) and (mapping.min() < 0 or mapping.max() >= amc):
            bad("alpha_moment_mapping refers to moments outside alpha_moments_count")
        spc, rfc, rbs = self.species_count, self.radial_funcs_count, self.radial_basis_size
        if self.radial_coeffs is not None and self.radial_coeffs.shape != (spc, spc, rfc, rbs):
            bad(f"radial_coeffs have shape {self.radial_coeffs.shape}, expected {(spc, spc, rfc, rbs)}")
        if self.moment_coeffs is not None and len(self.moment_coeffs) != len(mapping):
            bad(f"{len(self.moment_coeffs)} moment_coeffs for {len(mapping)} scalar moments")
        if self.species_coeffs is not None and len(self.species_coeffs) != spc:
            bad(f"{len(self.species_coeffs)} species_coeffs for {spc} species")
        for name in ("radial_coeffs", "moment_coeffs", "species_coeffs"):
            arr = getattr(self, name)
            if arr is not None and not np.all(np.isfinite(arr)):
                bad(f"{name} contain non-finite values")
        present = [getattr(self, n) is not None for n in ("radial_coeffs", "moment_coeffs", "species_coeffs")]
        if any(present) and not all(present):
            bad("it has some but not all of radial_coeffs, moment_coeffs, species_coeffs")
        return self

    @property
    def is_trained(self) -> bool:
        return self.radial_coeffs is not None and self.moment_coeffs is not None and self.species_coeffs is not None

    def require_trained(self) -> "MTPPotential":
        if not self.is_trained:
            raise ConfigError(f"{self.source or 'the potential'} is an untrained MTP (no coefficients); train it first")
        return self

    # ---- species / level ---------------------------------------------------------------------------------------
    @property
    def tag_species(self) -> list[str] | None:
        from alkit.mtp.levels import parse_tag

        return parse_tag(self.potential_tag)[1]

    @property
    def level(self) -> int | None:
        from alkit.mtp.levels import parse_tag

        return parse_tag(self.potential_tag)[0]

    def resolve_species(self, species: Sequence[str] | None = None) -> list[str]:
        """The species in type order: the given ones (checked against the tag and ``species_count``) or the tag's."""
        from alkit._util import species_symbols

        src = self.source or "the potential"
        tagged = self.tag_species
        if species is None:
            if tagged is None:
                raise ConfigError(f"{src} does not record its species (an MLIP-2 file knows only type indices); "
                                  f"give them in type order, e.g. species=['Ti', 'H'] / --species Ti H")
            species = tagged
        out = species_symbols(species, ConfigError)
        if len(out) != self.species_count:
            raise ConfigError(f"{src} has species_count = {self.species_count} but {len(out)} species were given: {out}")
        if tagged is not None and tagged != out:
            raise ConfigError(f"{src} was made for species {tagged} (in this type order), not {out}")
        return out

    # ---- parameters -----------------------------------------------------------------------------------------
    @property
    def n_scalar(self) -> int:
        return len(self.alpha_moment_mapping)

    @property
    def n_linear(self) -> int:
        return self.n_scalar + self.species_count

    @property
    def n_params(self) -> int:
        return self.n_linear + self.species_count ** 2 * self.radial_funcs_count * self.radial_basis_size

    @property
    def theta(self) -> np.ndarray:
        """All coefficients as one vector, motep's order: moment, species, radial (flattened ti, tj, mu, b)."""
        self.require_trained()
        return np.concatenate([self.moment_coeffs, self.species_coeffs, self.radial_coeffs.ravel()])

    @theta.setter
    def theta(self, values) -> None:
        values = np.asarray(values, dtype=float)
        if values.shape != (self.n_params,):
            raise ConfigError(f"expected {self.n_params} parameters, got {values.shape}")
        s, spc = self.n_scalar, self.species_count
        self.moment_coeffs = values[:s].copy()
        self.species_coeffs = values[s:s + spc].copy()
        self.radial_coeffs = values[s + spc:].reshape(spc, spc, self.radial_funcs_count, self.radial_basis_size).copy()

    def initialize(self, rng: np.random.Generator) -> "MTPPotential":
        """Random starting coefficients where there are none (radial: uniform +-0.1 as motep; moment/species: 0,
        since the linear ones are solved by least squares before any nonlinear step)."""
        spc, rfc, rbs = self.species_count, self.radial_funcs_count, self.radial_basis_size
        if self.radial_coeffs is None:
            self.radial_coeffs = rng.uniform(-0.1, 0.1, (spc, spc, rfc, rbs))
        if self.moment_coeffs is None:
            self.moment_coeffs = np.zeros(self.n_scalar)
        if self.species_coeffs is None:
            self.species_coeffs = np.zeros(spc)
        self._basis = None
        return self

    def copy(self) -> "MTPPotential":
        new = copy.deepcopy(self)
        new._basis = None
        return new

    # ---- compiled core -----------------------------------------------------------------------------------------
    @property
    def basis(self):
        """The compiled core's description of this potential's structure (cached; rebuilt if the radial basis or
        the tree changes)."""
        key = (self.species_count, self.radial_funcs_count, self.radial_basis_size, self.min_dist, self.max_dist,
               self.scaling, self.alpha_moments_count, self.alpha_index_basic.tobytes(),
               self.alpha_index_times.tobytes(), self.alpha_moment_mapping.tobytes())
        if self._basis is None or self._basis[0] != key:
            from alkit.mtp import _core

            b = _core.Basis(self.species_count, self.radial_funcs_count, self.radial_basis_size, float(self.min_dist),
                            float(self.max_dist), float(self.scaling), self.alpha_moments_count,
                            np.ascontiguousarray(self.alpha_index_basic, dtype=np.int32).reshape(-1, 4),
                            np.ascontiguousarray(self.alpha_index_times, dtype=np.int32).reshape(-1, 4),
                            np.ascontiguousarray(self.alpha_moment_mapping, dtype=np.int32))
            self._basis = (key, b)
        return self._basis[1]

    # ---- writing ----------------------------------------------------------------------------------------------
    def to_text(self) -> str:
        """MLIP-2's format (flat ``min_dist``/``max_dist``/``radial_basis_size`` spelling)."""
        def rows(a):
            return "{" + ", ".join("{" + ", ".join(str(int(x)) for x in r) + "}" for r in a) + "}"

        def flist(a):
            return "{" + ", ".join(_fmt_float(x) for x in np.ravel(a)) + "}"

        lines = ["MTP", f"version = {self.version}", f"potential_name = {self.potential_name}"]
        lines.append(f"scaling = {_fmt_float(self.scaling)}")  # MLIP-2 writes it too; motep reads it
        lines += [f"species_count = {self.species_count}", f"potential_tag = {self.potential_tag}".rstrip(),
                  f"radial_basis_type = {self.radial_basis_type}", f"\tmin_dist = {_fmt_float(self.min_dist)}",
                  f"\tmax_dist = {_fmt_float(self.max_dist)}", f"\tradial_basis_size = {self.radial_basis_size}",
                  f"\tradial_funcs_count = {self.radial_funcs_count}"]
        if self.radial_coeffs is not None:
            lines.append("\tradial_coeffs")
            for a in range(self.species_count):
                for b in range(self.species_count):
                    lines.append(f"\t\t{a}-{b}")
                    lines += [f"\t\t\t{flist(self.radial_coeffs[a, b, mu])}" for mu in range(self.radial_funcs_count)]
        lines += [f"alpha_moments_count = {self.alpha_moments_count}",
                  f"alpha_index_basic_count = {len(self.alpha_index_basic)}",
                  f"alpha_index_basic = {rows(self.alpha_index_basic)}",
                  f"alpha_index_times_count = {len(self.alpha_index_times)}",
                  f"alpha_index_times = {rows(self.alpha_index_times)}",
                  f"alpha_scalar_moments = {len(self.alpha_moment_mapping)}",
                  "alpha_moment_mapping = {" + ", ".join(str(int(k)) for k in self.alpha_moment_mapping) + "}"]
        if self.species_coeffs is not None:
            lines.append(f"species_coeffs = {flist(self.species_coeffs)}")
        if self.moment_coeffs is not None:
            lines.append(f"moment_coeffs = {flist(self.moment_coeffs)}")
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the potential (atomically) and return the path."""
        from alkit._util import atomic_write

        self.validate()
        return atomic_write(Path(path), self.to_text())

    # ---- motep (the oracle and second engine) ----------------------------------------------------------------
    def to_motep(self, species: Sequence[str] | None = None):
        """The same potential as motep's ``MTPData`` (for motep's engines and trainer)."""
        from motep.potentials.mtp.data import BasisData, MTPData

        from alkit._util import species_numbers

        d = MTPData(
            version=self.version, potential_name=self.potential_name, scaling=float(self.scaling),
            species_count=self.species_count, potential_tag=self.potential_tag,
            radial_basis=BasisData(type=self.radial_basis_type, min=np.float64(self.min_dist),
                                   max=np.float64(self.max_dist), size=np.int32(self.radial_basis_size)),
            radial_funcs_count=self.radial_funcs_count,
            radial_coeffs=None if self.radial_coeffs is None else self.radial_coeffs.copy(),
            alpha_moments_count=self.alpha_moments_count, alpha_index_basic_count=len(self.alpha_index_basic),
            alpha_index_basic=self.alpha_index_basic.copy(), alpha_index_times_count=len(self.alpha_index_times),
            alpha_index_times=self.alpha_index_times.copy(), alpha_scalar_moments=self.n_scalar,
            alpha_moment_mapping=self.alpha_moment_mapping.copy(),
            species_coeffs=None if self.species_coeffs is None else self.species_coeffs.copy(),
            moment_coeffs=None if self.moment_coeffs is None else self.moment_coeffs.copy(),
        )
        if species is not None:
            d.species = species_numbers(self.resolve_species(species))
        return d

    @classmethod
    def from_motep(cls, data, source: str = "") -> "MTPPotential":
        rb = data.radial_basis
        pot = cls(
            species_count=int(data.species_count), min_dist=float(rb.min), max_dist=float(rb.max),
            radial_basis_size=int(rb.size), radial_funcs_count=int(data.radial_funcs_count),
            alpha_moments_count=int(data.alpha_moments_count),
            alpha_index_basic=np.asarray(data.alpha_index_basic, dtype=np.int32).reshape(-1, 4),
            alpha_index_times=np.asarray(data.alpha_index_times, dtype=np.int32).reshape(-1, 4),
            alpha_moment_mapping=np.asarray(data.alpha_moment_mapping, dtype=np.int32),
            radial_coeffs=None if data.radial_coeffs is None else np.array(data.radial_coeffs, dtype=float),
            species_coeffs=None if data.species_coeffs is None else np.array(data.species_coeffs, dtype=float),
            moment_coeffs=None if data.moment_coeffs is None else np.array(data.moment_coeffs, dtype=float),
            scaling=float(data.scaling), version=str(data.version or "1.1.0"),
            potential_name=str(data.potential_name or "MTP1m"), potential_tag=str(data.potential_tag or ""),
            radial_basis_type=str(rb.type or "RBChebyshev"), source=source,
        )
        return pot.validate()

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def untrained(cls, level: int, species: Sequence[str], cutoff: float = 5.0, min_dist: float = 0.5,
                  radial_basis_size: int = 8) -> "MTPPotential":
        """An untrained level-``level`` potential for ``species`` (alkit's level generator)."""
        from alkit.mtp.levels import generate_mtp

        text = generate_mtp(level, species, cutoff=cutoff, min_dist=min_dist, radial_basis_size=radial_basis_size)
        return cls.from_text(text, source=f"level {level} ({'-'.join(species)})")


def read_potential(path: str | os.PathLike, species: Sequence[str] | None = None,
                   trained: bool = True) -> tuple[MTPPotential, list[str]]:
    """Read ``path`` (checked), require coefficients when ``trained``, and resolve the species (type order)."""
    pot = MTPPotential.read(path)
    if trained:
        pot.require_trained()
    return pot, pot.resolve_species(species)
