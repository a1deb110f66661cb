"""Use cases: the desk, the clerk, the archive and archive upkeep, over the Services one process opens."""
