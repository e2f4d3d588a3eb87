import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(EXAMPLE))
for p in (os.path.join(ROOT, "clients", "python"), EXAMPLE):
    if p not in sys.path:
        sys.path.insert(0, p)

# baton_bin, baton_dev, baton_queue, baton_sidecar: a real baton dev and a
# sidecar per test, from the client package.
pytest_plugins = ["baton_client.pytest_plugin"]


@pytest.fixture(scope="session")
def baton_dev_queues():
    return ["tts"]


@pytest.fixture
def dev(baton_dev):
    return baton_dev


@pytest.fixture
def queue(baton_queue):
    return baton_queue


@pytest.fixture
def sidecar(baton_sidecar):
    return baton_sidecar


@pytest.fixture
def pyenv():
    """Environment for subprocesses that import baton_client and tts_worker."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "clients", "python"), EXAMPLE])
    return env
