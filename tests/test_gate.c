/*
 * test_gate.c: the CPU backend's finiteness gate (backend.h check_finite,
 * gate_read) and the updates that obey it (linear_update, sgd_update): the
 * first failing check's tag stays, a NULL tensor raises the gate, and an update
 * behind a raised gate leaves its weight bit for bit, whatever its gradient
 * holds. tests/gpu/test_cuda.c checks the same of the CUDA backend.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/backend.h"

static void checks(const lomo_backend *be) {
    enum { N = 1001 };
    float *x = malloc(N * sizeof *x);
    uint64_t seed = 7;
    for (int i = 0; i < N; i++) x[i] = fx_uniform(&seed);
    int gate = 0;
    be->check_finite(&gate, x, N, 3);
    CHECK(be->gate_read(&gate) == 0, "finite data raised the gate to %d", gate);
    x[N - 1] = NAN;
    be->check_finite(&gate, x, N, 4);
    x[N - 1] = 0.5f;
    x[N / 2] = INFINITY;
    be->check_finite(&gate, x, N, 5);
    CHECK(be->gate_read(&gate) == 5, "NaN at the end: gate %d, want tag 4 + 1, kept past a later failure", gate);
    gate = 0;
    be->check_finite(&gate, x, N, 0);
    CHECK(be->gate_read(&gate) == 1, "inf mid-tensor, tag 0: gate %d", gate);
    gate = 0;
    be->check_finite(&gate, NULL, 0, 9);
    CHECK(be->gate_read(&gate) == 10, "a NULL tensor raises the gate: %d", gate);
    gate = 0;
    be->check_finite(&gate, x, 0, 2);
    CHECK(be->gate_read(&gate) == 0, "an empty tensor is finite: %d", gate);
    free(x);
}

/* w after one update, through a lowered and a raised gate, against the ungated update */
static void updates(const lomo_backend *be, lomo_dtype dt) {
    enum { BT = 5, IC = 12, OC = 7 };
    size_t nw = (size_t)OC * IC, es = lomo_dtype_size(dt);
    uint64_t seed = 11;
    float wf[OC * IC], dout[BT * OC], inp[BT * IC], wbuf[OC * IC], g[OC * IC];
    for (size_t i = 0; i < nw; i++) wf[i] = fx_uniform(&seed), g[i] = fx_uniform(&seed);
    for (int i = 0; i < BT * OC; i++) dout[i] = fx_uniform(&seed);
    for (int i = 0; i < BT * IC; i++) inp[i] = fx_uniform(&seed);
    unsigned char w0[OC * IC * 4], w1[OC * IC * 4], w2[OC * IC * 4];
    be->from_f32(w0, dt, wf, nw);
    const char *dn = lomo_dtype_name(dt);
    for (int sr = 0; sr <= (dt != LOMO_F32); sr++) {
        int lowered = 0, raised = 0;
        be->check_finite(&raised, NULL, 0, 0);
        memcpy(w1, w0, nw * es);
        memcpy(w2, w0, nw * es);
        be->linear_update(w1, dt, wbuf, dout, inp, -0.1f, 0.99f, BT, IC, OC, sr ? 5 : 0, NULL);
        be->linear_update(w2, dt, wbuf, dout, inp, -0.1f, 0.99f, BT, IC, OC, sr ? 5 : 0, &lowered);
        CHECK(memcmp(w1, w2, nw * es) == 0, "linear_update %s (sr %d): a lowered gate changed the result", dn, sr);
        CHECK(memcmp(w1, w0, nw * es) != 0, "linear_update %s (sr %d) changed nothing", dn, sr);
        dout[3] = NAN;
        memcpy(w2, w0, nw * es);
        be->linear_update(w2, dt, wbuf, dout, inp, -0.1f, 0.99f, BT, IC, OC, sr ? 5 : 0, &raised);
        dout[3] = 0.25f;
        CHECK(memcmp(w2, w0, nw * es) == 0, "linear_update %s (sr %d) behind a raised gate changed w", dn, sr);
        memcpy(w1, w0, nw * es);
        memcpy(w2, w0, nw * es);
        be->sgd_update(w1, dt, g, nw, 0.1f, 0.01f, 1.0f, 0.0f, 1.0f, sr ? 5 : 0, NULL);
        be->sgd_update(w2, dt, g, nw, 0.1f, 0.01f, 1.0f, 0.0f, 1.0f, sr ? 5 : 0, &lowered);
        CHECK(memcmp(w1, w2, nw * es) == 0 && memcmp(w1, w0, nw * es) != 0,
              "sgd_update %s (sr %d) through a lowered gate", dn, sr);
        memcpy(w2, w0, nw * es);
        be->sgd_update(w2, dt, g, nw, 0.1f, 0.01f, 1.0f, 0.0f, 1.0f, sr ? 5 : 0, &raised);
        CHECK(memcmp(w2, w0, nw * es) == 0, "sgd_update %s (sr %d) behind a raised gate changed w", dn, sr);
    }
}

int main(void) {
    const lomo_backend *be = lomo_backend_cpu();
    checks(be);
    for (int d = 0; d <= 2; d++) updates(be, (lomo_dtype)d);
    return test_summary("test_gate");
}
