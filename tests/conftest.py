import pytest

from qatrun.compose import compose_config

# A few dozen steps on MNIST subsets: seconds on a CPU.
TINY = [
    "dataset.batch_size=100",
    "dataset.eval_batch_size=500",
    "dataset.train_subset=2000",
    "dataset.test_subset=500",
    "trainer.max_steps=20",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=10",
    "trainer.progress=false",
    "device=cpu",
]


def make_cfg(*overrides, tiny=True):
    return compose_config([*(TINY if tiny else []), *overrides])


@pytest.fixture
def cfg_factory():
    return make_cfg
