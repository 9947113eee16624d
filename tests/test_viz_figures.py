"""Each figure function on hand-made data: a valid, non-blank file of the promised pixel size,
and the artists behind it hold exactly the data given (marks = spikes, image = membrane, ...)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image

from spikeforge import viz
from spikeforge.viz import style
from spikeforge.viz.events import frame_times


def check_image(path, fig, fmt: str = "PNG", min_std: float = 8.0) -> Image.Image:
    """The file is a ``fmt`` image of the figure's pixel size whose pixels are not uniform."""
    with Image.open(path) as img:
        assert img.format == fmt
        assert img.size == style.pixel_size(fig)
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert pixels.std() > min_std, f"{path} is (nearly) blank"
    return img


ROWS = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.2 / e, "train_acc": 0.5 + 0.1 * e,
         "test_acc": 0.4 + 0.1 * e} for e in (1, 2, 3)]


def test_accuracy_curves_plot_percent_per_epoch_and_name_the_best(tmp_path):
    out = viz.accuracy_curves(ROWS, tmp_path / "acc.png")
    check_image(out.path, out.figure)
    np.testing.assert_array_equal(out.lines["train"].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(out.lines["train"].get_ydata(), [60, 70, 80])
    np.testing.assert_allclose(out.lines["test"].get_ydata(), [50, 60, 70])
    ax = out.figure.axes[0]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "accuracy (%)"
    assert "best test 70.00% at epoch 3" in ax.get_title()


def test_loss_curves_leave_out_a_split_without_values(tmp_path):
    rows = [dict(r, test_loss=None) for r in ROWS]
    out = viz.loss_curves(rows, tmp_path / "loss.png", loss_name="mse_rate")
    check_image(out.path, out.figure)
    assert set(out.lines) == {"train"}
    np.testing.assert_allclose(out.lines["train"].get_ydata(), [1.0, 0.5, 1 / 3])
    assert out.figure.axes[0].get_ylabel() == "loss (mse_rate)"
    with pytest.raises(ValueError, match="no metrics"):
        viz.loss_curves([], tmp_path / "none.png")


def test_membrane_heatmap_draws_the_membrane_neurons_by_time(tmp_path):
    v = torch.linspace(-0.5, 1.5, 12 * 10).reshape(12, 10)
    out = viz.membrane_heatmap(v, tmp_path / "v.png", threshold=1.0)
    check_image(out.path, out.figure)
    np.testing.assert_array_equal(np.asarray(out.image.get_array()), v.numpy().T)
    ax = out.image.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time step", "neuron index")
    assert "membrane voltage" in out.colorbar.ax.get_ylabel()
    assert [line.get_ydata()[0] for line in out.colorbar.ax.get_lines()] == [1.0]
    # both signs: diverging map, symmetric about 0; one sign: viridis over the data range
    assert out.image.get_cmap().name == style.SIGNED_CMAP
    assert out.image.get_clim() == (-1.5, 1.5)
    out = viz.membrane_heatmap(v + 0.5, tmp_path / "w.png")
    assert out.image.get_cmap().name == style.MEMBRANE_CMAP
    assert out.image.get_clim() == pytest.approx((0.0, 2.0))
    assert out.colorbar.ax.get_lines() == []


def test_spike_raster_has_one_mark_per_spike(tmp_path):
    rng = np.random.default_rng(0)
    s = (rng.random((30, 10)) < 0.2).astype(np.float32)
    s[:, 3] = 0
    out = viz.spike_raster(s, tmp_path / "s.png", highlight=7)
    check_image(out.path, out.figure)
    offsets = np.asarray(out.marks.get_offsets())
    assert len(offsets) == int(s.sum())
    assert sorted(map(tuple, offsets.astype(int).tolist())) == sorted(
        zip(*np.nonzero(s), strict=True))
    np.testing.assert_array_equal(out.counts, s.sum(0))
    colours = out.marks.get_facecolors()
    highlighted = np.all(np.isclose(colours, to_rgba(style.HIGHLIGHT_COLOUR)), axis=1)
    np.testing.assert_array_equal(highlighted, offsets[:, 1] == 7)


def test_spike_raster_of_a_silent_layer_says_so(tmp_path):
    out = viz.spike_raster(np.zeros((4, 10)), tmp_path / "s.png")
    check_image(out.path, out.figure)
    assert len(out.marks.get_offsets()) == 0
    assert [t.get_text() for t in out.figure.axes[0].texts] == ["no spikes"]
    assert out.figure.axes[1].get_xlim() == pytest.approx((0, 1.45))
    assert [t.get_text() for t in out.count_labels] == ["0"] * 10


def test_spike_raster_writes_each_neurons_count_on_whole_number_ticks(tmp_path):
    s = np.zeros((6, 10), dtype=np.float32)
    s[[0, 2, 5], 3] = 1  # neuron 3 fires three times, neuron 8 once
    s[4, 8] = 1
    out = viz.spike_raster(s, tmp_path / "s.png", highlight=3)
    check_image(out.path, out.figure)
    assert [t.get_text() for t in out.count_labels] == ["0", "0", "0", "3", "0", "0", "0", "0",
                                                        "1", "0"]
    assert [t.get_position()[1] for t in out.count_labels] == list(range(10))  # beside each bar
    side = out.figure.axes[1]
    assert side.get_xlim()[1] > 3 and out.count_labels[3].get_position()[0] > 3  # after the bar
    ticks = [t for t in side.get_xticks() if side.get_xlim()[0] <= t <= side.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_curves_of_a_single_epoch_sit_on_epoch_one_with_visible_markers(tmp_path):
    for draw in (viz.accuracy_curves, viz.loss_curves):
        out = draw(ROWS[:1], tmp_path / f"{draw.__name__}.png")
        check_image(out.path, out.figure)
        ax = out.figure.axes[0]
        assert ax.get_xlim() == pytest.approx((0.5, 1.5))
        ticks = [t for t in ax.get_xticks() if 0.5 <= t <= 1.5]
        assert ticks == [1.0]  # one whole-number tick, not 0.95 ... 1.05
        assert all(line.get_marker() == "o" and line.get_markersize() >= 8
                   for line in out.lines.values())
    out = viz.accuracy_curves(ROWS, tmp_path / "three.png")
    assert out.figure.axes[0].get_xlim() == pytest.approx((0.5, 3.5))
    assert {t for t in out.figure.axes[0].get_xticks() if 0.5 <= t <= 3.5} == {1.0, 2.0, 3.0}


def test_layer_rates_one_bar_per_layer_in_order(tmp_path):
    rates = {"net.1 IF [64x28x28]": 0.08, "net.4 IF [256]": 0.02, "net.6 IF [10]": 0.3}
    out = viz.layer_rates(rates, tmp_path / "r.png")
    check_image(out.path, out.figure)
    np.testing.assert_allclose([b.get_width() for b in out.bars], [0.08, 0.02, 0.3])
    ax = out.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rates)
    assert ax.get_ylim()[0] > ax.get_ylim()[1]   # first layer on top
    assert [t.get_text() for t in ax.texts] == ["0.08", "0.02", "0.3"]
    with pytest.raises(ValueError, match="no spiking layer"):
        viz.layer_rates({}, tmp_path / "none.png")


def test_input_image_grey_and_events(tmp_path):
    img = torch.zeros(1, 28, 28)
    img[0, 10:18, 5:20] = 1.0
    out = viz.input_image(img, tmp_path / "in.png")
    check_image(out.path, out.figure)
    np.testing.assert_array_equal(np.asarray(out.image.get_array()), img[0].numpy())
    frames = np.zeros((6, 2, 34, 34))
    frames[2, 1, 5:10, 5:30] = 1
    frames[4, 0, 20:25, 5:30] = 2
    out = viz.input_image(frames, tmp_path / "ev.png")
    check_image(out.path, out.figure)
    np.testing.assert_array_equal(np.asarray(out.image.get_array()),
                                  viz.polarity_rgb(frames.sum(0)))
    assert out.figure.axes[0].get_title() == "Input: 375 events in 6 frames"   # 125·1 + 125·2


def test_polarity_rgb_on_red_off_blue_scaled():
    counts = np.zeros((2, 3, 3))
    counts[0, 0, 0] = 1        # OFF
    counts[1, 1, 1] = 2        # ON
    counts[1, 2, 2] = 5        # hot ON pixel, clipped at the scale
    rgb = viz.polarity_rgb(counts, scale=2.0)
    np.testing.assert_allclose(rgb[1, 1], style.ON_COLOUR)
    np.testing.assert_allclose(rgb[2, 2], style.ON_COLOUR)
    np.testing.assert_allclose(rgb[0, 0], 0.5 * np.asarray(style.OFF_COLOUR))
    assert rgb[0, 1].sum() == 0
    with pytest.raises(ValueError, match=r"\[2, H, W\]"):
        viz.polarity_rgb(np.zeros((3, 4, 4)))


def test_events_to_frames_bins_time_and_polarity():
    from spikeforge.data.binfmt import make_events

    events = make_events(x=[1, 2, 3, 3], y=[0, 0, 5, 5], t=[100, 110, 120, 130], p=[1, 0, 1, 1])
    frames = viz.events_to_frames(events, bins=2, sensor_size=(4, 6))
    assert frames.shape == (2, 2, 6, 4)
    # t - 100 over span 30, times 2 bins: 0 -> 0, 10 -> 0.67 -> 0, 20 -> 1.33 -> 1, 30 -> 1
    assert frames[0, 1, 0, 1] == 1 and frames[0, 0, 0, 2] == 1
    assert frames[1, 1, 5, 3] == 2
    assert frames.sum() == 4
    assert viz.events_to_frames(events[:0], bins=3).shape == (3, 2, 34, 34)


def test_event_grid_panels_sum_the_frames_of_their_slice(tmp_path):
    rng = np.random.default_rng(1)
    frames = (rng.random((23, 2, 34, 34)) < 0.02).astype(np.float32)
    out = viz.event_grid(frames, tmp_path / "grid.png", panels=10, time_window_us=1000)
    check_image(out.path, out.figure)
    assert len(out.images) == 10 and out.counts.shape == (10, 2, 34, 34)
    assert out.bounds[0][0] == 0 and out.bounds[-1][1] == 23
    assert all(a[1] == b[0] for a, b in zip(out.bounds, out.bounds[1:], strict=False))
    for (start, stop), counts in zip(out.bounds, out.counts, strict=True):
        np.testing.assert_array_equal(counts, frames[start:stop].sum(0))
    assert out.counts.sum() == frames.sum()
    titles = [im.axes.get_title() for im in out.images]
    assert titles[0] == "0-3 ms" and titles[-1] == "21-23 ms"


def test_frame_times():
    np.testing.assert_array_equal(frame_times(10, 3), [2, 5, 8, 9])
    np.testing.assert_array_equal(frame_times(4, 1), [0, 1, 2, 3])
    np.testing.assert_array_equal(frame_times(3, 5), [2])
    with pytest.raises(ValueError):
        frame_times(0, 1)


@pytest.mark.parametrize("steps, stride", [(8, 1), (20, 3)])
def test_spike_count_gif_one_frame_per_stride_with_cumulative_counts(tmp_path, steps, stride):
    rng = np.random.default_rng(steps)
    spikes = (rng.random((steps, 10)) < np.linspace(0.05, 0.5, 10)).astype(np.float32)
    out = viz.spike_count_gif(spikes, tmp_path / "count.gif", stride=stride, label=9,
                              classes=[f"{k} - x" for k in range(10)])
    with Image.open(out.path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == math.ceil(steps / stride)
        assert gif.size == (round(6.0 * style.DPI), round(3.6 * style.DPI))
        gif.seek(gif.n_frames - 1)
        assert np.asarray(gif.convert("L"), dtype=float).std() > 8
    assert len(out.times) == math.ceil(steps / stride) and out.times[-1] == steps - 1
    for t, counts in zip(out.times, out.counts, strict=True):
        np.testing.assert_array_equal(counts, spikes[: t + 1].sum(0))


def test_prediction_grid_marks_the_wrong_ones(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.random((7, 1, 28, 28))
    labels = [0, 1, 2, 3, 4, 5, 6]
    preds = [0, 1, 9, 3, 4, 2, 6]
    classes = [f"{k} - name" for k in range(10)]
    out = viz.prediction_grid(images, labels, preds, tmp_path / "p.png", classes=classes)
    check_image(out.path, out.figure)
    assert out.wrong == [2, 5]
    assert len(out.axes) == 7
    assert out.axes[2].get_title() == "true 2\npred 9"
    wrong_red = to_rgba(style.WRONG_COLOUR)
    for k, ax in enumerate(out.axes):
        is_red = np.allclose(ax.spines["top"].get_edgecolor(), wrong_red)
        assert is_red == (k in out.wrong)
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), images[k, 0])
    assert "5/7 correct" in out.figure.get_suptitle()
    with pytest.raises(ValueError, match="7 images but 6 labels"):
        viz.prediction_grid(images, labels[:6], preds[:6], tmp_path / "q.png")


def test_bad_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="rank 2"):
        viz.membrane_heatmap(np.zeros((3, 4, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        viz.spike_raster(np.zeros((0, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\[T, 2, H, W\]"):
        viz.event_grid(np.zeros((5, 3, 4, 4)), tmp_path / "x.png")
