"""Shared fixtures: tiny models and texts so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.network import CharLSTM, ModelConfig
from model.textdata import TextData
from model.train import TrainConfig, train

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` run only where CUDA is: elsewhere (CI, most laptops) they are skipped, not failed."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make gpu-check` on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_config():
    from model.network import ModelConfig

    return ModelConfig(embed_size=8, hidden_size=32, n_layers=2, dropout=0.0)


@pytest.fixture
def tiny_model(tiny_config):
    from model.network import CharLSTM

    torch.manual_seed(0)
    return CharLSTM(tiny_config).eval()


@pytest.fixture
def repeating_text() -> str:
    return "the cat sat on the mat. " * 200


@pytest.fixture
def tiny_checkpoint_dir(tmp_path, tiny_config):
    """A folder holding a tiny untrained ``<corpus>.safetensors`` for every registered corpus.

    Untrained means near-uniform gibberish, but the same seed always gives the same text, which is
    what tests of the bot and its CLI need; point CHARBOT_CHECKPOINT_DIR or ``--checkpoints`` here.
    """
    from corpora.registry import CORPORA
    from model.checkpoint import save_checkpoint
    from model.network import CharLSTM

    folder = tmp_path / "checkpoints"
    for i, name in enumerate(CORPORA):
        torch.manual_seed(i)
        save_checkpoint(folder / f"{name}.safetensors", CharLSTM(tiny_config).eval(),
                        {"corpus": name, "val_loss_nats": 3.0 + i, "n_params": CharLSTM(tiny_config).n_params()})
    return folder


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory) -> str:
    """A tiny model trained briefly on other text, standing in for a corpus's served checkpoint."""
    path = tmp_path_factory.mktemp("base") / "tale.safetensors"
    torch.manual_seed(0)
    data = TextData.from_text("tale", "Once upon a time a princess sat by the well and wept. " * 80)
    cfg = TrainConfig(n_seqs=8, n_steps=32, max_steps=150, lr=1e-2, eval_every=50, warmup_steps=5, threads=1)
    train(data, path, cfg, ModelConfig(embed_size=8, hidden_size=32, n_layers=1, dropout=0.0), progress_bar=False)
    return str(path)


@pytest.fixture
def random_checkpoint(tmp_path) -> str:
    path = tmp_path / "random.safetensors"
    torch.manual_seed(1)
    save_checkpoint(path, CharLSTM(ModelConfig(embed_size=8, hidden_size=16, n_layers=1, dropout=0.0)))
    return str(path)
