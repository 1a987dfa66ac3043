"""Speed and memory benchmarks of the AAM engine; run them with ``make bench`` (``python -m benchmarks.run_all``)."""
