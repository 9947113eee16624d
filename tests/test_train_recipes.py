"""Recipe defaults, settings layered recipe < TOML < flags, and the objects built from them."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge import functional as SF
from spikeforge.errors import ConfigError
from spikeforge.models import CSNN, FcLif, NmnistCSNN, RLeakyNet
from spikeforge.train import recipes
from spikeforge.train.build import (
    build_model,
    build_optimizer,
    build_scheduler,
    build_task,
    stream_seed,
)


def test_layers_recipe_then_file_then_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('T = 50\nlr = 0.01\nopt = "sgd"\nloss_args = { correct_rate = 1 }\n'
                    'loss = "mse_count"\n')
    settings = recipes.read_toml(toml)
    config = recipes.resolve("fc-lif", settings, {"T": 20, "lr": None, "seed": 7},
                             config_path=toml)
    assert (config.T, config.lr, config.opt, config.seed) == (20, 0.01, "sgd", 7)
    assert config.loss_args == {"correct_rate": 1.0}
    assert (config.tau, config.batch_size, config.epochs) == (2.0, 64, 100)  # recipe defaults


def test_saved_config_round_trips():
    config = recipes.resolve("rleaky-membrane", None, {"T": 6})
    assert recipes.from_dict(config.to_dict(), "x") == config
    with pytest.raises(ConfigError, match="not a spikeforge training config"):
        recipes.from_dict({"recipe": "fc-lif", "layers": 3}, "x")


@pytest.mark.parametrize("change, message", [
    ({"readout": "membrane"}, "readout 'membrane' needs a model with a membrane output"),
    ({"loss": "mse_membrane"}, "loss mse_membrane needs a model with a membrane output"),
    ({"encoding": "frames"}, "encoding 'frames' does not fit dataset 'mnist'"),
    ({"beta": 0.5}, "beta does not apply to model fc-lif"),
    ({"seed": -1}, "--seed must lie in [0, 2**31)"),
    ({"lr": math.inf}, "--lr must be a positive number, got inf"),
])
def test_inconsistent_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("*", r"\*")):
        recipes.resolve("fc-lif", None, change)


def test_each_recipe_builds_its_reference_network():
    nets = {name: build_model(recipes.recipe_defaults(name)) for name in recipes.RECIPES}
    assert isinstance(nets["fc-lif"], FcLif) and nets["fc-lif"].net[2].tau == 2.0
    assert isinstance(nets["csnn"], CSNN) and nets["csnn"].steps == 4
    assert nets["csnn"].stem[0].out_channels == 64
    assert isinstance(nets["nmnist-csnn"], NmnistCSNN)
    assert nets["nmnist-csnn"].net[2].beta.item() == 0.5
    for name in ("rleaky", "rleaky-membrane"):
        net = nets[name]
        assert isinstance(net, RLeakyNet) and net.steps == 10 and net.hidden.features == 128
        assert net.hidden.recurrence == "linear"
        assert net.hidden.beta.item() == pytest.approx(0.9)


def test_optimizers_and_cosine_schedule():
    sgd_config = recipes.recipe_defaults("csnn")
    sgd_config.epochs = 4
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(sgd_config, params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == 0.1
    scheduler = build_scheduler(sgd_config, sgd)
    lrs = []
    for _ in range(4):
        lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        scheduler.step()
    # cosine annealing to 0 over 4 epochs: lr_e = 0.1 (1 + cos(pi e / 4)) / 2
    assert lrs == pytest.approx([0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])

    adam = build_optimizer(recipes.recipe_defaults("nmnist-csnn"), params)
    assert isinstance(adam, torch.optim.Adam)
    assert adam.defaults["lr"] == 2e-2 and adam.defaults["betas"] == (0.9, 0.999)
    constant = build_scheduler(recipes.recipe_defaults("fc-lif"), adam)
    adam.step()
    constant.step()
    assert adam.param_groups[0]["lr"] == 2e-2


def test_task_encodes_and_reads_out_as_the_recipe_says():
    x = torch.full((3, 1, 28, 28), 0.5)
    poisson = build_task(recipes.recipe_defaults("fc-lif"))
    gen = torch.Generator().manual_seed(1)
    spikes = poisson.encode(x, gen)
    assert spikes.shape == (100, 3, 1, 28, 28) and set(spikes.unique().tolist()) == {0.0, 1.0}
    assert spikes.mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(poisson.encode(x, torch.Generator().manual_seed(1)), spikes)
    assert build_task(recipes.recipe_defaults("csnn")).encode(x) is x

    frames = build_task(recipes.resolve("nmnist-csnn", None, {"T": 5}))
    assert frames.encode(torch.rand(30, 2, 2, 34, 34)).shape == (5, 2, 2, 34, 34)
    assert build_task(recipes.recipe_defaults("nmnist-csnn")).encode(torch.rand(30, 2)).shape \
        == (30, 2)

    # membrane read-out: argmax of the mean membrane, even against the spike count
    membrane_task = build_task(recipes.recipe_defaults("rleaky-membrane"))
    spikes = torch.zeros(4, 1, 10)
    spikes[:, 0, 3] = 1
    membrane = torch.zeros(4, 1, 10)
    membrane[:, 0, 7] = 0.9
    assert membrane_task.predict(spikes, membrane).tolist() == [7]
    assert build_task(recipes.recipe_defaults("rleaky")).predict(spikes, membrane).tolist() == [3]
    y = torch.tensor([7])
    assert membrane_task.loss(spikes, membrane, y) == SF.mse_membrane(membrane, y, 1.05, 0.2)


def test_stream_seeds_are_stable_and_distinct():
    seeds = {stream_seed(s, stream, e) for s in range(3) for stream in range(2) for e in range(5)}
    assert len(seeds) == 30 and all(0 <= s < 2**63 for s in seeds)
    assert stream_seed(0, 0, 1) == stream_seed(0, 0, 1)


def test_the_description_names_the_network_the_settings_build():
    avg = recipes.resolve("csnn", {"pool": "avg", "channels": 8}, {"T": 3})
    assert avg.description == ("{Conv3x3(8)-BN-IF-AvgPool2}x2 + 2 FC-IF, direct encoding T=3, "
                               "on MNIST, mse_rate (SpikingJelly conv_fashion_mnist)")
    rleaky = recipes.resolve("rleaky", {"recurrence": "one_to_one", "hidden": 64, "beta": 0.8}, {})
    assert rleaky.description.startswith("784-64-10 RLeaky(beta=0.8), one-to-one feedback")
    assert recipes.describe(recipes.recipe_defaults("nmnist-csnn")).startswith(
        "12C5-MP2-32C5-MP2-800FC10 with Leaky(beta=0.5), event frames, on N-MNIST")
