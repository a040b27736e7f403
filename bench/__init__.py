"""Benchmarks of sassid_jax (see bench/README.md); `bench.real_noise` is run with
`python -m bench.real_noise`, the other scripts as `python bench/<name>.py`."""
