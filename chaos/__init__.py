"""Chaos engineering for ocsim: faults (a user-space fault proxy, process signals), scenarios
as TOML files, cohort splits and verdict statistics. See the README's "Chaos" section."""
