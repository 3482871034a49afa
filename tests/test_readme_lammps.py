"""The README's LAMMPS input example runs as printed (paths and the run length substituted) with a real potential
and active set, and the grade it prints equals alkit's."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_mtp_grade import SPECIES, build_tih

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tih(tmp_path_factory):
    return build_tih(tmp_path_factory.getbasetemp() / "alkit_tih_mtp")


def test_readme_lammps_example_runs(tih, tmp_path):
    from ase.io import write

    from alkit.lammps import plugin_path
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    ActiveSet.fit(pot, train, SPECIES, mode="nbh").save(tmp_path / "state.als")
    (tmp_path / "pot.mtp").write_bytes(Path(pot).read_bytes())
    ActiveSet.fit(tmp_path / "pot.mtp", train, SPECIES, mode="nbh").save(tmp_path / "state.als")
    cell = train[35].copy() * (2, 2, 2)
    order = np.argsort(cell.numbers != 22, kind="stable")  # Ti first: type 1 = Ti, type 2 = H as the example says
    cell = cell[order]
    write(tmp_path / "tih.data", cell, format="lammps-data", specorder=["Ti", "H"], masses=True)
    text = (REPO / "README.md").read_text()
    block = re.search(r"```lammps\n(.*?)```", text, re.S).group(1)
    block = block.replace("/path/printed/by/alkit-lammps-plugin-path/alkit_mtp_plugin.so", str(plugin_path()))
    block = block.replace("run             20000", "run             200")
    (tmp_path / "in.tih").write_text(block)
    lmp = Path(sys.executable).parent / "lmp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([str(lmp), "-in", "in.tih", "-log", "log.lammps"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    log = (tmp_path / "log.lammps").read_text()
    assert "Loop time" in log and "ERROR" not in log
    rows = [line.split() for line in log.splitlines() if re.match(r"^\s+0\s+1000\s", line)]
    assert rows, log[-2000:]
    gamma0 = float(rows[0][4])
    from alkit.mtp.grade import ActiveSet as AS

    aset = AS.load(tmp_path / "state.als")
    assert gamma0 == pytest.approx(aset.grade(cell)[0], rel=1e-5)  # thermo prints 6 digits
