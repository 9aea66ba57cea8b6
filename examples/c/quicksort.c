/* Quicksort of integers read from stdin (or a seeded array); prints the sorted list. */
#include <stdio.h>

static int data[256];

static void swap(int *x, int *y) { int t = *x; *x = *y; *y = t; }

static int partition(int lo, int hi) {
  int pivot = data[hi], i = lo - 1;
  for (int j = lo; j < hi; j++)
    if (data[j] <= pivot) swap(&data[++i], &data[j]);
  swap(&data[i + 1], &data[hi]);
  return i + 1;
}

static void quicksort(int lo, int hi) {
  if (lo < hi) {
    int p = partition(lo, hi);
    quicksort(lo, p - 1);
    quicksort(p + 1, hi);
  }
}

int main(void) {
  int n = 0, x;
  while (n < 256 && scanf("%d", &x) == 1) data[n++] = x;
  if (n == 0) {
    unsigned s = 7;
    for (n = 0; n < 40; n++) { s = s * 1664525u + 1013904223u; data[n] = (int)(s >> 20) % 1000; }
  }
  quicksort(0, n - 1);
  for (int i = 0; i < n; i++) printf("%d%c", data[i], i + 1 < n ? ' ' : '\n');
  return 0;
}
