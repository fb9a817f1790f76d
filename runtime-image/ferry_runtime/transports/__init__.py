"""Thin protocol adapters over the DataPlane (never import model, batching or torch)."""
