"""Train-step benchmark: the example-style baseline loop (``baseline``) and the cases, modes and
measurements (``suite``) shared by ``bench/test_bench_train_step.py`` and ``fastgan bench``."""
