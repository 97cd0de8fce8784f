"""`facecodec bench`: rate-quality measurement against conventional codecs.

reference.py  the face crop every system is scored on (BASELINES.md protocol, cached)
metrics.py    PSNR-Y, MS-SSIM, VMAF, AKD, AED, landmark jitter
conventional.py  x264 / x265 / SVT-AV1 / VP9 ladders through PyAV, byte accounting
system.py     SystemPoint and the SystemFn plug-in type for the codec under test
curves.py     log-rate interpolation, BD-rate, where two curves meet
report.py     results.json / results.csv / plots / report.md
runner.py     run_bench, bench_main and the CLI options
"""
