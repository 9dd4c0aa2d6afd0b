/* One step of the exact reduced online-SGD chain (SPEC 6), for all repeats: the compiled form of
 * slr.train.ReducedSGD._numpy_step, with the same arithmetic (float32 per token, float64 for the state and the
 * 2x2 algebra). Built on first use by slr.kernel; without a C compiler the numpy step runs instead.
 *
 * C   (R, 2, 4) float64, updated in place: canonical coordinates of (k, v) on (k*, v*, e1, e2)
 * Z   (R, 4, B*L) float32: the batch's coordinates on that basis
 * y   (R, B) float32: the labels
 * A   (R, 2, 2) float64: lr times the Bartlett factor of Wishart_2(d - 4, I)
 * s2  (B*L) float32: out-of-span variance of each token (gamma^2 at the informative position, else 1)
 * kind 0: erf attention, 1: softmax attention. A repeat whose state is NaN (diverged, discarded) is left alone.
 */
#include <math.h>
#include <stddef.h>

#if defined(__GNUC__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
/* glibc's vectorised erff and expf (libmvec, as its math.h declares them under -ffast-math) */
#define SIMD_DECL __attribute__((__simd__("notinbranch")))
float erff(float) SIMD_DECL;
float expf(float) SIMD_DECL;
#endif

#define MAX_TOKENS 4096
#define TWO_OVER_SQRT_PI 1.1283791670955126

static double floored(double x) { return x < 1e-300 ? 1e-300 : x; } /* NaN passes through */
static double clipped(double x) { return x < 0.0 ? 0.0 : x; }

/* Lower Cholesky factor [[a, 0], [b, c]] of the 2x2 matrix [[s00, s01], [s01, s11]] */
static void cholesky2(double s00, double s01, double s11, double *a, double *b, double *c)
{
    *a = sqrt(s00);
    *b = s01 / floored(*a);
    *c = sqrt(clipped(s11 - *b * *b));
}

/* erf weights: dpk = lam erf'(lam pk) pv, dpv = erf(lam pk); T per batch */
static void erf_weights(int B, int L, float lam, const float *pk, const float *pv, float *dpk, float *dpv, float *T)
{
    const int BL = B * L;
    const float c = lam * (float)TWO_OVER_SQRT_PI;
    for (int l = 0; l < BL; l++) {
        float x = lam * pk[l];
        dpv[l] = erff(x);
        dpk[l] = c * expf(-x * x) * pv[l];
    }
    for (int b = 0; b < B; b++) {
        float t = 0.0f;
        for (int l = b * L; l < (b + 1) * L; l++) t += dpv[l] * pv[l];
        T[b] = t;
    }
}

/* softmax weights pi: dpk = lam pi (pv - T), dpv = pi; T per batch */
static void softmax_weights(int B, int L, float lam, const float *pk, const float *pv, float *dpk, float *dpv, float *T)
{
    for (int b = 0; b < B; b++) {
        const int o = b * L;
        float m = lam * pk[o], s = 0.0f, t = 0.0f;
        for (int l = 1; l < L; l++) m = lam * pk[o + l] > m ? lam * pk[o + l] : m;
        for (int l = 0; l < L; l++) { dpv[o + l] = expf(lam * pk[o + l] - m); s += dpv[o + l]; }
        for (int l = 0; l < L; l++) { dpv[o + l] /= s; t += dpv[o + l] * pv[o + l]; }
        for (int l = 0; l < L; l++) dpk[o + l] = lam * dpv[o + l] * (pv[o + l] - t);
        T[b] = t;
    }
}

int slr_reduced_step(int R, int B, int L, int kind, int projected, double lam, double lr,
                     double *C, const float *Z, const float *y, const double *A, const float *s2)
{
    const int BL = B * L;
    float pk[MAX_TOKENS], pv[MAX_TOKENS], al[MAX_TOKENS], be[MAX_TOKENS], T[MAX_TOKENS];
    if (BL > MAX_TOKENS) return -1;
    for (int r = 0; r < R; r++) {
        double *c = C + 8 * r;
        const float *z = Z + (size_t)4 * BL * r;
        if (c[0] != c[0]) continue; /* discarded */
        const float k0 = (float)c[0], k1 = (float)c[1], k2 = (float)c[2], k3 = (float)c[3];
        const float v0 = (float)c[4], v1 = (float)c[5], v2 = (float)c[6], v3 = (float)c[7];
        for (int l = 0; l < BL; l++) {
            pk[l] = k0 * z[l] + k1 * z[BL + l] + k2 * z[2 * BL + l] + k3 * z[3 * BL + l];
            pv[l] = v0 * z[l] + v1 * z[BL + l] + v2 * z[2 * BL + l] + v3 * z[3 * BL + l];
        }
        if (kind == 0) erf_weights(B, L, (float)lam, pk, pv, al, be, T);
        else softmax_weights(B, L, (float)lam, pk, pv, al, be, T);
        for (int b = 0; b < B; b++) {
            const float res = (T[b] - y[B * r + b]) * (2.0f / B);
            for (int l = b * L; l < (b + 1) * L; l++) { al[l] *= res; be[l] *= res; }
        }
        /* in-span gradients G = [alpha; beta] Z^T and the out-of-span covariance S */
        double G[8], N[8];
        for (int j = 0; j < 4; j++) {
            const float *zj = z + j * BL;
            float gk = 0.0f, gv = 0.0f;
            for (int l = 0; l < BL; l++) { gk += al[l] * zj[l]; gv += be[l] * zj[l]; }
            G[j] = gk;
            G[4 + j] = gv;
        }
        float s00 = 0.0f, s01 = 0.0f, s11 = 0.0f;
        for (int l = 0; l < BL; l++) {
            s00 += al[l] * al[l] * s2[l];
            s01 += al[l] * be[l] * s2[l];
            s11 += be[l] * be[l] * s2[l];
        }
        for (int i = 0; i < 2; i++) {
            double dot = 0.0;
            if (projected) for (int j = 0; j < 4; j++) dot += c[4 * i + j] * G[4 * i + j];
            for (int j = 0; j < 4; j++) N[4 * i + j] = c[4 * i + j] - lr * (G[4 * i + j] - dot * c[4 * i + j]);
        }
        /* out-of-span parts: chol(S) A, lower triangular */
        double l11, l21, l22;
        cholesky2(s00, s01, s11, &l11, &l21, &l22);
        const double *a = A + 4 * r;
        const double o00 = l11 * a[0], o10 = l21 * a[0] + l22 * a[2], o11 = l22 * a[3];
        /* canonical coordinates: Cholesky factor of the Gram matrix of the parts orthogonal to k*, v* */
        double e, f, g;
        cholesky2(N[2] * N[2] + N[3] * N[3] + o00 * o00,
                  N[2] * N[6] + N[3] * N[7] + o00 * o10,
                  N[6] * N[6] + N[7] * N[7] + o10 * o10 + o11 * o11, &e, &f, &g);
        double nk = 1.0, nv = 1.0;
        if (projected) {
            nk = sqrt(N[0] * N[0] + N[1] * N[1] + e * e);
            nv = sqrt(N[4] * N[4] + N[5] * N[5] + f * f + g * g);
        }
        c[0] = N[0] / nk; c[1] = N[1] / nk; c[2] = e / nk; c[3] = 0.0;
        c[4] = N[4] / nv; c[5] = N[5] / nv; c[6] = f / nv; c[7] = g / nv;
    }
    return 0;
}
