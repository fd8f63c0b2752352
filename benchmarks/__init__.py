"""spikeops benchmark suite: pytest-benchmark files `bench_<op>.py`, the shared harness in
`conftest.py`, the static GPU analysis in `static_gpu.py` and the `make bench` report in `report.py`."""
