"""Runnable experiment configs shipped with kfcpo."""
