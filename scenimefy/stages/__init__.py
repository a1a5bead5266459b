"""Stages: step functions and worker loops that compose models and losses (no Ray inside)."""
