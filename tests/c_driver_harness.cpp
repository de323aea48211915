// Verilator harness for the MXE C driver (tests/test_c_driver.py).
//
// The engine's RTL (Vmxe_engine) with a byte-array memory on its AXI4 manager port (m_axi_*)
// and the C driver on its AXI4-Lite port (s_axil_*): mxe_read32 / mxe_write32 drive one
// AXI4-Lite transfer each and clock the engine until its handshakes complete. Everything the
// firmware would do goes through the driver (scripts/c/mxe.c, built as C99 and linked in).
//
// A job file says what to do, one action per line: a word, then key=value arguments (numbers
// in C notation). Each action that calls the driver prints one line: the action, its return
// code and the driver's view of the engine's error, as key=value pairs, for the test to check
// against the golden model (`idle cycles=N` only lets the clock run). Commands for `run` and `push` are collected first: `cmd` gives raw
// words, `enc NAME field=value ...` calls the generated encoder mxe_cmd_<name>() through
// encode_dispatch.inc, which the test writes from the command table.
//
// Usage: harness JOB [seed [stall_percent]]

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "Vmxe_engine.h"
#include "verilated.h"

#include "mxe.h"

namespace {

// Data buses as bytes, whatever C++ type Verilator gives the port.
template <typename T> void put_bytes(T &sig, const uint8_t *bytes, unsigned n) {
    uint64_t value = 0;
    for (unsigned i = 0; i < n; i++)
        value |= uint64_t(bytes[i]) << (8 * i);
    sig = T(value);
}

template <std::size_t N> void put_bytes(VlWide<N> &sig, const uint8_t *bytes, unsigned n) {
    for (std::size_t w = 0; w < N; w++) {
        uint32_t value = 0;
        for (unsigned j = 0; j < 4 && 4 * w + j < n; j++)
            value |= uint32_t(bytes[4 * w + j]) << (8 * j);
        sig[w] = value;
    }
}

template <typename T> void get_bytes(const T &sig, uint8_t *bytes, unsigned n) {
    uint64_t value = uint64_t(sig);
    for (unsigned i = 0; i < n; i++)
        bytes[i] = uint8_t(value >> (8 * i));
}

template <std::size_t N> void get_bytes(const VlWide<N> &sig, uint8_t *bytes, unsigned n) {
    for (unsigned i = 0; i < n; i++)
        bytes[i] = uint8_t(sig[i / 4] >> (8 * (i % 4)));
}

constexpr unsigned BUS_BYTES = MXE_CONFIG_AXI_BYTES;
constexpr uint8_t RESP_OKAY = 0, RESP_SLVERR = 2, RESP_DECERR = 3;
// A register access that takes longer than this means the engine hung.
constexpr uint64_t ACCESS_LIMIT = 100000;

struct Burst {
    uint64_t addr;    // first beat, aligned to the bus
    unsigned beats;
    unsigned done;
};

struct Beat {
    uint8_t data[BUS_BYTES];
    uint32_t strb;
    bool last;
};

class Harness {
  public:
    Harness(uint64_t mem_base, size_t mem_size, uint32_t seed, unsigned stall_percent)
        : top_(&context_), mem_base_(mem_base), mem_(mem_size), rng_(seed),
          stall_percent_(stall_percent) {
        top_.rst = 1;
        drive();
        for (int i = 0; i < 8; i++)
            tick();
        top_.rst = 0;
        tick();
    }

    uint32_t read32(uint32_t offset) {
        top_.s_axil_araddr = offset;
        top_.s_axil_arprot = 0;
        top_.s_axil_arvalid = 1;
        top_.s_axil_rready = 1;
        lite_read_done_ = false;
        uint64_t start = cycle_;
        while (!lite_read_done_) {
            tick();
            hang_check(start, "register read");
        }
        return lite_rdata_;
    }

    void write32(uint32_t offset, uint32_t value) {
        top_.s_axil_awaddr = offset;
        top_.s_axil_awprot = 0;
        top_.s_axil_awvalid = 1;
        top_.s_axil_wdata = value;
        top_.s_axil_wstrb = 0xF;
        top_.s_axil_wvalid = 1;
        top_.s_axil_bready = 1;
        lite_write_done_ = false;
        uint64_t start = cycle_;
        while (!lite_write_done_) {
            tick();
            hang_check(start, "register write");
        }
    }

    std::vector<uint8_t> &mem() { return mem_; }
    uint64_t mem_base() const { return mem_base_; }
    uint64_t cycle() const { return cycle_; }
    unsigned protocol_errors() const { return protocol_errors_; }
    unsigned lite_errors() const { return lite_errors_; }
    void set_fault(uint64_t lo, uint64_t hi) { fault_lo_ = lo; fault_hi_ = hi; }
    void set_stall(unsigned percent) { stall_percent_ = percent; }
    void idle(uint64_t cycles) {
        for (uint64_t i = 0; i < cycles; i++)
            tick();
    }

  private:
    void hang_check(uint64_t start, const char *what) {
        if (cycle_ - start > ACCESS_LIMIT) {
            std::printf("hang what=\"%s\" cycle=%" PRIu64 "\n", what, cycle_);
            std::exit(3);
        }
    }

    bool stall() { return stall_percent_ && rng_() % 100 < stall_percent_; }

    // The response for a beat at addr: DECERR outside the memory, SLVERR in the fault range.
    uint8_t response(uint64_t addr) const {
        if (addr < mem_base_ || addr + BUS_BYTES > mem_base_ + mem_.size())
            return RESP_DECERR;
        if (addr + BUS_BYTES > fault_lo_ && addr < fault_hi_)
            return RESP_SLVERR;
        return RESP_OKAY;
    }

    void protocol_error(const char *what) {
        if (protocol_errors_++ < 10)
            std::printf("protocol what=\"%s\" cycle=%" PRIu64 "\n", what, cycle_);
    }

    Burst accept_burst(uint64_t addr, unsigned len, unsigned size, unsigned burst) {
        if (burst != 1)
            protocol_error("burst type is not INCR");
        if ((1u << size) != BUS_BYTES)
            protocol_error("AxSIZE is not the bus width");
        uint64_t first = addr & ~uint64_t(BUS_BYTES - 1);
        if (first / 4096 != (first + uint64_t(len) * BUS_BYTES) / 4096)
            protocol_error("burst crosses a 4 KiB boundary");
        return Burst{first, len + 1, 0};
    }

    // One clock cycle: the transfers of this cycle happen at its rising edge, then the bus
    // models drive the next cycle's inputs.
    void tick() {
        top_.clk = 0;
        top_.eval();
        bool ar = top_.m_axi_arvalid && top_.m_axi_arready;
        bool r = top_.m_axi_rvalid && top_.m_axi_rready;
        bool aw = top_.m_axi_awvalid && top_.m_axi_awready;
        bool w = top_.m_axi_wvalid && top_.m_axi_wready;
        bool b = top_.m_axi_bvalid && top_.m_axi_bready;
        bool l_ar = top_.s_axil_arvalid && top_.s_axil_arready;
        bool l_r = top_.s_axil_rvalid && top_.s_axil_rready;
        bool l_aw = top_.s_axil_awvalid && top_.s_axil_awready;
        bool l_w = top_.s_axil_wvalid && top_.s_axil_wready;
        bool l_b = top_.s_axil_bvalid && top_.s_axil_bready;
        if (ar)
            reads_.push_back(accept_burst(top_.m_axi_araddr, top_.m_axi_arlen,
                                          top_.m_axi_arsize, top_.m_axi_arburst));
        if (aw)
            writes_.push_back(accept_burst(top_.m_axi_awaddr, top_.m_axi_awlen,
                                           top_.m_axi_awsize, top_.m_axi_awburst));
        if (w) {
            Beat beat;
            get_bytes(top_.m_axi_wdata, beat.data, BUS_BYTES);
            beat.strb = top_.m_axi_wstrb;
            beat.last = top_.m_axi_wlast;
            wbeats_.push_back(beat);
        }
        if (l_r) {
            lite_rdata_ = top_.s_axil_rdata;
            if (top_.s_axil_rresp != RESP_OKAY)
                lite_errors_++;
        }
        if (l_b && top_.s_axil_bresp != RESP_OKAY)
            lite_errors_++;

        top_.clk = 1;
        top_.eval();
        cycle_++;

        if (r) {
            Burst &burst = reads_.front();
            if (++burst.done == burst.beats)
                reads_.pop_front();
        }
        if (b)
            bresps_.pop_front();
        while (!writes_.empty() && !wbeats_.empty())
            write_beat();
        if (l_ar)
            top_.s_axil_arvalid = 0;
        if (l_r) {
            top_.s_axil_rready = 0;
            lite_read_done_ = true;
        }
        if (l_aw)
            top_.s_axil_awvalid = 0;
        if (l_w)
            top_.s_axil_wvalid = 0;
        if (l_b) {
            top_.s_axil_bready = 0;
            lite_write_done_ = true;
        }
        drive(r, b);
    }

    void write_beat() {
        Burst &burst = writes_.front();
        Beat beat = wbeats_.front();
        wbeats_.pop_front();
        uint64_t addr = burst.addr + uint64_t(burst.done) * BUS_BYTES;
        uint8_t resp = response(addr);
        if (resp == RESP_OKAY) {
            for (unsigned i = 0; i < BUS_BYTES; i++)
                if (beat.strb >> i & 1)
                    mem_[addr - mem_base_ + i] = beat.data[i];
        } else if (burst_resp_ == RESP_OKAY) {
            burst_resp_ = resp;
        }
        bool last = ++burst.done == burst.beats;
        if (beat.last != last)
            protocol_error("WLAST does not mark the burst's last beat");
        if (last) {
            bresps_.push_back(burst_resp_);
            burst_resp_ = RESP_OKAY;
            writes_.pop_front();
        }
    }

    // The memory's outputs for the next cycle. A valid stays up, its payload unchanged, until
    // its transfer (r_taken / b_taken say the last cycle's happened).
    void drive(bool r_taken = false, bool b_taken = false) {
        top_.m_axi_arready = !stall();
        top_.m_axi_awready = !stall();
        top_.m_axi_wready = !stall();
        if (!top_.m_axi_rvalid || r_taken) {
            top_.m_axi_rvalid = 0;
            if (!reads_.empty() && !stall()) {
                const Burst &burst = reads_.front();
                uint64_t addr = burst.addr + uint64_t(burst.done) * BUS_BYTES;
                uint8_t resp = response(addr);
                uint8_t data[BUS_BYTES] = {0};
                if (resp == RESP_OKAY)
                    for (unsigned i = 0; i < BUS_BYTES; i++)
                        data[i] = mem_[addr - mem_base_ + i];
                put_bytes(top_.m_axi_rdata, data, BUS_BYTES);
                top_.m_axi_rresp = resp;
                top_.m_axi_rid = 0;
                top_.m_axi_rlast = burst.done + 1 == burst.beats;
                top_.m_axi_rvalid = 1;
            }
        }
        if (!top_.m_axi_bvalid || b_taken) {
            top_.m_axi_bvalid = 0;
            if (!bresps_.empty() && !stall()) {
                top_.m_axi_bresp = bresps_.front();
                top_.m_axi_bid = 0;
                top_.m_axi_bvalid = 1;
            }
        }
    }

    VerilatedContext context_;
    Vmxe_engine top_;
    uint64_t mem_base_;
    std::vector<uint8_t> mem_;
    std::mt19937 rng_;
    unsigned stall_percent_;
    uint64_t fault_lo_ = 0, fault_hi_ = 0;
    uint64_t cycle_ = 0;
    std::deque<Burst> reads_, writes_;
    std::deque<Beat> wbeats_;
    std::deque<uint8_t> bresps_;
    uint8_t burst_resp_ = RESP_OKAY;
    bool lite_read_done_ = false, lite_write_done_ = false;
    uint32_t lite_rdata_ = 0;
    unsigned protocol_errors_ = 0, lite_errors_ = 0;
};

// A job line's key=value arguments.
class Args {
  public:
    explicit Args(std::istringstream &in) {
        std::string token;
        while (in >> token) {
            size_t eq = token.find('=');
            if (eq == std::string::npos) {
                std::printf("error what=\"argument without '=': %s\"\n", token.c_str());
                std::exit(2);
            }
            values_[token.substr(0, eq)] = token.substr(eq + 1);
        }
    }

    bool has(const std::string &key) const { return values_.count(key) != 0; }

    const std::string &str(const std::string &key) const {
        auto it = values_.find(key);
        if (it == values_.end()) {
            std::printf("error what=\"missing argument %s\"\n", key.c_str());
            std::exit(2);
        }
        return it->second;
    }

    uint64_t u64(const std::string &key) const {
        return std::strtoull(str(key).c_str(), nullptr, 0);
    }
    int64_t i64(const std::string &key) const {
        return std::strtoll(str(key).c_str(), nullptr, 0);
    }
    uint32_t u32(const std::string &key) const { return uint32_t(u64(key)); }
    int32_t i32(const std::string &key) const { return int32_t(i64(key)); }
    uint32_t u32(const std::string &key, uint32_t fallback) const {
        return has(key) ? u32(key) : fallback;
    }

  private:
    std::map<std::string, std::string> values_;
};

// The encoders by command name: `enc LOAD rows=2 ...` -> mxe_cmd_load(...).
bool encode(const std::string &name, const Args &args, struct mxe_cmd *cmd) {
#include "encode_dispatch.inc"
    return false;
}

void report(const char *action, int rc, const struct mxe_dev &dev, Harness &h) {
    std::printf("%s rc=%d rcname=%s code=%u codename=%s index=%u addr=%" PRIu64
                " pushed=%u sim_cycles=%" PRIu64 "\n",
                action, rc, mxe_strerror(rc), dev.error.code, mxe_errcode_name(dev.error.code),
                dev.error.cmd_index, dev.error.addr, dev.pushed, h.cycle());
}

std::vector<uint8_t> from_hex(const std::string &hex) {
    std::vector<uint8_t> out(hex.size() / 2);
    for (size_t i = 0; i < out.size(); i++)
        out[i] = uint8_t(std::strtoul(hex.substr(2 * i, 2).c_str(), nullptr, 16));
    return out;
}

}  // namespace

extern "C" uint32_t mxe_read32(void *ctx, uint32_t offset) {
    return static_cast<Harness *>(ctx)->read32(offset);
}

extern "C" void mxe_write32(void *ctx, uint32_t offset, uint32_t value) {
    static_cast<Harness *>(ctx)->write32(offset, value);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s JOB [seed [stall_percent]]\n", argv[0]);
        return 2;
    }
    std::ifstream job(argv[1]);
    if (!job) {
        std::fprintf(stderr, "cannot open %s\n", argv[1]);
        return 2;
    }
    uint32_t seed = argc > 2 ? uint32_t(std::strtoul(argv[2], nullptr, 0)) : 1;
    unsigned stall = argc > 3 ? unsigned(std::strtoul(argv[3], nullptr, 0)) : 0;

    std::string line;
    std::getline(job, line);
    std::istringstream first(line);
    std::string word;
    first >> word;
    if (word != "memory") {
        std::fprintf(stderr, "the job must start with: memory base=... size=...\n");
        return 2;
    }
    Args mem_args(first);
    Harness h(mem_args.u64("base"), size_t(mem_args.u64("size")), seed, stall);
    struct mxe_dev dev;
    mxe_init(&dev, &h);
    std::vector<struct mxe_cmd> pending;

    while (std::getline(job, line)) {
        std::istringstream in(line);
        std::string action;
        if (!(in >> action) || action[0] == '#')
            continue;
        if (action == "enc") {
            std::string name;
            in >> name;
            Args args(in);
            struct mxe_cmd cmd;
            if (!encode(name, args, &cmd)) {
                std::printf("error what=\"no encoder for %s\"\n", name.c_str());
                return 2;
            }
            pending.push_back(cmd);
            continue;
        }
        Args args(in);
        uint32_t timeout = args.u32("timeout", 1000000u);
        if (action == "cmd") {
            struct mxe_cmd cmd = {{args.u32("w0"), args.u32("w1"), args.u32("w2"), args.u32("w3")}};
            pending.push_back(cmd);
        } else if (action == "discover") {
            int rc = mxe_discover(&dev);
            std::printf("discover rc=%d version=%u capabilities=%u", rc, dev.config.version,
                        dev.config.capabilities);
#define MXE_X_(offset, member) std::printf(" " #member "=%u", unsigned(dev.config.member));
            MXE_CFG_REGISTER_LIST(MXE_X_)
#undef MXE_X_
#define MXE_X_(name, member) std::printf(" " #member "=%u", unsigned(dev.config.member));
            MXE_CAPABILITY_LIST(MXE_X_)
#undef MXE_X_
            std::printf(" elem_bytes=%u acc_elem_bytes=%u axi_bytes=%u\n", dev.config.elem_bytes,
                        dev.config.acc_elem_bytes, dev.config.axi_bytes);
        } else if (action == "window") {
            report("window", mxe_set_window(&dev, args.u64("base"), args.u64("limit")), dev, h);
        } else if (action == "reset") {
            report("reset", mxe_soft_reset(&dev, timeout), dev, h);
        } else if (action == "start") {
            report("start", mxe_start(&dev), dev, h);
        } else if (action == "wait") {
            report("wait", mxe_wait_done(&dev, timeout), dev, h);
        } else if (action == "run" || action == "push") {
            int rc = action == "run" ? mxe_run(&dev, pending.data(), pending.size(), timeout)
                                     : mxe_push(&dev, pending.data(), pending.size(), timeout);
            pending.clear();
            report(action.c_str(), rc, dev, h);
        } else if (action == "gemm") {
            struct mxe_requant rq;
            rq.multiplier = args.i32("multiplier");
            rq.shift = args.u32("shift");
            rq.zero_point = args.i32("zero_point");
            rq.clamp = args.u32("clamp") != 0;
            rq.clamp_min = args.i32("clamp_min");
            rq.clamp_max = args.i32("clamp_max");
            rq.round_even = args.u32("round_even") != 0;
            rq.per_channel = args.u32("per_channel") != 0;
            struct mxe_gemm g;
            g.m = args.u32("m");
            g.k = args.u32("k");
            g.n = args.u32("n");
            g.a_offset = args.u32("a_offset");
            g.a_stride = args.u32("a_stride");
            g.b_offset = args.u32("b_offset");
            g.b_stride = args.u32("b_stride");
            g.c_offset = args.u32("c_offset");
            g.c_stride = args.u32("c_stride");
            g.channel_offset = args.u32("channel_offset");
            g.bias = args.u32("bias") != 0;
            g.relu = args.u32("relu") != 0;
            g.requant = args.u32("requant") ? &rq : nullptr;
            report("gemm", mxe_gemm(&dev, &g, timeout), dev, h);
        } else if (action == "mem") {
            std::vector<uint8_t> data = from_hex(args.str("data"));
            uint64_t at = args.u64("addr") - h.mem_base();
            std::copy(data.begin(), data.end(), h.mem().begin() + long(at));
        } else if (action == "dump") {
            uint64_t at = args.u64("addr") - h.mem_base();
            std::printf("dump data=");
            for (uint64_t i = 0; i < args.u64("len"); i++)
                std::printf("%02x", h.mem()[at + i]);
            std::printf("\n");
        } else if (action == "status") {
            uint32_t status = mxe_read32(&h, MXE_REG_STATUS);
            std::printf("status word=%u level=%u\n", status,
                        unsigned(MXE_GET(MXE_CMD_LEVEL_LEVEL, mxe_read32(&h, MXE_REG_CMD_LEVEL))));
        } else if (action == "counters") {
            struct mxe_counters counters;
            int rc = mxe_read_counters(&dev, &counters);
            std::printf("counters rc=%d", rc);
#define MXE_X_(lo, hi, member) std::printf(" " #member "=%" PRIu64, counters.member);
            MXE_COUNTER_LIST(MXE_X_)
#undef MXE_X_
            std::printf("\n");
        } else if (action == "fault") {
            h.set_fault(args.u64("lo"), args.u64("hi"));
        } else if (action == "idle") {
            h.idle(args.u64("cycles"));
        } else if (action == "stall") {
            h.set_stall(args.u32("percent"));
        } else {
            std::printf("error what=\"unknown action %s\"\n", action.c_str());
            return 2;
        }
    }
    std::printf("end protocol_errors=%u lite_errors=%u sim_cycles=%" PRIu64 "\n",
                h.protocol_errors(), h.lite_errors(), h.cycle());
    return 0;
}
