"""distmat's launcher (layer 4): job files in, MPI jobs started, results, tables and plots out.

``distmat-launch run CONFIG`` validates a TOML job file (:mod:`launch.config`), starts the job
runner (:mod:`launch.runner`) under mpiexec or srun, streams progress and prints a table
(:mod:`launch.report`); :mod:`launch.tasks` holds the operations a job can run and
:mod:`launch.model` the alpha-beta model and lower bounds every record is compared with.
"""
