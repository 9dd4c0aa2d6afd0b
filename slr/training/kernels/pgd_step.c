/* n steps of projected gradient descent on the closed-form population risk of erf attention (docs/closed-forms.md §7, docs/reduction.md §3), for
 * all repeats: the compiled form of slr.training.algorithms.PopulationPGD.step and slr.theory.ErfRiskGradient, with the same
 * arithmetic in the same order (float64), and scipy's own owens_t and erf (function pointers handed over by
 * slr.training.kernels), so that it follows the numpy step to rounding. Built on first use by slr.training.kernels; without a C
 * compiler the numpy step runs instead.
 *
 * KV   (R, 2, D) float64, updated in place: k and v of every repeat (D = 4 for the reduced form, d otherwise)
 * ks, vs (D) float64: k* and v*
 * lams (n) float64: lam of each step
 * diverged_at (R) int64: set to the step count t0 + i + 1 after the step i whose update made a coordinate of a
 *      repeat non-finite or >= exploded; that repeat becomes NaN and is left alone (as slr.training.algorithms.train does)
 * Returns the number of steps done: n, or fewer when no repeat is left.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

typedef double (*owens_t_fn)(double, double, int);
typedef double (*erf_fn)(double, int);

#define TWO_OVER_SQRT_PI 1.1283791670955126 /* 2 / math.sqrt(math.pi), as slr.theory */

/* slr.theory.ErfRiskGradient.__call__ at one repeat: the partial derivatives of the excess in the overlaps */
static void gradient(double lam, double M, int L, double g, double s, double p, double q, double beta1, double beta2,
                     double kappa, double nu, double theta, double eta, double rho, owens_t_fn owens_t, erf_fn erf_,
                     double out[5])
{
    const double c = lam * M * kappa;
    const double u = c / p;
    const double a = u / q;
    const double e0 = erf_(u, 0);
    const double e1 = TWO_OVER_SQRT_PI * exp(-u * u);
    const double e2 = -2.0 * u * e1;
    const double e3 = (4.0 * u * u - 2.0) * e1;
    const double f0 = erf_(a, 0);
    const double f1 = TWO_OVER_SQRT_PI * exp(-a * a);
    const double f2 = -2.0 * a * f1;
    const double z0 = 1.0 - 8.0 * owens_t(sqrt(2.0) * c / p, 1.0 / q, 0);
    const double z1 = (2.0 / p) * f0 * e1;
    const double z2 = (2.0 / p) * (f1 * e1 / (p * q) + f0 * e2 / p);
    const double pq = p * q;
    const double z3 = (2.0 / p) * (f2 * e1 / (pq * pq) + 2.0 * f1 * e2 / (p * p * q) + f0 * e3 / (p * p));
    const double gs = g * s;
    const double m = M * theta;
    const double dc = lam * M;
    const double p2 = p * p;
    const double EA = m * e0 + gs * rho * e1 / p;
    const double EA_k = dc / p * (m * e1 + gs * rho * e2 / p);
    const double EA_t = M * e0;
    const double EA_r = gs * e1 / p;
    const double EAW_k = dc / p * (g * g * nu * e1 + gs * eta * (m * e2 / p + gs * rho * e3 / p2));
    const double EAW_n = g * g * e0;
    const double EAW_t = gs * eta * M * e1 / p;
    const double EAW_e = gs * (m * e1 / p + gs * rho * e2 / p2);
    const double EAW_r = gs * eta * gs * e2 / p2;
    const double gsr = gs * rho;
    const double EA2_k = dc * ((m * m + g * g) * z1 + 2.0 * m * gs * rho * z2 + gsr * gsr * z3);
    const double EA2_t = 2.0 * M * m * z0 + 2.0 * M * gs * rho * z1;
    const double EA2_r = 2.0 * m * gs * z1 + 2.0 * gs * gs * rho * z2;
    const double cross = 2.0 * (L - 1) * beta1;
    out[0] = EA2_k - 2.0 * EAW_k + cross * rho * EA_k;
    out[1] = -2.0 * EAW_n;
    out[2] = EA2_t - 2.0 * EAW_t + cross * rho * EA_t;
    out[3] = -2.0 * EAW_e;
    out[4] = (EA2_r - 2.0 * EAW_r + cross * (EA + rho * EA_r)
              + 2.0 * (L - 1) * rho * (beta2 + (L - 2) * (beta1 * beta1)));
}

long slr_pgd(int R, int D, int n, const double *lams, double lr, double M, double g, int L, double *KV,
             const double *ks, const double *vs, void *owens_t_ptr, void *erf_ptr, long t0, long *diverged_at,
             double exploded)
{
    const owens_t_fn owens_t = (owens_t_fn)owens_t_ptr;
    const erf_fn erf_ = (erf_fn)erf_ptr;
    double *Nk = malloc(sizeof(double) * 2 * (size_t)D), *Nv = Nk + D; /* the new k, v of one repeat */
    int alive = 0, i;
    if (Nk == NULL) return -1;
    for (int r = 0; r < R; r++) alive += KV[(size_t)2 * D * r] == KV[(size_t)2 * D * r];
    for (i = 0; i < n && alive > 0; i++) {
        const double lam = lams[i];
        /* the constants of ErfRiskGradient(lam) */
        const double s = lam * g;
        const double p = sqrt(1.0 + 2.0 * s * s);
        const double q = sqrt(1.0 + 4.0 * s * s);
        const double beta1 = 2.0 * lam / sqrt(M_PI * (1.0 + 2.0 * lam * lam));
        const double beta2 = 8.0 * (lam * lam) / (M_PI * (1.0 + 2.0 * (lam * lam)) * sqrt(1.0 + 4.0 * (lam * lam)));
        for (int r = 0; r < R; r++) {
            double *k = KV + (size_t)2 * D * r, *v = k + D;
            if (k[0] != k[0]) continue; /* discarded */
            double kappa = 0.0, nu = 0.0, theta = 0.0, eta = 0.0, rho = 0.0;
            for (int j = 0; j < D; j++) {
                kappa += k[j] * ks[j];
                nu += v[j] * vs[j];
                theta += v[j] * ks[j];
                eta += k[j] * vs[j];
                rho += k[j] * v[j];
            }
            double dR[5];
            gradient(lam, M, L, g, s, p, q, beta1, beta2, kappa, nu, theta, eta, rho, owens_t, erf_, dR);
            /* G = (R_kappa k* + R_eta v* + R_rho v, R_nu v* + R_theta k* + R_rho k), then the retraction */
            double dot_k = 0.0, dot_v = 0.0, nk = 0.0, nv = 0.0;
            for (int j = 0; j < D; j++) {
                const double gk = dR[0] * ks[j] + dR[3] * vs[j] + dR[4] * v[j];
                const double gv = dR[1] * vs[j] + dR[2] * ks[j] + dR[4] * k[j];
                dot_k += k[j] * gk;
                dot_v += v[j] * gv;
            }
            for (int j = 0; j < D; j++) {
                const double gk = dR[0] * ks[j] + dR[3] * vs[j] + dR[4] * v[j];
                const double gv = dR[1] * vs[j] + dR[2] * ks[j] + dR[4] * k[j];
                Nk[j] = k[j] - lr * (gk - dot_k * k[j]);
                Nv[j] = v[j] - lr * (gv - dot_v * v[j]);
                nk += Nk[j] * Nk[j];
                nv += Nv[j] * Nv[j];
            }
            nk = sqrt(nk);
            nv = sqrt(nv);
            int bad = 0;
            for (int j = 0; j < D; j++) {
                k[j] = Nk[j] / nk;
                v[j] = Nv[j] / nv;
                bad |= !(fabs(k[j]) < exploded) || !(fabs(v[j]) < exploded); /* true for NaN */
            }
            if (bad) {
                for (int j = 0; j < 2 * D; j++) k[j] = NAN;
                diverged_at[r] = t0 + i + 1;
                alive--;
            }
        }
    }
    free(Nk);
    return i;
}
