"""``alkit encode STRUCTURES... --out features.npy``: featurize structures for DIRECT sampling."""
from __future__ import annotations

import time
from pathlib import Path


def _encode(args) -> int:
    import numpy as np

    from alkit._util import atomic_write
    from alkit.encode import encoder_class, encode, get_encoder
    from alkit.errors import ConfigError
    from alkit.io import read_structures

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must be a .npy file, got {out}")
    if not out.parent.is_dir():
        raise ConfigError(f"output directory {out.parent} does not exist")
    t0 = time.perf_counter()
    structures = read_structures(args.structures, index=args.index)
    t_read = time.perf_counter() - t0
    kw: dict = {"cache_dir": args.cache_dir, "batch_size": args.batch_size, "progress": not args.quiet}
    if isinstance(getattr(encoder_class(args.encoder), "pretrained", None), str):  # a pretrained-model encoder
        kw.update(model_dir=args.model_dir, n_threads=args.threads)
    elif args.species:
        kw["species"] = args.species
    if kw["batch_size"] is None:
        kw.pop("batch_size")
    encoder = get_encoder(args.encoder, **kw)
    t1 = time.perf_counter()
    X = encode(structures, encoder)
    dt = time.perf_counter() - t1

    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a temporary name
            np.save(fh, X)

    atomic_write(out, save)  # never leave a half-written features file
    print(f"encoded N={X.shape[0]} structures from {len(args.structures)} file(s) into d={X.shape[1]} "
          f"({args.encoder}) in {dt:.1f} s ({X.shape[0] / max(dt, 1e-9):.1f} structures/s; reading {t_read:.1f} s)"
          f" -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="featurize structures (M3GNet Eform readout, MEGNet, or model-free local descriptors)",
        description="Read structures from any format ASE reads (extxyz, traj, ASE db, POSCAR, cif, ...) and write "
                    "their feature vectors as a float32 (N, d) .npy array, rows in reading order.",
    )
    p.add_argument("structures", nargs="+", help="structure files")
    p.add_argument("--out", required=True, help="output .npy file")
    p.add_argument("--encoder", default="m3gnet",  # any registered encoder (checked by get_encoder)
                   help="m3gnet: 128-D M3GNet-MP-2018.6.1-Eform readout (default); megnet: 160-D MEGNet readout; "
                        "local: model-free radial descriptors")
    p.add_argument("--batch-size", type=int, default=None, help="structures per forward pass (default 32)")
    p.add_argument("--cache-dir", default=None, help="on-disk feature cache (re-runs skip cached structures)")
    p.add_argument("--model-dir", default=None, help="pretrained models directory (default $ALKIT_MODEL_DIR)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--species", nargs="+", default=None,
                   help="local encoder: element symbols to cover (default: those found in the input)")
    p.add_argument("--index", default=":", help="ASE index of frames to read from each file (default ':' = all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_encode)

