import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from baton_client import Client  # noqa: E402

# baton_bin, baton_dev, baton_queue, baton_sidecar: a real baton dev and a
# sidecar per test (what the package offers every worker's tests).
pytest_plugins = ["baton_client.pytest_plugin"]


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
def client(sidecar):
    c = Client(sidecar, process="pytest")
    yield c
    c.close()
