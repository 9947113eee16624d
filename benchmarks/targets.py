"""The speed targets (issue 14): per recipe, the reference loop spikeforge is compared with and
the factor its training and evaluation img/s must reach over it; and how close
``spikeforge bench`` must come to a real ``spikeforge train`` run."""

from __future__ import annotations

#: recipe → (reference framework, spikeforge img/s ÷ the reference's, at least)
TARGETS = {
    "fc-lif": ("spikingjelly-ss", 20.0),
    "csnn": ("spikingjelly-ms", 3.0),
    "nmnist-csnn": ("snntorch", 5.0),
    "rleaky": ("snntorch", 4.0),
}
#: ``spikeforge bench``'s train img/s within this fraction of ``spikeforge train``'s
BENCH_AGREEMENT = 0.25
