"""Evaluation: the DSTC-7 metrics, perplexity, reports and plots."""
