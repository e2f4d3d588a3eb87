import itertools
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(EXAMPLE))
for p in (os.path.join(ROOT, "clients", "python"), EXAMPLE):
    if p not in sys.path:
        sys.path.insert(0, p)

from baton_client.testing import BatonDev, build_baton  # noqa: E402


@pytest.fixture(scope="session")
def baton_bin(tmp_path_factory):
    return build_baton(str(tmp_path_factory.mktemp("bin")))


@pytest.fixture(scope="session")
def dev(baton_bin):
    d = BatonDev(baton_bin, queues=["tts"])
    d.start()
    yield d
    d.stop()


_n = itertools.count()


@pytest.fixture
def queue():
    return "w%d-%d" % (os.getpid(), next(_n))


@pytest.fixture
def sidecar(dev, queue):
    """The socket of a sidecar of the test's own, serving its queue: a
    sidecar hands out and takes tasks of its own queues only."""
    sock = dev.sidecar(queue, queues=[queue])
    yield sock
    dev.stop_sidecar(sock)


@pytest.fixture
def pyenv():
    """Environment for subprocesses that import baton_client and tts_worker."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "clients", "python"), EXAMPLE])
    return env
