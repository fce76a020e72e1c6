"""Hubbard U/V: data pipeline (``zoo.hubbard.dft``) and models."""
