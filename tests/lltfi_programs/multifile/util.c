#include "util.h"

int square(int x) { return x * x; }

int sum_of_squares(int n) {
  int s = 0;
  for (int i = 1; i <= n; i++) s += square(i);
  return s;
}
