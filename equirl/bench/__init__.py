"""Benchmarks, one module per modality, sharing one output layer.

* :mod:`equirl.bench.core` -- the cost of symmetrizing (``equirl bench symmetrizers``);
* :mod:`equirl.bench.product` -- product groups and canonicalization on digits (``equirl bench product``);
* :mod:`equirl.bench.rl` -- zero-shot returns, sample efficiency, canonicalization and wall time of
  equivariant DQN (``equirl bench rl``);
* :mod:`equirl.bench.vision` -- invariant classifiers on the digits CNN (``equirl bench vision``);
* :mod:`equirl.bench.language` -- SCAN exact match and EquiGPT2 throughput
  (``equirl bench language-scan`` / ``language-gpt2``);
* :mod:`equirl.utils.report` -- tables, CSV, JSON, plots and progress bars for all of them;
* :mod:`equirl.bench.threads` -- :func:`~equirl.bench.threads.torch_threads`, the thread count of a
  timed block, restored afterwards.

Benchmark functions take plain parameters (no argparse namespaces), an optional ``console`` used only for
a transient progress bar, and return rows or :class:`~equirl.utils.report.BenchTable` objects that the
CLI (``equirl/cli/``) prints. Importing this package imports nothing heavy.
"""
