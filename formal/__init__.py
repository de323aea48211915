"""Formal proofs of MXE's bus interfaces and buffers (``python -m mxe.formal``).

One harness per block (:mod:`.skid`, ...) instantiates the unchanged gateware, drives its
inputs with free values (``AnySeq``), assumes what its documentation asks of the environment and
asserts what it promises, each property naming the sentence it checks. :mod:`.sby` runs a
harness through SymbiYosys with ABC's PDR (unbounded) or BMC (bounded); :mod:`.proofs` lists the
proofs the command and the tests run.
"""
