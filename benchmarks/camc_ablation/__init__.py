"""The paired ablation runner of the CAMC head (``benchmarks/ablation.py`` is its command line).

Modules, by concern:

* ``protocol``: the constants of the CIFAR-10-LT benchmark protocol (the defaults);
* ``rows``: the rows of the table and the (row, seed) runs in priority order;
* ``schedule``: the learning-rate schedule, from timm's scheduler and ``configs/cifar10_lt_r100.yaml``;
* ``data``: the class-per-folder data (the CIFAR-10 JPEG archive by default), long-tailed, decoded once to .npy;
* ``trainer``: model, loss and the training of one run (captured in CUDA graphs on a GPU);
* ``budget``: the time-budget clock and which runs and epochs fit it;
* ``records``: one JSON record per run, and what a ``--measure`` run means;
* ``workers``: the worker processes and the driver that collects their records;
* ``cli``: the command line.
"""
