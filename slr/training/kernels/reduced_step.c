/* n steps of the exact reduced online-SGD chain (docs/reduction.md §4), for all repeats: the compiled form of
 * slr.training.algorithms.ReducedSGD._numpy_step (see its docstring for the scheme), with the same arithmetic (float32 per
 * token, float64 for the state, the frame and the 2x2 algebra) and the same random numbers: it draws them itself,
 * in the order of ReducedSGD.draw, from the numpy bit generator it is handed, with numpy's own C distribution
 * functions (linked from numpy's libnpyrandom.a). Built on first use by slr.training.kernels; without a C compiler the
 * numpy step runs instead.
 *
 * s    informative tokens per sequence (1 <= s <= L), put first: by exchangeability only their number matters
 * C    (R, 2, 4) float64, updated in place: canonical coordinates of (k, v) on (k*, v*, e1, e2)
 * lams (n) float64: lam of each step
 * kind 0: erf attention, 1: softmax attention. A repeat whose state is NaN (diverged, discarded) is left alone,
 *      but its random numbers are drawn all the same, so that the others do not depend on it.
 * diverged_at (R) int64: set to the step count t0 + i + 1 after the step i whose update made a coordinate of a
 *      repeat non-finite or >= exploded; that repeat becomes NaN (as slr.training.algorithms.train does)
 * Returns the number of steps done (n, or fewer when no repeat is left), or -1 if a buffer cannot be allocated.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include "numpy/random/bitgen.h"

/* numpy's C distribution functions, as declared in numpy/random/distributions.h */
extern float random_standard_normal_f(bitgen_t *bitgen_state);
extern double random_standard_normal(bitgen_t *bitgen_state);
extern double random_chisquare(bitgen_t *bitgen_state, double df);

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

/* slr.training.algorithms.frames for one repeat: F[i][j] = coordinate i of f_j; Gram-Schmidt (twice) of k, v, v*, k*, e1, e2 */
static void frame(const double *c, double F[4][4])
{
    const double E[4][4] = {{0, 1, 0, 0}, {1, 0, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}}; /* v*, k*, e1, e2 */
    int n = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) F[i][j] = 0.0;
    for (int cand = 0; cand < 6 && n < 4; cand++) {
        const double *src = cand < 2 ? c + 4 * cand : E[cand - 2];
        double w[4], size = 0.0, norm = 0.0;
        for (int i = 0; i < 4; i++) { w[i] = src[i]; size += w[i] * w[i]; }
        for (int pass = 0; pass < 2; pass++) {
            double a[4] = {0, 0, 0, 0};
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 4; i++) a[j] += w[i] * F[i][j];
            for (int i = 0; i < 4; i++) {
                double p = 0.0;
                for (int j = 0; j < 4; j++) p += F[i][j] * a[j];
                w[i] -= p;
            }
        }
        for (int i = 0; i < 4; i++) norm += w[i] * w[i];
        norm = sqrt(norm);
        if (norm > 1e-9 * sqrt(size)) {
            for (int i = 0; i < 4; i++) F[i][n] = w[i] / norm;
            n++;
        }
    }
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

/* One step of one repeat: U (B, L, 2), u3 (B, s), xi (B) its tokens' normals (the s informative tokens of a
 * sequence first), z (4) its aggregate normals, A (2, 2) lr times its Bartlett factor */
static void update(int B, int L, int s, int kind, int projected, double M, double gamma, double eps, double lam,
                   double lr, double *c, const float *U, const float *u3raw, const float *xi, const double *z,
                   const double *A)
{
    const int BL = B * L;
    float u1[MAX_TOKENS], u2[MAX_TOKENS], pk[MAX_TOKENS], pv[MAX_TOKENS], al[MAX_TOKENS], be[MAX_TOKENS],
        T[MAX_TOKENS], u3[MAX_TOKENS], y[MAX_TOKENS];
    double F[4][4];
    frame(c, F);
    double kk = 0.0, v1 = 0.0, v2 = 0.0;
    for (int i = 0; i < 4; i++) { kk += c[i] * F[i][0]; v1 += c[4 + i] * F[i][0]; v2 += c[4 + i] * F[i][1]; }
    double m[4];
    for (int j = 0; j < 4; j++) m[j] = M * F[0][j]; /* an informative token's mean M k* in the frame */
    const float kkf = (float)kk, v1f = (float)v1, v2f = (float)v2, g = (float)gamma;
    const float m0 = (float)m[0], m1 = (float)m[1], m2 = (float)m[2];
    const float w0 = (float)F[1][0], w1 = (float)F[1][1], w2 = (float)F[1][2]; /* v* in the frame */
    for (int l = 0; l < BL; l++) {
        u1[l] = U[2 * l];
        u2[l] = U[2 * l + 1];
    }
    for (int b = 0; b < B; b++) {
        float w = 0.0f; /* W: the sum over the informative tokens of <X_j, v*> */
        for (int j = 0; j < s; j++) {
            const int l = b * L + j, q = b * s + j;
            u1[l] = m0 + g * u1[l];
            u2[l] = m1 + g * u2[l];
            u3[q] = m2 + g * u3raw[q];
            const float wj = w0 * u1[l] + w1 * u2[l] + w2 * u3[q];
            w = j == 0 ? wj : w + wj;
        }
        y[b] = w + (float)eps * xi[b];
    }
    for (int l = 0; l < BL; l++) {
        pk[l] = kkf * u1[l];
        pv[l] = v1f * u1[l] + v2f * u2[l];
    }
    if (kind == 0) erf_weights(B, L, (float)lam, pk, pv, al, be, T);
    else softmax_weights(B, L, (float)lam, pk, pv, al, be, T);
    for (int b = 0; b < B; b++) {
        const float res = (T[b] - y[b]) * (2.0f / B);
        for (int l = b * L; l < (b + 1) * L; l++) { al[l] *= res; be[l] *= res; }
    }
    /* in-span gradients in the frame, and the noise and informative second moments */
    float gk1 = 0, gk2 = 0, gv1 = 0, gv2 = 0;
    for (int l = 0; l < BL; l++) {
        gk1 += al[l] * u1[l];
        gk2 += al[l] * u2[l];
        gv1 += be[l] * u1[l];
        gv2 += be[l] * u2[l];
    }
    float gk3 = 0, gv3 = 0, aJ = 0, bJ = 0, j00 = 0, j01 = 0, j11 = 0, n00 = 0, n01 = 0, n11 = 0;
    for (int b = 0; b < B; b++) {
        /* per sequence, the sums over its informative tokens first (in the numpy step's order) */
        float tk3 = 0, tv3 = 0, ta = 0, te = 0, t00 = 0, t01 = 0, t11 = 0;
        for (int j = 0; j < s; j++) {
            const float a = al[b * L + j], e = be[b * L + j], u = u3[b * s + j];
            if (j == 0) {
                tk3 = a * u; tv3 = e * u; ta = a; te = e; t00 = a * a; t01 = a * e; t11 = e * e;
            } else {
                tk3 += a * u; tv3 += e * u; ta += a; te += e; t00 += a * a; t01 += a * e; t11 += e * e;
            }
        }
        gk3 += tk3;
        gv3 += tv3;
        aJ += ta;
        bJ += te;
        j00 += t00;
        j01 += t01;
        j11 += t11;
        for (int l = b * L + s; l < (b + 1) * L; l++) {
            n00 += al[l] * al[l];
            n01 += al[l] * be[l];
            n11 += be[l] * be[l];
        }
    }
    const double g2 = gamma * gamma;
    const double s00 = (double)n00 + g2 * (double)j00, s01 = (double)n01 + g2 * (double)j01,
                 s11 = (double)n11 + g2 * (double)j11;
    double G[2][4] = {{gk1, gk2, gk3, m[3] * (double)aJ}, {gv1, gv2, gv3, m[3] * (double)bJ}};
    double a11, a21, a22, l11, l21, l22;
    cholesky2(n00, n01, n11, &a11, &a21, &a22); /* the noise tokens' f3 parts */
    G[0][2] += a11 * z[0];
    G[1][2] += a21 * z[0] + a22 * z[1];
    cholesky2(s00, s01, s11, &l11, &l21, &l22); /* every token's f4 part, around its mean */
    G[0][3] += l11 * z[2];
    G[1][3] += l21 * z[2] + l22 * z[3];
    /* back to (k*, v*, e1, e2); projection; step */
    double N[8];
    for (int i = 0; i < 2; i++) {
        double Gc[4], dot = 0.0;
        for (int r = 0; r < 4; r++) {
            Gc[r] = 0.0;
            for (int j = 0; j < 4; j++) Gc[r] += G[i][j] * F[r][j];
        }
        if (projected) for (int j = 0; j < 4; j++) dot += c[4 * i + j] * Gc[j];
        for (int j = 0; j < 4; j++) N[4 * i + j] = c[4 * i + j] - lr * (Gc[j] - dot * c[4 * i + j]);
    }
    /* out-of-span parts: chol(S) A, lower triangular */
    const double o00 = l11 * A[0], o10 = l21 * A[0] + l22 * A[2], o11 = l22 * A[3];
    /* canonical coordinates: Cholesky factor of the Gram matrix of the parts orthogonal to k*, v* */
    double e, f, h;
    cholesky2(N[2] * N[2] + N[3] * N[3] + o00 * o00,
              N[2] * N[6] + N[3] * N[7] + o00 * o10,
              N[6] * N[6] + N[7] * N[7] + o10 * o10 + o11 * o11, &e, &f, &h);
    double nk = 1.0, nv = 1.0;
    if (projected) {
        nk = sqrt(N[0] * N[0] + N[1] * N[1] + e * e);
        nv = sqrt(N[4] * N[4] + N[5] * N[5] + f * f + h * h);
    }
    c[0] = N[0] / nk; c[1] = N[1] / nk; c[2] = e / nk; c[3] = 0.0;
    c[4] = N[4] / nv; c[5] = N[5] / nv; c[6] = f / nv; c[7] = h / nv;
}

long slr_reduced_sgd(int R, int B, int L, int s, int kind, int projected, int d, double M, double gamma, double eps,
                     double lr, long n, const double *lams, double *C, void *bitgen, long t0, long *diverged_at,
                     double exploded)
{
    bitgen_t *bg = (bitgen_t *)bitgen;
    const int BL = B * L;
    if (BL > MAX_TOKENS) return -1;
    const size_t nU = (size_t)R * BL * 2, nB = (size_t)R * B, nS = (size_t)R * B * s;
    float *U = malloc(sizeof(float) * (nU + nS + nB));
    double *Z = malloc(sizeof(double) * 7 * (size_t)R);
    if (U == NULL || Z == NULL) { free(U); free(Z); return -1; }
    float *u3 = U + nU, *xi = u3 + nS;
    double *A = Z + 4 * (size_t)R; /* (R, 2, 2) after the (R, 4) aggregate normals: reuses 3 R doubles below */
    double *chi1 = A, *n21 = A + R, *chi2 = A + 2 * (size_t)R;
    int alive = 0;
    long i;
    for (int r = 0; r < R; r++) alive += C[8 * r] == C[8 * r];
    for (i = 0; i < n && alive > 0; i++) {
        /* the step's random numbers, in the order of ReducedSGD.draw */
        for (size_t j = 0; j < nU + nS + nB; j++) U[j] = random_standard_normal_f(bg);
        for (size_t j = 0; j < 4 * (size_t)R; j++) Z[j] = random_standard_normal(bg);
        for (int r = 0; r < R; r++) chi1[r] = random_chisquare(bg, d - 4);
        for (int r = 0; r < R; r++) n21[r] = random_standard_normal(bg);
        for (int r = 0; r < R; r++) chi2[r] = d > 5 ? random_chisquare(bg, d - 5) : 0.0;
        for (int r = 0; r < R; r++) {
            double *c = C + 8 * r;
            if (c[0] != c[0]) continue; /* discarded */
            const double Ar[4] = {lr * sqrt(chi1[r]), 0.0, lr * n21[r], lr * sqrt(chi2[r])};
            update(B, L, s, kind, projected, M, gamma, eps, lams[i], lr, c, U + (size_t)2 * BL * r,
                   u3 + (size_t)B * s * r, xi + (size_t)B * r, Z + 4 * (size_t)r, Ar);
            int bad = 0;
            for (int j = 0; j < 8; j++) bad |= !(fabs(c[j]) < exploded); /* true for NaN */
            if (bad) {
                for (int j = 0; j < 8; j++) c[j] = NAN;
                diverged_at[r] = t0 + i + 1;
                alive--;
            }
        }
    }
    free(U);
    free(Z);
    return i;
}
