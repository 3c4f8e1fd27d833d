"""The benchmarks: where each one's folder is, which reader reads it, what is propagated on
it and how it is scored (:data:`BENCHMARKS`). Data only: the readers are in
:mod:`hvc.eval.readers`, so the experiment plan can consult this without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hvc.config.params import ParamsError


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark is found, read, propagated and scored.

    Attributes:
        folder: its folder below ``data.root``; the first part is the dataset's name in
            ``hvc/data/datasets.yaml`` (``hvc fetch NAME`` extracts it to data.root/NAME).
        reader: ``"davis2017"``, ``"davis2017_testdev"``, ``"davis2016"``, ``"ytvos"``,
            ``"vost"``, ``"vip"`` or ``"jhmdb"``; see :func:`hvc.eval.readers.read_benchmark`.
        task: what is propagated: ``"vos"`` object masks, ``"parts"`` part labels at
            560x560 (VIP), ``"pose"`` joints at 320x320 (JHMDB) (paper §4.1).
        scoring: ``"davis"`` J&F (DAVIS toolkit), ``"vost"`` J and J on the last 25% of
            frames (VOST toolkit), ``"server"`` ground truth not public: a submission
            archive plus the server's score file, ``"miou"`` part mIoU, ``"pck"`` PCK.
        annotations: ground-truth folder below the benchmark folder (davis, vost scoring).
        server: where the submission archive is uploaded (server scoring).
        archive_prefix: folder inside the submission archive that holds
            ``<video>/<frame>.png`` (YouTube-VOS: ``Annotations``; DAVIS: none).
    """

    folder: str
    reader: str
    task: str = "vos"
    scoring: str = "davis"
    annotations: str = ""
    server: str = ""
    archive_prefix: str = ""


_CODALAB = "https://codalab.lisn.upsaclay.fr"
# name → how to find, read, propagate and score it (params: data.benchmarks)
BENCHMARKS: dict[str, Benchmark] = {
    "demo": Benchmark("", "davis2017", annotations="Annotations/480p"),
    "davis2017": Benchmark("davis2017_trainval/DAVIS", "davis2017", annotations="Annotations/480p"),
    "davis2016": Benchmark("davis2016/DAVIS", "davis2016", annotations="Annotations/480p"),
    "davis2017_testdev": Benchmark(
        "davis2017_testdev/DAVIS", "davis2017_testdev", scoring="server",
        server=f"{_CODALAB} (DAVIS Challenge, semi-supervised, test-dev phase)",
    ),
    "ytvos2018": Benchmark(
        "ytvos2018_val", "ytvos", scoring="server", archive_prefix="Annotations",
        server=f"{_CODALAB} (YouTube-VOS 2018, semi-supervised VOS, valid phase)",
    ),
    "ytvos2019": Benchmark(
        "ytvos2019_val", "ytvos", scoring="server", archive_prefix="Annotations",
        server=f"{_CODALAB} (YouTube-VOS 2019, semi-supervised VOS, valid phase)",
    ),
    "vost": Benchmark("vost/VOST", "vost", scoring="vost", annotations="Annotations"),
    "vip": Benchmark("vip", "vip", task="parts", scoring="miou"),
    "jhmdb": Benchmark("jhmdb", "jhmdb", task="pose", scoring="pck"),
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
