import numpy as np
import pytest
from ase.build import bulk

from alkit import cli
from alkit.config import PES_MODEL, model_path, model_root
from alkit.errors import InputError, ModelNotFoundError
from alkit.events import EventLog, read_events
from alkit.io import check_structure, read_structures, structure_hash, to_atoms, write_structures


def test_model_dir_resolution(model_dir, tmp_path):
    assert model_root(model_dir) == model_dir.resolve()
    assert (model_path(PES_MODEL, model_dir) / "model.pt").is_file()
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        model_root(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="not found"):
        model_path("No-Such-Model", model_dir)


def test_structure_hash_is_stable_and_sensitive():
    a = bulk("Ti", "hcp", a=2.95, c=4.68)
    b = a.copy()
    assert structure_hash(a) == structure_hash(b)
    b.positions[0, 0] += 1e-3
    assert structure_hash(a) != structure_hash(b)


def test_read_structures_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_structures(tmp_path / "missing.xyz")
    bad = tmp_path / "bad.xyz"
    bad.write_text("this is not\nan xyz file\n")
    with pytest.raises(InputError, match="bad.xyz"):
        read_structures(bad)


def test_roundtrip_and_pymatgen(tmp_path):
    atoms = [bulk("Ti", "hcp", a=2.95, c=4.68), bulk("Cu", "fcc", a=3.6)]
    write_structures(tmp_path / "s.extxyz", atoms)
    back = read_structures(tmp_path / "s.extxyz")
    assert [len(a) for a in back] == [2, 1]
    from alkit.io import to_structure

    assert structure_hash(to_atoms(to_structure(atoms[0]))) == structure_hash(atoms[0])


def test_check_structure_overlap():
    a = bulk("Ti", "hcp", a=2.95, c=4.68)
    check_structure(a)
    a.positions[1] = a.positions[0] + [0.1, 0, 0]
    with pytest.raises(InputError, match="overlapping"):
        check_structure(a)


def test_event_log_skips_torn_line(tmp_path):
    log = EventLog(tmp_path)
    log.emit("run_started", mode="direct", config={"value": np.float32(1.5)})  # numpy scalars are written too
    with open(log.path, "a") as fh:
        fh.write('{"time": 1, "event": "lab')  # a kill mid-write
    assert [e["event"] for e in read_events(tmp_path)] == ["run_started"]
    assert read_events(tmp_path)[0]["config"]["value"] == 1.5


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "alkit" in capsys.readouterr().out
