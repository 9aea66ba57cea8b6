/* Trapezoidal integration of exp(-x^2) on [0, b] (b from argv, default 2); prints the estimate. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static double f(double x) { return exp(-x * x); }

static double trapezoid(double a, double b, int n) {
  double h = (b - a) / n, s = 0.5 * (f(a) + f(b));
  for (int i = 1; i < n; i++) s += f(a + i * h);
  return s * h;
}

int main(int argc, char **argv) {
  double b = argc > 1 ? atof(argv[1]) : 2.0;
  printf("%.6f\n", trapezoid(0.0, b, 200));
  return 0;
}
