"""Device selection: GPU choice by free memory, CPU fallback, multi-replica strategy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from gpusetter import GpuInfo, select_gpus

ROOT = Path(__file__).resolve().parents[1]

GPUS = [
    GpuInfo(0, "A100", free_mb=1000, total_mb=40000),
    GpuInfo(1, "A100", free_mb=30000, total_mb=40000),
    GpuInfo(2, "A100", free_mb=12000, total_mb=40000),
]


def test_select_gpus_by_free_memory():
    assert [g.index for g in select_gpus(GPUS, -1, 2000)] == [1, 2]  # GPU 0 is busy
    assert [g.index for g in select_gpus(GPUS, 1, 2000)] == [1]  # the freest first
    assert [g.index for g in select_gpus(GPUS, 5, 0)] == [1, 2, 0]
    assert select_gpus(GPUS, -1, 50000) == []
    assert select_gpus([], -1, 0) == []


def run_python(code: str) -> subprocess.CompletedProcess:
    """Device configuration happens once per process: each case gets a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)},
    )


def test_cpu_fallback_gives_the_default_strategy():
    result = run_python(
        """
        import tensorflow as tf
        from gpusetter import setup_strategy
        strategy = setup_strategy(gpus=-1)
        assert strategy is tf.distribute.get_strategy(), type(strategy)
        print("replicas", strategy.num_replicas_in_sync)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "training on the CPU" in result.stdout
    assert "replicas 1" in result.stdout


def test_cpu_replicas_give_a_mirrored_strategy_with_a_global_batch():
    result = run_python(
        """
        import numpy as np, tensorflow as tf
        from gpusetter import setup_strategy
        strategy = setup_strategy(gpus=0, cpu_replicas=2)
        assert isinstance(strategy, tf.distribute.MirroredStrategy), type(strategy)
        dataset = tf.data.Dataset.from_tensor_slices(np.arange(8.0)).batch(4)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
        per_replica = strategy.experimental_local_results(batch)
        print("replicas", strategy.num_replicas_in_sync, [len(p) for p in per_replica])
        """
    )
    assert result.returncode == 0, result.stderr
    assert "replicas 2 [2, 2]" in result.stdout


def test_configuring_after_initialisation_is_a_clear_error():
    result = run_python(
        """
        import tensorflow as tf
        tf.constant(1.0) + 1.0  # initialises the runtime
        from gpusetter import setup_strategy
        setup_strategy(gpus=0, cpu_replicas=2)
        """
    )
    assert result.returncode != 0
    assert "must run before TensorFlow initialises its devices" in result.stderr
