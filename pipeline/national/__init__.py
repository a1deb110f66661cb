"""Engine: the national databases (population DB, citizen data store) and their reference service."""
