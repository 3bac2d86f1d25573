/* Uses an installed clbn: one training forward on a small NCHW batch, checked against the
 * formula computed on the host in double precision. Exits 0 when every value agrees. */
#include <clbn.h>
#include <math.h>
#include <stdio.h>

#define N 2
#define C 3
#define HW 4

static int check(clbn_status st, const char *what) {
    if (st == CLBN_SUCCESS)
        return 0;
    fprintf(stderr, "%s: %s: %s\n", what, clbn_status_name(st), clbn_last_error_message());
    return 1;
}

int main(void) {
    float x[N * C * HW], y[N * C * HW];
    for (int i = 0; i < N * C * HW; i++)
        x[i] = (float)((i * 7) % 11) * 0.5f + (float)(i / HW % C) * 10.0f;

    clbn_context *ctx = NULL;
    clbn_bn *bn = NULL;
    if (check(clbn_context_create(NULL, &ctx), "clbn_context_create"))
        return 1;
    clbn_bn_options opt;
    clbn_bn_options_init(&opt);
    opt.channels = C;
    if (check(clbn_bn_create(ctx, &opt, &bn), "clbn_bn_create"))
        return 1;
    cl_context cl_ctx;
    cl_command_queue queue;
    if (check(clbn_context_get_cl(ctx, &cl_ctx, &queue), "clbn_context_get_cl"))
        return 1;
    cl_int err;
    cl_mem xb = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof x, x, &err);
    cl_mem yb = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, sizeof y, NULL, &err);
    clbn_shape shape = {CLBN_LAYOUT_NCHW, N, C, 2, 2};
    if (check(clbn_bn_forward_train(bn, &shape, xb, 0, yb, 0, NULL, NULL, 0, NULL, NULL),
              "clbn_bn_forward_train"))
        return 1;
    if (clEnqueueReadBuffer(queue, yb, CL_TRUE, 0, sizeof y, y, 0, NULL, NULL) != CL_SUCCESS) {
        fprintf(stderr, "clEnqueueReadBuffer failed\n");
        return 1;
    }

    /* gamma = 1, beta = 0: y = (x - mean) / sqrt(var + eps), biased variance. */
    double worst = 0.0;
    int bad = 0;
    for (int c = 0; c < C; c++) {
        double sum = 0.0, sq = 0.0;
        for (int n = 0; n < N; n++)
            for (int k = 0; k < HW; k++)
                sum += x[(n * C + c) * HW + k];
        double mean = sum / (N * HW);
        for (int n = 0; n < N; n++)
            for (int k = 0; k < HW; k++) {
                double d = x[(n * C + c) * HW + k] - mean;
                sq += d * d;
            }
        double invstd = 1.0 / sqrt(sq / (N * HW) + 1e-5);
        for (int n = 0; n < N; n++)
            for (int k = 0; k < HW; k++) {
                int i = (n * C + c) * HW + k;
                double ref = (x[i] - mean) * invstd;
                double e = fabs(y[i] - ref);
                worst = e > worst ? e : worst;
                if (!(e <= 1e-5 + 1e-5 * fabs(ref)))
                    bad++;
            }
    }
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    clbn_bn_release(bn);
    clbn_context_release(ctx);
    printf("clbn %s: training forward, worst |y - ref| = %.2e, %d values off\n",
           clbn_version_string(), worst, bad);
    return bad ? 1 : 0;
}
