"""Quantum ESPRESSO pw.x + hp.x pipeline for Hubbard U/V labels (plain functions, no model code)."""
