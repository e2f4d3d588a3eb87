import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from baton_client import Client  # noqa: E402
from baton_client.testing import BatonDev, build_baton  # noqa: E402


@pytest.fixture(scope="session")
def baton_bin(tmp_path_factory):
    return build_baton(str(tmp_path_factory.mktemp("bin")))


@pytest.fixture(scope="session")
def dev(baton_bin):
    d = BatonDev(baton_bin, queues=["default"])
    d.start()
    yield d
    d.stop()


_n = itertools.count()


@pytest.fixture
def queue():
    """A queue name of its own for each test."""
    return "q%d-%d" % (os.getpid(), next(_n))


@pytest.fixture
def sidecar(dev, queue):
    """The socket of a sidecar of the test's own, serving its queue: a
    sidecar hands out and takes tasks of its own queues only."""
    sock = dev.sidecar(queue, queues=[queue])
    yield sock
    dev.stop_sidecar(sock)


@pytest.fixture
def client(sidecar):
    c = Client(sidecar, worker="pytest")
    yield c
    c.close()
