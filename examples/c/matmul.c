/* Integer-free float matrix multiply of two small seeded matrices; prints a checksum per row. */
#include <stdio.h>
#include <stdlib.h>

#ifndef N
#define N 12
#endif

static float a[N][N], b[N][N], c[N][N];

static void fill(float m[N][N], unsigned seed) {
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) {
      seed = seed * 1103515245u + 12345u;
      m[i][j] = (float)((seed >> 16) % 100) / 10.0f;
    }
}

static void matmul(void) {
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) {
      float s = 0.0f;
      for (int k = 0; k < N; k++) s += a[i][k] * b[k][j];
      c[i][j] = s;
    }
}

int main(void) {
  fill(a, 1);
  fill(b, 2);
  matmul();
  for (int i = 0; i < N; i++) {
    float row = 0.0f;
    for (int j = 0; j < N; j++) row += c[i][j];
    printf("%d %.4f\n", i, row);
  }
  return 0;
}
