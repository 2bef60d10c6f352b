import pytest

from tests.modeling.tiny import build_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_model_dir(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory):
    return build_model_dir(tmp_path_factory.mktemp("tiny-rm"), classification=True)
