"""Vector index and on-disk artifact versions.

Knows nothing about text or HTTP: only vectors, FAISS and files. Kept free of
imports so `import index.errors` does not pull in FAISS.
"""
