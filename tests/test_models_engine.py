
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmsearch.config import OptimConfig, load_experiment
from mmsearch.errors import AssetMissingError, ConfigError
from mmsearch.models import BACKBONES, CaptionNet, FusionNet, ImageNet, build_backbone, swap_relu
from mmsearch.optim import LOSSES, class_weight_vector
from mmsearch.training import Callback, TensorBatches, fit, samples_f1, validation_scores

from conftest import needs_mobilenet


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_and_runs(name: str) -> None:
    model = ImageNet(name, pretrained=False, leaky_relu=True)
    model.eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 64, 64))
        feats = model.features(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 18) and feats.shape == (1, BACKBONES.get(name).feature_dim)


def test_leaky_relu_swap_leaves_no_relu() -> None:
    model, _ = build_backbone("resnet18", pretrained=False)
    assert swap_relu(model) > 0
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in model.modules())


def test_pretrained_weights_missing_offline_names_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, wherever the real one is
    with pytest.raises(AssetMissingError) as err:
        build_backbone("resnet50", pretrained=True)
    assert "resnet50-" in str(err.value) and str(tmp_path / "hub" / "checkpoints") in str(err.value)


@needs_mobilenet
def test_pretrained_mobilenet_loads_from_torch_home() -> None:
    model, dim = build_backbone("mobilenet_v2", pretrained=True)
    assert dim == 1280 and float(model.features[0][0].weight.abs().sum()) > 1


def test_fusion_dropout_layers_and_caption_features() -> None:
    for count in (0, 1, 2):
        net = FusionNet(20, hidden_size=8, hidden_layers=1, dropout_count=count, dropout_p=0.1)
        assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == count
    cap = CaptionNet(np.random.rand(10, 5).astype(np.float32), hidden_size=4, pooling="mean")
    ids = torch.tensor([[2, 3, 0], [4, 0, 0]])
    assert cap.features(ids, torch.tensor([2, 1])).shape == (2, 8)


def test_word_dropout_hides_words_in_training_only() -> None:
    torch.manual_seed(0)
    vectors = np.random.rand(10, 5).astype(np.float32)
    cap = CaptionNet(vectors, hidden_size=4, pooling="max", word_dropout=1.0)
    ids, lengths = torch.tensor([[2, 3, 0], [4, 0, 0]]), torch.tensor([2, 1])
    all_unknown = torch.tensor([[1, 1, 0], [1, 0, 0]])  # padding stays padding
    cap.eval()
    kept = cap.features(ids, lengths)
    assert not torch.allclose(kept, cap.features(all_unknown, lengths))
    cap.train()
    cap.dropout.p = 0.0  # isolate the word dropout from the feature dropout
    assert torch.allclose(cap.features(ids, lengths), cap.features(all_unknown, lengths))
    cap.word_dropout = 0.5
    hidden = [(cap.features(ids, lengths) - kept).abs().sum().item() > 0 for _ in range(20)]
    assert any(hidden) and not all(hidden)  # some steps keep both rows' words, some do not


def test_weighted_bce_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, -1.0] + [0.0] * 16])
    targets = torch.tensor([[1.0, 1.0] + [0.0] * 16])
    weights = class_weight_vector({1: 0.4}, np.zeros((1, 18)))
    got = float(LOSSES.get("bce")(weights)(logits, targets))
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    per = [-np.log(sig(2.0)) * 0.4, -np.log(sig(-1.0))] + [-np.log(1 - sig(0.0))] * 16
    assert got == pytest.approx(np.mean(per), rel=1e-6)


class _Recorder(Callback):
    def __init__(self) -> None:
        self.f1 = []

    def on_epoch_end(self, state, epoch) -> None:  # type: ignore[no-untyped-def]
        self.f1.append(epoch.val_f1)


def test_early_stopping_restores_the_best_epoch() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10)).astype(np.float32)
    y = np.zeros((400, 18), np.float32)
    y[:, 0] = 1
    y[:, 1] = (x[:, 0] > 0)
    model = nn.Sequential(nn.Linear(10, 18))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    train = TensorBatches([tx[:300]], ty[:300], 32, shuffle=True)
    val = TensorBatches([tx[300:]], ty[300:], 100)
    recorder = _Recorder()
    # A huge learning rate makes later epochs worse than an early one.
    result = fit(model, train, val, OptimConfig(epochs=12, lr=3.0, early_stopping=3), train_targets=y[:300],
                 val_targets=y[300:], callbacks=[recorder])
    best = int(np.argmax(recorder.f1)) + 1
    assert result.best_epoch == best
    assert result.metrics["val_f1"] == pytest.approx(max(recorder.f1))
    assert len(recorder.f1) <= best + 3


def test_samples_f1_by_hand() -> None:
    truth = np.array([[1, 1, 0], [0, 1, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 1]])
    assert samples_f1(truth, pred) == pytest.approx(np.mean([2 / 3, 2 / 3]))


def test_validation_scores_tune_thresholds_only_when_asked() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((200, 18)) < 0.2
    truth[np.arange(200), rng.integers(0, 18, 200)] = True
    # Every row has one confident label; its other labels score 0.30-0.45, above every negative but under 0.5.
    probs = np.where(truth, rng.uniform(0.30, 0.45, truth.shape), rng.uniform(0.0, 0.25, truth.shape))
    probs[np.arange(200), truth.argmax(1)] = 0.9
    fixed, plain = validation_scores(truth, probs, tune=False)
    tuned, scored = validation_scores(truth, probs, tune=True)
    assert (fixed == 0.5).all() and "val_f1_tuned" not in plain and plain["val_f1"] == scored["val_f1"]
    assert scored["val_f1_tuned"] > scored["val_f1"] + 0.05 and (tuned < 0.5).any()


def test_invalid_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        load_experiment("cpu", {"image.backbone": "resnet51", "text.optim.lr": -1, "fusion.dropout_p": 2,
                                "text.corpus": "nope", "fusion.bogus": 1, "image.optim.epochs": "ten"})
    text = str(err.value)
    for needle in ("image.backbone", "resnet51", "text.optim.lr", "-1", "fusion.dropout_p", "text.corpus",
                   "fusion.bogus", "image.optim.epochs", "'ten'"):
        assert needle in text
    assert len(err.value.problems) == 6


def test_paper_experiment_is_appendix_6_1() -> None:
    cfg = load_experiment("paper")
    assert (cfg.image.backbone, cfg.image.optim.batch_size, cfg.image.optim.epochs, cfg.image.optim.lr) == ("resnet50", 128, 15, 1e-4)
    assert (cfg.text.corpus, cfg.text.seq_len, cfg.text.optim.batch_size, cfg.text.optim.lr) == ("glove-twitter-100", 8, 250, 0.02)
    assert cfg.text.optim.weight_decay == 1e-5 and cfg.text.optim.step_gamma == 0.95 and cfg.text.optim.grad_clip == 0.5
    assert (cfg.fusion.hidden_size, cfg.fusion.dropout_p, cfg.fusion.optim.batch_size, cfg.fusion.optim.epochs) == (2000, 0.05, 1000, 80)
    assert cfg.fusion.optim.class_weights == {1: 0.5} and cfg.fusion.optim.plateau_patience == 2


class _Slow(Callback):
    def on_epoch_end(self, state, epoch) -> None:  # type: ignore[no-untyped-def]
        import time

        time.sleep(0.05)


def test_engine_accounts_for_time_spent_in_callbacks() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(200, 10)).astype(np.float32))
    y = torch.from_numpy((rng.random((200, 18)) < 0.3).astype(np.float32))
    result = fit(nn.Sequential(nn.Linear(10, 18)), TensorBatches([x[:150]], y[:150], 50), TensorBatches([x[150:]], y[150:], 50),
                 OptimConfig(epochs=4, lr=0.01, early_stopping=None), train_targets=y[:150].numpy(),
                 val_targets=y[150:].numpy(), callbacks=[_Slow()])
    # Four epochs of a 50 ms hook: the engine charges it to that callback, inside the fit's time.
    assert 0.2 <= result.callback_seconds["_Slow"] <= result.seconds
    assert set(result.callback_seconds) == {"RestoreBest", "_Slow"}  # early_stopping=None: nothing stops it


def test_each_backbones_checkpoint_name_is_the_one_torchvision_downloads() -> None:
    """`mmsearch models` and `sweep run` ask whether weights are cached without importing torch:
    the registry's file names must be torchvision's own."""
    import torch

    from mmsearch.models import BACKBONES, checkpoint_path

    for name in BACKBONES.names():
        spec = BACKBONES.get(name)
        assert spec.checkpoint == spec.weights_enum().url.rsplit("/", 1)[1], name
        assert checkpoint_path(name) == Path(torch.hub.get_dir()) / "checkpoints" / spec.checkpoint
