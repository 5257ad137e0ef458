"""Benchmarks of orbit-packager against baselines (``make bench``; project issue 18)."""
