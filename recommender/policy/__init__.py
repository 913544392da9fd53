"""The ranking policy: filters, copies, precomputed served lists, the metadata catalog."""
