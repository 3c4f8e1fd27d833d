"""The benchmarks, one registry entry each (:data:`BENCHMARKS`): where its folder is, which
reader reads it, what is propagated on it, how it is scored and its name in the tables.
Data only: readers are named ``"module:function"`` and imported when used, so the
experiment plan can consult this without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hvc.config.section import ParamsError


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark is found, read, propagated and scored.

    Attributes:
        folder: its folder below ``data.root``; the first part is the dataset's name in
            ``hvc/config/datasets.yaml`` (``hvc fetch NAME`` extracts it to data.root/NAME).
        reader: ``"module:function"`` that reads its videos from its folder (e.g.
            ``"hvc.eval.readers:read_davis2016_val"``), :func:`hvc.eval.readers.read_benchmark`.
        task: what is propagated: ``"vos"`` object masks, ``"parts"`` part labels at
            560x560 (VIP), ``"pose"`` joints at 320x320 (JHMDB) (paper §4.1).
        scoring: ``"davis"`` J&F (DAVIS toolkit), ``"vost"`` J and J on the last 25% of
            frames (VOST toolkit), ``"server"`` ground truth not public: a submission
            archive plus the server's score file, ``"miou"`` part mIoU, ``"pck"`` PCK.
        annotations: ground-truth folder below the benchmark folder (davis, vost scoring).
        server: where the submission archive is uploaded (server scoring).
        archive_prefix: folder inside the submission archive that holds
            ``<video>/<frame>.png`` (YouTube-VOS: ``Annotations``; DAVIS: none).
        display: its name in the tables (``"DAVIS17"``).
    """

    folder: str
    reader: str
    task: str = "vos"
    scoring: str = "davis"
    annotations: str = ""
    server: str = ""
    archive_prefix: str = ""
    display: str = ""


_CODALAB = "https://codalab.lisn.upsaclay.fr"
_READERS = "hvc.eval.readers"
# name → how to find, read, propagate and score it (params: data.benchmarks)
BENCHMARKS: dict[str, Benchmark] = {
    "demo": Benchmark("", f"{_READERS}:read_davis2017_val", annotations="Annotations/480p", display="Demo"),
    "davis2017": Benchmark("davis2017_trainval/DAVIS", f"{_READERS}:read_davis2017_val", annotations="Annotations/480p", display="DAVIS17"),
    "davis2016": Benchmark("davis2016/DAVIS", f"{_READERS}:read_davis2016_val", annotations="Annotations/480p", display="DAVIS16"),
    "davis2017_testdev": Benchmark(
        "davis2017_testdev/DAVIS", f"{_READERS}:read_davis2017_testdev", scoring="server",
        server=f"{_CODALAB} (DAVIS Challenge, semi-supervised, test-dev phase)", display="DAVIS17 test-dev",
    ),
    "ytvos2018": Benchmark(
        "ytvos2018_val", f"{_READERS}:read_ytvos_valid", scoring="server", archive_prefix="Annotations",
        server=f"{_CODALAB} (YouTube-VOS 2018, semi-supervised VOS, valid phase)", display="YT-VOS18",
    ),
    "ytvos2019": Benchmark(
        "ytvos2019_val", f"{_READERS}:read_ytvos_valid", scoring="server", archive_prefix="Annotations",
        server=f"{_CODALAB} (YouTube-VOS 2019, semi-supervised VOS, valid phase)", display="YT-VOS19",
    ),
    "vost": Benchmark("vost/VOST", f"{_READERS}:read_vost", scoring="vost", annotations="Annotations", display="VOST"),
    "vip": Benchmark("vip", f"{_READERS}:read_vip", task="parts", scoring="miou", display="VIP"),
    "jhmdb": Benchmark("jhmdb", f"{_READERS}:read_jhmdb", task="pose", scoring="pck", display="JHMDB"),
}  # fmt: skip


def benchmark_root(name: str, data_root: Path, demo_dir: Path | None = None) -> Path:
    """The folder of benchmark ``name``: below ``data_root``, or the demo's benchmark folder.

    Raises:
        ParamsError: ``name`` is not a benchmark, or is ``"demo"`` without ``demo_dir``.
    """
    if name == "demo":
        if demo_dir is None:
            raise ParamsError("the demo benchmark needs the demo-data folder (hvc: --demo DIR or --data DIR/benchmark)")
        return Path(demo_dir) / "benchmark"
    return Path(data_root) / get_benchmark(name).folder


def get_benchmark(name: str) -> Benchmark:
    """The :class:`Benchmark` called ``name``; ParamsError naming the known ones otherwise."""
    if name not in BENCHMARKS:
        raise ParamsError(f"benchmark {name!r} (data.benchmarks or --benchmark) is not one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]
