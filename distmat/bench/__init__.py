"""Benchmarks run as MPI jobs (``python -m mpi4py -m distmat.bench.<name>``).

They print rows in the OSU / HPL style (a ``#`` header, fixed-width columns, PASSED/FAILED)
and write JSON Lines; see each module's docstring for its command line.
"""
