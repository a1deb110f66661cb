"""The dossier domain: catalog, deadlines, understanding, validation, results, statistics."""
