"""``auto`` precision and torch threads, decided per machine (napari_connectome.ffn.precision,
.threads).

The decision is checked for both kinds of CPU by handing it their flags (this machine's and CI's
may be either kind), and on this machine end to end: what the runner chose is in the counters.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_connectome.cli import _warning_printer
from napari_connectome.errors import UserInputError
from napari_connectome.ffn.inference import segment_region
from napari_connectome.ffn.precision import (
    PrecisionWarning,
    choose_precision,
    cpu_flags,
    native_bf16,
)
from napari_connectome.ffn.runner import LockstepRunner
from napari_connectome.ffn.threads import allocated_cores, job_threads, leave_a_core
from tests.test_ffn_inference import CONFIG, OPTS, bright_painter, volume

# /proc/cpuinfo of the two kinds of machine the issue measured on
AVX2_EPYC = [
    "fpu",
    "sse",
    "sse2",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "avx",
    "f16c",
    "fma",
    "avx2",
    "bmi1",
    "bmi2",
    "sha_ni",
]
SAPPHIRE_RAPIDS = [*AVX2_EPYC, "avx512f", "avx512bw", "avx512_bf16", "amx_tile", "amx_bf16"]
AVX512_NO_BF16 = [*AVX2_EPYC, "avx512f", "avx512bw", "avx512vl", "avx512_vnni"]  # Cascade Lake


def test_auto_is_bf16_only_where_the_cpu_has_native_bf16():
    assert choose_precision("auto", "cpu", flags=SAPPHIRE_RAPIDS, environ={})[0] == "bf16"
    assert choose_precision("auto", "cpu", flags=["avx512_bf16"], environ={})[0] == "bf16"  # Zen 4
    assert choose_precision("auto", "cpu", flags=["amx_bf16"], environ={})[0] == "bf16"
    for flags in (AVX2_EPYC, AVX512_NO_BF16, []):
        precision, why = choose_precision("auto", "cpu", flags=flags, environ={})
        assert precision == "fp32"
        assert "no native bf16" in why
    precision, why = choose_precision(None, "cpu", flags=SAPPHIRE_RAPIDS, environ={})
    assert precision == "bf16"
    assert "AMX-BF16" in why
    assert "AVX512_BF16" in why


def test_onednn_held_below_its_bf16_kernels_means_fp32():
    """ONEDNN_MAX_CPU_ISA=AVX2 (a cluster pinning one ISA) makes bf16 emulated on any CPU: measured
    here, fib25-small went from 67 FOVs/s in fp32 to 2.7 in bf16 (docs/segmenting.md)."""
    for cap in ("AVX2", "avx512_core"):
        precision, why = choose_precision(
            "auto", "cpu", flags=SAPPHIRE_RAPIDS, environ={"ONEDNN_MAX_CPU_ISA": cap}
        )
        assert precision == "fp32"
        assert "ONEDNN_MAX_CPU_ISA" in why
    with pytest.warns(PrecisionWarning, match="held at AVX2"):
        choose_precision("bf16", "cpu", flags=SAPPHIRE_RAPIDS, environ={"DNNL_MAX_CPU_ISA": "AVX2"})
    for cap in ("AVX512_CORE_BF16", "AVX10_1_512_AMX", "DEFAULT"):
        environ = {"ONEDNN_MAX_CPU_ISA": cap}
        assert choose_precision("auto", "cpu", flags=SAPPHIRE_RAPIDS, environ=environ)[0] == "bf16"


def test_torch_and_cpuinfo_spell_the_flags_alike():
    # torch.cpu.get_capabilities() says avx512_f, /proc/cpuinfo avx512f; the bf16 names agree
    assert native_bf16(["AVX512_BF16", "amx_bf16"]) == ["AMX-BF16", "AVX512_BF16"]
    assert native_bf16(AVX512_NO_BF16) == []
    assert all(f == f.lower() and " " not in f for f in cpu_flags())  # this machine's, normalised


def test_explicit_bf16_without_native_bf16_warns_with_the_reason():
    with pytest.warns(PrecisionWarning, match="no native bf16.*30x slower.*auto or fp32"):
        precision, why = choose_precision("bf16", "cpu", flags=AVX2_EPYC)
    assert precision == "bf16"  # asked for: kept, only warned
    assert "emulated" in why
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about on native hardware or in fp32
        assert choose_precision("bf16", "cpu", flags=SAPPHIRE_RAPIDS, environ={})[0] == "bf16"
        assert choose_precision("fp32", "cpu", flags=AVX2_EPYC) == ("fp32", "fp32 as asked")


def test_gpus_take_bf16_where_they_have_it():
    assert choose_precision("auto", "cuda", cuda_bf16=True)[0] == "bf16"
    precision, why = choose_precision("auto", "cuda:1", cuda_bf16=False)
    assert precision == "fp32"
    assert "no native bf16" in why
    assert choose_precision("fp16", "cuda", cuda_bf16=False)[0] == "fp16"
    with pytest.warns(PrecisionWarning):
        choose_precision("bf16", "cuda", cuda_bf16=False)


def test_bad_precisions_are_refused():
    with pytest.raises(UserInputError, match="fp16 is for GPUs"):
        choose_precision("fp16", "cpu", flags=SAPPHIRE_RAPIDS)
    with pytest.raises(UserInputError, match="choose auto, fp32, bf16 or fp16"):
        choose_precision("int8", "cpu")


def test_the_runs_counters_say_what_ran_and_why():
    img = volume()
    img[18:23, 18:23, 4:92] = 255
    res = segment_region(img, bright_painter(), CONFIG, OPTS, seeds=[(20, 20, 48)])
    expected, why = choose_precision("auto", "cpu")  # this machine's answer
    c = res.counters
    assert c["precision"] == expected
    assert c["precision_requested"] == "auto"
    assert c["precision_reason"] == why
    assert c["threads"] == torch.get_num_threads()
    fp32 = segment_region(
        img, bright_painter(), CONFIG, OPTS, seeds=[(20, 20, 48)], precision="fp32"
    )
    assert fp32.counters["precision"] == "fp32"
    np.testing.assert_array_equal(fp32.labels, res.labels)  # the painter is exact in bf16 too
    runner = LockstepRunner(bright_painter(), precision="auto")
    assert (runner.precision, runner.precision_reason) == (expected, why)


def test_jobs_take_the_cores_the_allocation_gives():
    cores, where = allocated_cores({})
    assert cores >= 1
    assert where == "sched_getaffinity"
    assert allocated_cores({"SLURM_CPUS_PER_TASK": "1"}) == (1, "SLURM_CPUS_PER_TASK")
    assert allocated_cores({"NCPUS": "1"}) == (1, "NCPUS")  # PBS Pro
    # never more than the process may run on, and garbage is ignored
    assert allocated_cores({"SLURM_CPUS_PER_TASK": "100000"})[0] == cores
    assert allocated_cores({"SLURM_CPUS_PER_TASK": "x"}) == (cores, "sched_getaffinity")
    assert job_threads(1, {"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert job_threads(cores * 4, {}) == 1  # more workers than cores: one each
    assert job_threads(1, {}) == cores


def test_gui_runs_leave_the_qt_thread_a_core_and_restore_the_setting():
    before = torch.get_num_threads()
    with leave_a_core() as n:
        assert n == torch.get_num_threads() == max(1, before - 1)
        with leave_a_core() as inner:  # a second widget running meanwhile: same setting
            assert inner == n
        assert torch.get_num_threads() == n
    assert torch.get_num_threads() == before


def test_the_cli_prints_a_precision_warning_as_one_line(capsys):
    show = _warning_printer("segment")
    show(PrecisionWarning("bf16 as asked, but ..."), PrecisionWarning, "runner.py", 1)
    assert capsys.readouterr().err == "napari-connectome segment: warning: bf16 as asked, but ...\n"


def test_an_ffn_job_worker_takes_its_share_of_the_allocation(monkeypatch):
    from napari_connectome.jobs.spec import parse_spec
    from napari_connectome.jobs.tasks import _use_allocation

    spec = parse_spec(
        {
            "input": "em.h5:raw",
            "output": "seg.ome.zarr",
            "segmenter": {"kind": "ffn"},
            "backend": {"kind": "local", "workers": 1},
        }
    )
    assert spec.segmenter.precision == "auto"  # the spec's default
    before = torch.get_num_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # the environment a Slurm task sees
    try:
        _use_allocation(spec)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("SLURM_CPUS_PER_TASK")
        _use_allocation(spec)  # one worker alone on this machine: every core it may use
        assert torch.get_num_threads() == allocated_cores()[0]
    finally:
        torch.set_num_threads(before)
