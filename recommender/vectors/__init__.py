"""Text and vectors: cleaning, language analysis, TF-IDF and LSA."""
