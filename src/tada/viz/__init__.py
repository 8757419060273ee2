"""Figures that show what a trained model computes (matplotlib, Agg backend)."""
