"""A real ASE calculator for failure-injection tests: CHGNet, except that chosen structures fail."""
from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes


class FlakyCHGNet(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, fail_natoms: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.fail_natoms = fail_natoms
        self._inner = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) == self.fail_natoms:
            raise RuntimeError(f"SCF did not converge (injected failure for {self.fail_natoms}-atom cells)")
        if self._inner is None:
            from chgnet.model.dynamics import CHGNetCalculator

            self._inner = CHGNetCalculator(use_device="cpu")
        self._inner.calculate(self.atoms, properties, system_changes)
        self.results = dict(self._inner.results)


class SlowCHGNet(Calculator):
    """CHGNet that takes ``delay`` seconds per structure and appends the chemical formula and a position digest of
    every *finished* calculation to ``log_path`` (so a test can see what was computed, and how often)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, delay: float = 1.0, log_path: str = "calls.log", **kwargs):
        super().__init__(**kwargs)
        self.delay = float(delay)
        self.log_path = log_path
        self._inner = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import hashlib
        import time

        super().calculate(atoms, properties, system_changes)
        if self._inner is None:
            from chgnet.model.dynamics import CHGNetCalculator

            self._inner = CHGNetCalculator(use_device="cpu")
        time.sleep(self.delay)
        self._inner.calculate(self.atoms, properties, system_changes)
        self.results = dict(self._inner.results)
        digest = hashlib.sha256(self.atoms.positions.round(6).tobytes()).hexdigest()[:16]
        with open(self.log_path, "a") as fh:
            fh.write(f"{self.atoms.get_chemical_formula()} {digest}\n")
