"""Figures of a run: what the network learned and what its neurons did (matplotlib, Agg).

Every function takes plain arrays or tensors, writes one file and returns the artists and data
behind it (so a test can check what was drawn):

    curves        accuracy_curves, loss_curves           metrics rows → acc.png, loss.png
    inputs        input_image                            image or summed event frames
    neurons       membrane_heatmap, spike_raster,         v [T, N], s [T, N], {layer: rate}
                  layer_rates
    predictions   prediction_grid                        images, labels, predictions
    events        event_grid, spike_count_gif,            frames [T, 2, H, W], spikes [T, C]
                  events_to_frames, polarity_rgb
    recording     record                                 recorded forward of a loaded run
    energy        energy_figure                          spikeforge.energy.Report → energy.png

No pyplot: figures live on their own Agg canvas, so importing this package changes no global
matplotlib state; GIFs are written by Pillow (no ffmpeg).
"""

from .curves import accuracy_curves, loss_curves
from .energy import energy_figure
from .events import event_grid, events_to_frames, polarity_rgb, spike_count_gif
from .inputs import input_image
from .neurons import layer_rates, membrane_heatmap, spike_raster
from .predictions import prediction_grid

__all__ = ["accuracy_curves", "energy_figure", "event_grid", "events_to_frames", "input_image",
           "layer_rates", "loss_curves", "membrane_heatmap", "polarity_rgb", "prediction_grid",
           "spike_count_gif", "spike_raster"]
