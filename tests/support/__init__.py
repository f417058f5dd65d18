"""Helpers shared by the tests (stand-in servers, the bundled model, fixed clocks, a trained library, ...).
Test modules import from here, never from one another."""
