"""`driftcheck bench`: ESamp against vanilla vLLM, and scan timings.

  shapes.py       model shapes, workloads, engine settings (shared by both workers)
  worker.py       one warm engine in its own process, answering commands on stdin
  runner.py       the parent: two workers, timed rounds alternating A B A B, ratios
  profile.py      where one round's time goes (torch profiler)
  report.py       reports/benchmarks.json -> reports/benchmarks.md
  scan_timing.py  static and live scan timings
"""
