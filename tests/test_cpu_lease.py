"""Stage 3's CPU lease on a real local Ray cluster: Ray counts the leased CPUs as taken while the block runs,
gives them back after it (also when the block raises), and a lease waits while others hold the CPUs."""

from __future__ import annotations

import os
import threading
import time

import pytest

from itt_sweep.sweep.cpu_lease import leased_cpus


@pytest.fixture(scope="module")
def ray_two_cpus():
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


def _free_cpus(ray, expected: float, timeout_s: float = 20.0) -> float:
    """Ray's free CPUs once they reach `expected` (its resource view lags actor starts and deaths)."""
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if free == expected or time.monotonic() > deadline:
            return free


def test_nothing_is_leased_outside_ray_or_for_no_cpus():
    import ray

    assert not ray.is_initialized()
    with leased_cpus(1) as waited:
        assert waited == 0.0


def test_leased_cpus_are_taken_during_the_block_and_back_after(ray_two_cpus):
    ray = ray_two_cpus
    assert _free_cpus(ray, 2.0) == 2.0
    with leased_cpus(0) as waited:
        assert waited == 0.0 and _free_cpus(ray, 2.0) == 2.0
    with leased_cpus(1.5) as waited:
        assert waited >= 0.0
        assert _free_cpus(ray, 0.5) == 0.5
    assert _free_cpus(ray, 2.0) == 2.0
    with pytest.raises(RuntimeError, match="generation failed"), leased_cpus(2):
        assert _free_cpus(ray, 0.0) == 0.0
        raise RuntimeError("generation failed")
    assert _free_cpus(ray, 2.0) == 2.0


def test_a_lease_waits_until_another_gives_its_cpus_back(ray_two_cpus):
    ray = ray_two_cpus
    holding, release = threading.Event(), threading.Event()

    def other_trial() -> None:
        with leased_cpus(2):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=other_trial)
    thread.start()
    assert holding.wait(30)
    threading.Timer(3.0, release.set).start()
    start = time.monotonic()
    with leased_cpus(1) as waited:
        assert time.monotonic() - start >= 2.5 and waited >= 2.5
        assert release.is_set()
    thread.join(30)
    assert _free_cpus(ray, 2.0) == 2.0
