"""Pick the devices to train on and return the matching tf.distribute strategy.

Call ``setup_strategy`` before TensorFlow runs anything: devices can only be configured while
the runtime is not yet initialised. GPUs are chosen by their free memory as NVML reports it;
without a usable GPU, training falls back to the CPU with a one-line message.

Several nodes: with `cluster` = "auto" and the TF_CONFIG environment variable of
tf.distribute (one entry per worker), or `cluster` = "slurm" inside an `srun` of several tasks,
the workers train together under a MultiWorkerMirroredStrategy over each node's selected
devices. cluster_role tells, without TensorFlow, whether this process is the chief (the one
that writes the run folder).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

# NVML counts GPUs in PCI bus order; make CUDA (and so TensorFlow) count them the same way.
# Set before TensorFlow touches CUDA.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

CLUSTERS = ("auto", "slurm", "none")


@dataclass(frozen=True)
class ClusterRole:
    """This process among the workers of one training: `index` of `count`."""

    index: int = 0
    count: int = 1
    chief: bool = True
    source: str = "single node"


def cluster_role(cluster: str = "auto") -> ClusterRole:
    """Which worker this process is, from TF_CONFIG ("auto") or Slurm's variables ("slurm").

    The chief is TF_CONFIG's "chief" task if it names one, else worker 0; under Slurm, task 0.
    """
    if cluster == "slurm":
        count = int(os.environ.get("SLURM_NTASKS", "1"))
        index = int(os.environ.get("SLURM_PROCID", "0"))
        return ClusterRole(index, count, index == 0, "Slurm") if count > 1 else ClusterRole()
    text = os.environ.get("TF_CONFIG") if cluster == "auto" else None
    if not text:
        return ClusterRole()
    try:
        config = json.loads(text)
        members = config["cluster"]
        task = config["task"]
        count = sum(len(members.get(kind, [])) for kind in ("chief", "worker"))
        has_chief = bool(members.get("chief"))
        chief = task["type"] == "chief" or (not has_chief and int(task["index"]) == 0)
        index = 0 if task["type"] == "chief" else int(task["index"]) + has_chief
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not tf.distribute's cluster description ({error}): give "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            '"index": i}}, or set cluster = "none" in config.py to ignore it'
        ) from None
    return ClusterRole(index, count, chief, "TF_CONFIG") if count > 1 else ClusterRole()


@dataclass
class GpuInfo:
    index: int  # CUDA index, in PCI bus order
    name: str
    free_mb: float
    total_mb: float


def query_gpus() -> list[GpuInfo]:
    """The machine's NVIDIA GPUs with their free memory; [] without a driver or GPU."""
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []  # no driver: a CPU-only machine
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(GpuInfo(index, str(name), memory.free / 2**20, memory.total / 2**20))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def select_gpus(gpus: list[GpuInfo], count: int, min_free_mb: float) -> list[GpuInfo]:
    """The GPUs with at least min_free_mb free, most free first; count=-1 takes all of them."""
    usable = sorted((g for g in gpus if g.free_mb >= min_free_mb), key=lambda g: -g.free_mb)
    return usable if count < 0 else usable[:count]


def setup_strategy(
    gpus: int = -1,
    min_free_gpu_memory_mb: float = 2000,
    logical_devices_per_gpu: int = 1,
    gpu_memory_growth: bool = True,
    cpu_replicas: int = 1,
    cluster: str = "auto",
) -> Any:
    """Configure the devices and return the strategy (a tf.distribute.Strategy) to build and
    train the model under.

    Several workers (see cluster_role) give a MultiWorkerMirroredStrategy over every worker's
    devices. On one node, several devices (GPUs, logical GPUs, or CPU replicas) give a
    MirroredStrategy: each replica gets batch_size tracks, the global batch is batch_size x
    replicas. One device gives the default strategy.
    """
    import tensorflow as tf

    role = cluster_role(cluster)
    if logical_devices_per_gpu < 1 or cpu_replicas < 1:
        raise ValueError("logical_devices_per_gpu and cpu_replicas must be at least 1 (config.py)")
    chosen = select_gpus(query_gpus(), gpus, min_free_gpu_memory_mb) if gpus != 0 else []
    physical = tf.config.list_physical_devices("GPU")
    by_index = {int(d.name.rsplit(":", 1)[-1]): d for d in physical}
    chosen = [g for g in chosen if g.index in by_index]
    try:
        if chosen:
            _configure_gpus(chosen, by_index, logical_devices_per_gpu, gpu_memory_growth)
        else:
            if physical:
                tf.config.set_visible_devices([], "GPU")
            _configure_cpu(cpu_replicas)
    except RuntimeError as error:
        raise RuntimeError(
            "gpusetter.setup_strategy must run before TensorFlow initialises its devices "
            f"(call it before building or running any model): {error}"
        ) from error

    if role.count > 1:  # created before anything initialises TensorFlow's runtime
        resolver = (
            tf.distribute.cluster_resolver.SlurmClusterResolver()
            if role.source == "Slurm"
            else tf.distribute.cluster_resolver.TFConfigClusterResolver()
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        print(
            f"Worker {role.index} of {role.count} ({role.source}"
            f"{', the chief' if role.chief else ''}): "
            f"{strategy.num_replicas_in_sync} replica(s) in all"
        )
        return strategy
    devices = [d.name for d in tf.config.list_logical_devices("GPU" if chosen else "CPU")]
    if chosen:
        names = ", ".join(f"GPU {g.index} ({g.name}, {g.free_mb:.0f} MB free)" for g in chosen)
        print(f"Training on {len(devices)} GPU device(s): {names}")
    elif gpus != 0:
        print(
            f"No GPU with >= {min_free_gpu_memory_mb} MB free memory found: training on the CPU "
            f"({len(devices)} replica(s))."
        )
    else:
        print(f"gpus = 0: training on the CPU ({len(devices)} replica(s)).")
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def strategy_for(cfg: dict[str, Any]) -> Any:
    """setup_strategy with the Devices settings of config.py."""
    return setup_strategy(
        gpus=cfg["gpus"],
        min_free_gpu_memory_mb=cfg["min_free_gpu_memory_mb"],
        logical_devices_per_gpu=cfg["logical_devices_per_gpu"],
        gpu_memory_growth=cfg["gpu_memory_growth"],
        cpu_replicas=cfg["cpu_replicas"],
        cluster=cfg["cluster"],
    )


def _configure_gpus(
    chosen: list[GpuInfo], by_index: dict, logical_per_gpu: int, memory_growth: bool
) -> None:
    import tensorflow as tf

    tf.config.set_visible_devices([by_index[g.index] for g in chosen], "GPU")
    for gpu in chosen:
        device = by_index[gpu.index]
        if logical_per_gpu > 1:
            # Memory growth and logical devices exclude each other: give each a fixed share.
            share = int(0.9 * gpu.free_mb / logical_per_gpu)
            config = [tf.config.LogicalDeviceConfiguration(memory_limit=share)] * logical_per_gpu
            tf.config.set_logical_device_configuration(device, config)
        elif memory_growth:
            tf.config.experimental.set_memory_growth(device, True)


def _configure_cpu(replicas: int) -> None:
    import tensorflow as tf

    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        config = [tf.config.LogicalDeviceConfiguration()] * replicas
        tf.config.set_logical_device_configuration(cpu, config)
