"""Every build variant of the compiled kernels that spikeforge ships equals the reference.

The kernel sources are portable (kernels/simd16.h); ``-march`` picks the instruction set. Each
variant a user's machine can get is built here and checked with the equivalence tests of
test_kernels_sparse.py, test_kernels_poisson_linear.py, test_kernels_sparse_input.py and
test_kernels_neuron_pool.py (dense torch layers as reference:
identical spikes, gradients within those files' tolerances): ``native`` (AVX-512 on the project
machine), ``x86-64-v3`` (AVX2/FMA, e.g. AMD Zen 3), ``x86-64`` (SSE2 only, no FMA) and a build
without OpenMP (a compiler that lacks it, such as Apple clang). The AArch64 (NEON) build is
cross-compiled, and run under qemu-user where it is installed, in test_kernels_aarch64.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_kernels_neuron_pool as neuron_pool_tests
import test_kernels_poisson_linear as poisson_tests
import test_kernels_sparse as sparse_tests
import test_kernels_sparse_input as sparse_input_tests
import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.kernels import build, cpu, neuron_pool, poisson, rleaky, sparse, sparse_input

KERNELS = Path(sparse.__file__).parent
#: (-march value, OpenMP) of each variant.
VARIANTS = [("native", True), ("x86-64-v3", True), ("x86-64", True), ("native", False)]
_X86_FLAGS = {"x86-64-v3": ("avx2", "fma", "bmi2", "movbe")}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _runnable(march: str) -> str | None:
    """Why this CPU cannot run the ``march`` build, or None when it can."""
    if march == "native":
        return None
    if build.platform.machine() not in ("x86_64", "AMD64"):
        return f"the {march} build needs an x86-64 CPU"
    missing = [f for f in _X86_FLAGS.get(march, ()) if f not in _cpu_flags()]
    return f"this CPU lacks {', '.join(missing)} for the {march} build" if missing else None


@pytest.fixture(params=VARIANTS, ids=lambda v: f"{v[0]}{'' if v[1] else '-no-openmp'}")
def variant(request, monkeypatch):
    """The sparse, Poisson, sparse-input and IF-MaxPool kernels of one variant in place of the
    default build."""
    march, openmp = request.param
    reason = _runnable(march)
    if reason:
        pytest.skip(reason)
    try:
        libs = {
            "sparse": build.bind(KERNELS / "sparse_kernels.cpp", sparse._SIGNATURES, march, openmp),
            "poisson": build.bind(KERNELS / "poisson_kernels.cpp", poisson._SIGNATURES, march,
                                  openmp),
            "sparse_input": build.bind(KERNELS / "sparse_input_kernels.cpp",
                                       sparse_input._SIGNATURES, march, openmp),
            "neuron_pool": build.bind(KERNELS / "neuron_pool_kernels.cpp",
                                      neuron_pool._SIGNATURES, march, openmp),
        }
    except build.BuildError as err:
        pytest.skip(f"the kernels cannot be compiled here: {str(err)[:200]}")
    monkeypatch.setattr(sparse, "library", lambda: libs["sparse"])
    monkeypatch.setattr(poisson, "library", lambda: libs["poisson"])
    libs["sparse_input"].sparse_input_weight_grad.restype = sparse_input._RESTYPE
    monkeypatch.setattr(sparse_input, "library", lambda: libs["sparse_input"])
    monkeypatch.setattr(neuron_pool, "library", lambda: libs["neuron_pool"])
    return march, openmp, libs


def test_every_kernel_library_builds_and_loads(variant):
    march, openmp, libs = variant
    for module, name in [(cpu, "cpu_kernels"), (rleaky, "rleaky_kernels")]:
        lib = build.bind(KERNELS / f"{name}.cpp", module._SIGNATURES, march, openmp)
        assert all(hasattr(lib, fn) for fn in module._SIGNATURES)
    if not openmp:  # single-threaded: no OpenMP runtime behind the library
        for lib in libs.values():
            assert not hasattr(lib, "GOMP_parallel") and not hasattr(lib, "__kmpc_fork_call")


def test_sparse_layers_equal_dense(variant):
    torch.manual_seed(0)
    sparse_tests._compare(sparse_tests._events((3, 4, 12, 15, 15), 0.2, seed=1),
                          nn.Conv2d(12, 32, 5), channels_last=True)
    sparse_tests._compare(sparse_tests._events((2, 3, 2, 34, 34), 0.02, seed=2, counts=True),
                          nn.Conv2d(2, 12, 5), channels_last=False)


def test_fused_blocks_equal_layers(variant, monkeypatch):
    sparse_tests.test_fused_blocks_equal_layers_with_state_gradients("zero", 3, True, monkeypatch)


def test_nmnist_model_spikes_identical(variant):
    sparse_tests.test_nmnist_model_sparse_path_equals_dense_layers(True)


def test_poisson_linear_equals_encoding(variant):
    poisson_tests.test_forward_draws_the_encoders_spikes(3, 784, 10, 4)
    poisson_tests.test_forward_draws_the_encoders_spikes(4, 50, 21, 3)
    poisson_tests.test_weight_gradient_equals_the_dense_layers(21)


def test_sparse_input_weight_gradient_equals_dense(variant):
    sparse_input_tests.test_hand_computed_gradient()
    sparse_input_tests.test_equals_the_dense_product(37, 53, 29, 0.2, True)
    sparse_input_tests.test_equals_the_dense_product(1152, 128, 128, 0.125, False)
    sparse_input_tests.test_same_result_on_every_thread_count()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
def test_if_maxpool_equals_the_separate_layers(variant, channels_last):
    neuron_pool_tests.test_ties_route_the_gradient_to_the_first_maximum_as_torch_does(
        channels_last)
    for make in neuron_pool_tests.NEURONS:
        neuron_pool_tests.test_sequence_input_matches_the_separate_layers(
            make.values[0], (3, 2, 5, 7, 9), channels_last)
        neuron_pool_tests.test_static_input_is_read_once_and_its_gradient_summed_over_time(
            make.values[0], channels_last)


def test_arch_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(build.ARCH_ENV, raising=False)
    assert build.arch() == "native"
    monkeypatch.setenv(build.ARCH_ENV, "x86-64-v3")
    assert build.arch() == "x86-64-v3"
    assert build.flag_sets(build.arch())[0][-2:] == ("-march=x86-64-v3", "-fopenmp")
    assert all("-march=x86-64-v3" in f for f in build.flag_sets("x86-64-v3"))  # never dropped
    monkeypatch.setenv(build.ARCH_ENV, "native; rm -rf /")
    with pytest.raises(ConfigError, match=build.ARCH_ENV):
        build.arch()


def test_a_compiler_without_openmp_still_builds(monkeypatch, tmp_path):
    """A compiler that rejects -fopenmp (as Apple clang does) gets the single-threaded build,
    still with -march=native."""
    cxx = build.shutil.which("g++") or build.shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler here")
    fake = tmp_path / "cxx-without-openmp"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\n'
                    f'exec {cxx} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "k.cpp"
    src.write_text('#ifdef _OPENMP\nextern "C" int threaded() { return 1; }\n#else\n'
                   'extern "C" int threaded() { return 0; }\n#endif\n'
                   '#ifdef __AVX2__\nextern "C" int avx2() { return 1; }\n#endif\n')
    lib = build.load(src, "native")
    assert lib.threaded() == 0
    if "avx2" in _cpu_flags():  # -march=native kept: the baseline x86-64 has no AVX2
        assert lib.avx2() == 1
