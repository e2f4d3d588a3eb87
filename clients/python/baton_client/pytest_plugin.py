"""pytest fixtures that run a real Baton for your worker's tests.

Enable them in your ``conftest.py``::

    pytest_plugins = ["baton_client.pytest_plugin"]

    def test_my_worker(baton_sidecar):
        client = Client(baton_sidecar)   # a sidecar of the test's own
        ...

Fixtures:

- ``baton_bin`` (session): the ``baton`` binary: ``$BATON_BIN``, else built
  with ``go build`` from the repository holding this package.
- ``baton_dev_queues`` (session): the queues ``baton dev`` serves; override
  it in a conftest to change them (default ``["default"]``).
- ``baton_dev`` (session): a running ``baton dev`` (:class:`~baton_client.testing.BatonDev`)
  on a free etcd port in a temp directory, stopped at the end of the session.
- ``baton_queue``: a queue name of the test's own.
- ``baton_sidecar``: the socket of a sidecar of the test's own on the dev's
  etcd, serving ``baton_queue`` only (a sidecar hands out and takes tasks
  of its own queues only), stopped after the test.

pytest is needed only by this module; the rest of the package uses the
standard library.
"""

import itertools
import os
from typing import Iterator, List

import pytest

from .testing import BatonDev, build_baton

_n = itertools.count()


@pytest.fixture(scope="session")
def baton_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_baton(str(tmp_path_factory.mktemp("bin")))


@pytest.fixture(scope="session")
def baton_dev_queues() -> List[str]:
    return ["default"]


@pytest.fixture(scope="session")
def baton_dev(baton_bin: str, baton_dev_queues: List[str]) -> Iterator[BatonDev]:
    d = BatonDev(baton_bin, queues=baton_dev_queues)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def baton_queue() -> str:
    return "q%d-%d" % (os.getpid(), next(_n))


@pytest.fixture
def baton_sidecar(baton_dev: BatonDev, baton_queue: str) -> Iterator[str]:
    sock = baton_dev.sidecar(baton_queue, queues=[baton_queue])
    yield sock
    baton_dev.stop_sidecar(sock)
