"""The engine: what a method may ask for (:mod:`.quantities`), who computes it (:mod:`.backends`,
:mod:`.reference`, :mod:`.fast`, :mod:`.kernels`) and how batches run in pieces (:mod:`.batching`).

See docs/ARCHITECTURE.md for the data flow and where a new method or backend goes.
"""
