"""Data: turning raw retrieval material into :class:`~pillargraph.SimilarityBundle` objects."""
