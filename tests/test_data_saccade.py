"""The saccade simulator: event counts and times by hand, refractory, noise, Tonic's stabilize."""

import math
from dataclasses import replace

import numpy as np
import pytest

from spikeforge.data.saccade import CHUNK, SaccadeConfig, simulate_saccades

QUIET = SaccadeConfig(jitter_px=0, blur_px=0, threshold_sigma=0, refractory_us=0,
                      latency_jitter_us=0, noise_hz=0)


def _ring():
    yy, xx = np.mgrid[:28, :28]
    r = np.hypot(yy - 13.5, xx - 13.5)
    return ((r > 5) & (r < 8)).astype(np.uint8) * 255


def test_recording_format():
    images = np.stack([_ring(), _ring()[::-1].T.copy()])
    for ev in simulate_saccades(images, [0, 1]):
        assert np.all(np.diff(ev["t"]) >= 0)
        assert ev["t"].min() >= 0 and ev["t"].max() <= 315_000
        assert ev["x"].min() >= 0 and ev["x"].max() < 34
        assert ev["y"].min() >= 0 and ev["y"].max() < 34
        assert set(np.unique(ev["p"])) == {0, 1}
        assert 1000 < len(ev) < 10000
        assert 0.35 < ev["p"].mean() < 0.65


def test_edge_events_counted_and_timed_by_hand():
    # left half white: during saccade 1 the digit moves right by 3.5 px (from x offset -1 to
    # 2.5), so sensor columns 13-15 go from black to white: log(1) - log(0.1) = 2.303 crosses a
    # threshold of 0.45 exactly 5 times, all ON, none OFF.
    image = np.zeros((28, 28), np.uint8)
    image[:, :14] = 255
    ev = simulate_saccades(image[None], [0], config=QUIET)[0]
    first = ev[ev["t"] < 105_000]
    for x in (13, 14, 15):
        px = first[(first["x"] == x) & (first["y"] == 15)]
        assert px["p"].tolist() == [1] * 5
    # column 14 samples the image at u = 14 - ox(t); intensity I = ox(t) = -1 + t / 30000 us
    # while 0 <= I <= 1, so the k-th ON event comes when 0.1 + 0.9 I = 0.1 * exp(0.45 k).
    px = first[(first["x"] == 14) & (first["y"] == 15)]
    expected = [30000 * (1 + 0.1 * (math.exp(0.45 * k) - 1) / 0.9) for k in range(1, 6)]
    np.testing.assert_allclose(px["t"], expected, atol=25)
    # the digit comes back to where it started, so every pixel's ON and OFF events balance; the
    # last crossing lands exactly on the starting level, so float32 rounding may drop it
    for x in range(34):
        col = ev[(ev["x"] == x) & (ev["y"] == 15)]
        assert abs((col["p"] == 1).sum() - (col["p"] == 0).sum()) <= 1


def test_refractory_period_separates_events_of_a_pixel():
    cfg = replace(QUIET, refractory_us=4000, threshold=0.2)
    ev = simulate_saccades(_ring()[None], [0], config=cfg)[0]
    free = simulate_saccades(_ring()[None], [0], config=replace(cfg, refractory_us=0))[0]
    assert len(ev) < len(free)
    pixel = ev["y"] * 34 + ev["x"]
    order = np.lexsort((ev["t"], pixel))
    same = np.diff(pixel[order]) == 0
    assert np.diff(ev["t"][order])[same].min() >= 4000 - 1  # rounding to whole us


def test_background_noise_rate():
    cfg = replace(QUIET, noise_hz=20.0)
    ev = simulate_saccades(np.zeros((1, 28, 28), np.uint8), [0], config=cfg)[0]
    mean = 20.0 * 34 * 34 * 0.315
    assert abs(len(ev) - mean) < 5 * math.sqrt(mean)
    assert abs(ev["p"].mean() - 0.5) < 0.05
    assert len(np.unique(ev["y"] * 34 + ev["x"])) > 1000  # spread over the sensor


def test_each_sample_depends_only_on_its_image_seed_and_index():
    n = CHUNK + 3  # across a chunk boundary
    images = np.stack([np.roll(_ring(), k - 4, axis=k % 2) for k in range(n)])
    together = simulate_saccades(images, range(10, 10 + n), seed=5)
    for j in (1, CHUNK + 1):
        alone = simulate_saccades(images[j:j + 1], [10 + j], seed=5)[0]
        np.testing.assert_array_equal(together[j], alone)
    other = simulate_saccades(images[1:2], [11], seed=6)[0]
    assert len(other) != len(together[1]) or not np.array_equal(other, together[1])


def test_motion_is_the_one_tonic_stabilize_undoes():
    nmnist = pytest.importorskip("tonic.datasets.nmnist")
    ev = simulate_saccades(_ring()[None], [0], config=replace(SaccadeConfig(), noise_hz=0))[0]

    def centroids(events):
        out = []
        for s in range(3):
            # the middle of each saccade, away from the turning points
            m = (events["t"] > s * 105_000 + 30_000) & (events["t"] < s * 105_000 + 75_000)
            out.append((events["x"][m].mean(), events["y"][m].mean()))
        return np.array(out)

    raw = centroids(ev)
    steady = centroids(nmnist.stabilize(ev.copy()))
    assert np.ptp(raw, axis=0).max() > 2.5  # the digit moves ...
    assert np.ptp(steady, axis=0).max() < 0.8  # ... and Tonic's stabilize brings it back
    # stabilised, the ring's centre (13.5 + 3 margin on a 34 px sensor) sits mid-sensor
    np.testing.assert_allclose(steady.mean(axis=0), [16.5, 16.5], atol=1.0)
