"""The study: every run of a spec trained (claims, executors, drift checks, resume), then analysed."""
