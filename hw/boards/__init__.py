"""Board tops: the engine with memory, a host link and a clock on FPGA boards."""
