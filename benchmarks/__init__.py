"""asv benchmark suite of plrnn (asv.conf.json: benchmark_dir). See _support.py and README.md."""
