"""Shared fixtures.  MPI tests take ``comm``: a duplicate of COMM_WORLD per test, so a
collective left unmatched by a failing test can never pair with the next test's."""

import pytest


@pytest.fixture
def comm():
    from mpi4py import MPI

    c = MPI.COMM_WORLD.Dup()
    yield c
    c.Free()
