"""postroom's benchmark harness: SMTP load generator, reference sinks, runner and report.

Run from the repository root with the project's venv, e.g.
`.venv/bin/python -m bench.run_smtp_bench --quick`. See bench/README.md for the numbers.
"""
