"""Core: errors, settings, shared models and text helpers. Imports nothing else of hoso."""
