/*
 * Portable C99 driver for the MXE matrix engine (see mxe.h and docs/c-driver.md).
 *
 * Every register offset, field position, opcode and error code comes from the generated
 * headers; this file holds only the sequence of docs/programming.md.
 */
#include "mxe.h"

#include <string.h>

/* Register map version 1 had no CAPABILITIES register (reading it answers SLVERR) and every
 * feature; a later version has the features MXE_CAPABILITIES_IMPLIED names without advertising
 * them. mxe.hw.regmap.VERSION's history says so. */
#define CAPABILITIES_SINCE_VERSION 2u

static uint32_t rd(struct mxe_dev *dev, uint32_t offset)
{
    return mxe_read32(dev->ctx, offset);
}

static void wr(struct mxe_dev *dev, uint32_t offset, uint32_t value)
{
    mxe_write32(dev->ctx, offset, value);
}

/* A 64-bit register pair, _LO first (for a counter that read captures _HI). */
static uint64_t rd64(struct mxe_dev *dev, uint32_t lo, uint32_t hi)
{
    uint32_t low = rd(dev, lo);
    return (uint64_t)rd(dev, hi) << 32 | low;
}

static bool fits_unsigned(uint32_t value, uint32_t width)
{
    return width >= 32u || value <= ((uint32_t)1 << width) - 1u;
}

static bool fits_signed(int32_t value, uint32_t width)
{
    int32_t limit;
    if (width >= 32u)
        return true;
    limit = (int32_t)((uint32_t)1 << (width - 1u));
    return value >= -limit && value < limit;
}

/* Waiting ---------------------------------------------------------------------------------- */

/* A wait measured on the CYCLES counter. A soft reset restarts CYCLES at 0, so a reading below
 * the last one counts from 0: the wait never ends early because of it, at worst late. */
struct wait {
    uint64_t last;
    uint64_t elapsed;
    uint32_t polls;
};

static void wait_begin(struct mxe_dev *dev, struct wait *w)
{
    w->last = mxe_cycles(dev);
    w->elapsed = 0;
    w->polls = 0;
}

/* Called after a poll found the condition false: true when the time is up. */
static bool wait_expired(struct mxe_dev *dev, struct wait *w, uint32_t timeout_cycles)
{
    uint64_t now = mxe_cycles(dev);
    w->elapsed += now >= w->last ? now - w->last : now;
    w->last = now;
    w->polls++;
    if (w->elapsed > timeout_cycles)
        return true;
    if (dev->max_polls != 0u && w->polls >= dev->max_polls)
        return true;
    if (dev->poll != NULL)
        dev->poll(dev->ctx);
    return false;
}

static uint32_t ctrl_word(struct mxe_dev *dev, uint32_t bits)
{
    /* Every write of CTRL sets irq_enable to the value written. */
    return bits | MXE_SET(MXE_CTRL_IRQ_ENABLE, dev->irq_enable ? 1u : 0u);
}

/* Set up and discovery --------------------------------------------------------------------- */

void mxe_init(struct mxe_dev *dev, void *ctx)
{
    memset(dev, 0, sizeof *dev);
    dev->ctx = ctx;
}

int mxe_discover(struct mxe_dev *dev)
{
    struct mxe_config *cfg = &dev->config;
    uint32_t id = rd(dev, MXE_REG_ID);
    uint32_t version = MXE_GET(MXE_ID_VERSION, id);
    uint32_t bytes;

    if (MXE_GET(MXE_ID_MAGIC, id) != MXE_ID_MAGIC)
        return MXE_ERR_NODEV;
    if (version < MXE_MIN_REGMAP_VERSION || version > MXE_REGMAP_VERSION)
        return MXE_ERR_VERSION;
    cfg->version = version;
#define MXE_X_(offset, member) cfg->member = rd(dev, offset);
    MXE_CFG_REGISTER_LIST(MXE_X_)
#undef MXE_X_
    cfg->capabilities = version >= CAPABILITIES_SINCE_VERSION
                            ? rd(dev, MXE_REG_CAPABILITIES) | MXE_CAPABILITIES_IMPLIED(version)
                            : ~(uint32_t)0;
#define MXE_X_(name, member) cfg->member = MXE_GET(MXE_CAPABILITIES_##name, cfg->capabilities);
    MXE_CAPABILITY_LIST(MXE_X_)
#undef MXE_X_
    /* The sizes in memory, as docs/programming.md states them. */
    cfg->elem_bytes = cfg->input_width <= 8u ? 1u : 2u;
    for (bytes = 1u; bytes < 8u && 8u * bytes < cfg->acc_width; bytes *= 2u)
        ;
    cfg->acc_elem_bytes = bytes;
    cfg->axi_bytes = cfg->axi_data_width / 8u;
    if (cfg->cmd_queue_depth == 0u)
        return MXE_ERR_NODEV;
    return MXE_OK;
}

int mxe_set_window(struct mxe_dev *dev, uint64_t base, uint64_t limit)
{
    uint32_t width = dev->config.axi_addr_width;
    if (limit <= base)
        return MXE_ERR_INVAL;
    if (width != 0u && width < 64u && limit > (uint64_t)1 << width)
        return MXE_ERR_INVAL;
    if (MXE_GET(MXE_STATUS_BUSY, rd(dev, MXE_REG_STATUS)))
        return MXE_ERR_BUSY;
    wr(dev, MXE_REG_WIN_BASE_LO, (uint32_t)base);
    wr(dev, MXE_REG_WIN_BASE_HI, (uint32_t)(base >> 32));
    wr(dev, MXE_REG_WIN_LIMIT_LO, (uint32_t)limit);
    wr(dev, MXE_REG_WIN_LIMIT_HI, (uint32_t)(limit >> 32));
    return MXE_OK;
}

/* Control ---------------------------------------------------------------------------------- */

int mxe_soft_reset(struct mxe_dev *dev, uint32_t timeout_cycles)
{
    struct wait w;

    wr(dev, MXE_REG_CTRL, ctrl_word(dev, MXE_SET(MXE_CTRL_SOFT_RESET, 1u)));
    wait_begin(dev, &w);
    while (MXE_GET(MXE_STATUS_BUSY, rd(dev, MXE_REG_STATUS))) {
        if (wait_expired(dev, &w, timeout_cycles))
            return MXE_ERR_TIMEOUT;
    }
    /* A soft reset keeps STATUS.done and cmd_overflow (sticky, write 1 to clear). */
    wr(dev, MXE_REG_STATUS, MXE_SET(MXE_STATUS_DONE, 1u) | MXE_SET(MXE_STATUS_CMD_OVERFLOW, 1u));
    dev->pushed = 0;
    memset(&dev->error, 0, sizeof dev->error);
    return MXE_OK;
}

int mxe_start(struct mxe_dev *dev)
{
    wr(dev, MXE_REG_CTRL, ctrl_word(dev, MXE_SET(MXE_CTRL_START, 1u)));
    return MXE_OK;
}

int mxe_read_error(struct mxe_dev *dev, struct mxe_error *err)
{
    struct mxe_error e;
    e.status = rd(dev, MXE_REG_STATUS);
    e.code = MXE_GET(MXE_STATUS_ERROR, e.status);
    e.cmd_index = rd(dev, MXE_REG_ERR_CMD_INDEX);
    e.addr = rd64(dev, MXE_REG_ERR_ADDR_LO, MXE_REG_ERR_ADDR_HI);
    dev->error = e;
    if (err != NULL)
        *err = e;
    return MXE_OK;
}

int mxe_push(struct mxe_dev *dev, const struct mxe_cmd *cmds, size_t count,
             uint32_t timeout_cycles)
{
    uint32_t depth = dev->config.cmd_queue_depth;
    uint32_t room = 0;
    size_t i;

    if (depth == 0u)
        return MXE_ERR_NODEV;
    for (i = 0; i < count; i++) {
        if (room == 0u) {
            /* Room is what the queue had when CMD_LEVEL was read: the level only falls
             * meanwhile, so pushing that many never overflows. */
            struct wait w;
            wait_begin(dev, &w);
            for (;;) {
                uint32_t level = MXE_GET(MXE_CMD_LEVEL_LEVEL, rd(dev, MXE_REG_CMD_LEVEL));
                uint32_t status;
                room = level < depth ? depth - level : 0u;
                if (room != 0u)
                    break;
                status = rd(dev, MXE_REG_STATUS);
                if (MXE_GET(MXE_STATUS_ERROR, status) != MXE_ERRCODE_OK) {
                    mxe_read_error(dev, NULL);
                    return MXE_ERR_ENGINE;
                }
                if (wait_expired(dev, &w, timeout_cycles))
                    return MXE_ERR_TIMEOUT;
            }
        }
        /* CMD_W0..CMD_W2 stage the command; the write of CMD_W3 pushes all four words. */
        wr(dev, MXE_REG_CMD_W0, cmds[i].w[0]);
        wr(dev, MXE_REG_CMD_W1, cmds[i].w[1]);
        wr(dev, MXE_REG_CMD_W2, cmds[i].w[2]);
        wr(dev, MXE_REG_CMD_W3, cmds[i].w[3]);
        room--;
        dev->pushed++;
    }
    return MXE_OK;
}

int mxe_wait_done(struct mxe_dev *dev, uint32_t timeout_cycles)
{
    struct wait w;
    uint32_t status;

    wait_begin(dev, &w);
    for (;;) {
        status = rd(dev, MXE_REG_STATUS);
        if (MXE_GET(MXE_STATUS_DONE, status))
            break;
        if (wait_expired(dev, &w, timeout_cycles))
            return MXE_ERR_TIMEOUT;
    }
    wr(dev, MXE_REG_STATUS, MXE_SET(MXE_STATUS_DONE, 1u));
    if (MXE_GET(MXE_STATUS_ERROR, status) != MXE_ERRCODE_OK) {
        mxe_read_error(dev, NULL);
        return MXE_ERR_ENGINE;
    }
    if (MXE_GET(MXE_STATUS_CMD_OVERFLOW, status))
        return MXE_ERR_OVERFLOW;
    return MXE_OK;
}

int mxe_run(struct mxe_dev *dev, const struct mxe_cmd *cmds, size_t count,
            uint32_t timeout_cycles)
{
    size_t begin = 0, i;
    uint32_t status;
    int rc;

    if (dev->config.cmd_queue_depth == 0u)
        return MXE_ERR_NODEV;
    /* A stopped engine runs nothing until a soft reset, and raises no second done. Commands
     * still queued or running from before would raise a done (their FENCE) that this stream's
     * wait would take for its own; a done left from them is cleared. */
    status = rd(dev, MXE_REG_STATUS);
    if (MXE_GET(MXE_STATUS_ERROR, status) != MXE_ERRCODE_OK) {
        mxe_read_error(dev, NULL);
        return MXE_ERR_ENGINE;
    }
    if (MXE_GET(MXE_STATUS_BUSY, status) || !MXE_GET(MXE_STATUS_QUEUE_EMPTY, status))
        return MXE_ERR_BUSY;
    if (MXE_GET(MXE_STATUS_DONE, status))
        wr(dev, MXE_REG_STATUS, MXE_SET(MXE_STATUS_DONE, 1u));
    rc = mxe_start(dev);
    if (rc != MXE_OK)
        return rc;
    for (i = 0; i < count; i++) {
        bool fence = mxe_cmd_opcode(&cmds[i]) == MXE_OPCODE_FENCE;
        if (!fence && i + 1u < count)
            continue;
        rc = mxe_push(dev, cmds + begin, i + 1u - begin, timeout_cycles);
        if (rc == MXE_OK && !fence) {
            struct mxe_cmd last = mxe_cmd_fence();
            rc = mxe_push(dev, &last, 1u, timeout_cycles);
        }
        /* After an error the engine raises done too: collect it. */
        if (rc == MXE_OK || rc == MXE_ERR_ENGINE)
            rc = mxe_wait_done(dev, timeout_cycles);
        if (rc != MXE_OK)
            return rc;
        begin = i + 1u;
    }
    return MXE_OK;
}

int mxe_gemm(struct mxe_dev *dev, const struct mxe_gemm *gemm, uint32_t timeout_cycles)
{
    struct mxe_cmd cmds[5];
    size_t count = 0;
    const struct mxe_requant *rq = gemm->requant;
    bool per_channel = rq != NULL && rq->per_channel;

    if (dev->config.cmd_queue_depth == 0u)
        return MXE_ERR_NODEV;
    if (!dev->config.gemm_unit)
        return MXE_ERR_UNSUPPORTED;
    if (gemm->m == 0u || gemm->k == 0u || gemm->n == 0u
        || !fits_unsigned(gemm->m, MXE_CMD_GEMM_A_M_WIDTH)
        || !fits_unsigned(gemm->k, MXE_CMD_GEMM_A_K_WIDTH)
        || !fits_unsigned(gemm->n, MXE_CMD_GEMM_A_N_WIDTH))
        return MXE_ERR_INVAL;
    if (rq != NULL) {
        if (!fits_unsigned(rq->shift, MXE_CMD_CONFIG_SHIFT_WIDTH)
            || !fits_signed(rq->zero_point, MXE_CMD_CONFIG_ZERO_POINT_WIDTH)
            || (rq->clamp && (!fits_signed(rq->clamp_min, MXE_CMD_CONFIG_CLAMP_MIN_WIDTH)
                              || !fits_signed(rq->clamp_max, MXE_CMD_CONFIG_CLAMP_MAX_WIDTH))))
            return MXE_ERR_INVAL;
        cmds[count++] = mxe_cmd_config(rq->round_even, rq->clamp, rq->per_channel,
                                       per_channel ? 0 : rq->multiplier,
                                       per_channel ? 0u : rq->shift, rq->zero_point,
                                       rq->clamp ? rq->clamp_min : 0,
                                       rq->clamp ? rq->clamp_max : 0);
    }
    /* after_stores 0: mxe_gemm() waits for done after every GEMM, so no STORE runs when the
     * next one reads its A. */
    cmds[count++] = mxe_cmd_gemm_a(gemm->bias, gemm->relu, rq != NULL, per_channel, 0u,
                                   gemm->m, gemm->k, gemm->n, gemm->channel_offset);
    cmds[count++] = mxe_cmd_gemm_b(gemm->a_offset, gemm->a_stride, gemm->b_offset);
    cmds[count++] = mxe_cmd_gemm_c(gemm->b_stride, gemm->c_offset, gemm->c_stride);
    cmds[count++] = mxe_cmd_fence();
    return mxe_run(dev, cmds, count, timeout_cycles);
}

/* Counters and names ------------------------------------------------------------------------ */

uint64_t mxe_cycles(struct mxe_dev *dev)
{
    return rd64(dev, MXE_REG_CYCLES_LO, MXE_REG_CYCLES_HI);
}

int mxe_read_counters(struct mxe_dev *dev, struct mxe_counters *counters)
{
#define MXE_X_(lo, hi, member) counters->member = rd64(dev, lo, hi);
    MXE_COUNTER_LIST(MXE_X_)
#undef MXE_X_
    return MXE_OK;
}

const char *mxe_errcode_name(uint32_t code)
{
    switch (code) {
#define MXE_X_(name, value) case value: return #name;
    MXE_ERRCODE_LIST(MXE_X_)
#undef MXE_X_
    default:
        return "UNKNOWN";
    }
}

const char *mxe_strerror(int rc)
{
    switch (rc) {
    case MXE_OK: return "MXE_OK";
    case MXE_ERR_NODEV: return "MXE_ERR_NODEV";
    case MXE_ERR_VERSION: return "MXE_ERR_VERSION";
    case MXE_ERR_INVAL: return "MXE_ERR_INVAL";
    case MXE_ERR_BUSY: return "MXE_ERR_BUSY";
    case MXE_ERR_TIMEOUT: return "MXE_ERR_TIMEOUT";
    case MXE_ERR_ENGINE: return "MXE_ERR_ENGINE";
    case MXE_ERR_OVERFLOW: return "MXE_ERR_OVERFLOW";
    case MXE_ERR_UNSUPPORTED: return "MXE_ERR_UNSUPPORTED";
    default: return "MXE_ERR_UNKNOWN";
    }
}
