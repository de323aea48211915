"""AXI4 and AXI4-Lite signatures, in the AMD/Xilinx signal naming.

The signatures are written from the manager's (master's) side: a DMA has an
``Out(axi4_signature(...))`` port, a register block an ``In(axilite_signature(...))`` port.
Member names are the lower-case AXI signal names without the prefix (``awaddr``, ``wvalid``),
so :func:`flat_members` can turn a port into top-level ports named ``m_axi_awaddr``, which is
what Vivado IP integrator, LiteX and cocotbext-axi's ``AxiBus.from_prefix`` expect.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out


__all__ = ["RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR", "RESP_DECERR", "BURST_INCR",
           "axi4_signature", "axilite_signature", "flat_members", "connect_flat"]

RESP_OKAY = 0b00
RESP_EXOKAY = 0b01
RESP_SLVERR = 0b10
RESP_DECERR = 0b11
BURST_INCR = 0b01


def axi4_signature(*, addr_width, data_width, id_width):
    """Full AXI4 manager interface (no user, region or QoS signals)."""
    if data_width not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"data_width must be a power of two from 32 to 1024, not {data_width!r}")
    return wiring.Signature({
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awlock": Out(1), "awcache": Out(4), "awprot": Out(3),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arlock": Out(1), "arcache": Out(4), "arprot": Out(3),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def axilite_signature(*, addr_width, data_width=32):
    """AXI4-Lite manager interface."""
    if data_width not in (32, 64):
        raise ValueError(f"data_width must be 32 or 64, not {data_width!r}")
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def flat_members(signature, prefix, *, flipped=False):
    """Members of ``signature`` as flat top-level ports ``{prefix}_{name}``.

    Use ``flipped=True`` for the subordinate side (an ``In(signature)`` port).
    """
    members = {}
    for name, member in signature.members.items():
        if not member.is_port:
            raise TypeError(f"flat_members expects a flat signature; {name} is not a port")
        flow = member.flow
        if flipped:
            flow = Flow.In if flow == Flow.Out else Flow.Out
        members[f"{prefix}_{name}"] = (Out if flow == Flow.Out else In)(member.shape)
    return members


def connect_flat(m, top, prefix, interface):
    """Connect the flat ports ``{prefix}_*`` of ``top`` to ``interface``, a structured AXI port
    of a submodule (``Out(signature)`` on a manager, ``In(signature)`` on a subordinate)."""
    for name, member in interface.signature.members.items():
        flat, inner = getattr(top, f"{prefix}_{name}"), getattr(interface, name)
        # Flows are as the submodule sees them: Out is driven by the submodule.
        if member.flow == Flow.Out:
            m.d.comb += flat.eq(inner)
        else:
            m.d.comb += inner.eq(flat)
