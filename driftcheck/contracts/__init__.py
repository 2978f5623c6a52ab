"""Contracts: the surface catalog (data), the release list, typed aspect values,
observations, drifts, and matching. Imports nothing from the other layers."""
